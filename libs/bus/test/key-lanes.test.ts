import type { KafkaMessage } from 'kafkajs';
import { KeyLanes, type BatchRead, type Entry, type LaneLimits } from '../src/key-lanes';

const entry = (offset: number): Entry => ({
  message: { offset: String(offset) } as KafkaMessage,
  offset: BigInt(offset),
});

/**
 * Reads `keys` at offsets `from`, `from + 1`, ... past everything read before, starting what is due as the
 * runner does; answers each placement.
 */
function readNew(lanes: KeyLanes, keys: string[], from = 0): string[] {
  return keys.map((key, i) => {
    const placed = lanes.placeNew(key, entry(from + i));
    start(lanes, key);
    return placed;
  });
}

/** Starts the first `window` entries of the key's lane, as the runner does. */
function start(lanes: KeyLanes, key: string, window = 2): void {
  const lane = lanes.lane(key);
  for (const held of lane?.entries.slice(0, window) ?? []) {
    if (!held.started && lane) {
      held.started = true;
      lane.running++;
    }
  }
}

/** Finishes the key's oldest held entry, as the runner does. */
function finishOldest(lanes: KeyLanes, key: string): void {
  const lane = lanes.lane(key);
  const oldest = lane?.entries[0];
  if (!lane || !oldest) throw new Error(`nothing held of ${key}`);
  lane.running--;
  lanes.finished(lane, oldest);
}

/** Reads a batch of messages with `keys`, at offsets `from`, `from + 1`, ..., starting what is due. */
function readBatch(lanes: KeyLanes, keys: (string | null)[], from: number, position: number): BatchRead {
  // A key of null: no message at that offset for the handlers (a transaction's control record).
  const messages = keys.flatMap((key, i) =>
    key === null ? [] : [{ key: Buffer.from(key), offset: String(from + i) } as KafkaMessage],
  );
  return lanes.read(messages, {
    position: BigInt(position),
    lastOffset: BigInt(from + keys.length - 1),
    shouldStop: () => false,
    took: (key) => start(lanes, key ?? ''),
  });
}

const held = (lanes: KeyLanes, key: string): number[] =>
  (lanes.lane(key)?.entries ?? []).map((e) => Number(e.offset));
const deferred = (lanes: KeyLanes, key: string): number[] => (lanes.lane(key)?.deferred ?? []).map(Number);

const limits = (extra: Partial<LaneLimits> = {}): LaneLimits => ({
  maxHeld: 4,
  maxDeferred: 100,
  window: 2,
  ...extra,
});

/** Lanes of a partition that reads past its full buffer (the runner's, once it stayed full a while). */
function readingPast(extra: Partial<LaneLimits> = {}): KeyLanes {
  const lanes = new KeyLanes(limits(extra));
  lanes.readPast = true;
  return lanes;
}

describe('KeyLanes', () => {
  it("should stop at a message that finds no room until it reads past, deferring nothing and giving no key another's place", () => {
    const lanes = new KeyLanes(limits());
    expect(readNew(lanes, ['a', 'a', 'a', 'a', 'a', 'b'])).toEqual([
      'taken',
      'taken',
      'taken',
      'taken',
      'full',
      'full',
    ]);
    expect([lanes.held, lanes.deferred]).toEqual([4, 0]);
    expect(lanes.lane('b')).toBeUndefined();

    lanes.readPast = true;
    expect(readNew(lanes, ['a', 'b'], 4)).toEqual(['deferred', 'taken']);
    expect(deferred(lanes, 'a')).toEqual([3, 4]);
  });

  it('should stop a read at the first message that finds no room, and go on from it', () => {
    const lanes = new KeyLanes(limits({ maxHeld: 2 }));
    expect(readBatch(lanes, ['a', 'a', 'a', 'b'], 0, 0)).toEqual({ missing: [], next: 2n, stopped: true });
    finishOldest(lanes, 'a');
    expect(readBatch(lanes, ['a', 'b'], 2, 2)).toEqual({ missing: [], next: 3n, stopped: true });
    expect(held(lanes, 'a')).toEqual([1, 2]);
    expect(lanes.lane('b')).toBeUndefined();
  });

  it('should stop a read at a message that finds no room behind an offset without a message, from where its reading ended', () => {
    const lanes = new KeyLanes(limits({ maxHeld: 2 }));
    // The next fetch starts at 2 and brings b3 first: stopped there, not fetched again until there is room.
    expect(readBatch(lanes, ['a', 'a', null, 'b'], 0, 0)).toEqual({ missing: [], next: 2n, stopped: true });
  });

  it("should stop a read back at a key's deferred message that finds no room once it no longer reads past, and go on from it", () => {
    const lanes = readingPast({ maxHeld: 2 });
    // Reading past: a2 and b3 deferred (a's two run, so b cannot take a place), the read goes on at the end.
    expect(readBatch(lanes, ['a', 'a', 'a', 'b'], 0, 0)).toEqual({ missing: [], next: 4n, stopped: false });
    expect([deferred(lanes, 'a'), deferred(lanes, 'b')]).toEqual([[2], [3]]);
    finishOldest(lanes, 'a');
    // Half empty: the partition no longer reads past. Read back from the start: a2 is taken, b3 finds no room.
    lanes.readPast = false;
    expect(readBatch(lanes, ['a', 'a', 'a', 'b'], 0, 0)).toEqual({ missing: [], next: 3n, stopped: true });
    expect(held(lanes, 'a')).toEqual([1, 2]);
    expect(deferred(lanes, 'b')).toEqual([3]);
    finishOldest(lanes, 'a');
    expect(readBatch(lanes, ['b'], 3, 3)).toEqual({ missing: [], next: 4n, stopped: false });
    expect(held(lanes, 'b')).toEqual([3]);
    expect(lanes.deferred).toBe(0);
  });

  it('should hold messages up to its bound and defer the rest of a key, which then defers its new ones too', () => {
    const lanes = readingPast();
    expect(readNew(lanes, ['a', 'a', 'a', 'a', 'a', 'a'])).toEqual([
      'taken',
      'taken',
      'taken',
      'taken',
      'deferred',
      'deferred',
    ]);
    expect([lanes.held, lanes.deferred]).toEqual([4, 2]);
    expect(deferred(lanes, 'a')).toEqual([4, 5]);
  });

  it('should give a key the place of the newest waiting message of the key holding the most, and defer that one, while it holds at least two fewer', () => {
    const lanes = readingPast();
    readNew(lanes, ['a', 'a', 'a', 'a']);
    // b takes a3's place, then a2's; a keeps its two running, and b's third is deferred.
    expect(readNew(lanes, ['b', 'b', 'b'], 4)).toEqual(['taken', 'taken', 'deferred']);
    expect(held(lanes, 'a')).toEqual([0, 1]);
    expect(deferred(lanes, 'a')).toEqual([2, 3]);
    expect(held(lanes, 'b')).toEqual([4, 5]);
    expect(deferred(lanes, 'b')).toEqual([6]);
    expect([lanes.held, lanes.deferred]).toEqual([4, 3]);
  });

  it('should never give up a message that started', () => {
    const lanes = readingPast({ maxHeld: 2 });
    readNew(lanes, ['a', 'a']);
    expect(readNew(lanes, ['b'], 2)).toEqual(['deferred']);
    expect(held(lanes, 'a')).toEqual([0, 1]);
  });

  it("should answer 'full' once as many offsets are deferred as it keeps", () => {
    const lanes = readingPast({ maxHeld: 1, maxDeferred: 2 });
    expect(readNew(lanes, ['a', 'a', 'b', 'c'])).toEqual(['taken', 'deferred', 'deferred', 'full']);
    expect(lanes.lane('c')).toBeUndefined();
  });

  it('should read a deferred key again only once the buffer is half empty, or once the key runs below its window and has a place', () => {
    const lanes = readingPast();
    readNew(lanes, ['a', 'a', 'a', 'a', 'a', 'a']);
    expect(lanes.readAgainFrom()).toBeUndefined();
    finishOldest(lanes, 'a');
    // Three held: a read for one message would read megabytes again.
    expect(lanes.readAgainFrom()).toBeUndefined();
    finishOldest(lanes, 'a');
    expect(lanes.readAgainFrom()).toBe(4n);

    const other = readingPast();
    readNew(other, ['a', 'a', 'a', 'a', 'b', 'b', 'b']);
    expect(deferred(other, 'b')).toEqual([6]);
    expect(other.readAgainFrom()).toBeUndefined();
    finishOldest(other, 'b');
    // b runs one message below its window, and a holds two more than it with one not started.
    expect(other.readAgainFrom()).toBe(6n);
  });

  it('should take deferred messages again oldest first, and only while there is room', () => {
    const lanes = readingPast({ maxHeld: 2 });
    readNew(lanes, ['a', 'a', 'a', 'a']);
    finishOldest(lanes, 'a');
    expect(lanes.takeAgain('a', entry(3))).toBe(false);
    expect(lanes.takeAgain('a', entry(2))).toBe(true);
    expect(lanes.takeAgain('a', entry(3))).toBe(false);
    expect(held(lanes, 'a')).toEqual([1, 2]);
    expect(deferred(lanes, 'a')).toEqual([3]);
    expect(lanes.takeAgain('a', entry(1))).toBe(false);
  });

  it('should go on from where a read stopped while a key ahead has room, else jump to the end, and go back only when due', () => {
    const lanes = readingPast({ maxHeld: 2 });
    readNew(lanes, ['a', 'a', 'a', 'b']);
    // Full, nothing of a's started can give way: b waits, and the read goes on at the end.
    expect(lanes.readFrom(4n, 4n)).toBe(4n);
    finishOldest(lanes, 'a');
    finishOldest(lanes, 'a');
    // Empty: the read goes back to the oldest deferred message.
    expect(lanes.readFrom(4n, 4n)).toBe(2n);
    expect(lanes.takeAgain('a', entry(2))).toBe(true);
    // A read stopped before b's: b has room, so it goes on to it.
    expect(lanes.readFrom(3n, 4n)).toBe(3n);
  });

  it('should tell whether one key held the buffer when it was last full: all of it but a window of other keys, and more than its own window', () => {
    const lanes = new KeyLanes(limits({ maxHeld: 6 }));
    readNew(lanes, ['a', 'a', 'a', 'a', 'b', 'b']);
    expect(lanes.heldByOneKey).toBe(true);
    // Half empty and refilling: as it was until it is full again, shared then.
    for (let i = 0; i < 3; i++) finishOldest(lanes, 'a');
    readNew(lanes, ['b', 'c'], 6);
    expect(lanes.heldByOneKey).toBe(true);
    readNew(lanes, ['c'], 8);
    expect(lanes.heldByOneKey).toBe(false);
    // A buffer of two windows: a key running its window fills it without any message of its own waiting.
    const small = new KeyLanes(limits({ maxHeld: 2 }));
    readNew(small, ['a', 'a']);
    expect(small.heldByOneKey).toBe(false);
  });

  it('should forget deferred offsets a read found missing from the partition', () => {
    const lanes = readingPast({ maxHeld: 1 });
    readNew(lanes, ['a', 'a', 'a', 'b']);
    expect(lanes.forgetMissing(1n, 3n)).toEqual([1n, 2n]);
    expect(deferred(lanes, 'a')).toEqual([]);
    expect(deferred(lanes, 'b')).toEqual([3]);
    expect(lanes.deferred).toBe(1);
  });
});

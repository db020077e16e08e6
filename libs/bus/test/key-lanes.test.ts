import type { KafkaMessage } from 'kafkajs';
import { KeyLanes, type Entry, type LaneLimits } from '../src/key-lanes';

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

const held = (lanes: KeyLanes, key: string): number[] =>
  (lanes.lane(key)?.entries ?? []).map((e) => Number(e.offset));
const deferred = (lanes: KeyLanes, key: string): number[] => (lanes.lane(key)?.deferred ?? []).map(Number);

const limits = (extra: Partial<LaneLimits> = {}): LaneLimits => ({
  maxHeld: 4,
  maxDeferred: 100,
  window: 2,
  ...extra,
});

describe('KeyLanes', () => {
  it('should hold messages up to its bound and defer the rest of a key, which then defers its new ones too', () => {
    const lanes = new KeyLanes(limits());
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
    const lanes = new KeyLanes(limits());
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
    const lanes = new KeyLanes(limits({ maxHeld: 2 }));
    readNew(lanes, ['a', 'a']);
    expect(readNew(lanes, ['b'], 2)).toEqual(['deferred']);
    expect(held(lanes, 'a')).toEqual([0, 1]);
  });

  it("should answer 'full' once as many offsets are deferred as it keeps", () => {
    const lanes = new KeyLanes(limits({ maxHeld: 1, maxDeferred: 2 }));
    expect(readNew(lanes, ['a', 'a', 'b', 'c'])).toEqual(['taken', 'deferred', 'deferred', 'full']);
    expect(lanes.lane('c')).toBeUndefined();
  });

  it('should read a deferred key again only once the buffer is half empty, or once the key runs below its window and has a place', () => {
    const lanes = new KeyLanes(limits());
    readNew(lanes, ['a', 'a', 'a', 'a', 'a', 'a']);
    expect(lanes.readAgainFrom()).toBeUndefined();
    finishOldest(lanes, 'a');
    // Three held: a read for one message would read megabytes again.
    expect(lanes.readAgainFrom()).toBeUndefined();
    finishOldest(lanes, 'a');
    expect(lanes.readAgainFrom()).toBe(4n);

    const other = new KeyLanes(limits());
    readNew(other, ['a', 'a', 'a', 'a', 'b', 'b', 'b']);
    expect(deferred(other, 'b')).toEqual([6]);
    expect(other.readAgainFrom()).toBeUndefined();
    finishOldest(other, 'b');
    // b runs one message below its window, and a holds two more than it with one not started.
    expect(other.readAgainFrom()).toBe(6n);
  });

  it('should take deferred messages again oldest first, and only while there is room', () => {
    const lanes = new KeyLanes(limits({ maxHeld: 2 }));
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
    const lanes = new KeyLanes(limits({ maxHeld: 2 }));
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

  it('should forget deferred offsets a read found missing from the partition', () => {
    const lanes = new KeyLanes(limits({ maxHeld: 1 }));
    readNew(lanes, ['a', 'a', 'a', 'b']);
    expect(lanes.forgetMissing(1n, 3n)).toEqual([1n, 2n]);
    expect(deferred(lanes, 'a')).toEqual([]);
    expect(deferred(lanes, 'b')).toEqual([3]);
    expect(lanes.deferred).toBe(1);
  });
});

import type { KafkaMessage } from 'kafkajs';
import { PartitionOffsets } from './watermark';

/** A message of a partition held in memory, from the moment it is taken until it is finished. */
export interface Entry {
  message: KafkaMessage;
  offset: bigint;
  /** Handed to the handler (it runs, or ran and stopped). */
  started?: boolean;
  finished?: boolean;
}

/**
 * One key's messages in offset order: those held in memory from its oldest unfinished one on (finished
 * ones after it are kept, so they count in the window: the first `inFlightPerKey` of them may run), then
 * those deferred, all after them.
 */
export interface Lane {
  readonly entries: Entry[];
  /** Messages of the lane running now. */
  running: number;
  /** Entries not finished. */
  held: number;
  /**
   * Offsets of the key's messages read and let go of while the partition's buffer was full, ascending:
   * taken again, oldest first, from a later read of the partition once there is room.
   */
  readonly deferred: bigint[];
}

export interface LaneLimits {
  /** Messages of the partition held in memory, finished ones not counted. */
  maxHeld: number;
  /** Offsets of the partition's deferred messages kept; past it, the partition's reading stops. */
  maxDeferred: number;
  /** Messages of one key that may run at once (its window). */
  window: number;
}

/** What became of a message read past everything read before it. */
export type Placement = 'taken' | 'deferred' | 'full';

/** What a batch of the partition's messages did, for the runner to act on. */
export interface BatchRead {
  /** Deferred offsets the read found missing from the partition (deleted by retention): finished, unhandled. */
  readonly missing: bigint[];
  /** Where the partition's next fetch starts; undefined when no message was looked at. */
  readonly next: bigint | undefined;
  /**
   * Reading stopped at a message that found no room (not reading past), or with as many offsets deferred as
   * are kept: the partition's fetching pauses.
   */
  readonly stopped: boolean;
}

/** How a batch is read: `took` is told of every message taken, at once (the runner starts what is due). */
export interface ReadOptions {
  /** Where this read of the partition started (the last `next`, or a seek); undefined when unknown. */
  position: bigint | undefined;
  /** The batch's last offset, a control record behind its last message included. */
  lastOffset: bigint;
  /** Asked before each message: true stops the read there (KafkaJS stopping, or a seek pending). */
  shouldStop: () => boolean;
  took: (key: string | null) => void;
}

const keyOf = (message: KafkaMessage): string | null =>
  message.key === null ? null : message.key.toString('utf8');

/**
 * The messages of one partition by key, and what a full buffer does: a key's waiting messages must not keep
 * other keys' messages from being taken, while memory stays bounded.
 * - Up to `maxHeld` messages are held in memory. Until the partition reads past a full buffer (`readPast`, set
 *   by the runner once the partition has stayed full a while, or one key has held it a while: `heldByOneKey`,
 *   see partition-fetch.ts), a message that finds no room stops the read there, as a paused partition's
 *   fetching did, and nothing is deferred: a key streaming through a busy partition for less than that while
 *   is read once, where deferring would read most of its messages twice with nothing behind them.
 * - Reading past a full buffer, a message of a key holding at least two fewer than the key holding the most
 *   takes the place of that key's newest message not started, which is deferred: only its offset is kept, and
 *   the partition is read again from it later. So a key whose messages all wait (a tenant's batches waiting for
 *   its export or its quota) keeps its window running and gives the rest of the buffer up to the keys behind
 *   it, and the keys of a full partition end up sharing it.
 * - Otherwise, reading past, a message that finds no room is deferred, and the reading goes on past it to the
 *   keys behind: up to `maxDeferred` offsets a partition, ~45 bytes each where a held message costs its size.
 *   A key with deferred messages defers its new ones too (not reading past, the read stops at them), so its
 *   messages still start in offset order.
 * - Deferred messages are read again once the partition holds half of `maxHeld` or fewer (a pass over the
 *   partition then takes them while there is room, as a paused partition's fetching took the messages after
 *   it), or once their key holds fewer than its window and a place can be made for it.
 * Nothing here changes which messages are unfinished: a deferred message is unfinished until it is taken and
 * handled, so the committed watermark never passes it.
 */
export class KeyLanes {
  /** Offsets read and not finished, held or deferred: the committed watermark. */
  readonly offsets = new PartitionOffsets();
  private readonly byKey = new Map<string | null, Lane>();
  /**
   * Whether a message that finds no room is deferred and the reading goes on past it (see the class); false,
   * the reading stops at it and nothing is deferred.
   */
  readPast = false;
  /**
   * Whether one key held the buffer when it was last full: all of it but at most `window` messages of other
   * keys (see mostHeldByOneKey). Such a key may be streaming a backlog through the partition, whose keys
   * behind it are not read while its messages refill the buffer however fast they finish (see
   * partition-fetch.ts).
   */
  get heldByOneKey(): boolean {
    return this.heldBy !== undefined;
  }

  /** The key that held the buffer when it was last full (see heldByOneKey); undefined when no one key did. */
  heldBy: string | null | undefined = undefined;
  private heldCount = 0;
  private deferredCount = 0;
  private readonly readAgainAt: number;

  constructor(private readonly limits: LaneLimits) {
    this.readAgainAt = Math.floor(limits.maxHeld / 2);
  }

  /** The key's lane, while it has messages held, deferred or running. */
  lane(key: string | null): Lane | undefined {
    return this.byKey.get(key);
  }

  /** Messages held in memory and not finished. */
  get held(): number {
    return this.heldCount;
  }

  /** Messages deferred: read, let go of, to be read again. */
  get deferred(): number {
    return this.deferredCount;
  }

  /** Whether the partition holds half of `maxHeld` or fewer: its reading, stopped when full, goes on. */
  get isHalfEmpty(): boolean {
    return this.heldCount <= this.readAgainAt;
  }

  /** Whether the partition holds `maxHeld` messages: not reading past, nothing more can be taken. */
  get isFull(): boolean {
    return this.heldCount >= this.limits.maxHeld;
  }

  /**
   * Reads a batch of the partition's messages, in offset order: a message read past everything read before
   * is placed (`placeNew`), one read again is taken when it is its key's next deferred one (`takeAgain`).
   */
  read(messages: readonly KafkaMessage[], options: ReadOptions): BatchRead {
    const missing: bigint[] = [];
    /** The offset after the last message looked at. */
    let readTo: bigint | undefined;
    let full = false;
    for (const message of messages) {
      if (options.shouldStop()) break;
      const offset = BigInt(message.offset);
      const key = keyOf(message);
      // A read goes on from where the last one stopped: the offsets it steps over are not in the partition
      // any more (KafkaJS started at the earliest offset left, after a retention deletion).
      const from = readTo ?? options.position;
      if (from !== undefined && from < offset && this.deferredCount > 0) {
        missing.push(...this.forgetMissing(from, offset));
      }
      const entry = { message, offset };
      if (this.offsets.isAccepted(offset)) {
        if (this.takeAgain(key, entry)) options.took(key);
        else if (!this.readPast && this.byKey.get(key)?.deferred[0] === offset) {
          // The key's next deferred message finds no room: not reading past, the read stops at it.
          full = true;
          readTo = offset;
          break;
        }
      } else {
        const placed = this.placeNew(key, entry);
        if (placed === 'full') {
          full = true;
          readTo = offset;
          break;
        }
        this.offsets.accept(offset);
        if (placed === 'taken') options.took(key);
      }
      readTo = offset + 1n;
    }
    const end = this.offsets.end;
    if (readTo === undefined || end === undefined) return { missing, next: undefined, stopped: full };
    // A read that stopped goes on from the message it stopped at, or from `end` when that is before it (offsets
    // without a message for the handlers, a transaction's control record, lie between).
    const stop = full && readTo < end ? readTo : end;
    let next = this.readFrom(readTo, stop);
    const last = messages[messages.length - 1];
    if (last !== undefined && next - 1n === BigInt(last.offset)) {
      // KafkaJS resolves the batch's last offset when told its last message's, stepping over a control
      // record behind it.
      next = options.lastOffset + 1n;
      if (next > end) this.offsets.advance(next);
    }
    // Stopped unless a read back is due first.
    return { missing, next, stopped: full && next >= stop };
  }

  /**
   * Places a message read past everything read before it: taken (pushed on its lane's entries, for the
   * caller to start), deferred, or 'full' when it would have to be deferred and the partition does not read
   * past a full buffer, or `maxDeferred` offsets already are deferred (the partition's reading then stops
   * until there is room).
   */
  placeNew(key: string | null, entry: Entry): Placement {
    const lane = this.laneOf(key);
    if (lane.deferred.length === 0 && this.makeRoom(lane, false)) {
      this.take(lane, entry);
      return 'taken';
    }
    if (!this.readPast || this.deferredCount >= this.limits.maxDeferred) {
      this.dropIfEmpty(key, lane);
      return 'full';
    }
    lane.deferred.push(entry.offset);
    this.deferredCount++;
    return 'deferred';
  }

  /**
   * Takes a message read again when it is its key's oldest deferred one and there is room for it (reading
   * past, taking the place of another key's, see the class). False leaves it deferred, or it was not deferred
   * (held, finished).
   */
  takeAgain(key: string | null, entry: Entry): boolean {
    const lane = this.byKey.get(key);
    if (lane === undefined || lane.deferred[0] !== entry.offset) return false;
    // The place made defers one message and takes this one back: the deferred count stays.
    if (!this.makeRoom(lane, true)) return false;
    lane.deferred.shift();
    this.deferredCount--;
    this.take(lane, entry);
    return true;
  }

  /**
   * Finishes the deferred offsets of the lanes, from `from` up to `before` (excluded), that a read found
   * missing from the partition; answers them.
   */
  forgetMissing(from: bigint, before: bigint): bigint[] {
    const missing: bigint[] = [];
    for (const [key, lane] of this.byKey) {
      while (lane.deferred[0] !== undefined && lane.deferred[0] >= from && lane.deferred[0] < before) {
        const offset = lane.deferred.shift() as bigint;
        this.deferredCount--;
        this.offsets.finish(offset);
        missing.push(offset);
      }
      this.dropIfEmpty(key, lane);
    }
    return missing;
  }

  /** An entry of the lane finished: it leaves the buffer and the unfinished offsets. */
  finished(lane: Lane, entry: Entry): void {
    entry.finished = true;
    while (lane.entries[0]?.finished) lane.entries.shift();
    this.offsets.finish(entry.offset);
    lane.held--;
    this.heldCount--;
  }

  /** Removes the lane when nothing of it is held or deferred, and none of it runs. */
  dropIfEmpty(key: string | null, lane: Lane): void {
    if (lane.running === 0 && lane.entries.length === 0 && lane.deferred.length === 0) {
      if (this.byKey.get(key) === lane) this.byKey.delete(key);
    }
  }

  /**
   * Where the partition's next read starts, after a read that stopped before `readTo`: the oldest deferred
   * offset of a key that may take it now (going on past `readTo` with the room there is; going back before it
   * only when the partition or the key is low, see the class), else `end`: the offset after everything read,
   * or where a read that found no room stopped.
   */
  readFrom(readTo: bigint, end: bigint): bigint {
    let from = end;
    for (const lane of this.byKey.values()) {
      const first = lane.deferred[0];
      if (first === undefined || first >= from) continue;
      if (first >= readTo ? this.hasRoomFor(lane) : this.wantsReadAgain(lane)) from = first;
    }
    return from;
  }

  /** The oldest deferred offset, if any: a read of the partition from there meets every deferred message. */
  oldestDeferred(): bigint | undefined {
    let oldest: bigint | undefined;
    for (const lane of this.byKey.values()) {
      const first = lane.deferred[0];
      if (first !== undefined && (oldest === undefined || first < oldest)) oldest = first;
    }
    return oldest;
  }

  /** The oldest deferred offset of the keys that want theirs read again now, if any. */
  readAgainFrom(): bigint | undefined {
    if (this.deferredCount === 0) return undefined;
    let from: bigint | undefined;
    for (const lane of this.byKey.values()) {
      const first = lane.deferred[0];
      if (first === undefined || (from !== undefined && first >= from)) continue;
      if (this.wantsReadAgain(lane)) from = first;
    }
    return from;
  }

  private laneOf(key: string | null): Lane {
    let lane = this.byKey.get(key);
    if (!lane) {
      lane = { entries: [], running: 0, held: 0, deferred: [] };
      this.byKey.set(key, lane);
    }
    return lane;
  }

  private take(lane: Lane, entry: Entry): void {
    lane.entries.push(entry);
    lane.held++;
    this.heldCount++;
    if (this.heldCount >= this.limits.maxHeld) this.heldBy = this.keyHoldingMost();
  }

  /**
   * The key that holds all of the buffer but at most `window` messages, and more than half of it and more
   * than its window: messages of its own wait in it (in a buffer of two windows or less, a key running its
   * window fills it without holding up anything of its own). Undefined when no key does.
   */
  private keyHoldingMost(): string | null | undefined {
    let most = 0;
    let holder: string | null | undefined;
    for (const [key, lane] of this.byKey) {
      if (lane.held > most) [most, holder] = [lane.held, key];
    }
    const { maxHeld, window } = this.limits;
    return most >= maxHeld - window && most > Math.max(window, this.readAgainAt) ? holder : undefined;
  }

  /**
   * Whether the lane's deferred messages are worth a read back: the partition is down to half its buffer
   * (a read then refills it, as a paused partition's did), or the key runs below its window and a place can
   * be made for it. Without that bar, every message finished in a full partition would read megabytes again
   * to take one message.
   */
  private wantsReadAgain(lane: Lane): boolean {
    if (this.heldCount <= this.readAgainAt) return true;
    return lane.held < this.limits.window && this.hasRoomFor(lane);
  }

  private hasRoomFor(lane: Lane): boolean {
    if (this.heldCount < this.limits.maxHeld) return true;
    return this.readPast && this.victimFor(lane) !== undefined;
  }

  /** The lane holding the most whose newest entry is not started, if it holds at least two more than `lane`. */
  private victimFor(lane: Lane): Lane | undefined {
    let victim: Lane | undefined;
    for (const other of this.byKey.values()) {
      if (other === lane || other.held < lane.held + 2 || (victim && other.held <= victim.held)) continue;
      const newest = other.entries[other.entries.length - 1];
      if (newest !== undefined && !newest.started) victim = other;
    }
    return victim;
  }

  /**
   * Room for one more message of the lane; `neutral` when taking it frees a deferred place. Only a partition
   * reading past a full buffer makes room by deferring another key's message: otherwise that message would be
   * read twice for a key that may not wait long.
   */
  private makeRoom(lane: Lane, neutral: boolean): boolean {
    if (this.heldCount < this.limits.maxHeld) return true;
    if (!this.readPast) return false;
    const victim = this.victimFor(lane);
    if (victim === undefined || (!neutral && this.deferredCount >= this.limits.maxDeferred)) return false;
    const entry = victim.entries.pop() as Entry;
    victim.held--;
    this.heldCount--;
    victim.deferred.unshift(entry.offset);
    this.deferredCount++;
    return true;
  }
}

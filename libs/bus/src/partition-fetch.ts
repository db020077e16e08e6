import type { Consumer } from 'kafkajs';
import type { Logger } from '@urs/logging';
import { errorMessage } from '@urs/resilience';
import type { KeyLanes } from './key-lanes';

/*
 * A partition's fetching under ordering 'key' (see key-ordered.ts), on KafkaJS 2.2.4: paused when its buffer
 * is full, resumed once half of it is left, read past it after a while, read again towards a deferred message.
 * - A partition still full `readPastAfterMs` after it paused (not half empty since) is read past its full
 *   buffer (KeyLanes) until it is half empty again: a message that finds no room is deferred, its offset
 *   kept and the message let go of, so one key's waiting messages cannot keep the keys behind them from
 *   being read for long. Not at once: a key streaming through a busy partition fills its buffer too, and
 *   deferring its messages would read most of them twice with nothing behind them to let through. A
 *   deferred message is read again by moving the partition's next fetch back to it: the offset resolved
 *   after a batch, or consumer.seek between batches (with autoCommit off, KafkaJS's seek only sets the
 *   next fetch's offset, and drops a batch fetched before it). Offsets already accepted and read again are
 *   skipped, as after a rebalance. Reading past, the partition's fetching pauses only when the deferred
 *   offsets reach their bound, until the buffer is half empty.
 * - A key that held the buffer when it was last full (all of it but a window of other keys' messages, see
 *   KeyLanes.heldByOneKey) keeps the wait running while the buffer is half empty and refilled: a key streaming
 *   a backlog (a bulk tenant's hundreds of batches) refills it with its own messages as fast as they finish,
 *   and the keys behind its backlog would wait for all of it, the buffer never full for long. Reading past
 *   then goes on, also once half empty, until it has read the partition to its end (its high watermark at the
 *   last fetch): every key behind the backlog is let through, and the next fetch moves back to the oldest
 *   deferred message at once (readBackFromEnd), when the key refilled the buffer since it was last half empty;
 *   a key whose messages wait keeps it full, and its messages read back would fill it again at once, the
 *   partition read past it over and over: its fetch stays at the end until the buffer is half empty, as for a
 *   partition full with several keys. Meanwhile a half-empty buffer is refilled by the offset resolved after
 *   the next batch, not by a seek (readingOnToEnd); when no batch comes (the partition's end is no message a
 *   batch hands over, readToEndUnseen), by a seek `readPastAfterMs` later. The cost: the messages of the key
 *   read past are fetched twice (deferred, then read again), as for a key whose messages wait; a key streaming
 *   for less than `readPastAfterMs` is read once.
 * - KafkaJS keeps a seek it has not applied yet through a rebalance (consumerGroup.seekOffset) and applies
 *   it whenever the partition is assigned here again, maybe much later: a seek past the offset committed
 *   then would skip what the partition's other owner left. So the runner seeks only to the partition's
 *   last committed offset (or where its reading started), and the offset it resolves after the batch read
 *   from there moves on to the deferred message (resolved offsets do not outlive a rebalance); or, at a
 *   rejoin that forgot the member, to the finished watermark, below which everything was finished here
 *   (key-ordered.ts).
 */

/** A partition of ordering 'key' as its fetching sees it. */
export interface FetchedPartition {
  readonly topic: string;
  readonly partition: number;
  readonly lanes: KeyLanes;
  revoked: boolean;
  paused: boolean;
  /**
   * Set while the partition is full (or held by one key, see the top of this file) and not read past yet:
   * reading past starts when it fires.
   */
  readPastTimer: NodeJS.Timeout | undefined;
  /**
   * Whether the last batch read the partition to its end (nothing behind what was read, then), or no batch came
   * for `readPastAfterMs` while it was fetched on past the key that held it (see readToEndUnseen).
   */
  readToEnd: boolean;
  /**
   * The key that held the buffer when it was last half empty (KeyLanes.heldBy), undefined when none did. The
   * key that holds it now refilled it since when it is that key: it streams (its messages finish), where a key
   * whose messages wait keeps the buffer full. Only then is the fetch moved back at the partition's end
   * (readBackFromEnd): a waiting key's messages read back would fill the buffer again at once. A key, not a
   * flag: a key streaming through the buffer before another key's messages came to wait in it would otherwise
   * have the waiting key read past, then read back, once more.
   */
  refilledBy: string | null | undefined;
  /**
   * Set while the partition is fetched on past the key that held it with deferred messages due (readingOnToEnd):
   * fires when no batch came meanwhile (see readToEndUnseen).
   */
  readBackTimer: NodeJS.Timeout | undefined;
  /** Where the partition's next fetch starts, as last resolved or sought here; undefined before. */
  position: bigint | undefined;
  /**
   * The first message read since the partition was assigned here: nothing of the partition is between
   * the offset the group had committed and it.
   */
  readSince: bigint | undefined;
  /** The offset last committed of the partition; undefined before the first commit. */
  committed: bigint | undefined;
}

export interface PartitionFetchOptions {
  consumer: Consumer;
  log: Logger;
  /** How long a partition stays full (not half empty) before it is read past its full buffer, ms. */
  readPastAfterMs: number;
  /** Aborted when the runner closes: nothing is resumed or read again from then on. */
  closing: AbortSignal;
}

export interface PartitionFetch {
  pause(work: FetchedPartition): void;
  /**
   * Pauses again, in KafkaJS, a partition paused here that a rebalance kept assigned here. (A consumer restarted
   * after a crash builds its subscription state anew, with nothing paused, but keeps no partition of before: the
   * crash gave them all up, as the member left its group or may be forgotten by it before it joins again; see
   * KeyOrderedConsumption.onCrash.)
   */
  pauseAgain(work: FetchedPartition): void;
  /** Resumes a paused partition; a refusal (not running) is logged, and the partition stays paused. */
  resume(work: FetchedPartition): void;
  readPastLater(work: FetchedPartition): void;
  /** The partition's buffer is half empty: its fetching resumes, and its reading past ends or goes on. */
  halfEmpty(work: FetchedPartition): void;
  /**
   * After a batch read (`readToEnd` set), where the partition's next fetch starts instead of `next`: see
   * readBackFromEnd.
   */
  readBackFromEnd(work: FetchedPartition, next: bigint): bigint;
  /** A batch of the partition came: the fetch moves back by the offset resolved after it, not by readToEndUnseen. */
  batchCame(work: FetchedPartition): void;
  stopReadingPast(work: FetchedPartition): void;
  readAgainIfDue(work: FetchedPartition): void;
  /**
   * Moves the partition's next fetch to `offset` (consumer.seek): KafkaJS drops, or marks stale, what was
   * fetched of it before. False when refused (not running), logged with `failure`.
   */
  seek(work: FetchedPartition, offset: bigint, failure: string): boolean;
}

/** Whether everything in the partition up to its high watermark, as a batch of it saw it, was read. */
export function readToEnd(lanes: KeyLanes, highWatermark: string): boolean {
  const end = lanes.offsets.end;
  return end !== undefined && end >= BigInt(highWatermark);
}

export function createPartitionFetch(options: PartitionFetchOptions): PartitionFetch {
  const { consumer, log, readPastAfterMs, closing } = options;

  function pause(work: FetchedPartition): void {
    if (work.paused) return;
    consumer.pause([{ topic: work.topic, partitions: [work.partition] }]);
    work.paused = true;
  }

  function pauseAgain(work: FetchedPartition): void {
    if (!work.paused) return;
    work.paused = false;
    try {
      pause(work);
    } catch (error) {
      // Left unpaused here too: the next batch that finds the buffer full pauses it.
      log.warn('partition not paused again', {
        topic: work.topic,
        partition: work.partition,
        reason: errorMessage(error),
      });
    }
  }

  function resume(work: FetchedPartition): void {
    if (!work.paused) return;
    try {
      consumer.resume([{ topic: work.topic, partitions: [work.partition] }]);
      work.paused = false;
    } catch (error) {
      log.warn('partition not resumed', {
        topic: work.topic,
        partition: work.partition,
        reason: errorMessage(error),
      });
    }
  }

  /**
   * Starts the wait after which a partition that stays full, or held by one key, is read past its full
   * buffer.
   */
  function readPastLater(work: FetchedPartition): void {
    if (work.lanes.readPast || work.readPastTimer) return;
    work.readPastTimer = setTimeout(() => {
      work.readPastTimer = undefined;
      if (closing.aborted || work.revoked || !stillHeld(work)) return;
      work.lanes.readPast = true;
      log.info('partition full, or refilled by one key, for a while; reading on past the messages in it', {
        topic: work.topic,
        partition: work.partition,
        held: work.lanes.held,
        heldByOneKey: work.lanes.heldByOneKey,
        readPastAfterMs: readPastAfterMs,
      });
      resume(work);
    }, readPastAfterMs);
    work.readPastTimer.unref();
  }

  /**
   * Whether the partition still holds up what is behind its buffer: full, or half empty between refills by
   * the key that held it, with more of the partition to read (read to its end, nothing waits behind it).
   */
  function stillHeld(work: FetchedPartition): boolean {
    const { lanes } = work;
    return !lanes.isHalfEmpty || (lanes.heldByOneKey && !work.readToEnd);
  }

  /**
   * Reading past the key that held the buffer, with more of the partition to read and its fetching not
   * paused: a batch comes, and the offset resolved after it moves back to a deferred message that is due
   * (KeyLanes.readFrom), without a seek back to the last committed offset, which would fetch again what lies
   * between at every half-empty buffer. Paused (as many offsets deferred as are kept), no batch comes: the
   * seek moves the fetch back (readAgainIfDue runs before a half-empty buffer resumes the partition).
   */
  function readingOnToEnd(work: FetchedPartition): boolean {
    return work.lanes.readPast && work.lanes.heldByOneKey && !work.readToEnd && !work.paused;
  }

  /**
   * Read past the key that held the buffer to the partition's end, every key behind it reached: reading past
   * ends, and the next fetch moves back to the oldest deferred message at once, by the offset resolved after
   * this batch (not by a seek to the last committed offset once the buffer is half empty, which would fetch
   * again all that lies between while the key's messages wait to be read back). Full, the partition pauses
   * there until half empty, as a partition not read past.
   */
  function readBackFromEnd(work: FetchedPartition, next: bigint): bigint {
    const { lanes } = work;
    if (!lanes.readPast || !work.readToEnd || !refilledByItsHolder(work)) return next;
    stopReadingPast(work);
    work.refilledBy = undefined;
    const oldest = lanes.oldestDeferred();
    return oldest !== undefined && oldest < next ? oldest : next;
  }

  /** Whether the key that holds the buffer refilled it since it was last half empty: it streams. */
  function refilledByItsHolder(work: FetchedPartition): boolean {
    return work.lanes.heldByOneKey && work.refilledBy === work.lanes.heldBy;
  }

  function halfEmpty(work: FetchedPartition): void {
    const { lanes } = work;
    work.refilledBy = lanes.heldBy;
    if (!lanes.heldByOneKey || (lanes.readPast && work.readToEnd)) stopReadingPast(work);
    resume(work);
  }

  /** Half empty, revoked or closing: the partition is no longer read past its buffer, nor waits to be. */
  function stopReadingPast(work: FetchedPartition): void {
    if (work.readPastTimer) clearTimeout(work.readPastTimer);
    work.readPastTimer = undefined;
    batchCame(work);
    work.lanes.readPast = false;
  }

  function batchCame(work: FetchedPartition): void {
    if (work.readBackTimer) clearTimeout(work.readBackTimer);
    work.readBackTimer = undefined;
  }

  /**
   * Fetched on past the key that held the buffer, a deferred message due, and no batch came for
   * `readPastAfterMs`: the partition's end is not a message a batch hands over (a transaction's marker, aborted
   * messages: KafkaJS resolves such a batch itself), or lies past what a fetch may read yet (an open
   * transaction), so the last batch never read it to its end and no offset resolved moves the fetch back. Taken
   * as read to its end (all there is to read now): the fetch moves back by a seek (readAgainIfDue).
   */
  function readBackLater(work: FetchedPartition): void {
    if (work.readBackTimer) return;
    work.readBackTimer = setTimeout(() => readToEndUnseen(work), readPastAfterMs);
    work.readBackTimer.unref();
  }

  function readToEndUnseen(work: FetchedPartition): void {
    work.readBackTimer = undefined;
    if (closing.aborted || work.revoked || !readingOnToEnd(work)) return;
    work.readToEnd = true;
    log.info('partition read past a key gave no batch for a while; reading its deferred messages again', {
      topic: work.topic,
      partition: work.partition,
      deferred: work.lanes.deferred,
      readPastAfterMs: readPastAfterMs,
    });
    readAgainIfDue(work);
  }

  /**
   * Reads the partition again towards the oldest deferred message whose key wants it back now, when the
   * fetch is past it (a message finished, making room): from the last committed offset, which is never
   * past it (see the top of this file).
   */
  function readAgainIfDue(work: FetchedPartition): void {
    if (closing.aborted || work.revoked) return;
    const from = work.lanes.readAgainFrom();
    const safe = work.committed ?? work.readSince;
    if (from === undefined || safe === undefined) return;
    if (readingOnToEnd(work)) {
      readBackLater(work);
      return;
    }
    if (work.position === undefined || from < work.position) {
      if (!seek(work, safe, 'partition not read again from a deferred message')) return;
    }
    resume(work);
  }

  function seek(work: FetchedPartition, offset: bigint, failure: string): boolean {
    try {
      consumer.seek({ topic: work.topic, partition: work.partition, offset: offset.toString() });
      work.position = offset;
      return true;
    } catch (error) {
      log.warn(failure, {
        topic: work.topic,
        partition: work.partition,
        offset: offset.toString(),
        reason: errorMessage(error),
      });
      return false;
    }
  }

  return {
    pause,
    pauseAgain,
    resume,
    readPastLater,
    halfEmpty,
    readBackFromEnd,
    batchCame,
    stopReadingPast,
    readAgainIfDue,
    seek,
  };
}

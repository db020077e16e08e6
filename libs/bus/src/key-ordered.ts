import type { Consumer, ConsumerGroupJoinEvent, EachBatchPayload, Offsets, PartitionOffset } from 'kafkajs';
import type { Logger } from '@urs/logging';
import { errorCode, errorMessage, retryDelayMs, sleep, type RetryPolicy } from '@urs/resilience';
import type { Gauge } from '@urs/telemetry';
import type { MessageWork } from './handle';
import { KeyLanes, type Entry, type Lane } from './key-lanes';

/*
 * Ordering per key within a partition, on KafkaJS 2.2.4 (its consumer/runner.js, consumerGroup.js and
 * offsetManager were read for this):
 * - The next fetch of a partition starts at its resolved offset (offsetManager.nextOffset), so a
 *   message must be resolved when it is accepted into a key's queue, not when it is finished, or it
 *   is fetched again. Resolved offsets therefore run ahead of finished work, and KafkaJS's autoCommit
 *   (which commits resolved offsets, also on errors and on a rebalance) must be off: the runner
 *   commits the contiguous finished watermark itself.
 * - consumer.commitOffsets tries a failed commit again (a timeout, a lost connection; not a refusal
 *   by generation) under the member's generation of the moment: sent before a rebalance and tried
 *   again after it, it gives a partition that went to another member an older offset over its new
 *   owner's. The runner commits through a batch's commitOffsetsIfNecessary instead (the same commit,
 *   tried once); a failed commit is made again at the next interval, of the partitions assigned then.
 * - With autoCommit off, KafkaJS commits nothing by itself: not on stop, not on a rebalance. A
 *   rebalance builds a new offset manager, so the resolved offsets are dropped and a partition kept
 *   through the rebalance is fetched again from its committed offset; messages already accepted are
 *   recognised by offset and skipped.
 * - A commit needs the member in its group, which disconnect leaves, so close drains and commits
 *   before it disconnects.
 * - GROUP_JOIN carries this member's new assignment: work of a partition no longer assigned is
 *   aborted (its handlers' signal) and never committed, so it cannot overwrite the new owner's offset.
 *   A new member id means the group forgot this member (session expired): nothing of before is kept.
 * - eachBatch only accepts and returns, so KafkaJS's fetch loop keeps heartbeating; a full buffer
 *   never blocks eachBatch (which would block the fetches of every partition of the broker): it pauses
 *   the partition's fetching, which resumes once the buffer is half empty.
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
 * - KafkaJS keeps a seek it has not applied yet through a rebalance (consumerGroup.seekOffset) and applies
 *   it whenever the partition is assigned here again, maybe much later: a seek past the offset committed
 *   then would skip what the partition's other owner left. So the runner seeks only to the partition's
 *   last committed offset (or where its reading started), and the offset it resolves after the batch read
 *   from there moves on to the deferred message (resolved offsets do not outlive a rebalance).
 * - A key's messages start in offset order, at most `inFlightPerKey` of them at once (a sliding window
 *   over its unfinished messages), so they may finish out of order; the committed watermark still never
 *   passes an unfinished one.
 */

export interface KeyOrderedOptions {
  consumer: Consumer;
  /** Topics subscribed, paused all at once on close. */
  topics: string[];
  settle: (work: MessageWork) => Promise<boolean>;
  log: Logger;
  /** Paces retries of a message whose dead letter could not be written. */
  retry: RetryPolicy;
  /** Messages of a partition held in memory and not finished; see KeyLanes for what happens at the bound. */
  maxBufferedPerPartition: number;
  /** Offsets of a partition's deferred messages kept, see KeyLanes. */
  maxDeferredPerPartition: number;
  /** How long a partition stays full (not half empty) before it is read past its full buffer, ms. */
  readPastAfterMs: number;
  /**
   * Messages of one key handled at once, default 2: a key's next message starts while the one before it
   * finishes, so a handler that ends by waiting on a few slow calls (a batch draining its last Defender
   * calls) leaves the shared call slots to the key's next message instead of idle. Messages start in offset
   * order, and one starts only once every message of its key this many places before it or more has
   * finished: a message that waits (a retry) holds its key back after at most this many. 1 keeps each key
   * strictly one message at a time.
   */
  inFlightPerKey?: number;
  commitIntervalMs: number;
  drainTimeoutMs: number;
  /** Set to the messages held in memory and not finished, over every partition, with `labels`. */
  buffered: Gauge;
  /** Set to the messages deferred (read, let go of, to be read again), over every partition. */
  deferred: Gauge;
  labels: Record<string, string>;
}

export interface KeyOrderedConsumption {
  eachBatch(payload: EachBatchPayload): Promise<void>;
  onGroupJoin(payload: ConsumerGroupJoinEvent['payload']): void;
  /** Accepts nothing more, lets in-flight work finish (or aborts it), commits the watermark. */
  drain(): Promise<void>;
}

interface PartitionWork {
  readonly topic: string;
  readonly partition: number;
  /** One lane per key (null: messages without a key), and the partition's unfinished offsets. */
  readonly lanes: KeyLanes;
  /** Aborted when the partition is revoked, or when close's drain time has passed. */
  readonly controller: AbortController;
  /**
   * The controller's signal or close: cuts a retry's pause short. Made once per partition, not per
   * message: Node keeps every AbortSignal.any made from a long-lived signal (nodejs/node#55351).
   */
  readonly stopSignal: AbortSignal;
  revoked: boolean;
  paused: boolean;
  /** Set while the partition is full and not read past yet: reading past starts when it fires. */
  readPastTimer: NodeJS.Timeout | undefined;
  /** Where the partition's next fetch starts, as last resolved or sought here; undefined before. */
  position: bigint | undefined;
  /**
   * The first message read since the partition was assigned here: nothing of the partition is between
   * the offset the group had committed and it.
   */
  readSince: bigint | undefined;
  committed: bigint | undefined;
}

const partitionId = (topic: string, partition: number): string => `${topic}|${partition}`;

/** Partitions' offsets to commit, by topic, as KafkaJS takes them. */
function byTopic(due: readonly { work: PartitionWork; offset: bigint }[]): Offsets {
  const topics = new Map<string, PartitionOffset[]>();
  for (const { work, offset } of due) {
    const offsets = topics.get(work.topic) ?? [];
    offsets.push({ partition: work.partition, offset: offset.toString() });
    topics.set(work.topic, offsets);
  }
  return { topics: [...topics].map(([topic, partitions]) => ({ topic, partitions })) };
}

export function createKeyOrderedConsumption(options: KeyOrderedOptions): KeyOrderedConsumption {
  const { consumer, log } = options;
  const inFlightPerKey = options.inFlightPerKey ?? 2;
  const partitions = new Map<string, PartitionWork>();
  /** Every message being handled, so drain can wait for them. */
  const running = new Set<Promise<void>>();
  const closing = new AbortController();
  let heartbeat: () => Promise<void> = async () => undefined;
  /** Commits the offsets once, under the member's generation of the moment; taken from the last batch. */
  let commit: (offsets: Offsets) => Promise<void> = async () => undefined;
  /** Partitions assigned to this member by the last rebalance (partitionId). */
  let assigned = new Set<string>();
  let memberId: string | undefined;
  let commitTimer: NodeJS.Timeout | undefined;
  let committing: Promise<void> | undefined;
  let bufferedTotal = 0;
  let deferredTotal = 0;

  function countBuffered(change: number): void {
    bufferedTotal += change;
    options.buffered.set(bufferedTotal, options.labels);
  }

  function countDeferred(change: number): void {
    deferredTotal += change;
    options.deferred.set(deferredTotal, options.labels);
  }

  function workFor(topic: string, partition: number): PartitionWork {
    const id = partitionId(topic, partition);
    let work = partitions.get(id);
    if (!work) {
      const controller = new AbortController();
      work = {
        topic,
        partition,
        lanes: new KeyLanes({
          maxHeld: options.maxBufferedPerPartition,
          maxDeferred: options.maxDeferredPerPartition,
          window: inFlightPerKey,
        }),
        controller,
        stopSignal: AbortSignal.any([closing.signal, controller.signal]),
        revoked: false,
        paused: false,
        readPastTimer: undefined,
        position: undefined,
        readSince: undefined,
        committed: undefined,
      };
      partitions.set(id, work);
    }
    return work;
  }

  function pause(work: PartitionWork): void {
    if (work.paused) return;
    consumer.pause([{ topic: work.topic, partitions: [work.partition] }]);
    work.paused = true;
  }

  function resume(work: PartitionWork): void {
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

  /** Starts the wait after which a partition that stays full is read past its full buffer. */
  function readPastLater(work: PartitionWork): void {
    if (work.lanes.readPast || work.readPastTimer) return;
    work.readPastTimer = setTimeout(() => {
      work.readPastTimer = undefined;
      if (closing.signal.aborted || work.revoked || work.lanes.isHalfEmpty) return;
      work.lanes.readPast = true;
      log.info('partition full for a while; reading on past the messages waiting in it', {
        topic: work.topic,
        partition: work.partition,
        held: work.lanes.held,
        readPastAfterMs: options.readPastAfterMs,
      });
      resume(work);
    }, options.readPastAfterMs);
    work.readPastTimer.unref();
  }

  /** Half empty, revoked or closing: the partition is no longer read past its buffer, nor waits to be. */
  function stopReadingPast(work: PartitionWork): void {
    if (work.readPastTimer) clearTimeout(work.readPastTimer);
    work.readPastTimer = undefined;
    work.lanes.readPast = false;
  }

  /**
   * Reads the partition again towards the oldest deferred message whose key wants it back now, when the
   * fetch is past it (a message finished, making room): from the last committed offset, which is never
   * past it (see the top of this file).
   */
  function readAgainIfDue(work: PartitionWork): void {
    if (closing.signal.aborted || work.revoked) return;
    const from = work.lanes.readAgainFrom();
    const safe = work.committed ?? work.readSince;
    if (from === undefined || safe === undefined) return;
    if (work.position === undefined || from < work.position) {
      try {
        consumer.seek({ topic: work.topic, partition: work.partition, offset: safe.toString() });
        work.position = safe;
      } catch (error) {
        log.warn('partition not read again from a deferred message', {
          topic: work.topic,
          partition: work.partition,
          offset: safe.toString(),
          reason: errorMessage(error),
        });
        return;
      }
    }
    resume(work);
  }

  function revoke(work: PartitionWork, reason: string): void {
    work.revoked = true;
    stopReadingPast(work);
    work.controller.abort();
    partitions.delete(partitionId(work.topic, work.partition));
    countBuffered(-work.lanes.held);
    countDeferred(-work.lanes.deferred);
    // Paused state outlives the assignment in KafkaJS: were the partition assigned here again, it
    // would never be fetched.
    resume(work);
    log.info('partition given up; its unfinished messages go to its next owner', {
      topic: work.topic,
      partition: work.partition,
      reason,
      unfinished: work.lanes.offsets.unfinishedCount,
      deferred: work.lanes.deferred,
      committed: work.committed?.toString(),
    });
  }

  async function settleUntilDone(work: PartitionWork, entry: Entry): Promise<boolean> {
    const { stopSignal } = work;
    const shouldStop = (): boolean => closing.signal.aborted || work.revoked;
    for (let attempt = 1; ; attempt++) {
      try {
        return await options.settle({
          topic: work.topic,
          partition: work.partition,
          message: entry.message,
          heartbeat: () => heartbeat(),
          signal: work.controller.signal,
          stopSignal,
          shouldStop,
          beforeRetry: async () => undefined,
        });
      } catch (error) {
        // Only a dead letter that could not be written gets here; the message stays unfinished and its
        // key waits, as its partition would in partition ordering.
        if (shouldStop()) return false;
        const delayMs = retryDelayMs(options.retry, attempt);
        log.error('message not settled, trying again', {
          topic: work.topic,
          partition: work.partition,
          offset: entry.message.offset,
          attempt,
          delayMs,
          code: errorCode(error),
          reason: errorMessage(error),
        });
        await sleep(delayMs, stopSignal);
        if (shouldStop()) return false;
      }
    }
  }

  /** Handles one message of a lane; once it is finished, the lane's next message may start. */
  async function runEntry(work: PartitionWork, key: string | null, lane: Lane, entry: Entry): Promise<void> {
    try {
      if (!(await settleUntilDone(work, entry)) || work.revoked) return;
      work.lanes.finished(lane, entry);
      countBuffered(-1);
      if (work.lanes.isHalfEmpty && !closing.signal.aborted) {
        stopReadingPast(work);
        resume(work);
      }
      readAgainIfDue(work);
      scheduleCommit();
    } finally {
      lane.running--;
      startDue(work, key, lane);
      // Nothing runs after startDue only when the lane holds nothing more or is stopping (close or revoke);
      // what a stopped lane leaves goes to the next owner, uncommitted.
      work.lanes.dropIfEmpty(key, lane);
    }
  }

  /** Starts the messages of the lane's window (its first `inFlightPerKey` entries) not started yet. */
  function startDue(work: PartitionWork, key: string | null, lane: Lane): void {
    if (closing.signal.aborted || work.revoked) return;
    const window = Math.min(inFlightPerKey, lane.entries.length);
    for (let index = 0; index < window; index++) {
      const entry = lane.entries[index] as Entry;
      if (entry.started) continue;
      entry.started = true;
      lane.running++;
      const handling = runEntry(work, key, lane, entry).catch((error: unknown) =>
        log.error('key lane failed', {
          topic: work.topic,
          partition: work.partition,
          reason: errorMessage(error),
        }),
      );
      running.add(handling);
      void handling.finally(() => running.delete(handling));
    }
  }

  function scheduleCommit(): void {
    if (commitTimer || closing.signal.aborted) return;
    commitTimer = setTimeout(() => {
      commitTimer = undefined;
      void flush();
    }, options.commitIntervalMs);
    commitTimer.unref();
  }

  /**
   * Partitions whose watermark moved since their last commit, of those assigned here now: a batch
   * fetched before a rebalance may still be handed over after it, and an offset committed for a
   * partition that moved would be taken over its new owner's.
   */
  function dueForCommit(): { work: PartitionWork; offset: bigint }[] {
    return [...partitions.values()].flatMap((work) => {
      const offset = work.lanes.offsets.watermark();
      const mine = assigned.has(partitionId(work.topic, work.partition));
      return mine && offset !== undefined && offset !== work.committed ? [{ work, offset }] : [];
    });
  }

  async function commitDue(): Promise<void> {
    const due = dueForCommit();
    if (due.length === 0) return;
    try {
      await commit(byTopic(due));
      for (const { work, offset } of due) work.committed = offset;
    } catch (error) {
      // A rebalance under way refuses commits of the old generation; the next commit carries those of
      // the partitions still assigned then.
      log.warn('offsets not committed, trying again', {
        code: errorCode(error),
        reason: errorMessage(error),
      });
      scheduleCommit();
    }
  }

  /** One commit at a time, of every partition whose watermark moved. */
  async function flush(): Promise<void> {
    while (committing) await committing;
    committing = commitDue().finally(() => {
      committing = undefined;
    });
    return committing;
  }

  async function settledWithin(timeoutMs: number): Promise<boolean> {
    const timeout = new AbortController();
    const all = Promise.allSettled([...running]).then(() => true);
    const timer = sleep(timeoutMs, timeout.signal).then(() => false);
    const done = await Promise.race([all, timer]);
    timeout.abort();
    return done;
  }

  return {
    async eachBatch(payload) {
      heartbeat = payload.heartbeat;
      commit = (offsets) => payload.commitOffsetsIfNecessary(offsets);
      if (closing.signal.aborted) return;
      const { batch } = payload;
      // Fetched before a rebalance and handed over after it, of a partition that moved: its new owner
      // reads it. Taken in here, it would leave offsets behind that skip messages were it assigned back.
      if (memberId !== undefined && !assigned.has(partitionId(batch.topic, batch.partition))) return;
      const work = workFor(batch.topic, batch.partition);
      const { lanes } = work;
      const [heldBefore, deferredBefore] = [lanes.held, lanes.deferred];
      const read = lanes.read(batch.messages, {
        position: work.position,
        lastOffset: BigInt(batch.lastOffset()),
        shouldStop: () => !payload.isRunning() || payload.isStale(),
        took: (key) => {
          const lane = lanes.lane(key);
          if (lane) startDue(work, key, lane);
        },
      });
      countBuffered(lanes.held - heldBefore);
      countDeferred(lanes.deferred - deferredBefore);
      if (read.missing.length > 0) {
        log.warn('deferred messages no longer in the partition; left unhandled', {
          topic: work.topic,
          partition: work.partition,
          count: read.missing.length,
          first: read.missing[0]?.toString(),
        });
        scheduleCommit();
      }
      if (read.next !== undefined) {
        payload.resolveOffset((read.next - 1n).toString());
        work.position = read.next;
        work.readSince ??= BigInt(batch.messages[0]?.offset ?? read.next);
      }
      // Not reading past, a full buffer pauses the partition at once, not once a later fetch brings a message
      // that finds no room: that fetch would be made for nothing, and its messages fetched again.
      if (read.stopped || (!lanes.readPast && lanes.isFull)) {
        pause(work);
        readPastLater(work);
      }
    },

    onGroupJoin(payload) {
      const forgotten = memberId !== undefined && memberId !== payload.memberId;
      memberId = payload.memberId;
      assigned = new Set(
        Object.entries(payload.memberAssignment).flatMap(([topic, numbers]) =>
          numbers.map((partition) => partitionId(topic, partition)),
        ),
      );
      for (const work of [...partitions.values()]) {
        if (forgotten) revoke(work, 'the group forgot this member');
        else if (!assigned.has(partitionId(work.topic, work.partition))) {
          revoke(work, 'assigned to another consumer');
        }
      }
    },

    async drain() {
      closing.abort();
      if (commitTimer) clearTimeout(commitTimer);
      commitTimer = undefined;
      for (const work of partitions.values()) stopReadingPast(work);
      try {
        consumer.pause(options.topics.map((topic) => ({ topic })));
      } catch {
        // Not running (never started, or crashed): nothing is being fetched.
      }
      if (!(await settledWithin(options.drainTimeoutMs))) {
        log.warn('messages in flight did not finish in time; aborting them', {
          drainTimeoutMs: options.drainTimeoutMs,
          inFlight: running.size,
        });
        for (const work of partitions.values()) work.controller.abort();
        if (!(await settledWithin(options.drainTimeoutMs))) {
          log.warn('handlers did not stop when aborted; their messages stay uncommitted', {
            inFlight: running.size,
          });
        }
      }
      await flush();
    },
  };
}

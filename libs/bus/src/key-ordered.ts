import type { Consumer, ConsumerGroupJoinEvent, EachBatchPayload, KafkaMessage } from 'kafkajs';
import type { Logger } from '@urs/logging';
import { errorMessage, type RetryPolicy } from '@urs/resilience';
import type { Gauge } from '@urs/telemetry';
import { drainWithin } from './drain';
import { settleUntilDone, type MessageWork } from './handle';
import { createWatermarkCommits, type CommittedPartition } from './key-commits';
import { KeyLanes, type Entry, type Lane } from './key-lanes';
import { createPartitionFetch, readToEnd, type FetchedPartition } from './partition-fetch';

/*
 * Ordering per key within a partition, on KafkaJS 2.2.4 (its consumer/runner.js, consumerGroup.js and
 * offsetManager were read for this):
 * - The next fetch of a partition starts at its resolved offset (offsetManager.nextOffset), so a
 *   message must be resolved when it is accepted into a key's queue, not when it is finished, or it
 *   is fetched again. Resolved offsets therefore run ahead of finished work, and KafkaJS's autoCommit
 *   (which commits resolved offsets, also on errors and on a rebalance) must be off: the runner
 *   commits the contiguous finished watermark itself (key-commits.ts).
 * - With autoCommit off, KafkaJS commits nothing by itself: not on stop, not on a rebalance. A
 *   rebalance builds a new offset manager, so the resolved offsets are dropped and a partition kept
 *   through the rebalance is fetched again from its committed offset; messages already accepted are
 *   recognised by offset and skipped.
 * - GROUP_JOIN carries this member's new assignment: work of a partition no longer assigned is
 *   aborted (its handlers' signal) and never committed, so it cannot overwrite the new owner's offset.
 *   A new member id means the group forgot this member (session expired, as when the broker stalls past
 *   it): its commits since were refused, and nothing of before is kept but the finished watermark of each
 *   partition assigned back, so the messages finished here are not handled again (skipFinishedBefore).
 *   KafkaJS rejoins from inside one broker's fetch (consumerGroup.recoverFromFetch, on a partition's leader
 *   moving or its topic's metadata going stale) while the other brokers' fetchers run on: a batch of a
 *   partition assigned back, fetched before the rejoin from where it was read to here, may be handed over
 *   after it, past messages unfinished or deferred here, which would never be read again. So the rejoin also
 *   moves the partition's next fetch back to its finished watermark (consumer.seek): KafkaJS drops what was
 *   fetched of it before (a batch already queued comes stale, and is not read), and its fetching starts
 *   there. A seek KafkaJS applies later (the partition moved again before its next fetch, and came back)
 *   moves its fetch to that watermark then: what the owner of meanwhile committed past it is handled again,
 *   and what it skips of before it was finished here.
 * - A crash (CRASH) stops the consumer: KafkaJS disconnects it, which leaves the group when the broker answers
 *   (its runner.stop, consumerGroup.leave), so the member is gone and its partitions go to others at once; when
 *   the broker does not answer, the member id is kept (kafkajs-fixes.ts) but the group forgets it once its
 *   session times out without heartbeats, however long the restart takes. Either way another member may own
 *   the partitions before this one joins again, so every partition is given up at the crash, as when the group
 *   forgot this member: its handlers aborted, its finished watermark kept for the partitions assigned back.
 * - eachBatch only accepts and returns, so KafkaJS's fetch loop keeps heartbeating; a full buffer
 *   never blocks eachBatch (which would block the fetches of every partition of the broker): it pauses
 *   the partition's fetching, which resumes once the buffer is half empty, or is read past later, also
 *   when one key refills it as fast as it halves (partition-fetch.ts).
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
  /**
   * KafkaJS stopped the consumer (its CRASH event): every partition is given up, as when the group forgot this
   * member (see onCrash in the notes above).
   */
  onCrash(): void;
  /** Accepts nothing more, lets in-flight work finish (or aborts it), commits the watermark. */
  drain(): Promise<void>;
}

interface PartitionWork extends FetchedPartition, CommittedPartition {
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
}

const partitionId = (topic: string, partition: number): string => `${topic}|${partition}`;

export function createKeyOrderedConsumption(options: KeyOrderedOptions): KeyOrderedConsumption {
  const { consumer, log } = options;
  const inFlightPerKey = options.inFlightPerKey ?? 2;
  const partitions = new Map<string, PartitionWork>();
  /** Every message being handled, so drain can wait for them. */
  const running = new Set<Promise<void>>();
  const closing = new AbortController();
  let heartbeat: () => Promise<void> = async () => undefined;
  /** Partitions assigned to this member by the last rebalance (partitionId). */
  let assigned = new Set<string>();
  let memberId: string | undefined;
  /**
   * Partitions assigned back to this member by a rejoin that forgot it (partitionId): the offset below
   * which every message read of the partition was finished here, until the partition's first batch since.
   */
  const finishedBefore = new Map<string, bigint>();
  const fetching = createPartitionFetch({
    consumer,
    log,
    readPastAfterMs: options.readPastAfterMs,
    closing: closing.signal,
  });
  const { pause, pauseAgain, resume, readPastLater, halfEmpty, stopReadingPast, readAgainIfDue, seek } =
    fetching;
  const commits = createWatermarkCommits<PartitionWork>({
    log,
    intervalMs: options.commitIntervalMs,
    partitions: () => partitions.values(),
    isAssigned: (work) => assigned.has(partitionId(work.topic, work.partition)),
  });
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
        readToEnd: false,
        refilledBy: undefined,
        readBackTimer: undefined,
        position: undefined,
        readSince: undefined,
        committed: undefined,
      };
      partitions.set(id, work);
    }
    return work;
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

  /**
   * Keeps the finished watermark of a partition assigned back by a rejoin that forgot this member; `seekBack`
   * (a rejoin, its consumer running on) also moves the partition's next fetch back to it (see the notes above).
   */
  function keepFinished(work: PartitionWork, seekBack: boolean): void {
    const id = partitionId(work.topic, work.partition);
    const finished = work.lanes.offsets.watermark();
    if (!assigned.has(id) || finished === undefined) return;
    finishedBefore.set(id, finished);
    if (seekBack) seek(work, finished, 'partition assigned back not read again from its finished watermark');
    log.info('partition assigned back after the group forgot this member; its finished messages are kept', {
      topic: work.topic,
      partition: work.partition,
      finished: finished.toString(),
    });
  }

  /**
   * A partition assigned back by a rejoin that forgot this member is fetched from the group's committed
   * offset, which lags what was finished here when the commits were refused. Its first batch since starts
   * at that committed offset or later: starting below the finished watermark, the messages before it are
   * skipped as already accepted, and the watermark is committed from there; starting at or past it
   * (another member owned the partition meanwhile and committed further), nothing is skipped, so a
   * committed offset never moves back.
   */
  function skipFinishedBefore(work: PartitionWork, first: KafkaMessage | undefined): void {
    const id = partitionId(work.topic, work.partition);
    const finished = finishedBefore.get(id);
    if (finished === undefined || first === undefined) return;
    finishedBefore.delete(id);
    if (BigInt(first.offset) >= finished) return;
    work.lanes.offsets.advance(finished);
    commits.schedule();
  }

  function settleEntry(work: PartitionWork, entry: Entry): Promise<boolean> {
    return settleUntilDone(
      options.settle,
      {
        topic: work.topic,
        partition: work.partition,
        message: entry.message,
        // Harmless, as documented: a rebalance it meets is seen by the group's own events, which revoke.
        heartbeat: () =>
          heartbeat().catch((error: unknown) => {
            log.debug('heartbeat failed', { topic: work.topic, reason: errorMessage(error) });
          }),
        signal: work.controller.signal,
        stopSignal: work.stopSignal,
        shouldStop: () => closing.signal.aborted || work.revoked,
        beforeRetry: async () => undefined,
      },
      { retry: options.retry, log },
    );
  }

  /** Handles one message of a lane; once it is finished, the lane's next message may start. */
  async function runEntry(work: PartitionWork, key: string | null, lane: Lane, entry: Entry): Promise<void> {
    try {
      if (!(await settleEntry(work, entry)) || work.revoked) return;
      work.lanes.finished(lane, entry);
      countBuffered(-1);
      // Before the half-empty buffer resumes the partition: one paused is moved back by a seek (readAgainIfDue).
      readAgainIfDue(work);
      if (work.lanes.isHalfEmpty && !closing.signal.aborted) halfEmpty(work);
      commits.schedule();
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

  return {
    async eachBatch(payload) {
      heartbeat = payload.heartbeat;
      commits.use((offsets) => payload.commitOffsetsIfNecessary(offsets));
      if (closing.signal.aborted) return;
      const { batch } = payload;
      // Fetched before a rebalance and handed over after it, of a partition that moved: its new owner
      // reads it. Taken in here, it would leave offsets behind that skip messages were it assigned back.
      if (memberId !== undefined && !assigned.has(partitionId(batch.topic, batch.partition))) return;
      // Fetched before a seek (KafkaJS's hasSeekOffset): the partition's next fetch starts where it moved.
      if (payload.isStale()) return;
      const work = workFor(batch.topic, batch.partition);
      fetching.batchCame(work);
      skipFinishedBefore(work, batch.messages[0]);
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
        commits.schedule();
      }
      work.readToEnd = readToEnd(lanes, batch.highWatermark);
      if (read.next !== undefined) {
        const next = fetching.readBackFromEnd(work, read.next);
        payload.resolveOffset((next - 1n).toString());
        work.position = next;
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
      for (const id of [...finishedBefore.keys()]) if (!assigned.has(id)) finishedBefore.delete(id);
      for (const work of [...partitions.values()]) {
        if (forgotten) {
          revoke(work, 'the group forgot this member');
          keepFinished(work, true);
        } else if (!assigned.has(partitionId(work.topic, work.partition))) {
          revoke(work, 'assigned to another consumer');
        } else pauseAgain(work);
      }
    },

    onCrash() {
      for (const work of [...partitions.values()]) {
        // The stopped consumer's paused partitions went with it: the one restarted has none to resume.
        work.paused = false;
        revoke(work, 'the consumer crashed');
        // The restarted consumer fetches from the committed offset: nothing of before is handed over.
        keepFinished(work, false);
      }
    },

    async drain() {
      closing.abort();
      commits.stop();
      for (const work of partitions.values()) stopReadingPast(work);
      try {
        consumer.pause(options.topics.map((topic) => ({ topic })));
      } catch {
        // Not running (never started, or crashed): nothing is being fetched.
      }
      await drainWithin({
        running,
        drainTimeoutMs: options.drainTimeoutMs,
        abort: () => {
          for (const work of partitions.values()) work.controller.abort();
        },
        log,
      });
      await commits.flush();
    },
  };
}

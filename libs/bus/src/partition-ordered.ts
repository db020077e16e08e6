import type { EachBatchPayload, KafkaMessage } from 'kafkajs';
import type { Logger } from '@urs/logging';
import { errorMessage } from '@urs/resilience';
import { drainWithin } from './drain';
import type { MessageWork } from './handle';

export interface PartitionOrderedOptions {
  settle: (work: MessageWork) => Promise<boolean>;
  /** Whether handled offsets are committed (ConsumerRunnerOptions.commitOffsets). */
  commit: boolean;
  /** On close, how long the message in flight may take to finish, then to return once aborted, ms. */
  drainTimeoutMs: number;
  log: Logger;
}

export interface PartitionOrderedConsumption {
  /**
   * KafkaJS's eachBatch: one message of the partition at a time, in offset order, heartbeating every second
   * while it is handled (see HEARTBEAT_EVERY_MS).
   */
  eachBatch(payload: EachBatchPayload): Promise<void>;
  /**
   * Stops intake at once (a message failing from now on is given up, uncommitted), then lets the messages in
   * flight finish within drainTimeoutMs, aborts their handlers' `signal`, and waits as long again. A message
   * still not returned then is let go of: its batch ends without it, so it stays uncommitted, and KafkaJS's
   * disconnect, which waits for the batch, goes on. Runs alongside disconnect; never rejects.
   */
  drain(): Promise<void>;
}

/**
 * Group coordinator answers that the member's generation is over: the group rebalances, or no longer knows
 * the member or its generation. KafkaJS rejoins on them; a batch under way is stale.
 */
const GROUP_MOVED_TYPES: ReadonlySet<string> = new Set([
  'REBALANCE_IN_PROGRESS',
  'UNKNOWN_MEMBER_ID',
  'ILLEGAL_GENERATION',
]);

/**
 * How often a batch heartbeats while it is handled, ms. KafkaJS heartbeats only when asked, and its fetch loop
 * waits for the batch: a handler waiting longer than the session timeout would get the member evicted, and its
 * message handled again after the rejoin (or by another member at once). KafkaJS sends a heartbeat at most once
 * per heartbeat interval (3 s by default), so asking more often costs nothing.
 */
const HEARTBEAT_EVERY_MS = 1_000;

/** Causes followed at most this deep (a cause chain is short; a cycle must not loop). */
const MAX_CAUSE_DEPTH = 5;

/** Whether `error`, or one of its causes, is one of GROUP_MOVED_TYPES. */
function groupMovedOn(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > MAX_CAUSE_DEPTH) return false;
  const e = error as { type?: unknown; cause?: unknown };
  if (typeof e.type === 'string' && GROUP_MOVED_TYPES.has(e.type)) return true;
  return e.cause !== error && groupMovedOn(e.cause, depth + 1);
}

/**
 * Ordering 'partition': each batch's messages handled one after the other, each offset resolved (and
 * committed, at KafkaJS's autoCommit pace) once its message is settled. A message given up (the runner
 * stopping, the partition revoked) ends the batch there, so nothing after it is resolved.
 */
export function createPartitionOrderedConsumption(
  options: PartitionOrderedOptions,
): PartitionOrderedConsumption {
  const { commit, log } = options;
  /** Aborted when close starts: cuts a retry's pause short, and no message starts after it. */
  const stopping = new AbortController();
  /** The handlers' `signal`: aborted when close's drain time has passed. */
  const aborted = new AbortController();
  /**
   * Of each message in flight, what ends the wait for it when close lets go of it. One per message, not one
   * promise every message races against: each race would leave a reaction on it for the runner's lifetime.
   */
  const letGo = new Set<(done: false) => void>();
  /** The messages being handled, so drain can wait for them. */
  const running = new Set<Promise<boolean>>();

  /**
   * A heartbeat of the batch, for the bus's own use and its handlers': it never rejects. An answer that the
   * group moves on without this member's batch (a rebalance, a generation or member it no longer knows)
   * aborts `moved`, which gives the message under way up, unfinished, and ends the batch: KafkaJS rejoins
   * once it returns. Any other failure (the broker away) leaves the message going: should the group move the
   * partition meanwhile, the next heartbeat says so.
   */
  function heartbeatOf(payload: EachBatchPayload, moved: AbortController): () => Promise<void> {
    return () =>
      payload.heartbeat().catch((error: unknown) => {
        const where = { topic: payload.batch.topic, partition: payload.batch.partition };
        if (!groupMovedOn(error)) {
          log.debug('heartbeat failed', { ...where, reason: errorMessage(error) });
          return;
        }
        if (!moved.signal.aborted) {
          log.info('group rebalancing: the message under way is given up, unfinished, to its next owner', {
            ...where,
            reason: errorMessage(error),
          });
        }
        moved.abort();
      });
  }

  /**
   * What ends a batch's messages, shared by all of them: `moved` (the group moved on without the batch), and
   * `signal` (the handlers': close's drain time passed, or moved) and `stopSignal` (close started, or moved).
   * Made once per batch and let go of when it ends. The runner-long signals carry one listener each, whatever
   * the batches in flight (see `batches`): not one per batch (AbortSignal.any, which Node keeps in their
   * dependants, nodejs/node#55351; nor a listener each, past Node's 10 with as many partitions consumed at once).
   */
  interface BatchSignals {
    moved: AbortController;
    signal: AbortController;
    stopSignal: AbortController;
  }

  /** The batches in eachBatch, so that close reaches each of them from the one listener of its signals. */
  const batches = new Set<BatchSignals>();
  stopping.signal.addEventListener('abort', () => {
    for (const batch of batches) batch.stopSignal.abort();
  });
  aborted.signal.addEventListener('abort', () => {
    for (const batch of batches) batch.signal.abort();
  });

  function batchSignals(): BatchSignals {
    const signals: BatchSignals = {
      moved: new AbortController(),
      signal: new AbortController(),
      stopSignal: new AbortController(),
    };
    // Short-lived, as the batch: its listener goes with it.
    signals.moved.signal.addEventListener('abort', () => {
      signals.signal.abort();
      signals.stopSignal.abort();
    });
    if (stopping.signal.aborted) signals.stopSignal.abort();
    if (aborted.signal.aborted) signals.signal.abort();
    batches.add(signals);
    return signals;
  }

  function releaseSignals(signals: BatchSignals): void {
    batches.delete(signals);
  }

  /** Handles one message; resolves true when done (handled or dead-lettered), false when stopped first. */
  function handleOne(
    payload: EachBatchPayload,
    message: KafkaMessage,
    signals: BatchSignals,
    heartbeat: () => Promise<void>,
  ): Promise<boolean> {
    const { moved } = signals;
    return options.settle({
      topic: payload.batch.topic,
      partition: payload.batch.partition,
      message,
      heartbeat,
      signal: signals.signal.signal,
      stopSignal: signals.stopSignal.signal,
      shouldStop: () => moved.signal.aborted || batchOver(payload),
      beforeRetry: heartbeat,
    });
  }

  /** Whether the batch is to end: the runner stopping, or KafkaJS's run or the batch's generation over. */
  function batchOver(payload: EachBatchPayload): boolean {
    return stopping.signal.aborted || !payload.isRunning() || payload.isStale();
  }

  /** handleOne, or false once close let go of the message; what it does after that is not waited for. */
  async function settled(
    payload: EachBatchPayload,
    message: KafkaMessage,
    signals: BatchSignals,
    heartbeat: () => Promise<void>,
  ): Promise<boolean> {
    const settling = handleOne(payload, message, signals, heartbeat);
    running.add(settling);
    let release: (done: false) => void = () => undefined;
    try {
      return await new Promise<boolean>((resolve, reject) => {
        release = resolve;
        letGo.add(release);
        const where = {
          topic: payload.batch.topic,
          partition: payload.batch.partition,
          offset: message.offset,
        };
        settling.then(
          (done) => {
            // Let go of by close, its handler ignored the abort and returned since: its batch ended without it,
            // so it stays uncommitted whatever it did. Told, as a handler that does not stop is a bug.
            if (!running.has(settling)) {
              log.warn('handler returned after close let go of its message; left uncommitted', {
                ...where,
                settled: done,
              });
            }
            resolve(done);
          },
          (error: unknown) => {
            // Let go of by close, it failed later (its dead letter not written): nobody awaits it now.
            if (!running.has(settling)) {
              log.warn('message let go of on close failed', { ...where, reason: errorMessage(error) });
            }
            reject(error);
          },
        );
      });
    } finally {
      letGo.delete(release);
      running.delete(settling);
    }
  }

  async function eachBatch(payload: EachBatchPayload): Promise<void> {
    const signals = batchSignals();
    const heartbeat = heartbeatOf(payload, signals.moved);
    // The group is told the member lives however long a handler takes; one that meets a rebalance gives the
    // message under way up (see heartbeatOf).
    const heartbeating = setInterval(() => void heartbeat(), HEARTBEAT_EVERY_MS);
    try {
      for (const message of payload.batch.messages) {
        if (signals.moved.signal.aborted || batchOver(payload)) break;
        const done = await settled(payload, message, signals, heartbeat);
        if (!done) break;
        payload.resolveOffset(message.offset);
        if (commit) await payload.commitOffsetsIfNecessary();
        await payload.heartbeat();
      }
      if (commit) await payload.commitOffsetsIfNecessary();
    } finally {
      clearInterval(heartbeating);
      releaseSignals(signals);
    }
  }

  return {
    eachBatch,
    async drain() {
      stopping.abort();
      const returned = await drainWithin({
        running,
        drainTimeoutMs: options.drainTimeoutMs,
        abort: () => aborted.abort(),
        log,
      });
      if (!returned) for (const release of letGo) release(false);
    },
  };
}

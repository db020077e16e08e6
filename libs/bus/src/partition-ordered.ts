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
  /** KafkaJS's eachBatch: one message of the partition at a time, in offset order. */
  eachBatch(payload: EachBatchPayload): Promise<void>;
  /** Whether a batch is being handled: KafkaJS's fetch loop waits for it, so nothing is asked meanwhile. */
  busy(): boolean;
  /**
   * Stops intake at once (a message failing from now on is given up, uncommitted), then lets the messages in
   * flight finish within drainTimeoutMs, aborts their handlers' `signal`, and waits as long again. A message
   * still not returned then is let go of: its batch ends without it, so it stays uncommitted, and KafkaJS's
   * disconnect, which waits for the batch, goes on. Runs alongside disconnect; never rejects.
   */
  drain(): Promise<void>;
  /**
   * KafkaJS stopped the consumer (its CRASH): the batches under way are of a group membership that is gone,
   * and the restarted consumer handles their partitions anew. Their messages are given up (handlers'
   * `signal` aborted, held retries ended) and, whatever a handler does next, they resolve, commit and
   * heartbeat nothing more through the old membership: only the restarted consumer commits.
   */
  fence(): void;
}

/** The batches handed over by one run of the consumer (KafkaJS builds a membership anew at each restart). */
interface Run {
  /** Aborted when the consumer crashed (see fence): this run's work commits nothing more. */
  fenced: AbortController;
  /** Its handlers' `signal`: aborted when it is fenced, or when close's drain time has passed. */
  handlers: AbortController;
  /** Cuts its retries' pauses short: aborted when it is fenced, or when close starts. */
  pauses: AbortController;
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
  /** Aborted when close starts: no message starts after it. */
  const stopping = new AbortController();
  /** The consumer's run of now; replaced when it crashes. */
  let current = newRun();
  /**
   * Of each message in flight, what ends the wait for it when close lets go of it. One per message, not one
   * promise every message races against: each race would leave a reaction on it for the runner's lifetime.
   */
  const letGo = new Set<(done: false) => void>();
  /** The messages being handled, so drain can wait for them. */
  const running = new Set<Promise<boolean>>();
  /** Batches in eachBatch. */
  let handling = 0;

  function newRun(): Run {
    const run: Run = {
      fenced: new AbortController(),
      handlers: new AbortController(),
      pauses: new AbortController(),
    };
    if (stopping.signal.aborted) run.pauses.abort();
    return run;
  }

  /** Whether the batch's next message must not start: close started, the run fenced, or KafkaJS stopped it. */
  function stopped(run: Run, payload: EachBatchPayload): boolean {
    return stopping.signal.aborted || run.fenced.signal.aborted || !payload.isRunning() || payload.isStale();
  }

  /** The batch's heartbeat, none once its run is fenced: the restarted consumer's membership is the live one. */
  function heartbeat(run: Run, payload: EachBatchPayload): Promise<void> {
    return run.fenced.signal.aborted ? Promise.resolve() : payload.heartbeat();
  }

  /** Handles one message; resolves true when done (handled or dead-lettered), false when stopped first. */
  function handleOne(run: Run, payload: EachBatchPayload, message: KafkaMessage): Promise<boolean> {
    return options.settle({
      topic: payload.batch.topic,
      partition: payload.batch.partition,
      message,
      heartbeat: () => heartbeat(run, payload),
      signal: run.handlers.signal,
      stopSignal: run.pauses.signal,
      shouldStop: () => stopped(run, payload),
      // A heartbeat that fails (the broker away) must not end a message's hold on a Kafka fault: it goes on being
      // tried; should the group move the partition meanwhile, shouldStop gives it up to the new owner.
      beforeRetry: () =>
        heartbeat(run, payload).catch((error: unknown) => {
          log.debug('heartbeat failed before a retry', { reason: errorMessage(error) });
        }),
    });
  }

  /** handleOne, or false once close let go of the message; what it does after that is not waited for. */
  async function settled(run: Run, payload: EachBatchPayload, message: KafkaMessage): Promise<boolean> {
    const settling = handleOne(run, payload, message);
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

  /**
   * Each step through KafkaJS is asked of the run's own membership, so each is preceded by a look at the fence:
   * a message finished after its consumer crashed is the restarted consumer's to handle and commit (again).
   */
  async function eachBatch(payload: EachBatchPayload): Promise<void> {
    const run = current;
    for (const message of payload.batch.messages) {
      if (stopped(run, payload)) break;
      const done = await settled(run, payload, message);
      if (!done || run.fenced.signal.aborted) break;
      payload.resolveOffset(message.offset);
      if (commit) await payload.commitOffsetsIfNecessary();
      if (run.fenced.signal.aborted) break;
      await payload.heartbeat();
    }
    if (commit && !run.fenced.signal.aborted) await payload.commitOffsetsIfNecessary();
  }

  return {
    async eachBatch(payload) {
      handling++;
      try {
        await eachBatch(payload);
      } finally {
        handling--;
      }
    },
    busy: () => handling > 0,
    async drain() {
      stopping.abort();
      current.pauses.abort();
      const returned = await drainWithin({
        running,
        drainTimeoutMs: options.drainTimeoutMs,
        // Runs fenced before were aborted then.
        abort: () => current.handlers.abort(),
        log,
      });
      if (!returned) for (const release of letGo) release(false);
    },
    fence() {
      current.fenced.abort();
      current.handlers.abort();
      current.pauses.abort();
      current = newRun();
    },
  };
}

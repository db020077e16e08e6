import type { EachBatchPayload, KafkaMessage } from 'kafkajs';
import type { MessageWork } from './handle';

export interface PartitionOrderedOptions {
  settle: (work: MessageWork) => Promise<boolean>;
  /** Whether handled offsets are committed (ConsumerRunnerOptions.commitOffsets). */
  commit: boolean;
}

export interface PartitionOrderedConsumption {
  /** KafkaJS's eachBatch: one message of the partition at a time, in offset order. */
  eachBatch(payload: EachBatchPayload): Promise<void>;
  /** Whether a batch is being handled: KafkaJS's fetch loop waits for it, so nothing is asked meanwhile. */
  busy(): boolean;
  /** The runner is stopping: a message failing from now on is given up, uncommitted. */
  stop(): void;
}

/**
 * Ordering 'partition': each batch's messages handled one after the other, each offset resolved (and
 * committed, at KafkaJS's autoCommit pace) once its message is settled. A message given up (the runner
 * stopping, the partition revoked) ends the batch there, so nothing after it is resolved.
 */
export function createPartitionOrderedConsumption(
  options: PartitionOrderedOptions,
): PartitionOrderedConsumption {
  const { commit } = options;
  const abort = new AbortController();
  /** Batches in eachBatch. */
  let handling = 0;

  /** Handles one message; resolves true when done (handled or dead-lettered), false when stopped first. */
  function handleOne(payload: EachBatchPayload, message: KafkaMessage): Promise<boolean> {
    return options.settle({
      topic: payload.batch.topic,
      partition: payload.batch.partition,
      message,
      heartbeat: () => payload.heartbeat(),
      stopSignal: abort.signal,
      shouldStop: () => abort.signal.aborted || !payload.isRunning() || payload.isStale(),
      beforeRetry: () => payload.heartbeat(),
    });
  }

  async function eachBatch(payload: EachBatchPayload): Promise<void> {
    for (const message of payload.batch.messages) {
      if (!payload.isRunning() || payload.isStale()) break;
      const done = await handleOne(payload, message);
      if (!done) break;
      payload.resolveOffset(message.offset);
      if (commit) await payload.commitOffsetsIfNecessary();
      await payload.heartbeat();
    }
    if (commit) await payload.commitOffsetsIfNecessary();
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
    stop() {
      abort.abort();
    },
  };
}

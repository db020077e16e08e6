import type { EachBatchPayload, KafkaMessage } from 'kafkajs';
import { silentLogger } from '@urs/logging';
import { createPartitionOrderedConsumption } from '../src/partition-ordered';

/** A batch of `offsets` whose heartbeat fails as with the broker away; what it resolves goes to `resolved`. */
function batchWithBrokerAway(offsets: string[], resolved: string[]): EachBatchPayload {
  return {
    batch: {
      topic: 'batches',
      partition: 0,
      messages: offsets.map((offset) => ({ offset }) as KafkaMessage),
    },
    isRunning: () => true,
    isStale: () => false,
    resolveOffset: (offset: string) => void resolved.push(offset),
    commitOffsetsIfNecessary: async () => undefined,
    heartbeat: async () => {
      throw new Error('Connection error: connect ECONNREFUSED 127.0.0.1:9092');
    },
  } as unknown as EachBatchPayload;
}

describe('createPartitionOrderedConsumption', () => {
  it("should keep a message's retries going when the heartbeat before a retry fails, the broker away", async () => {
    const resolved: string[] = [];
    let attempts = 0;
    const consumption = createPartitionOrderedConsumption({
      // A message held on a Kafka fault: tried three times, a heartbeat before each retry.
      settle: async (work) => {
        for (attempts = 1; attempts < 3; attempts++) await work.beforeRetry();
        return true;
      },
      commit: false,
      drainTimeoutMs: 1_000,
      log: silentLogger,
    });
    // The heartbeat after the message (KafkaJS's, between messages) may fail the batch; the retries' may not.
    await consumption.eachBatch(batchWithBrokerAway(['0'], resolved)).catch(() => undefined);
    expect(attempts).toBe(3);
    expect(resolved).toEqual(['0']);
  });
});

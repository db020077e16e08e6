import type { EachBatchPayload, KafkaMessage } from 'kafkajs';
import { KafkaJSProtocolError } from 'kafkajs';
import { silentLogger } from '@urs/logging';
import { UrsError, retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import { createMessageProcessor, type MessageHandler } from '../src/handle';
import { createPartitionOrderedConsumption } from '../src/partition-ordered';
import type { Publisher } from '../src/publisher';
import { heldMessages, messageWork } from './work';

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

/** The group's answer to a heartbeat while it rebalances, as KafkaJS rejects with it. */
const rebalancing = (): Error =>
  new KafkaJSProtocolError(
    Object.assign(new Error('The group is rebalancing, so a rejoin is needed'), {
      type: 'REBALANCE_IN_PROGRESS',
      code: 27,
      retriable: false,
    }),
  );

/**
 * `handler` of topic `tenants` under partition ordering, handed a batch of one message (offset 7) whose
 * heartbeats reject as during a rebalance: what the batch resolved and how the message ended are returned.
 */
async function batchDuringRebalance(handler: MessageHandler<unknown>) {
  const metrics = new Registry({ processMetrics: false });
  const handled = metrics.counter('handled_total', 'handled');
  const settle = createMessageProcessor({
    service: 'test',
    subscriptions: new Map([
      ['tenants', { topic: 'tenants', contract: 'urs/tenant-record', tombstones: true, handler }],
    ]),
    publisher: { send: async () => undefined } as unknown as Publisher,
    dlqTopic: 'dlq',
    log: silentLogger,
    retry: retryPolicy({ maxAttempts: 3, initialDelayMs: 5, maxDelayMs: 5 }),
    held: heldMessages(),
    handled,
    seconds: metrics.histogram('handler_seconds', 'seconds'),
  });
  const consumption = createPartitionOrderedConsumption({
    settle,
    commit: false,
    drainTimeoutMs: 1_000,
    log: silentLogger,
  });
  const resolved: string[] = [];
  let heartbeats = 0;
  const ended = consumption.eachBatch({
    batch: {
      topic: 'tenants',
      partition: 0,
      messages: [messageWork({ topic: 'tenants', offset: '7' }).message],
    },
    isRunning: () => true,
    isStale: () => false,
    resolveOffset: (offset: string) => void resolved.push(offset),
    commitOffsetsIfNecessary: async () => undefined,
    heartbeat: async () => {
      heartbeats++;
      throw rebalancing();
    },
  } as unknown as EachBatchPayload);
  return { ended, resolved, handled, heartbeats: () => heartbeats };
}

describe('createPartitionOrderedConsumption during a rebalance', () => {
  it('should give a held message up unfinished once the heartbeat before its retry meets a rebalance', async () => {
    let calls = 0;
    const run = await batchDuringRebalance(async () => {
      calls++;
      throw new UrsError('REDIS_UNAVAILABLE', 'Redis is unreachable', { infrastructure: true });
    });
    await expect(run.ended).resolves.toBeUndefined();
    expect(calls).toBe(1);
    expect(run.heartbeats()).toBe(1);
    expect(run.resolved).toEqual([]);
  });

  it("should resolve the handler's heartbeat and abort its signal, the message given up, not failed", async () => {
    let heartbeat: Promise<void> | undefined;
    let aborted: boolean | undefined;
    const run = await batchDuringRebalance(async (message) => {
      heartbeat = message.heartbeat?.();
      await heartbeat;
      aborted = message.signal?.aborted;
      if (aborted) throw new Error('stopped: the partition may have moved');
    });
    await expect(run.ended).resolves.toBeUndefined();
    await expect(heartbeat).resolves.toBeUndefined();
    expect(aborted).toBe(true);
    expect(run.resolved).toEqual([]);
    expect(run.handled.get({ topic: 'tenants', outcome: 'retried' })).toBe(0);
  });
});

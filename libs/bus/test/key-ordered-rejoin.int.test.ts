import type { Admin, Kafka } from 'kafkajs';
import { createConsumerRunner, createPublisher, type ConsumerRunner, type Publisher } from '@urs/bus';
import { silentLogger } from '@urs/logging';
import { retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import {
  createTestKafka,
  createUniqueTopics,
  deleteTopics,
  tenantRecord,
  uniqueId,
  waitFor,
} from '@urs/testkit';

/** The broker's smallest session timeout by default (group.min.session.timeout.ms), ms. */
const SESSION_TIMEOUT_MS = 6_000;

/**
 * Blocks this process, timers and sockets included, for `ms`: to the group coordinator the member stops
 * heartbeating, as it does while the broker stalls.
 */
function stallProcess(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

describe('createConsumerRunner with ordering by key, forgotten by its group', () => {
  let kafka: Kafka;
  let admin: Admin;
  let topics: string[];
  let publisher: Publisher;
  let runner: ConsumerRunner | undefined;

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    topics = await createUniqueTopics(kafka, [{ prefix: 'rejoin' }, { prefix: 'rejoin-dlq' }]);
    publisher = await createPublisher(kafka);
    admin = kafka.admin();
    await admin.connect();
  });

  afterEach(async () => {
    await runner?.close();
    runner = undefined;
    await publisher.close();
    await admin.disconnect();
    await deleteTopics(kafka, topics);
  });

  async function produce(tenantIds: string[]): Promise<void> {
    const producer = kafka.producer();
    await producer.connect();
    try {
      await producer.send({
        topic: topics[0] as string,
        messages: tenantIds.map((tenantId) => ({
          key: tenantId,
          value: JSON.stringify(tenantRecord(tenantId)),
          partition: 0,
        })),
      });
    } finally {
      await producer.disconnect();
    }
  }

  async function memberIds(groupId: string): Promise<string[]> {
    const { groups } = await admin.describeGroups([groupId]);
    return groups.flatMap((group) => group.members.map((member) => member.memberId));
  }

  it('should not hand finished messages to the handler again once the session expired and the same partition is assigned back', async () => {
    const groupId = uniqueId('group');
    const seen: string[] = [];
    let stalled = false;
    runner = createConsumerRunner({
      kafka,
      service: 'test',
      groupId,
      subscriptions: [
        {
          topic: topics[0] as string,
          contract: 'urs/tenant-record',
          handler: async (message) => {
            const tenantId = message.value?.tenantId ?? 'null';
            seen.push(tenantId);
            if (tenantId !== 'stall' || stalled) return;
            stalled = true;
            stallProcess(SESSION_TIMEOUT_MS + 4_000);
          },
        },
      ],
      publisher,
      dlqTopic: topics[1] as string,
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
      retry: retryPolicy({ maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 20 }),
      ordering: 'key',
      // Nothing finished is committed before the member is forgotten, as when the broker stalls.
      commitIntervalMs: 60_000,
      sessionTimeoutMs: SESSION_TIMEOUT_MS,
    });
    await runner.start();
    await produce(['t0', 't1']);
    await waitFor(() => seen.length >= 2, { timeoutMs: 30_000, description: 't0 and t1 handled' });
    const [before] = await memberIds(groupId);

    await produce(['stall']);
    await waitFor(() => stalled, { timeoutMs: 30_000, description: 'the process stalled' });
    await produce(['after']);
    await waitFor(() => seen.includes('after'), { timeoutMs: 60_000, description: 'after handled' });

    const after = await memberIds(groupId);
    expect(after).toHaveLength(1);
    expect(after[0]).not.toBe(before);
    expect(seen).toEqual(['t0', 't1', 'stall', 'after']);
  });
});

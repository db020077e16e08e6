import type { Kafka } from 'kafkajs';
import {
  createConsumerRunner,
  createPublisher,
  lastOffsets,
  topicOffsets,
  type ConsumerRunner,
  type Publisher,
} from '@urs/bus';
import { silentLogger } from '@urs/logging';
import { createDeadLetterLedger, createTenantStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import {
  createTestKafka,
  createUniqueTopics,
  deleteTopics,
  readDeadLetters,
  tenantRecord,
  testRedisPerTest,
  uniqueId,
  waitFor,
} from '@urs/testkit';
import { createProfileCache, tenantsSubscription } from '../src/profiles';

/**
 * A record of `urs.tenants` the runner dead-letters never reaches the profiles' handler: when it is its
 * partition's last, the profiles must still count it as read, or they would read every profile from Redis
 * until the next record on that partition.
 */
describe('tenantsSubscription against the real Kafka', () => {
  const redis = testRedisPerTest();
  let kafka: Kafka;
  let topics: [string, string];
  let publisher: Publisher;
  let runner: ConsumerRunner | undefined;

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    topics = (await createUniqueTopics(kafka, [
      { prefix: 'tenants', numPartitions: 2 },
      { prefix: 'dlq' },
    ])) as [string, string];
    publisher = await createPublisher(kafka);
  });

  afterEach(async () => {
    await runner?.close();
    runner = undefined;
    await publisher.close();
    await deleteTopics(kafka, topics);
  });

  it("should catch up when a partition's last record is dead-lettered", async () => {
    const [tenantsTopic, dlq] = topics;
    const producer = kafka.producer();
    await producer.connect();
    try {
      await producer.send({
        topic: tenantsTopic,
        messages: [
          { key: 't1', value: JSON.stringify(tenantRecord('t1')), partition: 0 },
          { key: 't2', value: '{"not": "closed"', partition: 0 },
          { key: 't3', value: JSON.stringify(tenantRecord('t3')), partition: 1 },
        ],
      });
    } finally {
      await producer.disconnect();
    }
    const profiles = createProfileCache({
      tenants: createTenantStore(redis.client, redis.prefix),
      logger: silentLogger,
    });
    runner = createConsumerRunner({
      kafka,
      service: 'scorer',
      groupId: uniqueId('profiles'),
      commitOffsets: false,
      deadLetters: createDeadLetterLedger(redis.client, redis.prefix),
      subscriptions: [tenantsSubscription(tenantsTopic, profiles)],
      publisher,
      dlqTopic: dlq,
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
    });
    await runner.start();
    profiles.expectEnd(lastOffsets(await topicOffsets(kafka, tenantsTopic)));

    const letters = await readDeadLetters(kafka, dlq, 1);
    expect(letters.map((letter) => [letter.key, letter.error.code])).toEqual([['t2', 'MESSAGE_NOT_JSON']]);
    await waitFor(() => profiles.caughtUp(), { timeoutMs: 30_000 });
    expect(profiles.size()).toBe(2);
  });
});

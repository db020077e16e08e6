// The pinned Kafka broker and the Redis server, exercised through the same clients the services use
// (KafkaJS 2.2.4, ioredis 5): produce, consume in a group, commit, restart from the committed offset.
import type { Consumer, Kafka, Producer } from 'kafkajs';
import {
  createTestKafka,
  createTestRedis,
  createUniqueTopics,
  deleteTopics,
  uniqueId,
  waitFor,
  type TestRedis,
} from '@urs/testkit';

interface Received {
  offset: string;
  value: string;
}

/** Starts a consumer of `topic` in `groupId` that records each message and commits nothing by itself. */
async function startConsumer(
  kafka: Kafka,
  groupId: string,
  topic: string,
  into: Received[],
): Promise<Consumer> {
  // disconnect() waits for the fetch in flight, which the broker holds up to maxWaitTimeInMs (default 5000).
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 250 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ message }) => {
      into.push({ offset: message.offset, value: message.value?.toString() ?? '' });
    },
  });
  return consumer;
}

describe('kafka broker', () => {
  let kafka: Kafka;
  let producer: Producer;
  const topics: string[] = [];

  beforeAll(async () => {
    kafka = createTestKafka();
    producer = kafka.producer();
    await producer.connect();
  });

  afterAll(async () => {
    await producer.disconnect();
    await deleteTopics(kafka, topics);
  });

  test('consumer group should resume from the committed offset after a restart', async () => {
    const [topic] = await createUniqueTopics(kafka, [{ prefix: 'platform-resume' }]);
    if (topic === undefined) throw new Error('no topic created');
    topics.push(topic);
    const groupId = uniqueId('platform-group');
    const send = (values: string[]) =>
      producer.send({ topic, messages: values.map((value) => ({ key: 'k', value })) });

    await send(['m1', 'm2', 'm3']);
    const first: Received[] = [];
    const consumerA = await startConsumer(kafka, groupId, topic, first);
    await waitFor(() => first.length >= 3, { timeoutMs: 30_000, description: 'first consumer got m1..m3' });
    // Only m1 and m2 count as done: the committed offset is the NEXT offset to read.
    await consumerA.commitOffsets([{ topic, partition: 0, offset: '2' }]);
    await consumerA.disconnect();
    expect(first.map((m) => m.value)).toEqual(['m1', 'm2', 'm3']);

    const admin = kafka.admin();
    await admin.connect();
    try {
      const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
      expect(committed?.partitions).toEqual([expect.objectContaining({ partition: 0, offset: '2' })]);

      await send(['m4', 'm5']);
      const second: Received[] = [];
      const consumerB = await startConsumer(kafka, groupId, topic, second);
      await waitFor(() => second.some((m) => m.value === 'm5'), {
        timeoutMs: 30_000,
        description: 'restarted consumer got m5',
      });
      await consumerB.commitOffsets([{ topic, partition: 0, offset: '5' }]);
      await consumerB.disconnect();

      // One partition delivers in offset order, so a redelivered m1 or m2 would appear before m3.
      expect(second).toEqual([
        { offset: '2', value: 'm3' },
        { offset: '3', value: 'm4' },
        { offset: '4', value: 'm5' },
      ]);
      const [after] = await admin.fetchOffsets({ groupId, topics: [topic] });
      expect(after?.partitions).toEqual([expect.objectContaining({ partition: 0, offset: '5' })]);
    } finally {
      await admin.disconnect();
    }
  });

  test('broker should not create a topic that a client merely asks for', async () => {
    const missing = uniqueId('platform-missing');
    const admin = kafka.admin();
    await admin.connect();
    try {
      await expect(admin.fetchTopicMetadata({ topics: [missing] })).rejects.toThrow(
        /does not host this topic-partition/,
      );
      expect(await admin.listTopics()).not.toContain(missing);
    } finally {
      await admin.disconnect();
    }
  });

  test('createUniqueTopics should create topics with their partitions and config', async () => {
    const [topic] = await createUniqueTopics(kafka, [
      {
        prefix: 'platform-compact',
        numPartitions: 3,
        configEntries: [{ name: 'cleanup.policy', value: 'compact' }],
      },
    ]);
    if (topic === undefined) throw new Error('no topic created');
    topics.push(topic);
    const admin = kafka.admin();
    await admin.connect();
    try {
      const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
      expect(metadata.topics[0]?.partitions).toHaveLength(3);
      const configs = await admin.describeConfigs({
        resources: [{ type: 2, name: topic, configNames: ['cleanup.policy'] }],
        includeSynonyms: false,
      });
      expect(configs.resources[0]?.configEntries).toEqual([
        expect.objectContaining({ configName: 'cleanup.policy', configValue: 'compact' }),
      ]);
    } finally {
      await admin.disconnect();
    }
  });
});

describe('redis server', () => {
  let redis: TestRedis;

  beforeEach(() => {
    redis = createTestRedis(uniqueId('platform'));
  });

  afterEach(async () => {
    await redis.close();
  });

  test('redis should round-trip strings, hashes and expiries under the test prefix', async () => {
    const { client, key } = redis;
    await client.set(key('greeting'), 'hello', 'EX', 60);
    await client.hset(key('device:1'), { score: '42', band: 'medium' });

    expect(await client.get(key('greeting'))).toBe('hello');
    expect(await client.hgetall(key('device:1'))).toEqual({ score: '42', band: 'medium' });
    const ttl = await client.ttl(key('greeting'));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60);
  });

  test('cleanup should delete every key of the prefix and no other key', async () => {
    const other = createTestRedis(uniqueId('platform-other'));
    try {
      for (let i = 0; i < 1200; i += 1) await redis.client.set(redis.key(`k${i}`), String(i));
      await redis.client.set(`b_${redis.prefix}limiter`, 'x');
      await other.client.set(other.key('kept'), 'y');

      expect(await redis.cleanup()).toBe(1201);

      expect(await redis.client.exists(redis.key('k0'), redis.key('k1199'), `b_${redis.prefix}limiter`)).toBe(
        0,
      );
      expect(await other.client.get(other.key('kept'))).toBe('y');
    } finally {
      await other.close();
    }
  });
});

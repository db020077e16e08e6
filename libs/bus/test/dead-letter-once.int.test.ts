import type { Kafka } from 'kafkajs';
import {
  createConsumerRunner,
  createPublisher,
  type ConsumerRunner,
  type DeadLetterLedger,
  type Publisher,
} from '@urs/bus';
import { writeDeadLetterOnce } from '../src/dead-letter-once';
import { silentLogger } from '@urs/logging';
import { closeRedis, createDeadLetterLedger, createRedis } from '@urs/store';
import { Registry } from '@urs/telemetry';
import {
  createTestKafka,
  createTestRedis,
  createUniqueTopics,
  deleteTopics,
  freePort,
  readDeadLetters,
  tenantRecord,
  uniqueId,
  waitFor,
  type TestRedis,
} from '@urs/testkit';

/**
 * Consumers that read a compacted topic from the beginning at every start, each in a group of its own (the
 * pollers' tenant tables, the scorers' profiles), over one Kafka and one Redis.
 */
describe('createConsumerRunner with deadLetters', () => {
  let kafka: Kafka;
  let redis: TestRedis;
  let topics: string[];
  let publisher: Publisher;
  const runners: ConsumerRunner[] = [];

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    redis = createTestRedis();
    topics = await createUniqueTopics(kafka, [{ prefix: 'tenants', numPartitions: 2 }, { prefix: 'dlq' }]);
    publisher = await createPublisher(kafka);
  });

  afterEach(async () => {
    await Promise.all(runners.splice(0).map((runner) => runner.close()));
    await publisher.close();
    await deleteTopics(kafka, topics);
    await redis.close();
  });

  /** A replica reading the whole topic in its own group; answers the runner and the tenants it read. */
  function replica(
    groupId: string,
    deadLetters: DeadLetterLedger,
  ): { runner: ConsumerRunner; seen: string[] } {
    const seen: string[] = [];
    const runner = createConsumerRunner({
      kafka,
      service: 'test',
      groupId,
      commitOffsets: false,
      deadLetters,
      subscriptions: [
        {
          topic: topics[0] as string,
          contract: 'urs/tenant-record',
          tombstones: true,
          fromBeginning: true,
          handler: async (message) => void seen.push(message.value?.tenantId ?? ''),
        },
      ],
      publisher,
      dlqTopic: topics[1] as string,
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
    });
    runners.push(runner);
    return { runner, seen };
  }

  async function deadLettersWritten(dlq: string): Promise<string[]> {
    const admin = kafka.admin();
    await admin.connect();
    try {
      return (await admin.fetchTopicOffsets(dlq)).map((partition) => partition.high);
    } finally {
      await admin.disconnect();
    }
  }

  it('should dead-letter an invalid record once however many replicas read it and restart, each going on past it', async () => {
    const [topic, dlq] = topics as [string, string];
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({
      topic,
      messages: [
        { key: 'a', value: JSON.stringify(tenantRecord('a')), partition: 0 },
        { key: 'b', value: JSON.stringify({ ...tenantRecord('b'), revision: 0 }), partition: 0 },
        { key: 'c', value: JSON.stringify(tenantRecord('c')), partition: 0 },
      ],
    });
    await producer.disconnect();

    // Two replicas starting together (each process has its own ledger), then one of them restarted.
    const first = replica(uniqueId('group'), createDeadLetterLedger(redis.client, redis.prefix));
    const second = replica(uniqueId('group'), createDeadLetterLedger(redis.client, redis.prefix));
    await Promise.all([first.runner.start(), second.runner.start()]);
    // Partition order: the invalid record was settled before the one after it was handled.
    await waitFor(() => first.seen.length === 2 && second.seen.length === 2, { timeoutMs: 30_000 });
    await first.runner.close();
    const restarted = replica(uniqueId('group'), createDeadLetterLedger(redis.client, redis.prefix));
    await restarted.runner.start();
    await waitFor(() => restarted.seen.length === 2, { timeoutMs: 30_000 });

    expect([first.seen, second.seen, restarted.seen]).toEqual([
      ['a', 'c'],
      ['a', 'c'],
      ['a', 'c'],
    ]);
    expect(await deadLettersWritten(dlq)).toEqual(['1']);
    const [letter] = await readDeadLetters(kafka, dlq, 1);
    expect([letter?.key, letter?.offset, letter?.error.code]).toEqual(['b', '1', 'CONTRACT_INVALID']);
  });
});

describe('writeDeadLetterOnce with Redis away', () => {
  it('should write the letter once the ledger has not answered within its timeout, its client queueing the claim', async () => {
    // Nothing listens there: the client queues its commands, as while the service's Redis is away.
    const redis = createRedis({ url: `redis://127.0.0.1:${await freePort()}` });
    redis.on('error', () => undefined);
    try {
      const ledger = createDeadLetterLedger(redis, uniqueId('urs-test:'));
      const source = {
        topic: 'urs.tenants',
        partition: 0,
        offset: '5',
        timestamp: '1764979200000',
        code: 'CONTRACT_INVALID',
      };
      const writes: string[] = [];
      const outcome = writeDeadLetterOnce(
        ledger,
        source,
        async () => void writes.push('letter'),
        silentLogger,
        200,
      );
      // The claim is never answered: without the ledger's timeout the letter would wait for ever.
      const settled = await Promise.race([
        outcome,
        new Promise<string>((resolve) => setTimeout(() => resolve('still waiting'), 10_000).unref()),
      ]);
      expect(settled).toBe('written');
      expect(writes).toEqual(['letter']);
    } finally {
      await closeRedis(redis, 100);
    }
  });
});

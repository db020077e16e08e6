import type { ConsumerConfig, Kafka } from 'kafkajs';
import { silentLogger } from '@urs/logging';
import { createTestKafka, createUniqueTopics, deleteTopics, uniqueId } from '@urs/testkit';
import { readHandledGeneration, readTenantLog } from '../src/rebuild';
import {
  TENANT_GENERATION_HEADER as GENERATION_HEADER,
  TENANT_REVISION_HEADER as REVISION_HEADER,
} from '@urs/contracts';
import { tenantRecord as record } from './fakes';

/** Creates a compacted 6-partition topic like `urs.tenants`, without waiting for its leaders. */
async function createFreshTopic(kafka: Kafka, prefix: string): Promise<string> {
  const topic = uniqueId(prefix);
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({
      topics: [
        {
          topic,
          numPartitions: 6,
          replicationFactor: 1,
          configEntries: [{ name: 'cleanup.policy', value: 'compact' }],
        },
      ],
      waitForLeaders: false,
    });
  } finally {
    await admin.disconnect();
  }
  return topic;
}

/**
 * `kafka` with consumers that ask a session timeout below the broker's minimum (6000 ms): the broker refuses
 * them when they join, an error KafkaJS does not restart the consumer after.
 */
function refusingConsumers(kafka: Kafka): Kafka {
  return Object.assign(Object.create(kafka) as Kafka, {
    consumer: (config: ConsumerConfig) => kafka.consumer({ ...config, sessionTimeout: 4_000 }),
  });
}

async function send(kafka: Kafka, topic: string, messages: { key: string; value: string | null }[]) {
  const producer = kafka.producer();
  await producer.connect();
  try {
    await producer.send({ topic, messages });
  } finally {
    await producer.disconnect();
  }
}

describe('readTenantLog', () => {
  const kafka = createTestKafka();
  const created: string[] = [];
  afterAll(async () => {
    await deleteTopics(kafka, created);
  });

  // The registrar's first start on a new cluster: the topic was created a moment before and its leaders
  // do not answer offset requests yet (NOT_LEADER on KRaft). The read must wait for them, not fail.
  it('should read a tenants topic created a moment before as empty', async () => {
    for (let round = 0; round < 3; round++) {
      const topic = await createFreshTopic(kafka, 'rebuild-fresh');
      created.push(topic);
      expect(await readTenantLog(createTestKafka(), topic, uniqueId('registrar'), silentLogger)).toEqual([]);
    }
  });

  it('should return the last word on each tenant: the newest record, or a deletion with its revision', async () => {
    const topic = await createFreshTopic(kafka, 'rebuild-log');
    created.push(topic);
    const producer = kafka.producer();
    await producer.connect();
    try {
      await producer.send({
        topic,
        messages: [
          { key: 'a', value: JSON.stringify(record('a', 1)) },
          { key: 'b', value: JSON.stringify(record('b', 1)) },
          { key: 'a', value: JSON.stringify(record('a', 3)) },
          { key: 'b', value: null, headers: { [REVISION_HEADER]: '4', [GENERATION_HEADER]: '2' } },
          { key: 'c', value: 'not json' },
        ],
      });
    } finally {
      await producer.disconnect();
    }
    const entries = await readTenantLog(createTestKafka(), topic, uniqueId('registrar'), silentLogger);
    expect(entries).toHaveLength(2);
    expect(entries.find((entry) => entry.tenantId === 'a')?.record?.revision).toBe(3);
    expect(entries.find((entry) => entry.tenantId === 'b')).toEqual({
      tenantId: 'b',
      record: null,
      revision: 4,
      generation: 2,
    });
  });

  it('should fail at once, saying why, when Kafka stops its consumer for good', async () => {
    const topic = await createFreshTopic(kafka, 'rebuild-refused');
    created.push(topic);
    await send(kafka, topic, [{ key: 'a', value: JSON.stringify(record('a', 1)) }]);
    const read = readTenantLog(
      refusingConsumers(createTestKafka()),
      topic,
      uniqueId('registrar'),
      silentLogger,
      30_000,
    );
    // Not after the read's whole timeout with READ_TIMEOUT ("did not reach its end"), which hides the reason:
    // the read ends with whichever comes first, so CONSUMER_STOPPED says the stop ended it.
    await expect(read).rejects.toMatchObject({
      code: 'CONSUMER_STOPPED',
      canRetry: false,
      message: expect.stringMatching(/session timeout/i),
    });
  });
});

describe('readHandledGeneration', () => {
  const kafka = createTestKafka();
  const created: string[] = [];
  afterAll(async () => {
    await deleteTopics(kafka, created);
  });

  const pushOf = (generation: number) =>
    JSON.stringify({ schemaVersion: 1, generation, mode: 'full', tenants: [] });

  it('should return the highest generation before the group committed offset, skipping unreadable pushes', async () => {
    const [topic] = await createUniqueTopics(kafka, [{ prefix: 'registration', numPartitions: 1 }]);
    created.push(topic as string);
    await send(kafka, topic as string, [
      { key: 'director', value: pushOf(3) },
      { key: 'director', value: pushOf(9) },
      { key: 'director', value: '{"generation": 40' },
      { key: 'director', value: pushOf(4) },
      // Not handled yet: it comes again to the registrar, compared with 9.
      { key: 'director', value: pushOf(12) },
    ]);
    const groupId = uniqueId('registrar');
    expect(await readHandledGeneration(createTestKafka(), topic as string, groupId, silentLogger)).toBe(-1);
    const admin = kafka.admin();
    await admin.connect();
    try {
      await admin.setOffsets({
        groupId,
        topic: topic as string,
        partitions: [{ partition: 0, offset: '4' }],
      });
      expect(await readHandledGeneration(createTestKafka(), topic as string, groupId, silentLogger)).toBe(9);
    } finally {
      await admin.deleteGroups([groupId]);
      await admin.disconnect();
    }
  });
});

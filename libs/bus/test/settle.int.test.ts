import type { Admin, Kafka } from 'kafkajs';
import { bootstrapTopics, topicOffsets, topicSpecs, type TopicSpec } from '@urs/bus';
import type { Topics } from '@urs/config';
import { createTestKafka, deleteTopics, uniqueId } from '@urs/testkit';

// A fresh topic on KRaft answers its first requests late. Measured on the local broker before these
// helpers: right after creating the pipeline's 8 topics, half or more of the offset reads failed with
// NOT_LEADER, and about one creation in five failed with UNKNOWN_TOPIC_OR_PARTITION while KafkaJS waited
// for leaders; a single fresh 6-partition topic read without waiting for leaders failed nearly always.
// Several rounds make tests that meet the race nearly every run.
const ROUNDS = 3;

/** Every topic of the pipeline under a unique prefix. */
function pipelineTopics(prefix: string): Topics {
  const name = (topic: string): string => uniqueId(`${prefix}-${topic}`);
  return {
    registration: name('registration'),
    tenants: name('tenants'),
    deviceBatches: name('device-batches'),
    devicesEnriched: name('devices-enriched'),
    deviceScores: name('device-scores'),
    dlq: name('dlq'),
    vmsRiskScores: name('vms-risk-scores'),
    vmsRiskSummary: name('vms-risk-summary'),
  };
}

async function withAdmin<T>(kafka: Kafka, use: (admin: Admin) => Promise<T>): Promise<T> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await use(admin);
  } finally {
    await admin.disconnect();
  }
}

describe('bootstrapTopics', () => {
  const created: string[] = [];
  afterAll(async () => {
    await deleteTopics(createTestKafka(), created);
  });

  it('should leave every new topic answering offset reads of another client at once', async () => {
    for (let round = 0; round < ROUNDS; round++) {
      // The pipeline's own set (8 topics, 55 partitions): the race shows with many partitions at once.
      const specs = topicSpecs(pipelineTopics(`settle-${round}`), 6);
      created.push(...specs.map((spec) => spec.topic));
      const names = await withAdmin(createTestKafka(), (admin) => bootstrapTopics(admin, specs));
      expect(names).toEqual(specs.map((spec) => spec.topic));
      // Plain KafkaJS, no retry of ours: what a service that starts next would do.
      await withAdmin(createTestKafka(), async (admin) => {
        for (const spec of specs) {
          const offsets = await admin.fetchTopicOffsets(spec.topic);
          expect(offsets).toHaveLength(spec.numPartitions);
        }
      });
    }
  });

  it('should create nothing and return no names when every topic exists', async () => {
    const spec: TopicSpec = { topic: uniqueId('settle-existing'), numPartitions: 2, compacted: false };
    created.push(spec.topic);
    const kafka = createTestKafka();
    expect(await withAdmin(kafka, (admin) => bootstrapTopics(admin, [spec]))).toEqual([spec.topic]);
    expect(await withAdmin(kafka, (admin) => bootstrapTopics(admin, [spec]))).toEqual([]);
  });
});

describe('topicOffsets', () => {
  const created: string[] = [];
  afterAll(async () => {
    await deleteTopics(createTestKafka(), created);
  });

  it('should read the offsets of a topic created a moment before by another client', async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const topic = uniqueId('settle-offsets');
      created.push(topic);
      // Not waiting for leaders: the tightest form of the race.
      await withAdmin(createTestKafka(), (admin) =>
        admin.createTopics({
          topics: [{ topic, numPartitions: 6, replicationFactor: 1 }],
          waitForLeaders: false,
        }),
      );
      const offsets = await topicOffsets(createTestKafka(), topic);
      expect(offsets.map((o) => o.partition).sort()).toEqual([0, 1, 2, 3, 4, 5]);
      expect(offsets.every((o) => o.low === '0' && o.high === '0')).toBe(true);
    }
  });

  it('should give up on a topic that never appears with KAFKA_NOT_SETTLED', async () => {
    const missing = uniqueId('settle-missing');
    await expect(topicOffsets(createTestKafka(), missing, { timeoutMs: 1_500 })).rejects.toMatchObject({
      code: 'KAFKA_NOT_SETTLED',
      canRetry: true,
    });
  });
});

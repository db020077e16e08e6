import type { Kafka } from 'kafkajs';
import { bootstrapTopics, type TopicSpec } from '@urs/bus';
import { createTestKafka, deleteTopics, uniqueId } from '@urs/testkit';

// A compacted topic drops a key's tombstone `delete.retention.ms` after compaction reached it. VMS reads
// vms.risk-scores, and the pollers and scorers urs.tenants, from wherever they stopped: a reader away longer
// than that misses the tombstone and keeps a deleted device (or tenant) for good.
const WEEK_MS = String(7 * 24 * 60 * 60 * 1000);

/** The broker's values of `names` for `topic` (its own or the broker's default). */
async function topicConfig(kafka: Kafka, topic: string, names: string[]): Promise<Record<string, string>> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: 2, name: topic, configNames: names }],
    });
    return Object.fromEntries(
      (described.resources[0]?.configEntries ?? []).map((entry) => [entry.configName, entry.configValue]),
    );
  } finally {
    await admin.disconnect();
  }
}

describe('bootstrapTopics topic configuration', () => {
  const created: string[] = [];
  afterAll(async () => {
    await deleteTopics(createTestKafka(), created);
  });

  it('should keep the tombstones of a compacted topic for a week, and set nothing of the kind on the others', async () => {
    const compacted: TopicSpec = { topic: uniqueId('topics-compacted'), numPartitions: 1, compacted: true };
    const deleted: TopicSpec = { topic: uniqueId('topics-delete'), numPartitions: 1, compacted: false };
    created.push(compacted.topic, deleted.topic);
    const kafka = createTestKafka();
    const admin = kafka.admin();
    await admin.connect();
    try {
      await bootstrapTopics(admin, [compacted, deleted]);
    } finally {
      await admin.disconnect();
    }
    const names = ['cleanup.policy', 'delete.retention.ms'];
    expect(await topicConfig(kafka, compacted.topic, names)).toEqual({
      'cleanup.policy': 'compact',
      'delete.retention.ms': WEEK_MS,
    });
    const other = await topicConfig(kafka, deleted.topic, names);
    expect(other['cleanup.policy']).toBe('delete');
    expect(other['delete.retention.ms']).not.toBe(WEEK_MS);
  });
});

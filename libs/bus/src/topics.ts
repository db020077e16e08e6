import type { Admin, ITopicConfig } from 'kafkajs';
import type { Topics } from '@urs/config';

export interface TopicSpec {
  topic: string;
  numPartitions: number;
  compacted: boolean;
}

/** Internal batches can carry up to 500 full machine records; allow 8 MiB per message. */
const MAX_MESSAGE_BYTES = String(8 * 1024 * 1024);

/**
 * Every topic of the pipeline with its partitions and cleanup policy. `urs.registration` has one
 * partition so Director's generations stay in order; keyed topics spread tenants over partitions.
 */
export function topicSpecs(topics: Topics, partitions = 6): TopicSpec[] {
  return [
    { topic: topics.registration, numPartitions: 1, compacted: false },
    { topic: topics.tenants, numPartitions: partitions, compacted: true },
    { topic: topics.deviceBatches, numPartitions: partitions * 2, compacted: false },
    { topic: topics.devicesEnriched, numPartitions: partitions, compacted: false },
    { topic: topics.deviceScores, numPartitions: partitions, compacted: false },
    { topic: topics.dlq, numPartitions: 1, compacted: false },
    { topic: topics.vmsRiskScores, numPartitions: partitions, compacted: true },
    { topic: topics.vmsRiskSummary, numPartitions: partitions, compacted: false },
  ];
}

function toTopicConfig(spec: TopicSpec, replicationFactor: number): ITopicConfig {
  return {
    topic: spec.topic,
    numPartitions: spec.numPartitions,
    replicationFactor,
    configEntries: [
      { name: 'cleanup.policy', value: spec.compacted ? 'compact' : 'delete' },
      { name: 'max.message.bytes', value: MAX_MESSAGE_BYTES },
    ],
  };
}

/**
 * Creates the topics that do not exist yet, with their partitions and config, waiting for leaders
 * (on KRaft a fresh topic's metadata arrives late; producing before leaders exist fails).
 * Idempotent: existing topics are left as they are. Returns the names it created.
 */
export async function bootstrapTopics(
  admin: Admin,
  specs: readonly TopicSpec[],
  replicationFactor = 1,
): Promise<string[]> {
  const existing = new Set(await admin.listTopics());
  const missing = specs.filter((spec) => !existing.has(spec.topic));
  if (missing.length === 0) return [];
  try {
    await admin.createTopics({
      topics: missing.map((spec) => toTopicConfig(spec, replicationFactor)),
      waitForLeaders: true,
    });
  } catch (error) {
    // Another replica may have created them between listTopics and createTopics.
    if ((error as { type?: string }).type !== 'TOPIC_ALREADY_EXISTS') throw error;
  }
  return missing.map((spec) => spec.topic);
}

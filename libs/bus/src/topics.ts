import type { Admin, ITopicConfig } from 'kafkajs';
import type { Topics } from '@urs/config';
import type { Logger } from '@urs/logging';
import { retryWhileSettling } from './settle';
import { isTransientKafkaError } from './transient';

export interface TopicSpec {
  topic: string;
  numPartitions: number;
  compacted: boolean;
}

/** Internal batches can carry up to 500 full machine records; allow 8 MiB per message. */
const MAX_MESSAGE_BYTES = String(8 * 1024 * 1024);

/** A topic of the pipeline by its key in Topics (`tenants`, `dlq`, …). */
export type TopicName = keyof Topics;

/** What a stage does with a topic: the Kafka ACL operations it needs follow from it (README, "Kafka ACLs"). */
export type TopicAccess = 'read' | 'write' | 'read-write';

/**
 * The topics a stage reads or writes, its dead-letter topic included, and how: each stage's `stageTopics`
 * (services/<stage>/src/topics.ts) names the only ones it makes at start and describes, so that Kafka's
 * ACLs may allow it these alone (README, "Kafka ACLs"; deploy/test/topics.test.ts checks each against the
 * topics its stage's code names).
 */
export type StageTopics = Readonly<Partial<Record<TopicName, TopicAccess>>>;

/**
 * The topics of the pipeline with their partitions and cleanup policy: every one, or those of `only` (a
 * stage's own, so that it needs Kafka's permission on no other). `urs.registration` has one partition so
 * Director's generations stay in order; keyed topics spread tenants over partitions.
 */
export function topicSpecs(topics: Topics, partitions = 6, only?: StageTopics): TopicSpec[] {
  const all: Record<TopicName, TopicSpec> = {
    registration: { topic: topics.registration, numPartitions: 1, compacted: false },
    tenants: { topic: topics.tenants, numPartitions: partitions, compacted: true },
    deviceBatches: { topic: topics.deviceBatches, numPartitions: partitions * 2, compacted: false },
    devicesEnriched: { topic: topics.devicesEnriched, numPartitions: partitions, compacted: false },
    deviceScores: { topic: topics.deviceScores, numPartitions: partitions, compacted: false },
    dlq: { topic: topics.dlq, numPartitions: 1, compacted: false },
    vmsRiskScores: { topic: topics.vmsRiskScores, numPartitions: partitions, compacted: true },
    vmsRiskSummary: { topic: topics.vmsRiskSummary, numPartitions: partitions, compacted: false },
  };
  return (Object.keys(all) as TopicName[])
    .filter((name) => only === undefined || only[name] !== undefined)
    .map((name) => all[name]);
}

/**
 * How long a compacted topic keeps a key's tombstone once compaction reached it: 7 days, not the broker's
 * default day. A reader that resumes from its committed offsets (VMS on vms.risk-scores) after being away
 * longer would miss a device's tombstone and keep its record for good.
 */
const TOMBSTONE_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;

function toTopicConfig(spec: TopicSpec, replicationFactor: number): ITopicConfig {
  return {
    topic: spec.topic,
    numPartitions: spec.numPartitions,
    replicationFactor,
    configEntries: [
      { name: 'cleanup.policy', value: spec.compacted ? 'compact' : 'delete' },
      { name: 'max.message.bytes', value: MAX_MESSAGE_BYTES },
      ...(spec.compacted ? [{ name: 'delete.retention.ms', value: String(TOMBSTONE_RETENTION_MS) }] : []),
    ],
  };
}

export interface BootstrapOptions {
  /** Replicas of each created topic; -1 for the broker's `default.replication.factor`. Default 1. */
  replicationFactor?: number;
  /** Warns while the new topics settle. Default: silent. */
  logger?: Logger;
  /** Deadline of the creation and of each topic's settling, in milliseconds. Default 30 000. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** A topic someone else created between our listing and our request (alone, or among several). */
function isAlreadyExists(error: unknown): boolean {
  const e = error as { type?: unknown; name?: unknown; errors?: unknown } | null;
  if (e?.type === 'TOPIC_ALREADY_EXISTS') return true;
  return (
    e?.name === 'KafkaJSAggregateError' &&
    Array.isArray(e.errors) &&
    e.errors.length > 0 &&
    e.errors.every(
      (inner) =>
        (inner as { type?: unknown }).type === 'TOPIC_ALREADY_EXISTS' || isTransientKafkaError(inner),
    )
  );
}

/**
 * Creates the topics that do not exist yet, with their partitions and config, and returns once every
 * partition of each is served by its leader. Idempotent: existing topics are left as they are. Returns
 * the names it set out to create.
 *
 * On KRaft a fresh topic settles late: KafkaJS's wait for leaders can fail with
 * UNKNOWN_TOPIC_OR_PARTITION (the broker's metadata cache lags the controller), and once leaders are
 * named a first ListOffsets can still answer NOT_LEADER (the broker has not taken the leadership up).
 * So the creation is retried while it fails that way (listing again: a retry only creates what is still
 * missing, also when another replica created some meanwhile), and each new topic's offsets are read
 * until they answer, so that consumers, producers and offset reads that follow do not meet the race.
 */
export async function bootstrapTopics(
  admin: Admin,
  specs: readonly TopicSpec[],
  options: BootstrapOptions = {},
): Promise<string[]> {
  const replicationFactor = options.replicationFactor ?? 1;
  const settle = {
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  };
  let wanted: string[] | undefined;
  await retryWhileSettling(
    async () => {
      const existing = new Set(await admin.listTopics());
      const missing = specs.filter((spec) => !existing.has(spec.topic));
      // The first listing says what this call creates; a retry after a half-done attempt sees fewer.
      wanted ??= missing.map((spec) => spec.topic);
      if (missing.length === 0) return;
      try {
        await admin.createTopics({
          topics: missing.map((spec) => toTopicConfig(spec, replicationFactor)),
          waitForLeaders: true,
        });
      } catch (error) {
        // Another replica may have created them between listTopics and createTopics.
        if ((error as { type?: string }).type !== 'TOPIC_ALREADY_EXISTS') throw error;
      }
    },
    { ...settle, operation: 'creating topics', alsoRetry: isAlreadyExists },
  );
  const created = wanted ?? [];
  await Promise.all(
    created.map((topic) =>
      retryWhileSettling(() => admin.fetchTopicOffsets(topic), {
        ...settle,
        operation: `leaders of new topic ${topic}`,
      }),
    ),
  );
  return created;
}

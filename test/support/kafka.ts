import { Kafka, KafkaJSNonRetriableError, KafkaJSProtocolError, logLevel, type ITopicConfig } from 'kafkajs';
import { retryWhileSettling, topicOffsets } from '@urs/bus';
import type { DeadLetter } from '@urs/contracts';
import { testInfra } from './infra';
import { uniqueId, waitFor } from './wait';

/**
 * A KafkaJS client on the resolved test brokers. KafkaJS logs nothing by default (its retried
 * "coordinator not available" errors are normal while a group forms); set URS_TEST_KAFKA_LOG=debug|info|warn|error to see them.
 */
export function createTestKafka(clientId = uniqueId('test-client')): Kafka {
  const levels: Record<string, logLevel> = {
    debug: logLevel.DEBUG,
    info: logLevel.INFO,
    warn: logLevel.WARN,
    error: logLevel.ERROR,
  };
  return new Kafka({
    clientId,
    brokers: testInfra().kafkaBrokers,
    logLevel: levels[process.env['URS_TEST_KAFKA_LOG'] ?? ''] ?? logLevel.NOTHING,
  });
}

export interface TopicSpec {
  /** Start of the unique name. Default "test". */
  prefix?: string;
  /** Default 1. */
  numPartitions?: number;
  configEntries?: ITopicConfig['configEntries'];
}

/** Creates one uniquely named topic per spec and waits until each partition has a leader. */
export async function createUniqueTopics(kafka: Kafka, specs: TopicSpec[]): Promise<string[]> {
  const topics = specs.map((spec) => ({
    topic: uniqueId(spec.prefix ?? 'test'),
    numPartitions: spec.numPartitions ?? 1,
    replicationFactor: 1,
    ...(spec.configEntries ? { configEntries: spec.configEntries } : {}),
  }));
  const admin = kafka.admin();
  await admin.connect();
  try {
    // On KRaft a fresh topic's metadata arrives late: creation (and its wait for leaders) can fail
    // transiently, and a first offset read can answer NOT_LEADER. Retry what is still missing, then wait
    // until every topic answers offset reads, as the services do.
    await retryWhileSettling(
      async () => {
        const existing = new Set(await admin.listTopics());
        const missing = topics.filter((t) => !existing.has(t.topic));
        if (missing.length > 0) await admin.createTopics({ topics: missing, waitForLeaders: true });
      },
      { operation: 'create test topics' },
    );
    for (const t of topics) await topicOffsets(kafka, t.topic);
  } finally {
    await admin.disconnect();
  }
  return topics.map((t) => t.topic);
}

/** Deletes topics; ones already gone are fine. */
export async function deleteTopics(kafka: Kafka, topics: string[]): Promise<void> {
  if (topics.length === 0) return;
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const present = topics.filter((t) => existing.has(t));
    if (present.length > 0) await admin.deleteTopics({ topics: present });
  } finally {
    await admin.disconnect();
  }
}

/** Reads the dead letters on `topic` from its beginning until at least `expected` arrived (20 s at most). */
export async function readDeadLetters(kafka: Kafka, topic: string, expected: number): Promise<DeadLetter[]> {
  const letters: DeadLetter[] = [];
  const consumer = kafka.consumer({ groupId: uniqueId('dlq-reader'), maxWaitTimeInMs: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      letters.push(JSON.parse(message.value?.toString('utf8') ?? 'null') as DeadLetter);
    },
  });
  try {
    await waitFor(() => letters.length >= expected, { timeoutMs: 20_000 });
  } finally {
    await consumer.disconnect();
  }
  return letters;
}

/**
 * What a produce rejects with when the principal may not write the topic (an ACL missing): KafkaJS marks it
 * not retriable (its retrier bails out on it, the refusal its cause), and only an operator mends it.
 */
export function topicNotAuthorised(): Error {
  const refused = new KafkaJSProtocolError(
    Object.assign(new Error('Not authorized to access topics: [Topic authorization failed]'), {
      type: 'TOPIC_AUTHORIZATION_FAILED',
      code: 29,
      retriable: false,
    }),
  );
  return Object.assign(new KafkaJSNonRetriableError(refused), { cause: refused });
}

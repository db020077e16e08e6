import type { Kafka } from 'kafkajs';
import { deleteTopics, testInfra } from '@urs/testkit';

// A Redis of the test's own (its helpers moved to the testkit, for the services' tests too).
export { freePort, startRedis, stopRedis } from '@urs/testkit';

/** What a service of its own reads: the test's Kafka and Redis, its own topics and keys. */
export function serviceEnv(prefix: string, logLevel = 'error'): Record<string, string> {
  return {
    KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
    REDIS_URL: testInfra().redisUrl,
    URS_TOPIC_PREFIX: prefix,
    URS_REDIS_PREFIX: `${prefix}:`,
    URS_METRICS_PORT: '0',
    URS_TOPIC_PARTITIONS: '1',
    URS_LOG_LEVEL: logLevel,
  };
}

/** Deletes the topics a service of its own created (their names start with its prefix). */
export async function deleteTopicsOf(kafka: Kafka, prefix: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  const topics = (await admin.listTopics()).filter((topic) => topic.startsWith(prefix));
  await admin.disconnect();
  await deleteTopics(kafka, topics);
}

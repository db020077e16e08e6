import type { Kafka } from 'kafkajs';
import { deleteTopics } from '@urs/testkit';

// A Redis of the test's own (its helpers moved to the testkit, for the services' tests too).
export { freePort, serviceEnv, startRedis, stopRedis } from '@urs/testkit';

/** Deletes the topics a service of its own created (their names start with its prefix). */
export async function deleteTopicsOf(kafka: Kafka, prefix: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  const topics = (await admin.listTopics()).filter((topic) => topic.startsWith(prefix));
  await admin.disconnect();
  await deleteTopics(kafka, topics);
}

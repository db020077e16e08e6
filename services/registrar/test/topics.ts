import type { Kafka } from 'kafkajs';
import { createUniqueTopics } from '@urs/testkit';

/**
 * The registrar's three topics, each of a unique name: `urs.registration` (one partition, as Director's
 * pushes are ordered), `urs.tenants` (compacted, three partitions) and the dead-letter topic.
 */
export async function createRegistrarTopics(kafka: Kafka): Promise<[string, string, string]> {
  return (await createUniqueTopics(kafka, [
    { prefix: 'registration', numPartitions: 1 },
    { prefix: 'tenants', numPartitions: 3, configEntries: [{ name: 'cleanup.policy', value: 'compact' }] },
    { prefix: 'dlq' },
  ])) as [string, string, string];
}

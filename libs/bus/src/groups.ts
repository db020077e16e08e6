import type { Kafka } from 'kafkajs';
import { UrsError } from '@urs/resilience';
import { settledWithin } from './drain';
import type { ConsumerRunner } from './runner';

/**
 * Deletes a consumer group of the process's own (a group id per process, read from the beginning at every
 * start) once its runner closed: left behind it would only clutter the cluster until its offsets expire.
 * Nothing when the runner never started (stopped while waiting for Kafka): no group was joined, and no broker
 * may answer. Given up after `withinMs` (KafkaJS would retry a broker away for about a minute, past the
 * stop's budget); the group then expires with its offsets.
 */
export async function deleteOwnGroup(
  kafka: Kafka,
  groupId: string,
  runner: Pick<ConsumerRunner, 'startedOnce'>,
  withinMs = 3_000,
): Promise<void> {
  if (!runner.startedOnce) return;
  const admin = kafka.admin({ retry: { retries: 0 } });
  const deleting = (async () => {
    await admin.connect();
    await admin.deleteGroups([groupId]);
  })();
  try {
    if (!(await settledWithin([deleting], withinMs))) {
      throw new UrsError('GROUP_NOT_DELETED', `consumer group ${groupId} not deleted within ${withinMs} ms`);
    }
    await deleting;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

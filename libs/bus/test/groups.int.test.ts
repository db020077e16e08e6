import { Kafka, logLevel } from 'kafkajs';
import { createConsumerRunner, createPublisher, deleteOwnGroup, type Publisher } from '@urs/bus';
import { silentLogger } from '@urs/logging';
import { Registry } from '@urs/telemetry';
import { createTestKafka, createUniqueTopics, deleteTopics, freePort, uniqueId, waitFor } from '@urs/testkit';

describe('deleteOwnGroup', () => {
  let kafka: Kafka;
  let topics: string[];
  let publisher: Publisher;

  beforeAll(async () => {
    kafka = createTestKafka();
    topics = await createUniqueTopics(kafka, [{ prefix: 'tenants' }, { prefix: 'dlq' }]);
    publisher = await createPublisher(kafka);
  });

  afterAll(async () => {
    await publisher.close();
    await deleteTopics(kafka, topics);
  });

  const runnerOf = (on: Kafka, groupId: string) =>
    createConsumerRunner({
      kafka: on,
      service: 'test',
      groupId,
      subscriptions: [
        { topic: topics[0] as string, contract: 'urs/tenant-record', handler: async () => undefined },
      ],
      publisher,
      dlqTopic: topics[1] as string,
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
    });

  async function groupIds(): Promise<string[]> {
    const admin = kafka.admin();
    await admin.connect();
    try {
      return (await admin.listGroups()).groups.map((group) => group.groupId);
    } finally {
      await admin.disconnect();
    }
  }

  it('should delete the group a runner joined, once it closed', async () => {
    const groupId = uniqueId('own-group');
    const runner = runnerOf(kafka, groupId);
    await runner.start();
    // run() returns before the join: the group exists once the runner joined it.
    await waitFor(() => runner.isReady(), { timeoutMs: 30_000, description: 'the runner joining its group' });
    await runner.close();
    expect(await groupIds()).toContain(groupId);
    await deleteOwnGroup(kafka, groupId, runner);
    await waitFor(async () => !(await groupIds()).includes(groupId), { timeoutMs: 10_000 });
  });

  it('should ask no broker of a runner that never started, and give up at once on a broker away', async () => {
    const away = new Kafka({
      clientId: uniqueId('away'),
      brokers: [`127.0.0.1:${await freePort()}`],
      logLevel: logLevel.NOTHING,
      // Its connect gives up ~1.5 s in: longer than the deadline below, and over before the test ends.
      retry: { retries: 2, initialRetryTime: 500, maxRetryTime: 500, factor: 0, multiplier: 1 },
    });
    const never = runnerOf(away, uniqueId('never'));
    await never.close();
    await expect(deleteOwnGroup(away, 'never', never)).resolves.toBeUndefined();

    // Started once, then the broker is gone: given up at its deadline (GROUP_NOT_DELETED), not left to
    // KafkaJS's retries (which end in a connection error of their own).
    const started = { startedOnce: true };
    await expect(deleteOwnGroup(away, 'gone', started, 1_000)).rejects.toMatchObject({
      code: 'GROUP_NOT_DELETED',
    });
    // KafkaJS's connect cannot be cut short: let it give up before the suite ends.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
  });
});

import Redis from 'ioredis';
import { createConsumerRunner } from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { retryPolicy } from '@urs/resilience';
import { startService } from '@urs/runtime';
import { createTestKafka, tenantRecord, uniqueId, waitFor } from '@urs/testkit';
import { deleteTopicsOf, freePort, serviceEnv, startRedis, stopRedis } from './support';

describe('startService with Redis refusing writes', () => {
  it('should hold a message Redis refuses (OOM) past maxAttempts without dead-lettering it, answer /readyz 503 while held, and handle it and be ready again once Redis takes writes', async () => {
    const prefix = `${uniqueId('svc')}.`;
    const groupId = uniqueId('group');
    const port = await freePort();
    // A Redis of the test's own: its maxmemory is the test's to change, the shared one's is not.
    const redis = await startRedis(port);
    const admin = new Redis(port, { disableClientInfo: true, maxRetriesPerRequest: 3 });
    const attempts = new Map<string, number>();
    const service = await startService({
      name: 'test-service',
      defaultMetricsPort: 0,
      env: { ...serviceEnv(prefix), REDIS_URL: `redis://127.0.0.1:${port}` },
      setup: async (context) => ({
        runners: [
          createConsumerRunner({
            kafka: context.kafka,
            service: 'test-service',
            groupId,
            subscriptions: [
              {
                topic: context.config.topics.tenants,
                contract: 'urs/tenant-record',
                handler: async (message) => {
                  const record = message.value as TenantRecord;
                  attempts.set(record.tenantId, (attempts.get(record.tenantId) ?? 0) + 1);
                  // Only `stored` writes to Redis; `other` is a key whose handling does not fail.
                  if (record.tenantId === 'stored') await context.redis.set(`${prefix}:stored`, 'handled');
                },
              },
            ],
            publisher: context.publisher,
            dlqTopic: context.config.topics.dlq,
            logger: context.logger,
            metrics: context.metrics,
            ordering: 'key',
            retry: retryPolicy({ maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 100 }),
            heldNotReadyAfterMs: 1_000,
          }),
        ],
      }),
    });
    const { topics } = service.context.config;
    const base = `http://127.0.0.1:${service.health.port}`;
    const readyz = async (): Promise<number> => (await fetch(`${base}/readyz`)).status;
    const held = async (): Promise<string | undefined> =>
      new RegExp(`^urs_consumer_held_messages\\{group="${groupId}"\\} (\\d+)$`, 'm').exec(
        await (await fetch(`${base}/metrics`)).text(),
      )?.[1];
    const kafka = createTestKafka();
    try {
      await waitFor(async () => (await readyz()) === 200, { timeoutMs: 20_000 });
      // Any used memory is above 1 byte: with noeviction Redis answers every write OOM, and PING still.
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      await admin.config('SET', 'maxmemory', '1');
      await service.context.publisher.send(topics.tenants, 'urs/tenant-record', [
        { key: 'stored', value: tenantRecord('stored') },
        { key: 'other', value: tenantRecord('other') },
      ]);

      await waitFor(() => (attempts.get('stored') ?? 0) > 6, { timeoutMs: 20_000 });
      expect(attempts.get('other')).toBe(1);
      expect(await held()).toBe('1');
      await waitFor(async () => (await readyz()) === 503, { timeoutMs: 10_000 });

      await admin.config('SET', 'maxmemory', '0');
      await waitFor(async () => (await admin.get(`${prefix}:stored`)) === 'handled', { timeoutMs: 20_000 });
      await waitFor(async () => (await readyz()) === 200, { timeoutMs: 10_000 });
      expect(await held()).toBe('0');
    } finally {
      expect(await service.close()).toBe(true);
      admin.disconnect();
      await stopRedis(redis);
    }
    try {
      const kafkaAdmin = kafka.admin();
      await kafkaAdmin.connect();
      const dlq = await kafkaAdmin.fetchTopicOffsets(topics.dlq);
      const committed = await kafkaAdmin.fetchOffsets({ groupId, topics: [topics.tenants] });
      await kafkaAdmin.disconnect();
      expect(dlq.map((partition) => partition.high)).toEqual(['0']);
      expect(committed[0]?.partitions[0]?.offset).toBe('2');
    } finally {
      await deleteTopicsOf(kafka, prefix);
    }
  });
});

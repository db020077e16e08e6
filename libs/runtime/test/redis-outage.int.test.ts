import { startService } from '@urs/runtime';
import { createTestKafka, deleteTopics, uniqueId, waitFor } from '@urs/testkit';
import { freePort, serviceEnv, startRedis, stopRedis } from './support';

describe('startService with Redis away', () => {
  it('should answer /readyz 503 and urs_redis_up 0 while its Redis is down, log no ioredis text, and be ready again once Redis is back', async () => {
    const prefix = `${uniqueId('svc')}.`;
    const port = await freePort();
    let redis = await startRedis(port);
    const consoleError = jest.spyOn(console, 'error');
    const service = await startService({
      name: 'test-service',
      defaultMetricsPort: 0,
      env: { ...serviceEnv(prefix), REDIS_URL: `redis://127.0.0.1:${port}` },
      setup: async () => ({}),
    });
    const base = `http://127.0.0.1:${service.health.port}`;
    const readyz = async (): Promise<number> => (await fetch(`${base}/readyz`)).status;
    const redisUp = async (): Promise<string | undefined> =>
      /^urs_redis_up (\d)$/m.exec(await (await fetch(`${base}/metrics`)).text())?.[1];
    const kafka = createTestKafka();
    try {
      await waitFor(async () => (await readyz()) === 200, { timeoutMs: 20_000 });
      expect(await redisUp()).toBe('1');

      await stopRedis(redis);
      await waitFor(async () => (await readyz()) === 503, { timeoutMs: 10_000 });
      expect(await redisUp()).toBe('0');
      // Several reconnect attempts (200 ms, 400 ms, … apart), none answered.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      expect(await readyz()).toBe(503);

      redis = await startRedis(port);
      await waitFor(async () => (await readyz()) === 200, { timeoutMs: 20_000 });
      expect(await redisUp()).toBe('1');
      expect(consoleError.mock.calls.map((call) => String(call[0]))).not.toContainEqual(
        expect.stringContaining('[ioredis]'),
      );
    } finally {
      consoleError.mockRestore();
      expect(await service.close()).toBe(true);
      await stopRedis(redis);
      const admin = kafka.admin();
      await admin.connect();
      const topics = (await admin.listTopics()).filter((topic) => topic.startsWith(prefix));
      await admin.disconnect();
      await deleteTopics(kafka, topics);
    }
  });
});

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { startService } from '@urs/runtime';
import { createTestKafka, deleteTopics, testInfra, uniqueId, waitFor } from '@urs/testkit';

/** A free TCP port of this host, for a Redis of the test's own. */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

/** A throwaway redis-server on `port`, nothing saved: the shared Redis is never stopped by a test. */
async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => void (output += chunk.toString()));
  await waitFor(() => output.includes('Ready to accept connections'), { timeoutMs: 10_000 });
  return child;
}

async function stopRedis(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  await once(child, 'exit');
}

describe('startService with Redis away', () => {
  it('should answer /readyz 503 and urs_redis_up 0 while its Redis is down, log no ioredis text, and be ready again once Redis is back', async () => {
    const prefix = `${uniqueId('svc')}.`;
    const port = await freePort();
    let redis = await startRedis(port);
    const consoleError = jest.spyOn(console, 'error');
    const service = await startService({
      name: 'test-service',
      defaultMetricsPort: 0,
      env: {
        KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
        REDIS_URL: `redis://127.0.0.1:${port}`,
        URS_TOPIC_PREFIX: prefix,
        URS_REDIS_PREFIX: `${prefix}:`,
        URS_METRICS_PORT: '0',
        URS_TOPIC_PARTITIONS: '1',
        URS_LOG_LEVEL: 'error',
      },
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

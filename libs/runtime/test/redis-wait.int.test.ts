import { startService } from '@urs/runtime';
import { capturingLogger, createTestKafka, uniqueId, waitFor, type LogLine } from '@urs/testkit';
import { serviceBasics, startWith } from '../src/service';
import { deleteTopicsOf, freePort, serviceEnv, startRedis, stopRedis } from './support';

/** An answer of the health port, or undefined while nothing answers there. */
async function get(port: number, path: string): Promise<{ status: number; body: string } | undefined> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(1_000) });
    return { status: response.status, body: await response.text() };
  } catch {
    return undefined;
  }
}

const gauge = (metrics: string | undefined, name: string): string | undefined =>
  new RegExp(`^${name} (\\d+)$`, 'm').exec(metrics ?? '')?.[1];

describe('startService with Redis away at the start', () => {
  it('should answer /healthz, /readyz 503 naming Redis and its metrics before setup, run no setup, and stop at once', async () => {
    const [redisPort, metricsPort] = [await freePort(), await freePort()];
    const stop = new AbortController();
    let setUp = false;
    const starting = startService({
      name: 'test-service',
      env: {
        ...serviceEnv(`${uniqueId('rwait')}.`),
        REDIS_URL: `redis://127.0.0.1:${redisPort}`,
        URS_METRICS_PORT: String(metricsPort),
      },
      waitForKafka: true,
      stop: stop.signal,
      // A setup that reads Redis first (a key check, a shared limiter), as the poller's does.
      setup: async ({ redis }) => {
        setUp = true;
        await redis.get('anything');
        return {};
      },
    });
    starting.catch(() => undefined);
    try {
      const healthz = await waitFor(() => get(metricsPort, '/healthz'), { timeoutMs: 5_000 });
      expect(healthz.status).toBe(200);
      const readyz = await get(metricsPort, '/readyz');
      expect(readyz?.status).toBe(503);
      expect(JSON.parse(readyz?.body ?? '{}')).toEqual({
        status: 'not-ready',
        reason: 'starting: waiting for Redis (REDIS_URL) to answer',
      });
      const metrics = (await get(metricsPort, '/metrics'))?.body;
      expect(gauge(metrics, 'urs_ready')).toBe('0');
      expect(gauge(metrics, 'urs_redis_up')).toBe('0');
      expect(setUp).toBe(false);
      // Redis never answers here: only the stop can end the start's wait for it.
      stop.abort();
      await expect(starting).rejects.toMatchObject({ code: 'SERVICE_STOPPED', closedCleanly: true });
      expect(setUp).toBe(false);
      // Closed: the port answers nothing any more.
      expect(await get(metricsPort, '/healthz')).toBeUndefined();
    } finally {
      stop.abort();
    }
  });

  it('should warn while it waits for Redis, naming it, and start once Redis answers', async () => {
    const redisPort = await freePort();
    const prefix = `${uniqueId('rwait')}.`;
    const lines: LogLine[] = [];
    const stop = new AbortController();
    const options = {
      name: 'test-service',
      stop: stop.signal,
      env: { ...serviceEnv(prefix), REDIS_URL: `redis://127.0.0.1:${redisPort}` },
      waitForKafka: true,
      setup: async ({ redis }: { redis: { get(key: string): Promise<unknown> } }) => {
        await redis.get('anything');
        return {};
      },
    };
    const starting = startWith(options, { ...serviceBasics(options), logger: capturingLogger(lines) });
    starting.catch(() => undefined);
    let redis: Awaited<ReturnType<typeof startRedis>> | undefined;
    try {
      const waiting = await waitFor(
        () => lines.find((line) => line.level === 'warn' && line.message.includes('Redis (REDIS_URL)')),
        { timeoutMs: 15_000 },
      );
      expect(waiting).toMatchObject({ waitedMs: expect.any(Number) });
      redis = await startRedis(redisPort);
      const service = await starting;
      try {
        await waitFor(async () => (await get(service.health.port, '/readyz'))?.status === 200 || undefined, {
          timeoutMs: 20_000,
        });
      } finally {
        expect(await service.close()).toBe(true);
      }
    } finally {
      stop.abort();
      if (redis) await stopRedis(redis);
      await deleteTopicsOf(createTestKafka(), prefix);
    }
  });
});

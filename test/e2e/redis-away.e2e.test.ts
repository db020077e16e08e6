import { waitFor } from '@urs/testkit';
// The process harness of the poller's and the registrar's end-to-end suites.
import {
  freePort,
  health,
  notReady,
  startStages,
  type ServiceProcess,
} from '../../services/poller/test/support/services';
import { buildServices } from '../../services/poller/test/support/stack';

/** A gauge's value in the text of /metrics. */
async function gauge(port: number, name: string): Promise<string | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1];
}

// The stages whose setup reads Redis (the URS_SECRET_KEY check, the shared call limiter), started while Redis
// is away: before, each answered no /healthz, /readyz or /metrics until Redis came (an orchestrator's
// liveness probe killed it meanwhile), and a SIGTERM ended it only at URS_SHUTDOWN_TIMEOUT_MS, exit 1.
describe('registrar, poller, vuln-fetcher: Redis away at start', () => {
  const started: ServiceProcess[] = [];

  beforeAll(() => buildServices(['registrar', 'poller', 'vuln-fetcher']), 180_000);

  afterAll(async () => {
    await Promise.all(started.map((stage) => stage.kill()));
  });

  it('should answer /healthz, /readyz 503 naming Redis and urs_ready 0, warn that it waits, and stop at once with exit 0', async () => {
    // Nothing listens on Redis's port.
    const redisPort = await freePort();
    const stages = await startStages(
      ['registrar', 'poller', 'vuln-fetcher'],
      'redis-away',
      { REDIS_URL: `redis://127.0.0.1:${redisPort}`, URS_LOG_LEVEL: 'info' },
      started,
    );
    for (const { stage, port } of stages) {
      await waitFor(async () => (await health(port, '/healthz'))?.status === 200, {
        timeoutMs: 20_000,
        description: `${stage.name} /healthz answering`,
      });
      expect((await notReady(stage, port, { starting: true })).body).toEqual({
        status: 'not-ready',
        reason: 'starting: waiting for Redis (REDIS_URL) to answer',
      });
      expect(await gauge(port, 'urs_ready')).toBe('0');
      expect(await gauge(port, 'urs_redis_up')).toBe('0');
    }
    // A warning naming Redis while it waits, not only the outage's first connection error.
    for (const { stage } of stages) {
      const line = await stage.waitForLine((text) => text.includes('waiting for Redis (REDIS_URL)'), 15_000);
      expect(JSON.parse(line)).toMatchObject({
        level: 'warn',
        lastError: expect.stringContaining('ECONNREFUSED'),
      });
    }
    for (const { stage } of stages) {
      const asked = Date.now();
      await stage.stop(20_000);
      expect({ stage: stage.name, exitCode: stage.process.exitCode }).toEqual({
        stage: stage.name,
        exitCode: 0,
      });
      expect(Date.now() - asked).toBeLessThan(5_000);
      expect(stage.lines.some((text) => text.includes('"message":"stopped while starting"'))).toBe(true);
      expect(stage.lines.some((text) => text.includes('graceful stop timed out'))).toBe(false);
    }
  }, 120_000);
});

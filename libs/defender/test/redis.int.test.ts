import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { silentLogger } from '@urs/logging';
import { retryPolicy } from '@urs/resilience';
import { type Simulator, startSimulator } from '@urs/simulator';
import { type TestRedis, createTestRedis } from '@urs/testkit';
import {
  DefenderError,
  DefenderErrorCode,
  MICROSOFT_QUOTAS,
  createApiCaller,
  createHttpsAgent,
  createLocalLimiter,
  createRedisQuotaGate,
  createSharedLimiter,
} from '../src';
import { appOf, newApp, simClient } from './support';

let redis: TestRedis;

beforeEach(() => {
  redis = createTestRedis();
});

afterEach(async () => {
  await redis.close();
});

/** The scores of a window's calls, ascending: a call sent at its sending, one not sent yet a window ahead. */
async function scoresOf(key: string): Promise<number[]> {
  const entries = await redis.client.zrange(key, 0, -1, 'WITHSCORES');
  return entries.filter((_, index) => index % 2 === 1).map(Number);
}

/** Redis's time now, ms: the clock the windows are kept by. */
async function redisNow(): Promise<number> {
  const [seconds, micros] = await redis.client.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}

/** `acquire` once the release sent before it reached Redis (it is not awaited), a few tries at most. */
async function waitForRoom<T>(acquire: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await acquire();
    } catch (error) {
      if (tries >= 20) throw error;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}

describe('createRedisQuotaGate', () => {
  it('acquire should share the window between gates and wait until it frees', async () => {
    const limits = { ...MICROSOFT_QUOTAS, vulnerabilities: [{ limit: 4, windowMs: 1_000 }] };
    const a = createRedisQuotaGate(redis.client, redis.prefix, { limits, maxPollMs: 50 });
    const b = createRedisQuotaGate(redis.client, redis.prefix, { limits, maxPollMs: 50 });
    const window = `${redis.prefix}defender:quota:t1:app:vulnerabilities:1000`;
    // A wait of 0 ms allowed: each of these fails unless it finds room at once.
    const claims = await Promise.all([
      a.acquire(appOf('t1'), 'vulnerabilities', undefined, 0),
      a.acquire(appOf('t1'), 'vulnerabilities', undefined, 0),
      b.acquire(appOf('t1'), 'vulnerabilities', undefined, 0),
      b.acquire(appOf('t1'), 'vulnerabilities', undefined, 0),
    ]);
    for (const claim of claims) claim.sent();
    // Both gates count the four: a fifth call finds no room at once, on either.
    for (const gate of [a, b])
      await expect(gate.acquire(appOf('t1'), 'vulnerabilities', undefined, 0)).rejects.toMatchObject({
        code: DefenderErrorCode.THROTTLED,
      });
    const sent = await scoresOf(window);
    expect(sent).toHaveLength(4);
    await b.acquire(appOf('t1'), 'vulnerabilities');
    // It took its place (scored a window ahead, the highest) once the first of the four had left the window.
    const taken = ((await scoresOf(window)).at(-1) as number) - 1_000;
    expect(taken).toBeGreaterThanOrEqual(Math.min(...sent) + 1_000);
    // Another tenant has its own window.
    await a.acquire(appOf('t2'), 'vulnerabilities', undefined, 0);
  });

  it('sent should move the call to when it went out, for every gate', async () => {
    const limits = {
      ...MICROSOFT_QUOTAS,
      vulnerabilities: [
        { limit: 1, windowMs: 1_000 },
        { limit: 5, windowMs: 60_000 },
      ],
    };
    const a = createRedisQuotaGate(redis.client, redis.prefix, { limits, maxPollMs: 20 });
    const b = createRedisQuotaGate(redis.client, redis.prefix, { limits, maxPollMs: 20 });
    const claim = await a.acquire(appOf('t1'), 'vulnerabilities');
    // The call waits 500 ms for a slot before it goes out.
    await new Promise((resolve) => setTimeout(resolve, 500));
    // Redis's time just before and after the sending (its script runs between them, on the same connection).
    const sending = await redisNow();
    claim.sent();
    const sentBy = await redisNow();
    (await b.acquire(appOf('t1'), 'vulnerabilities')).sent();
    await new Promise((resolve) => setTimeout(resolve, 20));
    // The minute window holds both calls at their sending, and its key lives two windows on.
    const minute = `${redis.prefix}defender:quota:t1:app:vulnerabilities:60000`;
    const [first, second] = (await scoresOf(minute)) as [number, number];
    expect(await scoresOf(minute)).toHaveLength(2);
    expect(first).toBeGreaterThanOrEqual(sending);
    expect(first).toBeLessThanOrEqual(sentBy);
    // The second call went out a second window after the first one's sending, not after its taking (500 earlier).
    expect(second).toBeGreaterThanOrEqual(sending + 1_000);
    expect(await redis.client.pttl(minute)).toBeGreaterThan(119_000);
  });

  it('a call waiting for its slot should keep its place in the window until it is sent', async () => {
    // A call not sent keeps its place for two windows at most (then it is dropped as never sent). A window of
    // 5 s: the call waits 6 s, past one window, and is sent about 7 s after it took its place, 3 s before it
    // would be dropped, which no stall of a loaded machine takes up.
    const windowMs = 5_000;
    const limits = { ...MICROSOFT_QUOTAS, machines: [{ limit: 1, windowMs }] };
    const a = createRedisQuotaGate(redis.client, redis.prefix, { limits, maxPollMs: 20 });
    const b = createRedisQuotaGate(redis.client, redis.prefix, { limits, maxPollMs: 20 });
    const waiting = await a.acquire(appOf('t1'), 'machines');
    // Longer than the window without a slot: the call still counts, as one to come.
    await new Promise((resolve) => setTimeout(resolve, windowMs + 1_000));
    let done = false;
    const next = b.acquire(appOf('t1'), 'machines').then(() => (done = true));
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(done).toBe(false);
    const sending = await redisNow();
    waiting.sent();
    await next;
    // The second took its place (scored a window ahead) a window after the first one's sending.
    const window = `${redis.prefix}defender:quota:t1:app:machines:${windowMs}`;
    const taken = ((await scoresOf(window)).at(-1) as number) - windowMs;
    expect(taken).toBeGreaterThanOrEqual(sending + windowMs);
  });

  it('release should give back, in every window and for every gate, the place of a call never sent', async () => {
    const limits = {
      ...MICROSOFT_QUOTAS,
      vulnerabilities: [
        { limit: 1, windowMs: 60_000 },
        { limit: 1, windowMs: 3_600_000 },
      ],
    };
    const a = createRedisQuotaGate(redis.client, redis.prefix, { limits });
    const b = createRedisQuotaGate(redis.client, redis.prefix, { limits });
    const claim = await a.acquire(appOf('t1'), 'vulnerabilities', undefined, 0);
    claim.release();
    // A wait of 0 ms allowed: it fails unless the place was given back.
    const next = await waitForRoom(() => b.acquire(appOf('t1'), 'vulnerabilities', undefined, 0));
    next.sent();
    await expect(b.acquire(appOf('t1'), 'vulnerabilities', undefined, 0)).rejects.toMatchObject({
      code: DefenderErrorCode.THROTTLED,
    });
  });

  it("should give back the place an acquire took after its caller stopped it, the take in flight (a failover's offline queue)", async () => {
    const limits = {
      ...MICROSOFT_QUOTAS,
      vulnerabilities: [
        { limit: 1, windowMs: 60_000 },
        { limit: 1, windowMs: 3_600_000 },
      ],
    };
    // A client whose commands reach Redis once it is back, as ioredis's offline queue sends them.
    let back!: () => void;
    const failover = new Promise<void>((resolve) => (back = resolve));
    const evals: Promise<unknown>[] = [];
    const queued = {
      eval: (...args: Parameters<typeof redis.client.eval>) => {
        const sent = failover.then(() => redis.client.eval(...args));
        evals.push(sent);
        return sent;
      },
    };
    const a = createRedisQuotaGate(queued as never, redis.prefix, { limits });
    const controller = new AbortController();
    const acquiring = a.acquire(appOf('t1'), 'vulnerabilities', controller.signal);
    while (evals.length === 0) await new Promise((resolve) => setImmediate(resolve));
    controller.abort();
    await expect(acquiring).rejects.toMatchObject({ code: DefenderErrorCode.THROTTLED });
    back();
    await evals[0];
    await new Promise((resolve) => setImmediate(resolve));
    await Promise.all(evals);
    for (const { windowMs } of limits.vulnerabilities)
      expect(await redis.client.zcard(redis.key(`defender:quota:t1:app:vulnerabilities:${windowMs}`))).toBe(
        0,
      );
    // Another call has the place: a wait of 0 ms allowed, it fails unless the place was given back.
    const b = createRedisQuotaGate(redis.client, redis.prefix, { limits });
    (await b.acquire(appOf('t1'), 'vulnerabilities', undefined, 0)).sent();
  });

  it('block should hold every gate of the tenant back', async () => {
    const a = createRedisQuotaGate(redis.client, redis.prefix, { maxPollMs: 50 });
    const b = createRedisQuotaGate(redis.client, redis.prefix, { maxPollMs: 50 });
    await a.block(appOf('t1'), 'machines', 300);
    // Held back for what is left of the block, on the other gate too.
    const held = b.acquire(appOf('t1'), 'machines', undefined, 0);
    await expect(held).rejects.toMatchObject({ code: DefenderErrorCode.THROTTLED });
    const { retryAfterMs } = (await held.catch((error: unknown) => error)) as DefenderError;
    expect(retryAfterMs).toBeGreaterThan(0);
    expect(retryAfterMs).toBeLessThanOrEqual(300);
    // A call that may wait goes out once the block is over: its key gone from Redis.
    await b.acquire(appOf('t1'), 'machines');
    expect(await redis.client.exists(`${redis.prefix}defender:quota:t1:app:machines:blocked`)).toBe(0);
  });

  it('acquire and block should keep each app of one tenant apart, as Microsoft counts per application and tenant', async () => {
    const limits = { ...MICROSOFT_QUOTAS, machines: [{ limit: 1, windowMs: 60_000 }] };
    const a = { azureTenantId: 'T1', clientId: 'App-A' };
    const b = { azureTenantId: 't1', clientId: 'app-b' };
    const gate = createRedisQuotaGate(redis.client, redis.prefix, { limits });
    (await gate.acquire(a, 'machines', undefined, 0)).sent();
    (await gate.acquire(b, 'machines', undefined, 0)).sent();
    await expect(gate.acquire(a, 'machines', undefined, 0)).rejects.toMatchObject({
      code: DefenderErrorCode.THROTTLED,
    });
    await gate.block(a, 'vulnerabilities', 600_000);
    await gate.acquire(b, 'vulnerabilities', undefined, 0);
    await expect(gate.acquire(a, 'vulnerabilities', undefined, 0)).rejects.toMatchObject({
      code: DefenderErrorCode.THROTTLED,
    });
    // Keyed by the tenant and app ids, in lower case.
    expect(
      await redis.client.pttl(redis.key('defender:quota:t1:app-a:vulnerabilities:blocked')),
    ).toBeGreaterThan(0);
    expect(await redis.client.exists(redis.key('defender:quota:t1:app-b:vulnerabilities:blocked'))).toBe(0);
  });

  it.each(['Fri, 01 Jan 2100 00:00:00 GMT', '86400000', '1e18'])(
    'a 429 with Retry-After %s should block the tenant for an hour at most and fail THROTTLED',
    async (retryAfter) => {
      const server = createServer((_req, res) => {
        res.writeHead(429, { 'Retry-After': retryAfter, 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'TooManyRequests', message: 'Rate limit is exceeded' } }));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const api = createApiCaller({
        azureTenantId: 't1',
        clientId: 'app',
        apiBase: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        tokens: {
          getToken: async () => ({ token: 'x', expiresOnTimestamp: Date.now() + 3_600_000 }),
          refreshToken: async () => ({ token: 'x', expiresOnTimestamp: Date.now() + 3_600_000 }),
        },
        limiter: createLocalLimiter(),
        quota: createRedisQuotaGate(redis.client, redis.prefix),
        httpsAgent: createHttpsAgent(),
        retryPolicy: retryPolicy({ maxAttempts: 1 }),
        requestTimeoutMs: 2_000,
        maxThrottleWaitMs: 0,
        logger: silentLogger,
      });
      try {
        const failed = await api.get('machines', '/api/machines').catch((error: unknown) => error);
        expect(failed).toBeInstanceOf(DefenderError);
        expect(failed).toMatchObject({
          code: DefenderErrorCode.THROTTLED,
          retryAfterMs: 3_600_000,
          details: { retryAfter },
        });
        const blockedMs = await redis.client.pttl(redis.key('defender:quota:t1:app:machines:blocked'));
        expect(blockedMs).toBeGreaterThan(3_500_000);
        expect(blockedMs).toBeLessThanOrEqual(3_600_000);
      } finally {
        server.close();
      }
    },
  );

  it('acquire should fail THROTTLED at once, with the block left, when the tenant is blocked longer than it may wait', async () => {
    const gate = createRedisQuotaGate(redis.client, redis.prefix, { maxPollMs: 50 });
    await gate.block(appOf('t1'), 'machines', 1_800_000);
    // A gate that waited instead would be stopped by the signal, which says so: a THROTTLED that may be retried.
    const failed = await gate
      .acquire(appOf('t1'), 'machines', AbortSignal.timeout(20_000), 600_000)
      .catch((error: unknown) => error);
    expect(failed).toMatchObject({ code: DefenderErrorCode.THROTTLED, canRetry: false });
    expect((failed as DefenderError).retryAfterMs).toBeGreaterThan(1_790_000);
    expect((failed as DefenderError).retryAfterMs).toBeLessThanOrEqual(1_800_000);
    // A shorter block is waited out as before.
    await gate.block(appOf('t2'), 'machines', 200);
    await gate.acquire(appOf('t2'), 'machines', undefined, 1_000);
  });

  it('acquire should cut a block longer than the longest window down to that window', async () => {
    // As a poller that did not cap Retry-After left it: 26,689 days.
    await redis.client.set(redis.key('defender:quota:t1:app:machines:blocked'), '1', 'PX', 2_305_929_600_000);
    const gate = createRedisQuotaGate(redis.client, redis.prefix);
    const failed = await gate.acquire(appOf('t1'), 'machines', undefined, 0).catch((error: unknown) => error);
    expect((failed as DefenderError).retryAfterMs).toBeLessThanOrEqual(3_600_000);
    expect(await redis.client.pttl(redis.key('defender:quota:t1:app:machines:blocked'))).toBeLessThanOrEqual(
      3_600_000,
    );
  });

  it('acquire should keep its keys under the injected prefix', async () => {
    const gate = createRedisQuotaGate(redis.client, redis.prefix);
    await gate.acquire(appOf('t1'), 'bulk');
    const keys = await redis.client.keys(`${redis.prefix}*`);
    expect(keys.sort()).toEqual([
      `${redis.prefix}defender:quota:t1:app:bulk:3600000`,
      `${redis.prefix}defender:quota:t1:app:bulk:60000`,
    ]);
  });
});

describe('createSharedLimiter', () => {
  it('schedule should keep at most maxConcurrent jobs running across limiters sharing the id', async () => {
    const limiters = await Promise.all(
      [1, 2, 3].map(() =>
        createSharedLimiter({
          redis: redis.client,
          keyPrefix: redis.prefix,
          maxConcurrent: 3,
          logger: silentLogger,
        }),
      ),
    );
    let running = 0;
    let peak = 0;
    const job = async (): Promise<void> => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((resolve) => setTimeout(resolve, 20));
      running--;
    };
    try {
      await Promise.all(limiters.flatMap((l) => Array.from({ length: 8 }, () => l.schedule(job))));
      expect(peak).toBe(3);
    } finally {
      await Promise.all(limiters.map((l) => l.close()));
    }
    // The caller's client stays usable: the limiter closed only its own connections.
    await expect(redis.client.ping()).resolves.toBe('PONG');
  });

  it('schedule should share maxConcurrent between limiters of one key prefix, and not with another prefix', async () => {
    // Two deployments on one Redis (URS_REDIS_PREFIX a: and b:, under this test's own prefix), two
    // processes of the first: Bottleneck's keys are `b_<prefix>defender-api_*`, one limit per deployment.
    const deployments = { a: `${redis.prefix}a:`, b: `${redis.prefix}b:` };
    const limiterOf = (keyPrefix: string) =>
      createSharedLimiter({ redis: redis.client, keyPrefix, maxConcurrent: 2, logger: silentLogger });
    const a1 = await limiterOf(deployments.a);
    const a2 = await limiterOf(deployments.a);
    const b1 = await limiterOf(deployments.b);
    const running = { a: 0, b: 0 };
    const peak = { a: 0, b: 0, both: 0 };
    const job = (deployment: 'a' | 'b') => async (): Promise<void> => {
      running[deployment]++;
      peak[deployment] = Math.max(peak[deployment], running[deployment]);
      peak.both = Math.max(peak.both, running.a + running.b);
      await new Promise((resolve) => setTimeout(resolve, 100));
      running[deployment]--;
    };
    try {
      await Promise.all([
        ...Array.from({ length: 4 }, () => a1.schedule(job('a'))),
        ...Array.from({ length: 4 }, () => a2.schedule(job('a'))),
        ...Array.from({ length: 4 }, () => b1.schedule(job('b'))),
      ]);
      expect(peak).toEqual({ a: 2, b: 2, both: 4 });
      for (const keyPrefix of Object.values(deployments)) {
        expect(await redis.client.hget(`b_${keyPrefix}defender-api_settings`, 'maxConcurrent')).toBe('2');
      }
    } finally {
      await Promise.all([a1, a2, b1].map((l) => l.close()));
    }
  });

  it('schedule should free the slot of a job that outlives its expiration', async () => {
    const limiter = await createSharedLimiter({
      redis: redis.client,
      keyPrefix: redis.prefix,
      maxConcurrent: 1,
      jobExpirationMs: 200,
      logger: silentLogger,
    });
    try {
      const stuck = limiter.schedule(() => new Promise<void>(() => undefined));
      await expect(stuck).rejects.toThrow(/timed out/);
      await expect(limiter.schedule(async () => 'next')).resolves.toBe('next');
    } finally {
      await limiter.close();
    }
  });
});

describe('throttling', () => {
  let sim: Simulator;

  beforeAll(async () => {
    // Microsoft's quotas with a minute of 5 s: a 429's Retry-After is a few seconds, not up to a minute.
    sim = await startSimulator({ quotas: true, quotaMinuteMs: 5_000 });
  });

  afterAll(async () => {
    await sim.close();
  });

  it('getMachineVulnerabilities should wait out a 429 storm (Retry-After) and complete every call', async () => {
    const app = newApp();
    sim.addTenant({ azureTenantId: app.azureTenantId, apps: [app], fleet: { size: 60, seed: 3 } });
    // A client that believes in a larger quota than Microsoft's: the simulator answers 429.
    const generous = [{ limit: 1_000, windowMs: 60_000 }];
    const quota = createRedisQuotaGate(redis.client, redis.prefix, {
      limits: { machines: generous, vulnerabilities: generous, bulk: generous, exportFiles: generous },
      maxPollMs: 1_000,
    });
    const limiter = await createSharedLimiter({
      redis: redis.client,
      keyPrefix: redis.prefix,
      logger: silentLogger,
    });
    const { client, close } = simClient(sim, app, { quota, limiter });
    try {
      const ids = sim.machines(app.azureTenantId).map((m) => m.id);
      const results = await Promise.all(ids.map((id) => client.getMachineVulnerabilities(id)));
      expect(results).toHaveLength(60);
      const stats = sim.stats();
      expect(stats.throttledByTenant[app.azureTenantId]).toBeGreaterThan(0);
      // The first 429 blocked the tenant for every caller: the 10 calls past Microsoft's 50 a minute draw one
      // wave of 429s, not one per retry. Their retries go together when the block ends, at Retry-After (whole
      // seconds) past the first accepted call; on a loaded machine the 50 accepted calls took longer than that
      // rounding to go out, so a few retries find the window still full and draw a second, smaller wave (13
      // seen). At most two waves of the 10 calls: retries that did not wait for Retry-After would draw many more.
      expect(stats.throttledByTenant[app.azureTenantId]).toBeLessThanOrEqual(20);
    } finally {
      await close();
    }
  }, 120_000);
});

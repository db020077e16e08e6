import { silentLogger } from '@urs/logging';
import { type TestRedis, createTestRedis } from '@urs/testkit';
import { type CallLimiter, createSharedLimiter } from '../src';

const MAX_CONCURRENT = 4;

let redis: TestRedis;
let limiters: CallLimiter[];

beforeEach(async () => {
  redis = createTestRedis();
  // Two limiters on one id, as two vuln-fetcher processes share the Redis limiter.
  limiters = await Promise.all(
    [1, 2].map(() =>
      createSharedLimiter({
        redis: redis.client,
        keyPrefix: redis.prefix,
        maxConcurrent: MAX_CONCURRENT,
        handOff: { maxLeaseMs: 200 },
        logger: silentLogger,
      }),
    ),
  );
});

afterEach(async () => {
  await Promise.all(limiters.map((limiter) => limiter.close()));
  await redis.close();
});

describe('createSharedLimiter with slot hand-off', () => {
  it('schedule should keep at most maxConcurrent calls in flight across processes while slots pass from call to call', async () => {
    let running = 0;
    let peak = 0;
    let calls = 0;
    const call = async (): Promise<void> => {
      running++;
      calls++;
      peak = Math.max(peak, running);
      await new Promise((resolve) => setTimeout(resolve, 5));
      running--;
    };
    // Six callers per process, each running calls one after the other, like the vuln-fetcher's workers.
    await Promise.all(
      limiters.flatMap((limiter) =>
        Array.from({ length: 6 }, async () => {
          for (let i = 0; i < 25; i++) await limiter.schedule(call);
        }),
      ),
    );
    expect(calls).toBe(300);
    expect(peak).toBe(MAX_CONCURRENT);
    // Bottleneck counts the jobs it ran: slots taken from Redis, far fewer than the calls they served.
    const done = Number(await redis.client.hget(`b_${redis.prefix}defender-api_settings`, 'done'));
    expect(done).toBeGreaterThan(0);
    expect(done).toBeLessThan(100);
  });
});

import { silentLogger } from '@urs/logging';
import { type TestRedis, createTestRedis } from '@urs/testkit';
import { type CallLimiter, createSharedLimiter } from '../src';

const MAX_CONCURRENT = 4;
const MAX_LEASE_MS = 200;
/** How long a process keeps its slots while nobody else waits: longer than a test may run. */
const MAX_HOLD_MS = 120_000;

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
        jobExpirationMs: 2 * MAX_HOLD_MS,
        handOff: { maxLeaseMs: MAX_LEASE_MS, maxHoldMs: MAX_HOLD_MS },
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
    const began = Date.now();
    await Promise.all(
      limiters.flatMap((limiter) =>
        Array.from({ length: 6 }, async () => {
          for (let i = 0; i < 25; i++) await limiter.schedule(call);
        }),
      ),
    );
    const ranMs = Date.now() - began;
    expect(calls).toBe(300);
    expect(peak).toBe(MAX_CONCURRENT);
    // Bottleneck counts the jobs it ran: slots taken from Redis, far fewer than the calls they served. A slot
    // goes back when its lease ends or its process has no call waiting: about once per lease period each, so
    // the bound grows with the run's time (a loaded machine's late timers make it longer), where one slot per
    // call would reach 300.
    const done = Number(await redis.client.hget(`b_${redis.prefix}defender-api_settings`, 'done'));
    expect(done).toBeGreaterThan(0);
    expect(done).toBeLessThanOrEqual(2 * MAX_CONCURRENT * (ranMs / MAX_LEASE_MS + 1));
  });

  it('schedule should keep its slots past their lease while no other process waits, and give them back when one does', async () => {
    const [first, second] = limiters as [CallLimiter, CallLimiter];
    let stop = false;
    const call = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 5));
    // The first process alone, busy for ~1 s with leases of 200 ms: its slots are kept, not asked for again.
    const busy = Promise.all(
      Array.from({ length: 6 }, async () => {
        while (!stop) await first.schedule(call);
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const settings = `b_${redis.prefix}defender-api_settings`;
    expect(Number((await redis.client.hget(settings, 'done')) ?? 0)).toBeLessThanOrEqual(2);
    // The second process asks for a slot: it gets one once a lease of the first ends (~200 ms), not when the
    // first's hold would end (MAX_HOLD_MS, past the test's timeout), while the first keeps calling.
    await second.schedule(call);
    stop = true;
    await busy;
  });

  it('mayKeep should say no while another process waits for a slot, or once the shared count lost these slots', async () => {
    // Without hand-off (mayKeep is what the hand-off asks the shared limiter): every call holds its own slot.
    const [first, second] = (await Promise.all(
      [1, 2].map(() =>
        createSharedLimiter({
          redis: redis.client,
          keyPrefix: redis.prefix,
          maxConcurrent: MAX_CONCURRENT,
          logger: silentLogger,
        }),
      ),
    )) as [CallLimiter, CallLimiter];
    limiters.push(first, second);
    expect(first.mayKeep).toBeDefined();
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let started = 0;
    // The first process holds every slot until released.
    const holding = Array.from({ length: MAX_CONCURRENT }, () =>
      first.schedule(async () => {
        started++;
        await gate;
      }),
    );
    while (started < MAX_CONCURRENT) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(await first.mayKeep?.(MAX_CONCURRENT)).toBe(true);
    // More held here than the shared count holds for this process: its keys were lost.
    expect(await first.mayKeep?.(MAX_CONCURRENT + 1)).toBe(false);
    const waiting = second.schedule(async () => 'second ran');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await first.mayKeep?.(MAX_CONCURRENT)).toBe(false);
    release();
    await Promise.all(holding);
    await expect(waiting).resolves.toBe('second ran');
  });
});

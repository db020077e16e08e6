import {
  type LogLine,
  type TestRedis,
  capturingLogger,
  createTestRedis,
  deleteKeysMatching,
} from '@urs/testkit';
import { type CallLimiter, createSharedLimiter } from '../src';

const MAX_CONCURRENT = 3;

/** Counts the jobs in flight in this process and remembers the highest count. */
function concurrencyProbe(jobMs: number): {
  job: () => Promise<void>;
  peak: () => number;
  reset: () => void;
} {
  let running = 0;
  let peak = 0;
  return {
    job: async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((resolve) => setTimeout(resolve, jobMs));
      running--;
    },
    peak: () => peak,
    reset: () => {
      peak = running;
    },
  };
}

let redis: TestRedis;
let limiters: CallLimiter[];
let lines: LogLine[];
/** Bottleneck keeps a limiter's state in `b_<id>_*`; the id is `<keyPrefix>defender-api`. */
let bottleneckKeys: string;

beforeEach(async () => {
  redis = createTestRedis();
  lines = [];
  bottleneckKeys = `b_${redis.prefix}defender-api_*`;
  // Two limiters sharing the id: after the wipe one re-creates the settings, the other finds them
  // re-created but itself unknown, so both of Bottleneck's recoveries are exercised.
  limiters = await Promise.all(
    [1, 2].map(() =>
      createSharedLimiter({
        redis: redis.client,
        keyPrefix: redis.prefix,
        maxConcurrent: MAX_CONCURRENT,
        logger: capturingLogger(lines),
      }),
    ),
  );
});

afterEach(async () => {
  await Promise.all(limiters.map((l) => l.close()));
  // Only this test's keys (SCAN on its unique prefix), never FLUSHALL: the Redis is shared.
  await redis.close();
});

function runBatch(job: () => Promise<void>, perLimiter: number): Promise<void[]> {
  return Promise.all(limiters.flatMap((l) => Array.from({ length: perLimiter }, () => l.schedule(job))));
}

describe('createSharedLimiter after its Redis keys are lost', () => {
  it('schedule should run later jobs, at most maxConcurrent at a time, after the keys are deleted', async () => {
    const probe = concurrencyProbe(20);
    await runBatch(probe.job, 6);
    expect(probe.peak()).toBe(MAX_CONCURRENT);

    // What FLUSHALL or a Redis restart without persistence does to this limiter, while the process runs.
    const deleted = await deleteKeysMatching(redis.client, bottleneckKeys);
    expect(deleted).toBeGreaterThan(0);
    expect(await redis.client.exists(`b_${redis.prefix}defender-api_settings`)).toBe(0);

    probe.reset();
    await expect(runBatch(probe.job, 6)).resolves.toHaveLength(12);
    expect(probe.peak()).toBe(MAX_CONCURRENT);
    // Bottleneck re-created its settings from the code's, so the limit is the configured one again.
    expect(await redis.client.hget(`b_${redis.prefix}defender-api_settings`, 'maxConcurrent')).toBe(
      String(MAX_CONCURRENT),
    );
    expect(lines.filter((line) => line.level === 'error')).toEqual([]);
  });

  it('schedule should settle the jobs in flight when the keys are deleted, and run the next ones', async () => {
    const probe = concurrencyProbe(300);
    const inFlight = runBatch(probe.job, 2);
    // Wait until jobs hold slots, then wipe the keys under them.
    while (probe.peak() === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(await deleteKeysMatching(redis.client, bottleneckKeys)).toBeGreaterThan(0);

    await expect(inFlight).resolves.toHaveLength(4);
    probe.reset();
    await expect(runBatch(probe.job, 3)).resolves.toHaveLength(6);
    expect(probe.peak()).toBe(MAX_CONCURRENT);
  });
});

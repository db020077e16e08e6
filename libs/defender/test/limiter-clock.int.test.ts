import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { silentLogger } from '@urs/logging';
import { RUN_TS, type TestRedis, createTestRedis, testInfra } from '@urs/testkit';
import { type CallLimiter, createSharedLimiter } from '../src';

/** A job's expiration in this test; the other process's clock runs half of it ahead. */
const JOB_EXPIRATION_MS = 6_000;
const SKEW_MS = 3_000;

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

describe('createSharedLimiter across processes whose clocks disagree', () => {
  let redis: TestRedis;
  let limiter: CallLimiter;

  beforeEach(async () => {
    redis = createTestRedis();
    limiter = await createSharedLimiter({
      redis: redis.client,
      keyPrefix: redis.prefix,
      maxConcurrent: 1,
      jobExpirationMs: JOB_EXPIRATION_MS,
      logger: silentLogger,
    });
  });

  afterEach(async () => {
    await limiter.close();
    await redis.close();
  });

  it("schedule should keep a job's slot until its expiration by Redis's clock when another process's clock runs ahead", async () => {
    const child = spawn(process.execPath, [RUN_TS, join(__dirname, 'fixtures/skewed-limiter.ts')], {
      env: {
        ...process.env,
        SKEW_MS: String(SKEW_MS),
        LIMITER_PREFIX: redis.prefix,
        REDIS_URL: testInfra().redisUrl,
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const stderr: string[] = [];
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const nextLine = async (): Promise<unknown> => {
      const line = await lines.next();
      if (line.done) throw new Error(`the other process ended early: ${stderr.join('')}`);
      return JSON.parse(line.value);
    };
    try {
      expect(await nextLine()).toEqual({ ready: true });
      let held = false;
      let otherStartedWhileHeld: boolean | undefined;
      const otherStarted = (async () => {
        // Its job waits for the only slot, which this process's job holds until it ends.
        await new Promise((resolve) => setTimeout(resolve, JOB_EXPIRATION_MS - SKEW_MS / 2));
        child.stdin.write('go\n');
        expect(await nextLine()).toEqual({ started: true });
        otherStartedWhileHeld = held;
      })();
      // Holds its slot until the slot ends (or, wrongly, until the other process's job started beside it).
      await limiter.schedule(async (slotEnds) => {
        held = true;
        await Promise.race([otherStarted, aborted(slotEnds)]);
        held = false;
      });
      await otherStarted;
      expect(otherStartedWhileHeld).toBe(false);
    } finally {
      child.kill();
    }
  }, 30_000);
});

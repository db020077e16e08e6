import type Redis from 'ioredis';
import { silentLogger } from '@urs/logging';
import { sleep } from '@urs/resilience';
import { closeRedis, createRedis } from '@urs/store';
import {
  type LogLine,
  type RedisFailover,
  capturingLogger,
  freePort,
  startRedis,
  startRedisFailover,
  stopRedis,
  uniqueId,
} from '@urs/testkit';
import { type CallLimiter, createSharedLimiter } from '../src';

// Redis servers of the test's own (a primary and its replica behind one address; one stopped): the shared
// Redis is never failed over nor stopped.

describe('createSharedLimiter through a Redis failover', () => {
  let failover: RedisFailover;
  let redis: Redis | undefined;
  let limiter: CallLimiter | undefined;

  beforeEach(async () => {
    failover = await startRedisFailover();
  });

  afterEach(async () => {
    await limiter?.close();
    limiter = undefined;
    if (redis) await closeRedis(redis);
    redis = undefined;
    await failover.close();
  });

  it("schedule should run calls again once its connection's server turns replica (READONLY), on the new primary", async () => {
    const lines: LogLine[] = [];
    redis = createRedis({ url: failover.url });
    redis.on('error', () => undefined);
    limiter = await createSharedLimiter({
      redis,
      keyPrefix: `${uniqueId('failover')}:`,
      maxConcurrent: 2,
      logger: capturingLogger(lines),
    });
    await expect(limiter.schedule(async () => 'before')).resolves.toBe('before');
    await failover.failover();
    await expect(limiter.schedule(async () => 'after')).resolves.toBe('after');
    await expect(limiter.schedule(async () => 'again')).resolves.toBe('again');
  });
});

describe('createSharedLimiter with its Redis gone', () => {
  it('close should end within the bound of its QUITs while Redis is away, not wait for its return', async () => {
    const port = await freePort();
    const server = await startRedis(port);
    const redis = createRedis({ url: `redis://127.0.0.1:${port}` });
    redis.on('error', () => undefined);
    try {
      const limiter = await createSharedLimiter({
        redis,
        keyPrefix: `${uniqueId('gone')}:`,
        logger: silentLogger,
      });
      await expect(limiter.schedule(async () => 'ran')).resolves.toBe('ran');
      await stopRedis(server);
      const started = Date.now();
      const bound = new AbortController();
      const outcome = await Promise.race([
        limiter.close().then(() => 'closed'),
        sleep(8_000, bound.signal).then(() => 'still closing'),
      ]);
      // The bound's timer ends with the race: left running, it would hold the test run open.
      bound.abort();
      expect(outcome).toBe('closed');
      // closeRedis waits 2 s for each QUIT, both at once.
      expect(Date.now() - started).toBeLessThan(4_000);
    } finally {
      redis.disconnect();
      await stopRedis(server);
    }
  });
});

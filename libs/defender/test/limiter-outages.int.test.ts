import type Redis from 'ioredis';
import { closeRedis, createRedis } from '@urs/store';
import {
  type LogLine,
  type RedisFailover,
  capturingLogger,
  startRedisFailover,
  uniqueId,
} from '@urs/testkit';
import { type CallLimiter, createSharedLimiter } from '../src';

// A Redis of the test's own, a primary and its replica behind one address: the shared Redis is never failed over.

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

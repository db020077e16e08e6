import type Redis from 'ioredis';
import { silentLogger } from '@urs/logging';
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
      // From here on a clock the test moves: how long the close takes is told by it, not by the machine's
      // speed. Between its steps the event loop turns, so that the connections' I/O goes on.
      jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
      let closed = false;
      void limiter.close().then(() => (closed = true));
      let elapsedMs = 0;
      while (!closed && elapsedMs < 8_000) {
        await new Promise((resolve) => setImmediate(resolve));
        await jest.advanceTimersByTimeAsync(100);
        elapsedMs += 100;
      }
      // closeRedis waits 2 s for each QUIT, both at once: the close ends with them, not at Redis's return.
      expect({ closed, elapsedMs }).toEqual({ closed: true, elapsedMs: 2_000 });
    } finally {
      jest.useRealTimers();
      redis.disconnect();
      await stopRedis(server);
    }
  });
});

import type Redis from 'ioredis';
import { closeRedis, createRedis } from '@urs/store';
import { type RedisFailover, startRedisFailover } from '@urs/testkit';

// A Redis of the test's own, a primary and its replica behind one address: the shared Redis is never failed over.

describe('createRedis through a failover', () => {
  let failover: RedisFailover;
  let redis: Redis | undefined;

  beforeEach(async () => {
    failover = await startRedisFailover();
  });

  afterEach(async () => {
    if (redis) await closeRedis(redis);
    redis = undefined;
    await failover.close();
  });

  it('createRedis should reconnect when its server turns replica (READONLY) and send the refused write to the new primary', async () => {
    redis = createRedis({ url: failover.url });
    redis.on('error', () => undefined);
    await redis.set('before', '1');
    await failover.failover();
    // The old connection still answers PING; only a reconnect reaches the new primary.
    await expect(redis.ping()).resolves.toBe('PONG');
    await expect(redis.set('after', '2')).resolves.toBe('OK');
    expect(await failover.primary().mget('before', 'after')).toEqual(['1', '2']);
  });

  it('createRedis should fail a write on a server that stays a replica (READONLY for good) instead of sending it for ever', async () => {
    redis = createRedis({ url: failover.replicaUrl() });
    redis.on('error', () => undefined);
    await expect(redis.ping()).resolves.toBe('PONG');
    // A client that reconnected and sent it again on every READONLY would never settle it.
    const write = redis.set('lost', '1');
    const outcome = await Promise.race([
      write.then(
        () => 'written',
        (error: Error) => error.message,
      ),
      new Promise<string>((resolve) => setTimeout(() => resolve('still waiting'), 20_000).unref()),
    ]);
    expect(outcome).toMatch(/^READONLY/);
    // Within the window the next one fails at once, without a reconnect.
    await expect(redis.set('lost', '2')).rejects.toThrow(/^READONLY/);
  });
});

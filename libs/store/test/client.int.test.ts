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
});

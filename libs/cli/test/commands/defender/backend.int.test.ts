import { randomUUID } from 'node:crypto';
import { createSharedLimiter } from '@urs/defender';
import { silentLogger } from '@urs/logging';
import { closeRedis, createRedis } from '@urs/store';
import { type RedisFailover, deleteKeysMatching, startRedisFailover, testInfra } from '@urs/testkit';
import { type Backend, openBackend } from '../../../src/commands/defender/backend';

// A Redis of the test's own, a primary and its replica behind one address: the shared Redis is never failed over.

describe('openBackend through a Redis failover', () => {
  let failover: RedisFailover;
  let backend: Backend | undefined;

  beforeEach(async () => {
    failover = await startRedisFailover();
  });

  afterEach(async () => {
    await backend?.close();
    backend = undefined;
    await failover.close();
  });

  it("openBackend should reconnect when Redis turns replica (READONLY) and take the tenant's quota on the new primary", async () => {
    const env = { REDIS_URL: failover.url, URS_REDIS_PREFIX: `urs-cli-${randomUUID()}:` };
    const warnings: string[] = [];
    backend = await openBackend(env, true, (line) => void warnings.push(line));
    expect(backend.kind).toBe('redis');
    const tenant = { azureTenantId: randomUUID(), clientId: randomUUID() };
    (await backend.quota.acquire(tenant, 'machines')).sent();
    await failover.failover();
    // The old connection still answers PING; only a reconnect reaches the new primary.
    await expect(backend.quota.acquire(tenant, 'machines')).resolves.toBeDefined();
    expect(warnings).toEqual([]);
  });
});

describe('openBackend on the shared Redis', () => {
  it("openBackend should join the pipeline's stored limit of calls in flight and leave it as it is, whatever its own", async () => {
    const prefix = `urs-cli-${randomUUID()}:`;
    const redis = createRedis({ url: testInfra().redisUrl });
    const settingsKey = `b_${prefix}defender-api_settings`;
    try {
      const service = await createSharedLimiter({
        redis,
        keyPrefix: prefix,
        maxConcurrent: 20,
        logger: silentLogger,
      });
      await service.close();
      // No URS_DEFENDER_MAX_IN_FLIGHT: the CLI's own would be 10.
      const backend = await openBackend(
        { REDIS_URL: testInfra().redisUrl, URS_REDIS_PREFIX: prefix },
        true,
        () => undefined,
      );
      await backend.close();
      expect(backend.kind).toBe('redis');
      expect(await redis.hget(settingsKey, 'maxConcurrent')).toBe('20');
    } finally {
      await deleteKeysMatching(redis, `b_${prefix}*`);
      await closeRedis(redis);
    }
  });
});

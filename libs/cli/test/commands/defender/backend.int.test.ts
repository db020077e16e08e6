import { randomUUID } from 'node:crypto';
import { type RedisFailover, startRedisFailover } from '@urs/testkit';
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
    const tenant = randomUUID();
    (await backend.quota.acquire(tenant, 'machines')).sent();
    await failover.failover();
    // The old connection still answers PING; only a reconnect reaches the new primary.
    await expect(backend.quota.acquire(tenant, 'machines')).resolves.toBeDefined();
    expect(warnings).toEqual([]);
  });
});

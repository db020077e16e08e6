import type { TenantRecord } from '@urs/contracts';
import { createRegistrarStateStore } from '@urs/store';
import { testRedisPerTest } from '@urs/testkit';
import { createTenantLock } from '../src/tenant-lock';
import { memoryPublisher, memoryTenantStore, registrationBody, testRegistry } from './fakes';

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// The tenant write lock over a real Redis, with a lock of 300 ms (renewed every 100 ms) instead of 15 s.
describe('createTenantLock over Redis', () => {
  const redis = testRedisPerTest();
  const writeLock = { lockMs: 300 };

  function registryWith(overrides: { send?: () => Promise<void>; get?: () => Promise<void> } = {}) {
    const tenants = memoryTenantStore();
    const publisher = memoryPublisher();
    const state = createRegistrarStateStore(redis.client, redis.prefix);
    const send = publisher.send.bind(publisher);
    publisher.send = async (...args) => {
      await overrides.send?.();
      return send(...args);
    };
    const get = tenants.get.bind(tenants);
    tenants.get = async (tenantId) => {
      await overrides.get?.();
      return get(tenantId);
    };
    const registry = testRegistry({ tenants, state, publisher, writeLock });
    const records = () =>
      publisher.sent.filter((s) => s.topic === 'urs.tenants').map((s) => s.message.value as TenantRecord);
    return { registry, tenants, state, records };
  }

  const registration = (pollIntervalMinutes: number) => ({
    tenantId: 'acme',
    defender: registrationBody({ pollIntervalMinutes }) as never,
  });

  it('locked should keep the lock of a work that outlasts its length, so another writer waits for it', async () => {
    const locked = createTenantLock(createRegistrarStateStore(redis.client, redis.prefix), writeLock);
    const events: string[] = [];
    const work = (name: string, ms: number) => async () => {
      events.push(`${name} in`);
      await pause(ms);
      events.push(`${name} out`);
    };
    const first = locked('acme', undefined, work('first', 1_000));
    await pause(50);
    await Promise.all([first, locked('acme', undefined, work('second', 0))]);
    expect(events).toEqual(['first in', 'first out', 'second in', 'second out']);
  });

  it('register should land the newer revision last on urs.tenants when the older one is slow to produce', async () => {
    let sends = 0;
    // The first produce takes a second (a broker failing over), three times the lock's length.
    const { registry, records, tenants } = registryWith({
      send: async () => {
        if (++sends === 1) await pause(1_000);
      },
    });
    const older = registry.register(registration(10), { source: 'rest' });
    await pause(50);
    await Promise.all([older, registry.register(registration(20), { source: 'rest' })]);
    const written = records();
    expect(written.map((record) => record.defender.pollIntervalMinutes)).toEqual([10, 20]);
    expect(written[1]?.revision).toBeGreaterThan(written[0]?.revision ?? Infinity);
    expect((await tenants.get('acme'))?.defender.pollIntervalMinutes).toBe(20);
  });

  it('register should write nothing, and fail retryably, once its lock was lost before it wrote', async () => {
    let stalled = true;
    // The first read under the lock stalls while another writer takes the lock (Redis wiped, the key lapsed).
    const { registry, records, tenants } = registryWith({
      get: async () => {
        if (!stalled) return;
        stalled = false;
        await redis.client.set(`${redis.prefix}tenant-write-lock:acme`, 'another-writer');
        await pause(400);
      },
    });
    await expect(registry.register(registration(10), { source: 'rest' })).rejects.toMatchObject({
      code: 'TENANT_LOCK_LOST',
      canRetry: true,
    });
    expect(records()).toEqual([]);
    expect(await tenants.get('acme')).toBeNull();
    // The other writer's lock is left to it.
    expect(await redis.client.get(`${redis.prefix}tenant-write-lock:acme`)).toBe('another-writer');
  });

  it('register should say the change may have been applied when its lock was lost while its record was sent', async () => {
    // The produce stalls while another writer takes the lock: the record reaches urs.tenants all the same.
    const { registry, records, tenants } = registryWith({
      send: async () => {
        await redis.client.set(`${redis.prefix}tenant-write-lock:acme`, 'another-writer');
        await pause(400);
      },
    });
    await expect(registry.register(registration(10), { source: 'rest' })).rejects.toMatchObject({
      code: 'TENANT_LOCK_LOST',
      canRetry: true,
      message:
        'the write lock of tenant acme lapsed before its write was done, its record already sent to ' +
        'urs.tenants, where it cannot be recalled: the change may have been applied; read the tenant back ' +
        'before trying again',
    });
    expect(records()).toMatchObject([{ tenantId: 'acme', defender: { pollIntervalMinutes: 10 } }]);
    // Not in Redis: the write stopped after the send, before its next step.
    expect(await tenants.get('acme')).toBeNull();
  });
});

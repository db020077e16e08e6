import { UrsError } from '@urs/resilience';
import { memoryStateStore, memoryTenantStore, registrationBody, testRegistry } from './fakes';

/**
 * A registry whose Redis fails once on the step after the record's write (`failing`: the schedule's clear or
 * the status's update), as a Redis outage between the steps does: the write is then tried again.
 */
function setup(failing: 'clear' | 'updateStatus') {
  const tenants = memoryTenantStore();
  const cleared: string[] = [];
  let fail = false;
  const down = () => new UrsError('STORE_DOWN', 'Redis refused the write', { infrastructure: true });
  const updateStatus = tenants.updateStatus.bind(tenants);
  tenants.updateStatus = async (tenantId, status) => {
    if (fail && failing === 'updateStatus') {
      fail = false;
      throw down();
    }
    return updateStatus(tenantId, status);
  };
  const schedules = {
    clear: async (tenantId: string) => {
      if (fail && failing === 'clear') {
        fail = false;
        throw down();
      }
      cleared.push(tenantId);
    },
    carryFailure: async () => true,
  };
  const registry = testRegistry({ tenants, state: memoryStateStore(), schedules });
  return { tenants, registry, cleared, failNext: () => void (fail = true) };
}

const rest = { source: 'rest' as const };
const body = (overrides: Record<string, unknown> = {}) => registrationBody(overrides) as never;

describe('createTenantRegistry', () => {
  const polled = { state: 'active' as const, nextPollAt: '2026-12-07T18:00:00.000Z' };

  it.each(['clear', 'updateStatus'] as const)(
    'register tried again after Redis failed on the %s of a disabling write should bring the status and schedule in line with the record',
    async (failing) => {
      const { tenants, registry, cleared, failNext } = setup(failing);
      await registry.register({ tenantId: 'a', defender: body() }, rest);
      await tenants.updateStatus('a', polled);
      failNext();
      await expect(
        registry.register({ tenantId: 'a', defender: body({ enabled: false }) }, rest, {
          skipIfUnchanged: true,
        }),
      ).rejects.toMatchObject({ code: 'STORE_DOWN' });
      expect((await tenants.get('a'))?.enabled).toBe(false);
      const again = await registry.register({ tenantId: 'a', defender: body({ enabled: false }) }, rest, {
        skipIfUnchanged: true,
      });
      expect(again.changed).toBe(false);
      const status = await tenants.getStatus('a');
      expect(status.state).toBe('disabled');
      expect(status).not.toHaveProperty('nextPollAt');
      expect(cleared).toContain('a');
    },
  );

  it.each(['clear', 'updateStatus'] as const)(
    'disable tried again after Redis failed on the %s should bring the status and schedule in line with the record',
    async (failing) => {
      const { tenants, registry, cleared, failNext } = setup(failing);
      await registry.register({ tenantId: 'a', defender: body() }, rest);
      await tenants.updateStatus('a', polled);
      const director = { source: 'director' as const, generation: 3 };
      failNext();
      await expect(registry.disable('a', 'missing', director)).rejects.toMatchObject({ code: 'STORE_DOWN' });
      expect((await tenants.get('a'))?.enabled).toBe(false);
      expect(await registry.disable('a', 'missing', director)).toBeNull();
      const status = await tenants.getStatus('a');
      expect(status.state).toBe('disabled');
      expect(status).not.toHaveProperty('nextPollAt');
      expect(cleared).toContain('a');
    },
  );

  it('register tried again after Redis failed on the status of an enabling write should no longer say the tenant is disabled', async () => {
    const { tenants, registry, failNext } = setup('updateStatus');
    await registry.register({ tenantId: 'a', defender: body({ enabled: false }) }, rest);
    expect((await tenants.getStatus('a')).state).toBe('disabled');
    failNext();
    await expect(
      registry.register({ tenantId: 'a', defender: body() }, rest, { skipIfUnchanged: true }),
    ).rejects.toMatchObject({ code: 'STORE_DOWN' });
    await registry.register({ tenantId: 'a', defender: body() }, rest, { skipIfUnchanged: true });
    expect((await tenants.getStatus('a')).state).toBe('active');
  });

  it('register and disable of a tenant whose status is in line with its record should not write it again', async () => {
    const { tenants, registry, cleared } = setup('updateStatus');
    await registry.register({ tenantId: 'a', defender: body({ enabled: false }) }, rest);
    expect(cleared).toEqual(['a']);
    let writes = 0;
    const updateStatus = tenants.updateStatus.bind(tenants);
    tenants.updateStatus = async (tenantId, status) => {
      writes++;
      return updateStatus(tenantId, status);
    };
    await registry.register({ tenantId: 'a', defender: body({ enabled: false }) }, rest, {
      skipIfUnchanged: true,
    });
    expect(await registry.disable('a', 'missing', { source: 'director', generation: 1 })).toBeNull();
    expect(writes).toBe(0);
    expect(cleared).toEqual(['a']);
  });
});

describe('createTenantRegistry catchUp', () => {
  const failed = {
    state: 'error' as const,
    lastErrorCode: 'AUTH_FAILED',
    lastErrorMessage: 'secret refused',
  };

  async function registered() {
    const { tenants, registry, cleared } = setup('clear');
    const { record } = await registry.register({ tenantId: 'a', defender: body() }, rest);
    await tenants.updateStatus('a', failed);
    return { tenants, registry, cleared, record };
  }

  it('should store a newer record with the status its write leaves: an enabled one active, its error cleared', async () => {
    const { tenants, registry, record } = await registered();
    const newer = { ...record, revision: record.revision + 1, updatedAt: '2030-01-01T00:00:00.000Z' };
    expect(await registry.catchUp([{ tenantId: 'a', record: newer }])).toEqual({ applied: 1, pending: 0 });
    expect(await tenants.get('a')).toEqual(newer);
    expect(await tenants.getStatus('a')).toMatchObject({ state: 'active' });
    expect((await tenants.getStatus('a')).lastErrorCode).toBeUndefined();
  });

  it('should store a disabled record as disable leaves it, its schedule cleared', async () => {
    const { tenants, registry, cleared, record } = await registered();
    const newer = {
      ...record,
      revision: record.revision + 1,
      updatedAt: '2030-01-01T00:00:00.000Z',
      enabled: false,
      disabledReason: 'disabled by an administrator',
    };
    await registry.catchUp([{ tenantId: 'a', record: newer }]);
    expect(await tenants.get('a')).toEqual(newer);
    expect(await tenants.getStatus('a')).toMatchObject({ state: 'disabled' });
    expect(cleared).toEqual(['a']);
  });

  it('should leave the status of a re-sealed record (its updatedAt kept) as it is', async () => {
    const { tenants, registry, record } = await registered();
    const resealed = { ...record, revision: record.revision + 1 };
    await registry.catchUp([{ tenantId: 'a', record: resealed }]);
    expect(await tenants.get('a')).toEqual(resealed);
    expect(await tenants.getStatus('a')).toMatchObject(failed);
  });

  it('should change nothing for a record or a deletion no newer than Redis', async () => {
    const { tenants, registry, cleared, record } = await registered();
    expect(
      await registry.catchUp([
        { tenantId: 'a', record: { ...record, enabled: false } },
        { tenantId: 'a', record: null, revision: record.revision },
        { tenantId: 'b', record: null, revision: record.revision + 1 },
      ]),
    ).toEqual({ applied: 0, pending: 0 });
    expect(await tenants.get('a')).toEqual(record);
    expect(await tenants.getStatus('a')).toMatchObject(failed);
    expect(cleared).toEqual([]);
  });

  it.each(['clear', 'updateStatus'] as const)(
    'should bring the status in line with a record stored whose %s then failed',
    async (failing) => {
      const { tenants, registry, cleared, failNext } = setup(failing);
      await registry.register({ tenantId: 'a', defender: body() }, rest);
      await tenants.updateStatus('a', { state: 'active', nextPollAt: '2026-12-07T18:00:00.000Z' });
      failNext();
      await expect(
        registry.disable('a', 'gone from Director', { source: 'director', generation: 1 }),
      ).rejects.toMatchObject({ code: 'STORE_DOWN' });
      expect((await tenants.get('a'))?.enabled).toBe(false);
      // The record is stored, its status and schedule not: still to catch up.
      expect(await registry.catchUpPending()).toEqual({ applied: 1, pending: 0 });
      const status = await tenants.getStatus('a');
      expect(status.state).toBe('disabled');
      expect(status).not.toHaveProperty('nextPollAt');
      // Cleared by the catch-up when its clear failed, again (as harmless) when its status's update did.
      expect(cleared).toContain('a');
      expect(await registry.catchUpPending()).toEqual({ applied: 0, pending: 0 });
    },
  );

  it('should not write the status of a record it caught up once its lock was lost after the put', async () => {
    const tenants = memoryTenantStore();
    const state = memoryStateStore();
    const cleared: string[] = [];
    let losing = false;
    const put = tenants.put.bind(tenants);
    // The lock found lost at a renewal while Redis takes the record: the catch-up stops before the status.
    tenants.put = async (record) => {
      if (losing) await new Promise((resolve) => setTimeout(resolve, 100));
      return put(record);
    };
    const registry = testRegistry({
      tenants,
      state: {
        ...state,
        renewTenantLock: async (tenantId, token, ms) => !losing && state.renewTenantLock(tenantId, token, ms),
      },
      writeLock: { lockMs: 30 },
      schedules: { clear: async (tenantId) => void cleared.push(tenantId), carryFailure: async () => true },
    });
    const { record } = await registry.register({ tenantId: 'a', defender: body() }, rest);
    const disabled = {
      ...record,
      revision: record.revision + 1,
      updatedAt: '2030-01-01T00:00:00.000Z',
      enabled: false,
      disabledReason: 'disabled by an administrator',
    };
    losing = true;
    expect(await registry.catchUp([{ tenantId: 'a', record: disabled }])).toEqual({ applied: 0, pending: 1 });
    expect(await tenants.get('a')).toEqual(disabled);
    expect((await tenants.getStatus('a')).state).toBe('active');
    expect(cleared).toEqual([]);
    // Under the lock again, with Redis still holding that record: its status follows.
    losing = false;
    expect(await registry.catchUpPending()).toEqual({ applied: 1, pending: 0 });
    expect((await tenants.getStatus('a')).state).toBe('disabled');
    expect(cleared).toEqual(['a']);
  });

  it('should store a record whose write lost its lock after the send', async () => {
    const tenants = memoryTenantStore();
    const state = memoryStateStore();
    // The lock found lost at a renewal during the send: the write stops before Redis.
    let losing = true;
    const registry = testRegistry({
      tenants,
      state: {
        ...state,
        renewTenantLock: async (tenantId, token, ms) => !losing && state.renewTenantLock(tenantId, token, ms),
      },
      writeLock: { lockMs: 30 },
      publisher: {
        async send() {
          await new Promise((resolve) => setTimeout(resolve, 100));
        },
        async close() {},
      } as never,
    });
    await expect(registry.register({ tenantId: 'a', defender: body() }, rest)).rejects.toMatchObject({
      code: 'TENANT_LOCK_LOST',
    });
    expect(await tenants.get('a')).toBeNull();
    losing = false;
    expect(await registry.catchUpPending()).toEqual({ applied: 1, pending: 0 });
    expect(await tenants.get('a')).toMatchObject({ tenantId: 'a', enabled: true });
  });
});

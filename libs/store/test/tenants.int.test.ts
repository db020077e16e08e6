import type { TenantRecord } from '@urs/contracts';
import { createRegistrarStateStore, createTenantStore } from '@urs/store';
import { tenantRecord, testRedisPerTest } from '@urs/testkit';

const record = (tenantId: string, revision: number, pollIntervalMinutes = 60): TenantRecord =>
  tenantRecord(tenantId, { revision, source: 'rest', pollIntervalMinutes });

describe('createTenantStore', () => {
  const redis = testRedisPerTest();

  it('put should keep the newest revision when records arrive out of order', async () => {
    const store = createTenantStore(redis.client, redis.prefix);
    expect(await store.put(record('acme', 2, 30))).toBe(true);
    expect(await store.put(record('acme', 1, 90))).toBe(false);
    expect(await store.put(record('acme', 2, 90))).toBe(false);
    expect((await store.get('acme'))?.defender.pollIntervalMinutes).toBe(30);
    expect(await store.ids()).toEqual(['acme']);
  });

  it('getMany should read the records of many tenants at once, a tenant with no record left out', async () => {
    const store = createTenantStore(redis.client, redis.prefix);
    const tenantIds = Array.from({ length: 1200 }, (_, i) => `t${i}`);
    for (const tenantId of tenantIds.slice(0, 1100)) await store.put(record(tenantId, 2));
    const records = await store.getMany(tenantIds);
    expect(records.size).toBe(1100);
    expect(records.get('t1099')).toMatchObject({ tenantId: 't1099', revision: 2 });
    expect(records.has('t1100')).toBe(false);
    expect(await store.getMany([])).toEqual(new Map());
  });

  it('remove should not delete a record newer than the deletion', async () => {
    const store = createTenantStore(redis.client, redis.prefix);
    await store.put(record('acme', 5));
    expect(await store.remove('acme', 4)).toBe(false);
    expect(await store.get('acme')).not.toBeNull();
    expect(await store.remove('acme', 5)).toBe(true);
    expect(await store.get('acme')).toBeNull();
    expect(await store.isEmpty()).toBe(true);
  });

  it('put should not bring back a tenant removed at or after its revision', async () => {
    const store = createTenantStore(redis.client, redis.prefix);
    await store.put(record('acme', 5));
    expect(await store.remove('acme', 7)).toBe(true);
    // Older than the deletion (read from urs.tenants before it, or sent before it and stored late): refused.
    expect(await store.put(record('acme', 6))).toBe(false);
    expect(await store.put(record('acme', 7))).toBe(false);
    expect(await store.get('acme')).toBeNull();
    expect(await store.isEmpty()).toBe(true);
    // A deletion older than the last one does not lower it; a registration after it is stored.
    expect(await store.remove('acme', 3)).toBe(true);
    expect(await store.put(record('acme', 6))).toBe(false);
    expect(await store.put(record('acme', 8))).toBe(true);
    expect(await store.get('acme')).toMatchObject({ revision: 8 });
    // Kept as long as a deletion's generation, counted from the last removal.
    const ttl = await redis.client.pttl(`${redis.prefix}tenant-removed:acme`);
    expect(ttl).toBeGreaterThan(29 * 24 * 60 * 60 * 1000);
    // A removal with no revision (a refused tenant's status) leaves no marker.
    expect(await store.remove('other')).toBe(true);
    expect(await store.put(record('other', 1))).toBe(true);
  });

  it("lookup should say whether the registrar's rebuild marker is there with the record", async () => {
    const store = createTenantStore(redis.client, redis.prefix);
    expect(await store.lookup('acme')).toEqual({ record: null, rebuilt: false });
    await store.put(record('acme', 1));
    expect(await store.lookup('acme')).toMatchObject({ record: { tenantId: 'acme' }, rebuilt: false });
    await createRegistrarStateStore(redis.client, redis.prefix).markRebuilt(new Date());
    expect(await store.lookup('acme')).toMatchObject({ record: { revision: 1 }, rebuilt: true });
    expect(await store.lookup('other')).toEqual({ record: null, rebuilt: true });
  });

  it('updateStatus should merge fields and clear the ones set to null', async () => {
    const store = createTenantStore(redis.client, redis.prefix);
    await store.updateStatus('acme', {
      state: 'error',
      lastErrorCode: 'AUTH_INVALID_SECRET',
      deviceCount: 3,
    });
    await store.updateStatus('acme', { state: 'active', lastErrorCode: null });
    const status = await store.getStatus('acme');
    expect(status).toMatchObject({ state: 'active', deviceCount: 3 });
    expect(status.lastErrorCode).toBeUndefined();
    expect(typeof status.updatedAt).toBe('string');
  });

  it("cycleListed and updatePollingStatus should leave a disabled tenant's status as the registrar wrote it", async () => {
    const store = createTenantStore(redis.client, redis.prefix);
    await store.put(record('acme', 1));
    await store.updateStatus('acme', { state: 'active', deviceCount: 3 });
    // Disabled while a cycle ends: the registrar stores the record, then writes the status.
    await store.put({ ...record('acme', 2), enabled: false });
    await store.updateStatus('acme', { state: 'disabled', nextPollAt: null });
    const disabled = await store.getStatus('acme');
    const listed = await store.cycleListed('acme', 'acme-1', {
      deviceCount: 4,
      nextPollAt: '2026-12-05T11:00:00.000Z',
    });
    expect(await store.getStatus('acme')).toEqual(disabled);
    expect(listed).toBe(false);
    expect(
      await store.updatePollingStatus('acme', {
        state: 'error',
        lastErrorCode: 'DEFENDER_UNAVAILABLE',
        nextPollAt: '2026-12-05T11:00:00.000Z',
      }),
    ).toBe(false);
    expect(await store.getStatus('acme')).toEqual(disabled);
    expect((await store.getStatus('acme')).nextPollAt).toBeUndefined();
  });

  it("cycleListed and updatePollingStatus should not create a deleted tenant's status again", async () => {
    const store = createTenantStore(redis.client, redis.prefix);
    await store.put(record('acme', 1));
    await store.updateStatus('acme', { state: 'active' });
    await store.remove('acme');
    const listed = await store.cycleListed('acme', 'acme-1', { deviceCount: 4 });
    expect(await store.getStatus('acme')).toEqual({});
    expect(listed).toBe(false);
    expect(await store.updatePollingStatus('acme', { nextPollAt: '2026-12-05T11:00:00.000Z' })).toBe(false);
    expect(await store.getStatus('acme')).toEqual({});
    expect(await redis.client.exists(`${redis.prefix}tenant-status:acme`)).toBe(0);
  });

  it("updatePollingStatus should merge fields into an enabled tenant's status", async () => {
    const store = createTenantStore(redis.client, redis.prefix);
    await store.put(record('acme', 1));
    await store.updateStatus('acme', { state: 'active', deviceCount: 3, lastErrorCode: 'X' });
    expect(await store.updatePollingStatus('acme', { lastCycleId: 'acme-1', lastErrorCode: null })).toBe(
      true,
    );
    const status = await store.getStatus('acme');
    expect(status).toMatchObject({ state: 'active', deviceCount: 3, lastCycleId: 'acme-1' });
    expect(status.lastErrorCode).toBeUndefined();
  });

  it("cycleListed should keep an error of the same cycle and clear another cycle's", async () => {
    const store = createTenantStore(redis.client, redis.prefix);
    const error = {
      state: 'error' as const,
      lastErrorCode: 'DEFENDER_CONSENT_MISSING',
      lastErrorMessage: 'grant Vulnerability.Read.All',
      lastErrorAt: '2026-12-05T10:00:00.000Z',
      lastErrorCycleId: 'acme-2',
    };
    await store.put(record('acme', 1));
    await store.updateStatus('acme', { ...error, note: 'bulk: 30,000 devices' });
    // The vuln-fetcher reported cycle 2's error before the poller ended that cycle's listing.
    await store.cycleListed('acme', 'acme-2', { deviceCount: 30_000, note: null });
    expect(await store.getStatus('acme')).toMatchObject({ ...error, deviceCount: 30_000 });
    expect((await store.getStatus('acme')).note).toBeUndefined();
    await store.cycleListed('acme', 'acme-3', { deviceCount: 30_001 });
    const next = await store.getStatus('acme');
    expect(next).toMatchObject({ state: 'active', deviceCount: 30_001 });
    for (const field of ['lastErrorCode', 'lastErrorMessage', 'lastErrorAt', 'lastErrorCycleId'] as const)
      expect(next[field]).toBeUndefined();
  });

  it('cycleListed should leave a refused registration in the status, as the polling errors do', async () => {
    const store = createTenantStore(redis.client, redis.prefix);
    const registrationError = {
      code: 'REGISTRATION_INVALID',
      message: "registration refused: defender.clientSecret must be the secret's Value",
      violations: [{ field: 'defender.clientSecret', rule: "must be the secret's Value" }],
      at: '2026-12-05T10:00:00.000Z',
      source: 'director' as const,
      generation: 6,
    };
    await store.put(record('acme', 1));
    await store.updateStatus('acme', { state: 'active', registrationError });
    await store.cycleListed('acme', 'acme-1', { deviceCount: 3 });
    await store.updateStatus('acme', { state: 'error', lastErrorCode: 'DEFENDER_UNAVAILABLE' });
    await store.cycleListed('acme', 'acme-2', { deviceCount: 4 });
    expect(await store.getStatus('acme')).toMatchObject({
      state: 'active',
      deviceCount: 4,
      registrationError,
    });
    await store.updateStatus('acme', { registrationError: null });
    expect((await store.getStatus('acme')).registrationError).toBeUndefined();
  });

  it('recordRefusal should tell a new refusal from one of the same source and generation, and list the tenants with no record', async () => {
    const store = createTenantStore(redis.client, redis.prefix);
    const refusal = (generation: number | undefined, source: 'director' | 'rest' = 'director') => ({
      code: 'REGISTRATION_INVALID',
      message: 'registration refused: defender.clientId must be a GUID',
      violations: [{ field: 'defender.clientId', rule: 'must be a GUID' }],
      at: '2026-12-05T10:00:00.000Z',
      source,
      ...(generation === undefined ? {} : { generation }),
    });
    // The largest generation a push holds: decoded in Redis as a double, still the same number.
    const largest = Number.MAX_SAFE_INTEGER;
    expect(await store.recordRefusal('acme', refusal(largest), { rejected: true })).toBe(true);
    expect(await store.recordRefusal('acme', refusal(largest), { rejected: true })).toBe(false);
    expect(await store.recordRefusal('acme', refusal(largest - 1), { rejected: true })).toBe(true);
    expect(await store.recordRefusal('acme', refusal(largest - 1, 'rest'), { rejected: true })).toBe(true);
    expect(await store.recordRefusal('rest-made', refusal(undefined, 'rest'), { rejected: true })).toBe(true);
    expect(await store.recordRefusal('rest-made', refusal(undefined, 'rest'), { rejected: true })).toBe(true);
    await store.put(record('polled', 3));
    await store.updateStatus('polled', { state: 'active' });
    expect(await store.recordRefusal('polled', refusal(4), { rejected: false })).toBe(true);
    expect(await store.getStatus('acme')).toMatchObject({
      state: 'registration-rejected',
      registrationError: refusal(largest - 1, 'rest'),
    });
    expect(await store.getStatus('polled')).toMatchObject({ state: 'active', registrationError: refusal(4) });
    expect(await store.refusedIds()).toEqual(['acme', 'rest-made']);
    // Registered (another state), or removed: no longer a tenant with only a refusal.
    await store.updateStatus('acme', { state: 'active', registrationError: null });
    await store.remove('rest-made');
    expect(await store.refusedIds()).toEqual([]);
  });
});

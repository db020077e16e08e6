import type { TenantRecord } from '@urs/contracts';
import { createPollScheduleStore, createRegistrarStateStore, createTenantStore } from '@urs/store';
import { testRedisPerTest } from '@urs/testkit';

const recordOf = (tenantId: string, revision: number, enabled: boolean): TenantRecord =>
  ({ tenantId, revision, enabled, defender: { pollIntervalMinutes: 10 } }) as unknown as TenantRecord;

describe('createPollScheduleStore', () => {
  const redis = testRedisPerTest();

  /** The tenants' records in Redis, as the registrar stores them: a cycle begins only for an enabled one. */
  async function registered(...tenantIds: string[]): Promise<void> {
    const tenants = createTenantStore(redis.client, redis.prefix);
    for (const tenantId of tenantIds) await tenants.put(recordOf(tenantId, 1, true));
  }

  beforeEach(async () => {
    await registered('acme');
  });

  it('acquire should give the lease to one holder at a time', async () => {
    const store = createPollScheduleStore(redis.client, redis.prefix);
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => store.acquire('acme', `holder-${i}`, 5_000)),
    );
    expect(results.filter((lease) => lease !== null)).toHaveLength(1);
  });

  it('acquire should hand the lease over once it expires, with a new fencing token', async () => {
    const store = createPollScheduleStore(redis.client, redis.prefix);
    const first = await store.acquire('acme', 'a', 100);
    expect(first).not.toBeNull();
    expect(await store.acquire('acme', 'b', 100)).toBeNull();
    await new Promise((resolve) => setTimeout(resolve, 150));
    const second = await store.acquire('acme', 'b', 5_000);
    expect(second).not.toBeNull();
    expect(second?.token).not.toEqual(first?.token);
    // The stale holder can neither renew, release nor write the schedule.
    expect(await store.renew(first!, 5_000)).toBe(false);
    expect(await store.release(first!)).toBe(false);
    expect(await store.begin(first!, 'c-stale', 1)).toEqual({ reason: 'lease-lost' });
    expect((await store.get('acme')).runningCycleId).toBeUndefined();
    expect(await store.renew(second!, 5_000)).toBe(true);
  });

  it("acquire should let a tenant's fencing counter expire long after its last lease, as a deleted tenant's does", async () => {
    const store = createPollScheduleStore(redis.client, redis.prefix);
    await store.acquire('acme', 'a', 5_000);
    const ttl = await redis.client.pttl(`${redis.prefix}poll-fence:acme`);
    expect(ttl).toBeGreaterThan(7 * 24 * 60 * 60 * 1000);
  });

  it('release should free the lease for the next holder', async () => {
    const store = createPollScheduleStore(redis.client, redis.prefix);
    const lease = await store.acquire('acme', 'a', 5_000);
    expect(await store.release(lease!)).toBe(true);
    expect(await store.acquire('acme', 'b', 5_000)).not.toBeNull();
  });

  it('begin and end should record the cycle and the backoff under the lease', async () => {
    const store = createPollScheduleStore(redis.client, redis.prefix);
    const lease = (await store.acquire('acme', 'a', 5_000))!;
    expect(await store.begin(lease, 'acme-1', 1_000)).toBe(true);
    expect(await store.get('acme')).toEqual({ failures: 0, lastStartedAt: 1_000, runningCycleId: 'acme-1' });
    expect(
      await store.end(lease, { failures: 2, notBefore: 9_000, failedRevision: 7, failedKind: 'setup' }),
    ).toBe(true);
    expect(await store.get('acme')).toEqual({
      failures: 2,
      lastStartedAt: 1_000,
      notBefore: 9_000,
      failedRevision: 7,
      failedKind: 'setup',
    });
    expect(await store.end(lease, { failures: 3, notBefore: null, retryAt: 121_000 })).toBe(true);
    expect(await store.get('acme')).toEqual({ failures: 3, lastStartedAt: 1_000, retryAt: 121_000 });
    expect(await store.end(lease, { failures: 0, notBefore: null })).toBe(true);
    expect(await store.get('acme')).toEqual({ failures: 0, lastStartedAt: 1_000 });
    await store.clear('acme');
    expect(await store.get('acme')).toEqual({ failures: 0 });
  });

  it('begin should write nothing for a tenant whose record is gone or disabled (a poller that has not read it yet)', async () => {
    const store = createPollScheduleStore(redis.client, redis.prefix);
    const tenants = createTenantStore(redis.client, redis.prefix);
    // Deleted: the registrar removed its record and cleared its schedule.
    await redis.client.del(`${redis.prefix}tenant:acme`);
    const lease = (await store.acquire('acme', 'a', 5_000))!;
    // Each refusal says why: a poller tells a record the registrar has not stored yet from one it disabled.
    expect(await store.begin(lease, 'acme-1', 1_000)).toEqual({ reason: 'record-missing' });
    expect(await redis.client.exists(`${redis.prefix}poll-schedule:acme`)).toBe(0);
    // Disabled.
    await tenants.put(recordOf('acme', 2, false));
    expect(await store.begin(lease, 'acme-2', 2_000)).toEqual({
      reason: 'record-disabled',
      storedRevision: 2,
    });
    expect(await redis.client.exists(`${redis.prefix}poll-schedule:acme`)).toBe(0);
    // Enabled again.
    await tenants.put(recordOf('acme', 3, true));
    expect(await store.begin(lease, 'acme-3', 3_000)).toBe(true);
    expect(await store.get('acme')).toEqual({ failures: 0, lastStartedAt: 3_000, runningCycleId: 'acme-3' });
  });

  it('end should write nothing back to a schedule cleared during the cycle (its tenant disabled or deleted)', async () => {
    const store = createPollScheduleStore(redis.client, redis.prefix);
    const lease = (await store.acquire('acme', 'a', 5_000))!;
    expect(await store.begin(lease, 'acme-1', 1_000)).toBe(true);
    // The registrar deletes the tenant while its cycle runs; the cycle then fails and ends.
    await store.clear('acme');
    expect(await store.end(lease, { failures: 1, notBefore: 9_000, failedRevision: 7 })).toBe(true);
    expect(await redis.client.exists(`${redis.prefix}poll-schedule:acme`)).toBe(0);
  });

  it("keepListing should keep a running cycle's listing under its lease for the next holder, until the next end or begin", async () => {
    const store = createPollScheduleStore(redis.client, redis.prefix);
    const totals = { totalBatches: 2, totalDevices: 3, listedAt: '2026-01-01T10:00:00.000Z', note: null };
    const lease = (await store.acquire('acme', 'a', 5_000))!;
    expect(await store.begin(lease, 'c1', 1_000)).toBe(true);
    expect(await store.keepListing(lease, 'c1', totals)).toBe(true);
    await store.release(lease);
    // Read by whichever holder comes next.
    expect((await store.get('acme')).unrecordedListing).toEqual({ cycleId: 'c1', totals });
    // A lease no longer held keeps nothing.
    expect(await store.keepListing(lease, 'c1', { ...totals, totalBatches: 9 })).toBe(false);
    const next = (await store.acquire('acme', 'b', 5_000))!;
    expect(await store.end(next, { failures: 0, notBefore: null })).toBe(true);
    expect((await store.get('acme')).unrecordedListing).toBeUndefined();
    expect(await store.keepListing(next, 'c1', totals)).toBe(true);
    expect(await store.begin(next, 'c2', 2_000)).toBe(true);
    expect((await store.get('acme')).unrecordedListing).toBeUndefined();
  });

  it('getMany should read the schedules of many tenants, a tenant never polled with none', async () => {
    const store = createPollScheduleStore(redis.client, redis.prefix);
    const tenantIds = Array.from({ length: 1500 }, (_, i) => `tenant-${i}`);
    await registered('tenant-3', 'tenant-1200');
    for (const [index, tenantId] of [tenantIds[3], tenantIds[1200]].entries()) {
      const lease = (await store.acquire(tenantId as string, 'a', 5_000))!;
      await store.begin(lease, `${tenantId}-1`, 1_000 + index);
      await store.end(lease, { failures: 1, notBefore: null, retryAt: 9_000 });
    }
    const schedules = await store.getMany(tenantIds);
    expect(schedules.size).toBe(1500);
    expect(schedules.get('tenant-3')).toEqual({ failures: 1, lastStartedAt: 1_000, retryAt: 9_000 });
    expect(schedules.get('tenant-1200')).toEqual({ failures: 1, lastStartedAt: 1_001, retryAt: 9_000 });
    expect(schedules.get('tenant-0')).toEqual({ failures: 0 });
  });

  it('carryFailure should move a failure of the old revision to the new one, unless a poller holds the tenant', async () => {
    const store = createPollScheduleStore(redis.client, redis.prefix);
    const lease = (await store.acquire('acme', 'a', 5_000))!;
    await store.begin(lease, 'acme-1', 1_000);
    await store.end(lease, { failures: 3, notBefore: 9_000, failedRevision: 7 });
    // A poller holds the lease: its cycle would end writing revision 7 back.
    expect(await store.carryFailure('acme', 7, 8)).toBe(false);
    expect((await store.get('acme')).failedRevision).toBe(7);
    await store.release(lease);
    expect(await store.carryFailure('acme', 7, 8)).toBe(true);
    expect(await store.get('acme')).toEqual({
      failures: 3,
      lastStartedAt: 1_000,
      notBefore: 9_000,
      failedRevision: 8,
    });
    // Revision 8 never reached Kafka (the record stays at 7): the next re-seal, 7 → 9, carries its failure on.
    expect(await store.carryFailure('acme', 7, 9)).toBe(true);
    expect((await store.get('acme')).failedRevision).toBe(9);
    // A failure of a revision before `from` (the record changed since), or none, is left as it is.
    expect(await store.carryFailure('acme', 10, 11)).toBe(true);
    expect((await store.get('acme')).failedRevision).toBe(9);
    expect(await store.carryFailure('never-polled', 1, 2)).toBe(true);
    expect(await store.get('never-polled')).toEqual({ failures: 0 });
  });

  it('tenantsRebuiltAt should read when the registrar last rebuilt the tenants, none until it has', async () => {
    const store = createPollScheduleStore(redis.client, redis.prefix);
    expect(await store.tenantsRebuiltAt()).toBeUndefined();
    const rebuiltAt = Date.parse('2026-12-07T03:00:00.000Z');
    await createRegistrarStateStore(redis.client, redis.prefix).markRebuilt(new Date(rebuiltAt));
    expect(await store.tenantsRebuiltAt()).toBe(rebuiltAt);
  });
});

import { ReplyError } from 'ioredis';
import {
  createCycleStore,
  createPollScheduleStore,
  createTenantStore,
  type CycleStore,
  type PollScheduleStore,
  type TenantStore,
} from '@urs/store';
import { inboundMessage, tenantRecord, testRedisPerTest, waitFor } from '@urs/testkit';
import {
  CycleAbortedError,
  CycleListedNotRecordedError,
  type CycleInput,
  type CycleResult,
} from '../src/cycle';
import type { Scheduler } from '../src/scheduler';
import { oneDeviceListed, testScheduler } from './support/scheduler';

// Two pollers over the real Redis. The first one's cycle sends every batch, and Redis refuses the record of its
// listing (the cycle store's write); the first poller then stops. The second one takes the tenant over: it must
// record the listing the first one kept and end the cycle as listed, not abandon it and list the tenant again.

describe('a cycle listed in full whose listing the cycle store did not record, taken over by another poller', () => {
  const redis = testRedisPerTest();
  const schedulers: Scheduler[] = [];

  afterEach(async () => {
    await Promise.all(schedulers.splice(0).map((scheduler) => scheduler.close(100)));
  });

  function poller(
    holderId: string,
    stores: { schedules: PollScheduleStore; tenants: TenantStore },
    cycles: Pick<CycleStore, 'get' | 'abandon' | 'listed'>,
    runCycle: (input: CycleInput) => Promise<CycleResult>,
  ): Scheduler {
    const { table, scheduler } = testScheduler({
      ...stores,
      cycles,
      runCycle,
      holderId,
      intervalUnitMs: 60_000,
      leaseMs: 5_000,
      maxConcurrentCycles: 1,
      tickMs: 10,
      recheckMs: 50,
      maxBackoffMs: 60_000,
    });
    void table.handle(
      inboundMessage(tenantRecord('acme', { revision: 1, pollIntervalMinutes: 10 }), {
        offset: '0',
        key: 'acme',
      }),
    );
    schedulers.push(scheduler);
    return scheduler;
  }

  it('should record the first poller’s listing and end its cycle as listed, without listing the tenant again', async () => {
    const tenants = createTenantStore(redis.client, redis.prefix);
    const schedules = createPollScheduleStore(redis.client, redis.prefix);
    const cycles = createCycleStore(redis.client, redis.prefix);
    await tenants.put(tenantRecord('acme', { revision: 1, pollIntervalMinutes: 10 }));
    const readonly = () => new ReplyError("READONLY You can't write against a read only replica.");

    // The first poller: its cycle begins and sends its batch; the record of its listing is refused.
    let listedCycleId: string | undefined;
    const first = poller(
      'first',
      { schedules, tenants },
      {
        ...cycles,
        listed: async () => {
          throw readonly();
        },
      },
      async (input) => {
        const { cycleId, startedAt } = input;
        await cycles.begin({
          tenantId: 'acme',
          cycleId,
          startedAt: new Date(startedAt).toISOString(),
          deadlineAt: new Date(startedAt + 600_000).toISOString(),
        });
        const result = oneDeviceListed(Date.now());
        listedCycleId = cycleId;
        throw new CycleListedNotRecordedError(readonly(), {
          totalBatches: result.totalBatches,
          totalDevices: result.totalDevices,
          listedAt: new Date(result.listedAt).toISOString(),
          vulnerabilityMode: result.vulnerabilityMode,
          note: result.note,
        });
      },
    );
    first.start();
    await waitFor(() => listedCycleId !== undefined && first.running() === 0, {
      timeoutMs: 10_000,
      description: "the first poller's cycle to end",
    });
    await first.close(1_000);
    const cycleId = listedCycleId as string;
    expect((await schedules.get('acme')).runningCycleId).toBe(cycleId);

    // The second poller takes the tenant over.
    const listings: string[] = [];
    const second = poller('second', { schedules, tenants }, cycles, async (input) => {
      listings.push(input.cycleId);
      return oneDeviceListed(Date.now());
    });
    second.start();
    await waitFor(
      async () => listings.length > 0 || (await schedules.get('acme')).runningCycleId === undefined,
      { timeoutMs: 10_000, description: 'the second poller to end or redo the cycle' },
    );
    expect(listings).toEqual([]);
    const state = await cycles.get('acme', cycleId);
    expect(state).toMatchObject({ totalBatches: 1, totalDevices: 1 });
    expect(state?.listedAt).toBeDefined();
    expect(state?.abandoned).toBeUndefined();
    expect(await tenants.getStatus('acme')).toMatchObject({ lastCycleId: cycleId, deviceCount: 1 });
    expect((await schedules.get('acme')).unrecordedListing).toBeUndefined();
  }, 30_000);

  /**
   * The first poller's cycle: begun, its totals kept as pending as `runCycle` keeps them right before its last
   * batch, and then (`then`) it stops before recording the listing, the cycle left marked running.
   */
  async function pendingThenGone(
    stores: { schedules: PollScheduleStore; tenants: TenantStore },
    cycles: CycleStore,
    then: (cycleId: string) => Promise<void> = async () => undefined,
  ): Promise<{ cycleId: string; startedAt: number }> {
    let begun: { cycleId: string; startedAt: number } | undefined;
    const first = poller('first', stores, cycles, async (input) => {
      const { cycleId, startedAt } = input;
      await cycles.begin({
        tenantId: 'acme',
        cycleId,
        startedAt: new Date(startedAt).toISOString(),
        deadlineAt: new Date(startedAt + 600_000).toISOString(),
      });
      const result = oneDeviceListed(Date.now());
      await cycles.listingPending('acme', cycleId, {
        totalBatches: result.totalBatches,
        totalDevices: result.totalDevices,
        listedAt: new Date(result.listedAt).toISOString(),
        vulnerabilityMode: 'bulk',
        note: 'bulk vulnerability export',
      });
      await then(cycleId);
      begun = { cycleId, startedAt };
      // Gone before it records the listing: its lease lost, or killed (no cycle end either way).
      throw new CycleAbortedError();
    });
    first.start();
    await waitFor(() => begun !== undefined && first.running() === 0, {
      timeoutMs: 10_000,
      description: "the first poller's cycle to stop",
    });
    await first.close(1_000);
    const cycle = begun as { cycleId: string; startedAt: number };
    expect((await stores.schedules.get('acme')).runningCycleId).toBe(cycle.cycleId);
    return cycle;
  }

  it('should end as listed, without listing the tenant again, a cycle whose poller stopped after its last batch went and before it recorded the listing', async () => {
    const tenants = createTenantStore(redis.client, redis.prefix);
    const schedules = createPollScheduleStore(redis.client, redis.prefix);
    const cycles = createCycleStore(redis.client, redis.prefix);
    await tenants.put(tenantRecord('acme', { revision: 1, pollIntervalMinutes: 10 }));
    const { cycleId, startedAt } = await pendingThenGone({ schedules, tenants }, cycles);

    const listings: string[] = [];
    const second = poller('second', { schedules, tenants }, cycles, async (input) => {
      listings.push(input.cycleId);
      return oneDeviceListed(Date.now());
    });
    second.start();
    await waitFor(
      async () => listings.length > 0 || (await schedules.get('acme')).runningCycleId === undefined,
      { timeoutMs: 10_000, description: 'the second poller to end or redo the cycle' },
    );
    // Neither listed again at once nor abandoned (a partial summary a minute later): ended as listed, the
    // tenant due one interval after the cycle's start.
    expect(listings).toEqual([]);
    const state = await cycles.get('acme', cycleId);
    expect(state).toMatchObject({ totalBatches: 1, totalDevices: 1, vulnerabilityMode: 'bulk' });
    expect(state?.listedAt).toBeDefined();
    expect(state?.abandoned).toBeUndefined();
    expect(state?.pendingListing).toBeUndefined();
    expect(await tenants.getStatus('acme')).toMatchObject({ lastCycleId: cycleId, deviceCount: 1 });
    expect(await schedules.get('acme')).toMatchObject({ lastStartedAt: startedAt });
  }, 30_000);

  it('should redo a cycle whose poller kept its totals and then recorded it abandoned, its last batch not sent', async () => {
    const tenants = createTenantStore(redis.client, redis.prefix);
    const schedules = createPollScheduleStore(redis.client, redis.prefix);
    const cycles = createCycleStore(redis.client, redis.prefix);
    await tenants.put(tenantRecord('acme', { revision: 1, pollIntervalMinutes: 10 }));
    // The last batch's send failed: the poller recorded the cycle abandoned, and then stopped.
    const { cycleId } = await pendingThenGone({ schedules, tenants }, cycles, async (id) => {
      const at = new Date().toISOString();
      await cycles.abandon('acme', id, { batches: 0, code: 'KAFKA_UNAVAILABLE', at }, Date.now() + 60_000);
    });

    const listings: string[] = [];
    const second = poller('second', { schedules, tenants }, cycles, async (input) => {
      listings.push(input.cycleId);
      return oneDeviceListed(Date.now());
    });
    second.start();
    await waitFor(() => listings.length > 0, {
      timeoutMs: 10_000,
      description: 'the second poller to redo the cycle',
    });
    const state = await cycles.get('acme', cycleId);
    expect(state?.listedAt).toBeUndefined();
    expect(state?.abandoned).toMatchObject({ code: 'KAFKA_UNAVAILABLE', batches: 0 });
  }, 30_000);
});

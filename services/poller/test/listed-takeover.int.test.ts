import { ReplyError } from 'ioredis';
import type { OutboundMessage, Publisher } from '@urs/bus';
import type { DeviceBatch } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import {
  createCycleStore,
  createPollScheduleStore,
  createTenantStore,
  type CycleStore,
  type PollLease,
  type PollScheduleStore,
  type TenantStore,
} from '@urs/store';
import { Registry } from '@urs/telemetry';
import { inboundMessage, tenantRecord, testRedisPerTest, waitFor, type TestRedis } from '@urs/testkit';
import {
  CycleAbortedError,
  CycleListedNotRecordedError,
  cycleIdOf,
  runCycle,
  type CycleInput,
  type CycleResult,
} from '../src/cycle';
import { createCycleEnd } from '../src/cycle-end';
import { createBatchFit } from '../src/batch-fit';
import type { Scheduler } from '../src/scheduler';
import {
  batchesTopicsPerTest,
  cycleDepsSending,
  fitAfterTaking,
  listedDevices,
  pagesGateway,
  readDeviceBatches,
  recordTooLarge,
  sealer,
} from './support/cycle';
import { oneDeviceListed, sampleOf, testScheduler } from './support/scheduler';

// Two pollers over the real Redis. The first one's cycle sends every batch, and Redis refuses the record of its
// listing (the cycle store's write); the first poller then stops. The second one takes the tenant over: it must
// record the listing the first one kept and end the cycle as listed, not abandon it and list the tenant again.

/** Begins acme's cycle in the cycle store as a poller begins it, its deadline 10 minutes after its start. */
async function beginCycle(cycles: CycleStore, cycleId: string, startedAt: number): Promise<void> {
  await cycles.begin({
    tenantId: 'acme',
    cycleId,
    startedAt: new Date(startedAt).toISOString(),
    deadlineAt: new Date(startedAt + 600_000).toISOString(),
  });
}
/**
 * Acme's stores over `redis`, its record stored (its client secret sealed by `sealer`, for a real cycle), and
 * the lease the first poller took.
 */
async function acmeLeasedByFirst(redis: TestRedis) {
  const tenants = createTenantStore(redis.client, redis.prefix);
  const schedules = createPollScheduleStore(redis.client, redis.prefix);
  const cycles = createCycleStore(redis.client, redis.prefix);
  const record = { ...tenantRecord('acme', { revision: 1, pollIntervalMinutes: 10 }) };
  record.defender = { ...record.defender, clientSecret: sealer.seal('Sup3r~secret', 'acme') };
  await tenants.put(record);
  const lease = (await schedules.acquire('acme', 'first', 60_000)) as PollLease;
  return { tenants, schedules, cycles, record, lease };
}

/**
 * The first poller's lease expired (deleted), the second poller's taken, and its cycle ends (`createCycleEnd`)
 * with the cycles it counts in `metrics`.
 */
async function secondPollerEnds(
  redis: TestRedis,
  stores: { schedules: PollScheduleStore; tenants: TenantStore },
  cycles: CycleStore,
) {
  await redis.client.del(redis.key('poll-lease:acme'));
  const second = (await stores.schedules.acquire('acme', 'second', 60_000)) as PollLease;
  const metrics = new Registry({ processMetrics: false });
  const ends = createCycleEnd({
    ...stores,
    cycles,
    holderId: 'second',
    intervalUnitMs: 60_000,
    maxBackoffMs: 60_000,
    log: silentLogger,
    cyclesTotal: metrics.counter('urs_poll_cycles_total', 'cycles'),
    now: Date.now,
  });
  return { second, ends, metrics };
}

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

  /** The second poller, started: it takes the tenant over. Returns the cycles it lists itself. */
  function takeOver(
    stores: { schedules: PollScheduleStore; tenants: TenantStore },
    cycles: Pick<CycleStore, 'get' | 'abandon' | 'listed'>,
  ): string[] {
    const listings: string[] = [];
    const second = poller('second', stores, cycles, async (input) => {
      listings.push(input.cycleId);
      return oneDeviceListed(Date.now());
    });
    second.start();
    return listings;
  }

  /** Until the second poller listed the tenant again, or ended the cycle it took over. */
  const endedOrRedone = (schedules: PollScheduleStore, listings: string[]) =>
    waitFor(async () => listings.length > 0 || (await schedules.get('acme')).runningCycleId === undefined, {
      timeoutMs: 10_000,
      description: 'the second poller to end or redo the cycle',
    });

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
        await beginCycle(cycles, cycleId, startedAt);
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
    const listings = takeOver({ schedules, tenants }, cycles);
    await endedOrRedone(schedules, listings);
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
      await beginCycle(cycles, cycleId, startedAt);
      const result = oneDeviceListed(Date.now());
      await cycles.listingPending(input.lease, cycleId, {
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

    const listings = takeOver({ schedules, tenants }, cycles);
    await endedOrRedone(schedules, listings);
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

  it('should count a cycle ended as listed from the totals kept before its last batch as listed, once', async () => {
    const tenants = createTenantStore(redis.client, redis.prefix);
    const schedules = createPollScheduleStore(redis.client, redis.prefix);
    const cycles = createCycleStore(redis.client, redis.prefix);
    await tenants.put(tenantRecord('acme', { revision: 1, pollIntervalMinutes: 10 }));
    const startedAt = Date.now();
    const cycleId = cycleIdOf('acme', startedAt);
    const first = (await schedules.acquire('acme', 'first', 60_000)) as PollLease;
    expect(await schedules.begin(first, cycleId, startedAt)).toBe(true);
    await beginCycle(cycles, cycleId, startedAt);
    const result = oneDeviceListed(Date.now());
    await cycles.listingPending(first, cycleId, {
      totalBatches: result.totalBatches,
      totalDevices: result.totalDevices,
      listedAt: new Date(result.listedAt).toISOString(),
      vulnerabilityMode: 'bulk',
      note: 'bulk vulnerability export',
    });
    // The first poller is killed while its last batch goes: it counted nothing. Another takes the tenant over.
    const { second, ends, metrics } = await secondPollerEnds(redis, { schedules, tenants }, cycles);
    expect(await ends.endListedCycle(second, cycleId)).toBe(true);
    // Listed in full, as a cycle its own poller ended: had it been redone, the redo counted it listed.
    expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="listed"}')).toBe(1);
    // Ended again (its end's write failed, say): the listing is recorded already, not counted twice.
    await ends.endListedCycle(second, cycleId);
    expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="listed"}')).toBe(1);
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

    const listings = takeOver({ schedules, tenants }, cycles);
    await waitFor(() => listings.length > 0, {
      timeoutMs: 10_000,
      description: 'the second poller to redo the cycle',
    });
    const state = await cycles.get('acme', cycleId);
    expect(state?.listedAt).toBeUndefined();
    expect(state?.abandoned).toMatchObject({ code: 'KAFKA_UNAVAILABLE', batches: 0 });
  }, 30_000);
});

// A poller's last batch refused by Kafka as too large is sent in halves; the poller is killed between the first
// half and the last one. The poller that takes the tenant over must not list the cycle from totals that count the
// refused batch as the last (one batch short of the halves): the cycle would close complete without the last half.
describe('a cycle whose poller was killed while it sent the halves of a last batch refused as too large', () => {
  const redis = testRedisPerTest();

  it('should be taken over as abandoned and redone, not listed from the totals kept before the refused send', async () => {
    const { tenants, schedules, cycles, record, lease } = await acmeLeasedByFirst(redis);
    const startedAt = Date.now();
    const cycleId = cycleIdOf('acme', startedAt);
    expect(await schedules.begin(lease, cycleId, startedAt)).toBe(true);

    const sent: DeviceBatch[] = [];
    let killed = false;
    const publisher = {
      async send(_topic: string, _contract: string, messages: OutboundMessage<DeviceBatch>[]) {
        const batch = messages[0]?.value as DeviceBatch;
        if (batch.devices.length > 1) throw recordTooLarge();
        sent.push(batch);
      },
    } as unknown as Publisher;
    const deps = cycleDepsSending(
      pagesGateway(async function* () {
        yield { devices: listedDevices(2) };
      }),
      // The topic took a larger record before: its limit was lowered since.
      fitAfterTaking(),
      {
        publisher,
        // Killed once its first half went: whatever it writes next never reaches Redis.
        cycles: {
          ...cycles,
          listingPending: async (...args: Parameters<CycleStore['listingPending']>) => {
            if (sent.length === 0) return cycles.listingPending(...args);
            killed = true;
            return new Promise<never>(() => undefined);
          },
        },
        deviceBatchesTopic: 'urs.device-batches',
      },
      600_000,
    );
    void runCycle(deps, {
      record,
      cycleId,
      startedAt,
      intervalMs: 600_000,
      lease,
      signal: new AbortController().signal,
      leaseHeld: () => true,
    });
    await waitFor(() => killed, { timeoutMs: 10_000, description: 'the first half to be sent' });
    expect(sent.map((batch) => [batch.batchIndex, batch.lastBatch])).toEqual([[0, false]]);

    // Its lease expires; another poller takes the tenant over and finds the cycle still marked running.
    const { second, ends } = await secondPollerEnds(redis, { schedules, tenants }, cycles);
    // Not listed in full: redone, and recorded as abandoned, so that it closes partial with the devices it
    // never sent counted failed. Listed from the kept totals, it counted one batch, and closed complete once
    // the first half was scored.
    expect(await ends.endListedCycle(second, cycleId)).toBe(false);
    const state = await cycles.get('acme', cycleId);
    expect(state?.listedAt).toBeUndefined();
    expect(state?.totalBatches).toBeUndefined();
    expect(state?.abandoned).toMatchObject({ code: 'POLLER_GONE' });
  }, 30_000);
});

// Over the real Redis and Kafka, a topic that takes records of at most 8 KB. The replica has sent one small cycle
// of the tenant; its next one lists 500 devices, one last batch the topic refuses as too large. While that send is
// under way the poller's lease lapses and another poller takes the tenant over. The cycle's last batch never
// reached Kafka (its halves are never sent: the lease is gone): the takeover must redo the cycle, not end it as
// listed from totals kept before the send, which left it waiting for a batch that never comes until its deadline.
describe('a cycle whose last batch the topic refused as too large while its lease lapsed', () => {
  const redis = testRedisPerTest();
  const bus = batchesTopicsPerTest();

  it('should be redone by the poller that takes the tenant over, not ended as listed', async () => {
    const { tenants, schedules, cycles, record, lease } = await acmeLeasedByFirst(redis);

    /** Each cycle's listing: one page of this many devices. */
    const fleets = [1, 500];
    let leaseLapsed = false;
    let takeover: Promise<boolean> | undefined;
    let cycleId = '';
    const refusing: Publisher = {
      ...bus.publisher,
      send: async (...args: Parameters<Publisher['send']>) => {
        const batch = args[2][0]?.value as DeviceBatch;
        if (batch.lastBatch && batch.devices.length === 500) {
          // The lease lapses while the send is under way, and another poller takes the tenant over.
          leaseLapsed = true;
          takeover = secondPollerEnds(redis, { schedules, tenants }, cycles).then(({ second, ends }) =>
            ends.endListedCycle(second, cycleId),
          );
          await takeover;
        }
        return bus.publisher.send(...args);
      },
    };
    const deps = cycleDepsSending(
      pagesGateway(async function* () {
        yield { devices: listedDevices(fleets.shift() ?? 0) };
      }),
      // The replica's: shared by its cycles.
      createBatchFit(),
      { publisher: refusing, cycles, deviceBatchesTopic: bus.topic },
      600_000,
    );
    const cycle = (startedAt: number) => {
      cycleId = cycleIdOf('acme', startedAt);
      return runCycle(deps, {
        record,
        cycleId,
        startedAt,
        intervalMs: 600_000,
        lease,
        signal: new AbortController().signal,
        leaseHeld: () => !leaseLapsed,
      });
    };
    // The small cycle the replica sent before.
    const startedAt = Date.now();
    expect(await cycle(startedAt - 600_000)).toMatchObject({ totalBatches: 1, totalDevices: 1 });

    expect(await schedules.begin(lease, cycleIdOf('acme', startedAt), startedAt)).toBe(true);
    await expect(cycle(startedAt)).rejects.toBeInstanceOf(CycleAbortedError);
    // Redone: the cycle is recorded abandoned (closed partial a minute later), not listed.
    expect(await takeover).toBe(false);
    const state = await cycles.get('acme', cycleId);
    expect(state?.listedAt).toBeUndefined();
    expect(state?.totalBatches).toBeUndefined();
    expect(state?.abandoned).toBeDefined();
    // Nothing of it reached the topic: its one batch refused, its halves never sent.
    const sent = await readDeviceBatches(bus.kafka, bus.topic);
    expect(sent.map((batch) => batch.cycleId)).not.toContain(cycleId);
  }, 60_000);
});

import type { Publisher } from '@urs/bus';
import type { ScoreBatch, ScoredDevice, TenantRecord } from '@urs/contracts';
import { silentLogger, type Logger } from '@urs/logging';
import { canRetry, errorCode } from '@urs/resilience';
import {
  createCycleStore,
  createPublishedStore,
  createScoreStore,
  createTenantStore,
  type PublishedStore,
  type TenantLease,
} from '@urs/store';
import { Registry } from '@urs/telemetry';
import {
  capturingLogger,
  createTestRedis,
  inboundMessage,
  scoredDevice,
  waitFor,
  type LogLine,
  type TestRedis,
} from '@urs/testkit';
import { createCycleCompletion } from '../src/completion';
import { createPublishHandler } from '../src/handler';
import { createInOrder } from '../src/in-order';
import { tenantLeasing, type TenantLeasing } from '../src/lease';
import { createPublishedRebuilder } from '../src/rebuild';
import { batchStats } from '../src/records';
import { createTenantsHandler } from '../src/tenants';
import { createTombstones } from '../src/tombstones';

const topics = { vmsRiskScores: 'vms.risk-scores', vmsRiskSummary: 'vms.risk-summary' };

// Recent times: the cycle store expires a cycle a day after its deadline.
const startedAt = Math.floor(Date.now() / 60_000) * 60_000 - 60 * 60_000;
const at = (minutes: number): string => new Date(startedAt + minutes * 60_000).toISOString();

/** A lease short enough for a test to outlast: a replica whose renewals Redis does not answer loses it. */
const SHORT_LEASE_MS = 300;

/** A point calls wait at until it opens. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

function scoreBatch(cycle: number, devices: ScoredDevice[], totalBatches?: number): ScoreBatch {
  return {
    schemaVersion: 1,
    tenantId: 't1',
    cycleId: `c${cycle}`,
    cycleStartedAt: at(cycle * 10),
    batchIndex: 0,
    lastBatch: totalBatches !== undefined,
    ...(totalBatches !== undefined ? { totalBatches, totalDevices: devices.length } : {}),
    collectedAt: at(cycle * 10 + 1),
    scoredAt: at(cycle * 10 + 2),
    devices,
  };
}

/**
 * Replicas of the publisher on one Redis, each with its own queue and lease holder. A replica's `published`
 * may be wrapped: what its Redis connection answers, and when.
 */
describe("a publisher replica whose tenant's lease lapsed", () => {
  let redis: TestRedis;
  let sent: string[];
  let published: PublishedStore;

  beforeEach(() => {
    redis = createTestRedis();
    sent = [];
    published = createPublishedStore(redis.client, redis.prefix);
  });
  afterEach(async () => {
    await redis.close();
  });

  const leaseHolder = () => redis.client.get(redis.key('publish-lease:t1'));

  /** Records sent, in order: a device's key (`gone` for its tombstone), or `summary <cycleId>`. */
  const publisherWith = (beforeScores?: () => Promise<void>): Publisher => ({
    send: async (topic, _contract, messages) => {
      if (topic === topics.vmsRiskScores) await beforeScores?.();
      for (const m of messages) {
        const value = m.value as { cycleId?: string } | null;
        sent.push(
          topic === topics.vmsRiskSummary ? `summary ${value?.cycleId}` : `${m.key}${value ? '' : ' gone'}`,
        );
      }
    },
    sendRaw: async () => undefined,
    close: async () => undefined,
  });

  function replica(options: {
    published?: PublishedStore;
    leasing?: TenantLeasing;
    publisher?: Publisher;
    now?: () => Date;
    logger?: Logger;
  }) {
    const own = options.published ?? published;
    const metrics = new Registry({ processMetrics: false });
    const cycles = createCycleStore(redis.client, redis.prefix);
    const inOrder = createInOrder();
    const leasing = options.leasing ?? tenantLeasing();
    const publisher = options.publisher ?? publisherWith();
    const rebuild = createPublishedRebuilder({
      published: own,
      readKeys: async () => 0,
      logger: silentLogger,
    });
    const completion = createCycleCompletion({
      cycles,
      published: own,
      scores: createScoreStore(redis.client, redis.prefix),
      publisher,
      topics,
      logger: options.logger ?? silentLogger,
      metrics,
      snapshotEveryCycles: 24,
      tombstoneAfterCycles: 1,
      inOrder,
      leasing,
      rebuild,
      ...(options.now ? { now: options.now } : {}),
    });
    const handler = createPublishHandler({
      cycles,
      published: own,
      completion,
      inOrder,
      leasing,
      publisher,
      topic: topics.vmsRiskScores,
      logger: silentLogger,
      metrics,
    });
    return {
      completion,
      metrics,
      rebuild,
      handle: (batch: ScoreBatch) =>
        handler(inboundMessage(batch, { topic: 'urs.device-scores', key: 't1' })),
    };
  }

  /** Renewals of the lease that Redis does not answer until `stall` opens (ioredis queues them meanwhile). */
  const renewalsStalledUntil = (stall: { wait: Promise<void> }) => async (lease: TenantLease) => {
    await stall.wait;
    return published.renewTenantLease(lease);
  };

  /**
   * Replica B takes the lease once it lapsed; then Redis answers the stalled replica again, whose work (`handled`,
   * settled to what it threw) fails TENANT_LEASE_LOST, retryably. Returns B's lease.
   */
  async function leaseLostToB(stall: { open: () => void }, handled: Promise<unknown>): Promise<TenantLease> {
    const b = { tenantId: 't1', holder: 'b', ttlMs: 30_000 };
    await waitFor(() => published.takeTenantLease(b), { timeoutMs: 5_000, intervalMs: 20 });
    stall.open();
    const error = await handled;
    expect(errorCode(error)).toBe('TENANT_LEASE_LOST');
    expect(canRetry(error)).toBe(true);
    return b;
  }

  it("closeOverdue should send no tombstone once its tenant's lease lapsed while Redis did not answer, nor forget the device another replica published meanwhile", async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    // Devices gone and keep were seen in cycle 0; cycle 1 listed keep alone, its one batch recorded.
    await published.commit('t1', Date.parse(at(0)), [
      { deviceId: 'gone', score: 10, band: 'Trustworthy' },
      { deviceId: 'keep', score: 10, band: 'Trustworthy' },
    ]);
    await cycles.begin({ tenantId: 't1', cycleId: 'c1', startedAt: at(10), deadlineAt: at(15) });
    await cycles.listed('t1', 'c1', { totalBatches: 1, totalDevices: 1, listedAt: at(11) });
    const c1 = scoreBatch(1, [scoredDevice('keep', 10, 'Trustworthy')], 1);
    await cycles.recordBatch('t1', 'c1', 0, batchStats(c1, 0), undefined, {
      cycleAt: Date.parse(at(10)),
      devices: [{ deviceId: 'keep', score: 10, band: 'Trustworthy' }],
    });

    // Replica A's sweep: its Redis connection stalls once the cycle's completion listed device gone.
    const stall = gate();
    const completed = gate();
    let now = new Date(at(16));
    const lines: LogLine[] = [];
    const a = replica({
      leasing: tenantLeasing(SHORT_LEASE_MS),
      now: () => now,
      logger: capturingLogger(lines),
      published: {
        ...published,
        renewTenantLease: renewalsStalledUntil(stall),
        completeCycle: async (...args) => {
          const answer = await published.completeCycle(...args);
          completed.open();
          await stall.wait;
          return answer;
        },
      },
    });
    // What VMS holds rebuilt already (from a vms.risk-scores without records): the sweep never waits for it.
    await a.rebuild.ensure(undefined);
    const sweep = a.completion.closeOverdue();
    await Promise.race([completed.wait, sweep]);
    expect(sent).toEqual([]);
    // Replica B takes the lease once it lapsed, and publishes cycle 2, which lists device gone again.
    const b = replica({});
    await cycles.begin({ tenantId: 't1', cycleId: 'c2', startedAt: at(20), deadlineAt: at(25) });
    await b.handle(scoreBatch(2, [scoredDevice('gone', 30, 'Low Risk')]));
    expect(sent).toEqual(['t1/gone']);
    // Redis answers A again.
    stall.open();
    const closed = await sweep;
    // VMS keeps the device, and so does the publishers' record of it.
    expect(sent).toEqual(['t1/gone']);
    expect(await published.get('t1', 'gone')).toMatchObject({ score: 30 });
    // The summary not sent: owed, tried again by a later sweep. A lost lease is a wait, not a failure to send
    // (UrsSummarySweepFailing tells of Kafka refusing summaries).
    expect(closed).toBe(0);
    expect(a.metrics.expose()).toMatch(/^urs_summary_sweep_failures_total 0$/m);
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 'info',
        message:
          "cycle summary waits for its tenant's lease, lapsed while it was sent: sent by a later sweep",
        tenantId: 't1',
        cycleId: 'c1',
      }),
    );
    expect(lines.filter((line) => line.message.startsWith('cycle summary not sent'))).toEqual([]);
    // A later sweep sends cycle 1's summary, owed, without the tombstone: cycle 2 saw the device.
    now = new Date(at(17));
    expect(await a.completion.closeOverdue()).toBe(1);
    expect(sent).toEqual(['t1/gone', 'summary c1']);
    expect(await published.get('t1', 'gone')).toMatchObject({ score: 30 });
  });

  /**
   * Cycle 1's summary owed (claimed a minute ago, never sent), and a sweep of replica A whose lease is lost
   * while it sends it: its renewals answered by `renew`. What the sweep logged, and the metrics.
   */
  async function sweepOwedLosingLease(renew: (lease: TenantLease) => Promise<boolean>) {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin({ tenantId: 't1', cycleId: 'c1', startedAt: at(10), deadlineAt: at(15) });
    await cycles.listed('t1', 'c1', { totalBatches: 1, totalDevices: 1, listedAt: at(11) });
    expect(await cycles.claimPublication('t1', 'c1', 'partial', Date.parse(at(16)))).toBe(true);
    const lines: LogLine[] = [];
    const a = replica({
      leasing: tenantLeasing(SHORT_LEASE_MS),
      now: () => new Date(at(17)),
      logger: capturingLogger(lines),
      published: {
        ...published,
        renewTenantLease: renew,
        // The send outlasts the lease.
        ofDeletedTenant: async (...args) => {
          await waitFor(() => lines.some((line) => line.message.startsWith('tenant lease lapsed')));
          return published.ofDeletedTenant(...args);
        },
      },
    });
    await a.rebuild.ensure(undefined);
    expect(await a.completion.closeOverdue()).toBe(0);
    expect(sent).toEqual([]);
    return { lines, metrics: a.metrics };
  }

  it("closeOverdue should try an owed summary whose tenant's lease lapsed while Redis did not answer again after a wait, not counted as a failure", async () => {
    const stall = gate();
    const { metrics } = await sweepOwedLosingLease(renewalsStalledUntil(stall));
    stall.open();
    // Deferred as a failed send is: not listed again by the next sweep, a moment later.
    expect(await published.summariesOwed(Date.parse(at(17)) - 30_000)).toEqual([]);
    expect(await published.summariesOwed(Date.parse(at(17)) + 60_000)).toHaveLength(1);
    expect(metrics.expose()).toMatch(/^urs_summary_sweep_failures_total 0$/m);
  });

  it("closeOverdue should count an owed summary whose tenant's lease was lost while Redis answered, and try it again after a wait", async () => {
    // Redis answers the renewal: the lease is no longer this replica's (taken, or evicted).
    const { lines, metrics } = await sweepOwedLosingLease(async () => false);
    expect(await published.summariesOwed(Date.parse(at(17)) - 30_000)).toEqual([]);
    expect(await published.summariesOwed(Date.parse(at(17)) + 60_000)).toHaveLength(1);
    expect(metrics.expose()).toMatch(/^urs_summary_sweep_failures_total 1$/m);
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 'warn',
        message: 'cycle summary not sent, tried again at the next sweep',
        code: 'TENANT_LEASE_LOST',
      }),
    );
  });

  it("createPublishHandler should not record a batch whose records went out after its tenant's lease lapsed, and record it when handled again", async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin({ tenantId: 't1', cycleId: 'c1', startedAt: at(10), deadlineAt: at(15) });
    // Replica A's send to Kafka and its lease's renewals stall until the lease lapsed and replica B took it.
    const stall = gate();
    const sending = gate();
    const a = replica({
      leasing: tenantLeasing(SHORT_LEASE_MS),
      published: { ...published, renewTenantLease: renewalsStalledUntil(stall) },
      publisher: publisherWith(async () => {
        sending.open();
        await stall.wait;
      }),
    });
    const batch = scoreBatch(1, [scoredDevice('d', 10, 'Trustworthy')]);
    const handled = a.handle(batch).then(
      () => 'recorded',
      (error: unknown) => error,
    );
    await sending.wait;
    const b = await leaseLostToB(stall, handled);
    // Neither the batch nor its devices recorded, and B's lease left to B.
    expect((await cycles.get('t1', 'c1'))?.scoredBatches).toBe(0);
    expect(await published.get('t1', 'd')).toBeNull();
    expect(await leaseHolder()).toBe('b');
    // Handled again once B is done: its records go out again, the batch and its devices recorded.
    await published.releaseTenantLease(b);
    await a.handle(batch);
    expect(sent).toEqual(['t1/d', 't1/d']);
    expect((await cycles.get('t1', 'c1'))?.scoredBatches).toBe(1);
    expect(await published.get('t1', 'd')).toMatchObject({ score: 10 });
    expect(await leaseHolder()).toBeNull();
  });

  it("createPublishHandler should send none of a batch's records once its tenant's lease lapsed while Redis did not answer", async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin({ tenantId: 't1', cycleId: 'c1', startedAt: at(10), deadlineAt: at(15) });
    // What changed is read (the lease taken), and Redis answers it only once the lease lapsed and B took it.
    const stall = gate();
    const read = gate();
    const a = replica({
      leasing: tenantLeasing(SHORT_LEASE_MS),
      published: {
        ...published,
        renewTenantLease: renewalsStalledUntil(stall),
        changed: async (...args) => {
          const answer = await published.changed(...args);
          read.open();
          await stall.wait;
          return answer;
        },
      },
    });
    const handled = a.handle(scoreBatch(1, [scoredDevice('d', 10, 'Trustworthy')])).then(
      () => 'recorded',
      (error: unknown) => error,
    );
    await read.wait;
    await leaseLostToB(stall, handled);
    expect(sent).toEqual([]);
    expect(await published.get('t1', 'd')).toBeNull();
    expect(await leaseHolder()).toBe('b');
  });

  it('createTenantsHandler should tombstone nothing of a deleted tenant once its lease lapsed while Redis did not answer, and fail the deletion retryably', async () => {
    await published.commit('t1', Date.parse(at(0)), [{ deviceId: 'd', score: 10, band: 'Trustworthy' }]);
    // The deletion waits for the rebuild of what VMS holds, holding the lease; its renewals stall meanwhile.
    const stall = gate();
    const waiting = gate();
    const scores = createScoreStore(redis.client, redis.prefix);
    const publisher = publisherWith();
    // What VMS holds rebuilt (from a vms.risk-scores without records), as a deletion needs.
    const rebuilt = createPublishedRebuilder({ published, readKeys: async () => 0, logger: silentLogger });
    const deletion = createTenantsHandler({
      published: { ...published, renewTenantLease: renewalsStalledUntil(stall) },
      tenants: createTenantStore(redis.client, redis.prefix),
      tombstones: createTombstones({
        published,
        scores,
        publisher,
        topic: topics.vmsRiskScores,
        metrics: new Registry({ processMetrics: false }),
      }),
      scores,
      inOrder: createInOrder(),
      leasing: tenantLeasing(SHORT_LEASE_MS),
      rebuild: {
        ensure: async (signal) => {
          await rebuilt.ensure(signal);
          waiting.open();
          await stall.wait;
        },
      },
      logger: silentLogger,
    });
    const handled = deletion(
      inboundMessage<TenantRecord>(null, { topic: 'urs.tenants', key: 't1', timestamp: Date.parse(at(3)) }),
    ).then(
      () => 'deleted',
      (error: unknown) => error,
    );
    await waiting.wait;
    await leaseLostToB(stall, handled);
    // Nothing sent nor written: the deletion, handled again, does it all under its own lease.
    expect(sent).toEqual([]);
    expect(await published.ofDeletedTenant('t1', Date.parse(at(0)))).toBe(false);
    expect(await published.get('t1', 'd')).toMatchObject({ score: 10 });
    expect(await leaseHolder()).toBe('b');
  });
});

import { ReplyError } from 'ioredis';
import { UrsError, sleep } from '@urs/resilience';
import type { PollScheduleStore, TenantStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { type LogLine, capturingLogger, topicNotAuthorised, waitFor } from '@urs/testkit';
import type { CycleInput, CycleResult } from '../src/cycle';
import type { Scheduler } from '../src/scheduler';
import {
  feed,
  memorySchedules,
  memoryStatus,
  record,
  sampleOf,
  oneDeviceListed,
  testScheduler,
} from './support/scheduler';

// A Redis refusing writes (out of memory): every tenant's attempt fails alike, on every try.

/** What a Redis out of memory refuses: writes that may grow it (reads and deletions still answer). */
const WRITES = new Set([
  'acquire',
  'begin',
  'end',
  'renew',
  'updateStatus',
  'updatePollingStatus',
  'cycleListed',
]);

const oom = (): Error => new ReplyError("OOM command not allowed when used memory > 'maxmemory'.");

/** `store` with its methods refusing while `refusing(method)` says so; `calls` counts the acquires per tenant. */
function refusingWhile<T extends object>(
  store: T,
  refusing: (method: string) => boolean,
  calls?: Map<string, number>,
): T {
  return new Proxy(store, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return async (...args: unknown[]) => {
        if (name === 'acquire' && calls) calls.set(String(args[0]), (calls.get(String(args[0])) ?? 0) + 1);
        if (refusing(String(name))) throw oom();
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

const RECHECK_MS = 10;
/** The poll interval's unit: the longest wait between two tries of a tenant whose attempts fail. */
const UNIT_MS = 200;

function outageReplica(options: {
  schedules: PollScheduleStore;
  tenants: TenantStore;
  runCycle?: (input: CycleInput) => Promise<void>;
  lines: LogLine[];
  metrics: Registry;
  maxConcurrentCycles?: number;
}) {
  return testScheduler({
    schedules: options.schedules,
    tenants: options.tenants,
    runCycle: async (input): Promise<CycleResult> => {
      await options.runCycle?.(input);
      return oneDeviceListed(input.startedAt);
    },
    holderId: 'outage',
    intervalUnitMs: UNIT_MS,
    leaseMs: 1_000,
    maxConcurrentCycles: options.maxConcurrentCycles ?? 32,
    recheckMs: RECHECK_MS,
    maxBackoffMs: 60_000,
    logger: capturingLogger(options.lines),
    metrics: options.metrics,
    // The middle of the jitter: each wait is 10 ms + half its cap, so the count of tries below is fixed (with
    // Math.random the largest of 20 tenants' counts passed 20 about once in a thousand runs).
    random: () => 0.5,
  });
}

describe('createScheduler while Redis refuses writes', () => {
  const started: Scheduler[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((s) => s.close(100)));
  });

  it('createScheduler should back off each tenant, warn once per outage, count the outcome, and poll again once Redis is back', async () => {
    let refusing = true;
    const acquires = new Map<string, number>();
    const lines: LogLine[] = [];
    const metrics = new Registry();
    const tenantIds = Array.from({ length: 20 }, (_, i) => `t${i}`);
    const { table, scheduler } = outageReplica({
      schedules: refusingWhile(memorySchedules(), (method) => refusing && WRITES.has(method), acquires),
      tenants: refusingWhile(memoryStatus(), (method) => refusing && WRITES.has(method)),
      lines,
      metrics,
    });
    await feed(
      table,
      tenantIds.map((id) => record(id)),
    );
    scheduler.start();
    started.push(scheduler);
    await sleep(1_000);
    // Without backoff a tenant was tried every RECHECK_MS (≈ 80 times in the second); the waits' caps double
    // from 10 ms up to UNIT_MS (a "minute"): waits of 15, 20, 30, 50, 90, then 105 ms, about 13 tries.
    for (const tenantId of tenantIds) expect(acquires.get(tenantId) ?? 0).toBeLessThanOrEqual(20);
    const loud = lines.filter((line) => line.level === 'warn' || line.level === 'error');
    expect(loud.map((line) => line.message)).toEqual([
      'poll attempts failing on Redis or Kafka: each tenant tried again with backoff until it is back',
    ]);
    expect(loud[0]).toMatchObject({ tenantId: 't0', reason: expect.stringContaining('OOM') });
    // Counted although nothing could be written: the alert on infrastructure outcomes can fire.
    expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="infrastructure"}')).toBeGreaterThanOrEqual(20);

    refusing = false;
    const before = acquires.get('t0') ?? 0;
    await waitFor(() => (acquires.get('t0') ?? 0) > before, { timeoutMs: UNIT_MS + 500 });
    expect(lines.filter((line) => line.message === 'poll attempts go through again')).toHaveLength(1);
  });

  it('close should return within twice its drain time while an attempt waits on a Redis that is away, naming it', async () => {
    const lines: LogLine[] = [];
    // ioredis queues commands while Redis is away (maxRetriesPerRequest null): the acquire never answers.
    const { table, scheduler } = outageReplica({
      schedules: { ...memorySchedules(), acquire: () => new Promise<never>(() => undefined) },
      tenants: memoryStatus(),
      lines,
      metrics: new Registry(),
    });
    await feed(table, [record('a')]);
    scheduler.start();
    await waitFor(() => scheduler.running() === 1);
    const bound = new AbortController();
    const outcome = await Promise.race([
      scheduler.close(100).then(() => 'closed'),
      sleep(2_000, bound.signal).then(() => 'still closing'),
    ]);
    // The bound's timer ends with the race: left running, it would hold the test run open.
    bound.abort();
    expect(outcome).toBe('closed');
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 'warn',
        message: 'poll attempts did not return when aborted: left behind, their leases expire by themselves',
        tenantIds: ['a'],
      }),
    );
  });

  it('endFailed should count a failed cycle before it writes its end, once, also when Redis refuses the write', async () => {
    let cycles = 0;
    let endsRefused = 0;
    const lines: LogLine[] = [];
    const metrics = new Registry();
    const { table, scheduler } = outageReplica({
      // The first cycle's end is refused, as by a Redis gone out of memory while the cycle ran.
      schedules: refusingWhile(memorySchedules(), (method) => method === 'end' && endsRefused++ === 0),
      tenants: memoryStatus(),
      runCycle: async () => {
        if (++cycles === 1) throw new UrsError('DEFENDER_UNAVAILABLE', 'Microsoft Defender answered 503');
      },
      lines,
      metrics,
    });
    await feed(table, [record('a')]);
    scheduler.start();
    started.push(scheduler);
    // The cycle left marked running is taken over at the tenant's next try, and listed.
    await waitFor(() => (sampleOf(metrics, 'urs_poll_cycles_total{outcome="listed"}') ?? 0) > 0, {
      timeoutMs: 2_000,
    });
    expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="transient"}')).toBe(1);
    // The cycle was counted: its end not being recorded is not counted again.
    expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="infrastructure"}')).toBe(0);
  });
});

describe('createScheduler while Kafka refuses the batches for want of an ACL', () => {
  const started: Scheduler[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((s) => s.close(100)));
  });

  it("should end each tenant's cycle as the replica's infrastructure failure, not the tenant's: no error status, no streak", async () => {
    const lines: LogLine[] = [];
    const metrics = new Registry();
    const schedules = memorySchedules();
    const tenants = memoryStatus();
    const { table, scheduler } = outageReplica({
      schedules,
      tenants,
      runCycle: async () => {
        throw topicNotAuthorised();
      },
      lines,
      metrics,
    });
    await feed(table, [record('a'), record('b')]);
    scheduler.start();
    started.push(scheduler);
    const ended = (outcome: string) => sampleOf(metrics, `urs_poll_cycles_total{outcome="${outcome}"}`) ?? 0;
    // Four cycles failed: each tenant's first, then the probes of the hold (one tenant's at a time).
    await waitFor(() => ended('infrastructure') + ended('transient') >= 4, { timeoutMs: 5_000 });
    expect(ended('transient')).toBe(0);
    expect(ended('infrastructure')).toBeGreaterThanOrEqual(4);
    for (const tenantId of ['a', 'b']) {
      const status = await tenants.getStatus(tenantId);
      expect(status).not.toHaveProperty('state', 'error');
      expect(status).not.toHaveProperty('lastErrorCode');
      expect(await schedules.get(tenantId)).toMatchObject({ failures: 0 });
    }
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 'error',
        message: expect.stringContaining('for want of an ACL'),
        reason: expect.stringContaining('Topic authorization failed'),
      }),
    );
  });

  it("should hold this replica's cycle starts once a batch is refused, one tenant's cycle trying again per probe wait, and resume every tenant once a batch is taken", async () => {
    let refusing = true;
    const cyclesOf = new Map<string, number>();
    let cycles = 0;
    const lines: LogLine[] = [];
    const metrics = new Registry();
    const tenantIds = Array.from({ length: 20 }, (_, i) => `t${i}`);
    const { table, scheduler } = outageReplica({
      schedules: memorySchedules(),
      tenants: memoryStatus(),
      runCycle: async (input) => {
        cycles++;
        cyclesOf.set(input.record.tenantId, (cyclesOf.get(input.record.tenantId) ?? 0) + 1);
        if (refusing) throw topicNotAuthorised();
      },
      lines,
      metrics,
      maxConcurrentCycles: 1,
    });
    await feed(
      table,
      tenantIds.map((id) => record(id)),
    );
    scheduler.start();
    started.push(scheduler);
    await sleep(1_500);
    // Without the hold every tenant's cycle ran and was refused, each tried again ~2 "minutes" (400 ms) later:
    // about 20 cycles a wait, each spending the tenant's Defender calls before its send. With it, the first
    // refusal holds the others: one cycle per probe wait (2 "minutes"), about 4 in the 1.5 s.
    expect(cycles).toBeLessThanOrEqual(6);
    expect(sampleOf(metrics, 'urs_poll_batches_refused')).toBe(1);
    // Held, not waiting for a place: not counted as overdue (its own alert pages).
    expect(sampleOf(metrics, 'urs_poll_overdue_tenants')).toBe(0);
    expect(lines.filter((line) => line.message.startsWith('cycles held'))).toEqual([
      expect.objectContaining({
        level: 'error',
        reason: expect.stringContaining('Topic authorization failed'),
      }),
    ]);

    refusing = false;
    await waitFor(() => tenantIds.every((id) => (cyclesOf.get(id) ?? 0) > 0), { timeoutMs: 5_000 });
    expect(sampleOf(metrics, 'urs_poll_batches_refused')).toBe(0);
    expect(lines).toContainEqual(
      expect.objectContaining({ level: 'info', message: expect.stringContaining('cycles resume') }),
    );
  });

  it('should stop the cycles running when a batch is refused before their next page, not the probe', async () => {
    const pagesOf = new Map<string, number>();
    let granted = false;
    const lines: LogLine[] = [];
    const metrics = new Registry();
    const { table, scheduler } = outageReplica({
      schedules: memorySchedules(),
      tenants: memoryStatus(),
      runCycle: async (input) => {
        const tenantId = input.record.tenantId;
        if (granted) return;
        // Tenant a's batch is refused at once; b and c list 50 pages, 10 ms apart, before their first send.
        if (tenantId === 'a') throw topicNotAuthorised();
        for (let page = 0; page < 50; page++) {
          const refused = input.batchesRefused?.();
          if (refused !== undefined) throw refused;
          pagesOf.set(tenantId, (pagesOf.get(tenantId) ?? 0) + 1);
          await sleep(10);
        }
        throw topicNotAuthorised();
      },
      lines,
      metrics,
      maxConcurrentCycles: 8,
    });
    await feed(table, [record('b'), record('c')]);
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => (pagesOf.get('b') ?? 0) > 0 && (pagesOf.get('c') ?? 0) > 0);
    await feed(table, [record('a')], { n: 2 });
    const ended = () => sampleOf(metrics, 'urs_poll_cycles_total{outcome="infrastructure"}') ?? 0;
    await waitFor(() => ended() >= 3, { timeoutMs: 2_000 });
    expect(pagesOf.get('b')).toBeLessThan(50);
    expect(pagesOf.get('c')).toBeLessThan(50);
    // Stopped by the hold, not refused by Kafka: they neither count as refusals nor put the probe off.
    granted = true;
    await waitFor(() => lines.find((line) => line.message.includes('cycles resume')), { timeoutMs: 2_000 });
    expect(lines.find((line) => line.message.includes('cycles resume'))).toMatchObject({ refusals: 1 });
  });

  it("should resume the held cycles at the probe's first batch taken, not at the end of its cycle", async () => {
    let refusing = true;
    let release: () => void = () => undefined;
    const probeGoesOn = new Promise<void>((resolve) => (release = resolve));
    const begun: string[] = [];
    const metrics = new Registry();
    const { table, scheduler } = outageReplica({
      schedules: memorySchedules(),
      tenants: memoryStatus(),
      runCycle: async (input) => {
        begun.push(input.record.tenantId);
        if (refusing) throw topicNotAuthorised();
        // A long cycle (a bulk tenant's): its first batch taken, the rest of its listing still to come.
        input.batchTaken?.();
        await probeGoesOn;
      },
      lines: [],
      metrics,
      maxConcurrentCycles: 8,
    });
    await feed(table, [record('a')]);
    scheduler.start();
    started.push(scheduler);
    // Released however the test ends: a cycle left running renews its lease, and the run would never end.
    try {
      await waitFor(() => sampleOf(metrics, 'urs_poll_batches_refused') === 1);
      refusing = false;
      // The probe takes its first batch and goes on listing: the cycles held begin meanwhile.
      await waitFor(() => begun.length === 2, { timeoutMs: 2_000 });
      await feed(table, [record('b'), record('c')], { n: 1 });
      await waitFor(() => begun.length === 4, { timeoutMs: 1_000 });
      expect(sampleOf(metrics, 'urs_poll_batches_refused')).toBe(0);
      expect(scheduler.running()).toBe(3);
    } finally {
      release();
    }
  });
});

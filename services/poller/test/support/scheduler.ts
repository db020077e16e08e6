import type { TenantRecord } from '@urs/contracts';
import { silentLogger, type Logger } from '@urs/logging';
import type {
  CycleStore,
  PollLease,
  PollSchedule,
  PollScheduleStore,
  TenantStatus,
  TenantStore,
} from '@urs/store';
import { Registry } from '@urs/telemetry';
import { inboundMessage } from '@urs/testkit';
import { cycleIdOf, type CycleInput, type CycleResult } from '../../src/cycle';
import { createScheduler, type SchedulerDeps } from '../../src/scheduler';
import { createTenantTable, type TenantTable } from '../../src/tenant-table';

// The scheduler's stores in memory and a replica over them, for the unit tests of the scheduler.

/**
 * The lease and schedule semantics of the Redis store, in memory (shared by the "replicas" of a test).
 * `tenantsRebuiltAt`: when the registrar last rebuilt the tenants after Redis came up empty (default 0: long
 * before any tenant's record, no schedule lost lately).
 */
export function memorySchedules(options: { tenantsRebuiltAt?: number } = {}): PollScheduleStore {
  const leases = new Map<string, { token: string; until: number }>();
  const schedules = new Map<string, PollSchedule>();
  let fence = 0;
  const holds = (lease: PollLease) => {
    const held = leases.get(lease.tenantId);
    return held !== undefined && held.token === lease.token && held.until > Date.now();
  };
  return {
    async acquire(tenantId, holderId, leaseMs) {
      const held = leases.get(tenantId);
      if (held && held.until > Date.now()) return null;
      const token = `${++fence}:${holderId}`;
      leases.set(tenantId, { token, until: Date.now() + leaseMs });
      return { tenantId, token };
    },
    async renew(lease, leaseMs) {
      if (!holds(lease)) return false;
      leases.set(lease.tenantId, { token: lease.token, until: Date.now() + leaseMs });
      return true;
    },
    async release(lease) {
      if (!holds(lease)) return false;
      leases.delete(lease.tenantId);
      return true;
    },
    async get(tenantId) {
      return { ...(schedules.get(tenantId) ?? { failures: 0 }) };
    },
    async getMany(tenantIds) {
      return new Map(tenantIds.map((id) => [id, { ...(schedules.get(id) ?? { failures: 0 }) }]));
    },
    async begin(lease, cycleId, startedAt) {
      if (!holds(lease)) return { reason: 'lease-lost' };
      const { unrecordedListing: _kept, ...before } = schedules.get(lease.tenantId) ?? { failures: 0 };
      schedules.set(lease.tenantId, { ...before, lastStartedAt: startedAt, runningCycleId: cycleId });
      return true;
    },
    async keepListing(lease, cycleId, totals) {
      const schedule = schedules.get(lease.tenantId);
      if (!holds(lease) || schedule === undefined) return false;
      schedules.set(lease.tenantId, { ...schedule, unrecordedListing: { cycleId, totals } });
      return true;
    },
    async end(lease, outcome) {
      if (!holds(lease)) return false;
      const {
        runningCycleId: _done,
        notBefore: _nb,
        failedRevision: _fr,
        retryAt: _ra,
        failedKind: _fk,
        unrecordedListing: _kept,
        ...rest
      } = schedules.get(lease.tenantId) ?? { failures: 0 };
      schedules.set(lease.tenantId, {
        ...rest,
        failures: outcome.failures,
        ...(outcome.notBefore === null ? {} : { notBefore: outcome.notBefore }),
        ...(outcome.retryAt === undefined || outcome.retryAt === null ? {} : { retryAt: outcome.retryAt }),
        ...(outcome.failedRevision === undefined ? {} : { failedRevision: outcome.failedRevision }),
        ...(outcome.failedKind === undefined ? {} : { failedKind: outcome.failedKind }),
      });
      return true;
    },
    async clear(tenantId) {
      schedules.delete(tenantId);
    },
    async tenantsRebuiltAt() {
      return options.tenantsRebuiltAt ?? 0;
    },
    async carryFailure(tenantId, fromRevision, toRevision) {
      const held = leases.get(tenantId);
      if (held && held.until > Date.now()) return false;
      const schedule = schedules.get(tenantId);
      if (schedule?.failedRevision === fromRevision)
        schedules.set(tenantId, { ...schedule, failedRevision: toRevision });
      return true;
    },
  };
}

/**
 * Stores what an earlier poller left for `tenantId`: a cycle of revision 1 started 20 intervals ago that failed,
 * the tenant backed off until `notBefore` (epoch ms).
 */
export async function storeBackoff(
  schedules: PollScheduleStore,
  tenantId: string,
  notBefore: number,
): Promise<void> {
  const lease = (await schedules.acquire(tenantId, 'earlier', 1_000)) as PollLease;
  await schedules.begin(lease, cycleIdOf(tenantId, 1), Date.now() - 20 * INTERVAL_MS);
  await schedules.end(lease, { failures: 1, notBefore, failedRevision: 1 });
  await schedules.release(lease);
}

export function memoryStatus(): TenantStore & { statuses: Map<string, TenantStatus> } {
  const statuses = new Map<string, TenantStatus>();
  const store = {
    statuses,
    async getStatus(tenantId: string) {
      return { ...statuses.get(tenantId) };
    },
    async updateStatus(tenantId: string, status: Record<string, unknown>) {
      const next: Record<string, unknown> = { ...statuses.get(tenantId) };
      for (const [k, v] of Object.entries(status))
        if (v === null) delete next[k];
        else if (v !== undefined) next[k] = v;
      statuses.set(tenantId, next as TenantStatus);
    },
    // No records here: every tenant counts as enabled (the Redis store's guard is tested against Redis).
    async updatePollingStatus(tenantId: string, status: Record<string, unknown>) {
      await store.updateStatus(tenantId, status);
      return true;
    },
    async cycleListed(tenantId: string, cycleId: string, status: Record<string, unknown>) {
      const next: Record<string, unknown> = { ...statuses.get(tenantId), ...status };
      if (next['lastErrorCycleId'] === cycleId) next['state'] = 'error';
      else {
        next['state'] = 'active';
        for (const field of ['lastErrorCode', 'lastErrorMessage', 'lastErrorAt', 'lastErrorCycleId'])
          delete next[field];
      }
      statuses.set(tenantId, next as TenantStatus);
      return true;
    },
  };
  return store as unknown as TenantStore & { statuses: Map<string, TenantStatus> };
}

export const UNIT_MS = 10; // 10 "minutes" = 100 ms
export const INTERVAL_MS = 10 * UNIT_MS;
/** The test scheduler's URS_POLL_RECHECK_MS (see `testScheduler`). */
export const RECHECK_MS = 20;

export const record = (tenantId: string, revision = 1, enabled = true): TenantRecord =>
  ({ tenantId, revision, enabled, defender: { pollIntervalMinutes: 10 } }) as unknown as TenantRecord;

export interface Run {
  tenantId: string;
  replica: number;
  start: number;
  end: number;
  /** Whether the cycle's lease still surely stood when it ended (CycleInput.leaseHeld). */
  leaseHeld: boolean;
}

export async function feed(table: TenantTable, records: TenantRecord[], offset = { n: 0 }): Promise<void> {
  for (const r of records) {
    await table.handle(inboundMessage(r, { offset: String(offset.n++), key: r.tenantId }));
  }
}

/** What a cycle that listed one device, at `listedAt`, answers the scheduler. */
export const oneDeviceListed = (listedAt: number): CycleResult => ({
  totalDevices: 1,
  totalBatches: 1,
  merged: 0,
  vulnerabilityMode: 'per-device',
  note: null,
  listedAt,
});

export function replica(
  index: number,
  schedules: PollScheduleStore,
  status: TenantStore,
  runs: Run[],
  behaviour: (input: CycleInput) => Promise<void>,
  options: {
    maxConcurrentCycles?: number;
    cycles?: Pick<CycleStore, 'get' | 'abandon' | 'listed'>;
    metrics?: Registry;
    /** The poll interval's unit, in ms (default `UNIT_MS`). */
    intervalUnitMs?: number;
    /** The scheduler's clock (default `Date.now`). */
    now?: () => number;
    /** How long a tenant's lease lasts unless renewed, ms (default 200). */
    leaseMs?: number;
    /** The scheduler's logger (default silent). */
    logger?: Logger;
    /** URS_POLL_RECHECK_MS (default 20). */
    recheckMs?: number;
    /** How long a record the registrar has not stored yet is looked for at every tick (default the scheduler's). */
    registrarWaitMs?: number;
  } = {},
) {
  return testScheduler({
    schedules,
    tenants: status,
    ...(options.cycles === undefined ? {} : { cycles: options.cycles }),
    runCycle: async (input): Promise<CycleResult> => {
      const start = input.startedAt;
      await behaviour(input);
      runs.push({
        tenantId: input.record.tenantId,
        replica: index,
        start,
        end: Date.now(),
        leaseHeld: input.leaseHeld(),
      });
      return oneDeviceListed(Date.now());
    },
    holderId: `replica-${index}`,
    intervalUnitMs: options.intervalUnitMs ?? UNIT_MS,
    leaseMs: options.leaseMs ?? 200,
    maxConcurrentCycles: options.maxConcurrentCycles ?? 8,
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    ...(options.metrics === undefined ? {} : { metrics: options.metrics }),
    ...(options.now === undefined ? {} : { now: options.now }),
    ...(options.recheckMs === undefined ? {} : { recheckMs: options.recheckMs }),
    ...(options.registrarWaitMs === undefined ? {} : { registrarWaitMs: options.registrarWaitMs }),
  });
}

/**
 * A scheduler over a fresh tenant table (its end expected at once), `deps` over the tests' defaults: no
 * cycles left running, a 10 ms unit, 200 ms leases, 8 cycles at once, ticks of 5 ms, rechecks of 20 ms, waits
 * of at most 10 s, a silent logger.
 */
export function testScheduler(
  deps: Pick<SchedulerDeps, 'schedules' | 'tenants' | 'runCycle'> & Partial<Omit<SchedulerDeps, 'table'>>,
) {
  const table = createTenantTable();
  table.expectEnd(new Map());
  const scheduler = createScheduler({
    table,
    cycles: { get: async () => null, abandon: async () => false, listed: async () => {} },
    holderId: 'only-replica',
    intervalUnitMs: UNIT_MS,
    leaseMs: 200,
    maxConcurrentCycles: 8,
    tickMs: 5,
    recheckMs: RECHECK_MS,
    maxBackoffMs: 10_000,
    logger: silentLogger,
    metrics: new Registry({ processMetrics: false }),
    ...deps,
  });
  return { table, scheduler };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A sample of `registry`'s exposition: the value of `series` (a name with its labels, as exposed), or undefined. */
export function sampleOf(registry: Registry, series: string): number | undefined {
  const line = registry
    .expose()
    .split('\n')
    .find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/**
 * One replica with a single cycle place (leases of 10 s, which no slow cycle loses), each cycle `behaviour`, fed
 * `records` (the first in the table takes the place first) and started: its stores, the runs that ended, its
 * metrics and when it started. The caller closes `scheduler`.
 */
export async function startOnePlaceReplica(
  records: TenantRecord[],
  behaviour: (input: CycleInput) => Promise<void>,
) {
  const schedules = memorySchedules();
  const status = memoryStatus();
  const runs: Run[] = [];
  const metrics = new Registry();
  const { scheduler, table } = replica(0, schedules, status, runs, behaviour, {
    maxConcurrentCycles: 1,
    metrics,
    leaseMs: 10_000,
  });
  await feed(table, records);
  const started = Date.now();
  scheduler.start();
  return { scheduler, schedules, status, runs, metrics, started };
}

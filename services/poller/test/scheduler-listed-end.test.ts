import { ReplyError } from 'ioredis';
import type { CycleState, CycleStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { type LogLine, capturingLogger, waitFor } from '@urs/testkit';
import { CycleListedNotRecordedError, type CycleInput, type CycleResult } from '../src/cycle';
import {
  feed,
  memorySchedules,
  memoryStatus,
  oneDeviceListed,
  record,
  sampleOf,
  sleep,
  testScheduler,
} from './support/scheduler';

// A cycle listed in full whose end could not be recorded (Redis failing over under the status's or the
// schedule's write): ended by the next try, not failed and listed again within its interval.

/** The poll interval's unit: a 10-"minute" interval is 4 s; a transient retry would come after 0.64–0.96 s. */
const UNIT_MS = 400;

function onlyReplica(failing: { store: 'tenants' | 'schedules'; left: number }, lines: LogLine[]) {
  const schedules = memorySchedules();
  const tenants = memoryStatus();
  const readonly = () => new ReplyError("READONLY You can't write against a read only replica.");
  const end = schedules.end.bind(schedules);
  schedules.end = async (lease, outcome) => {
    if (failing.store === 'schedules' && failing.left-- > 0) throw readonly();
    return end(lease, outcome);
  };
  const cycleListed = tenants.cycleListed.bind(tenants);
  tenants.cycleListed = async (tenantId, cycleId, status) => {
    if (failing.store === 'tenants' && failing.left-- > 0) throw readonly();
    return cycleListed(tenantId, cycleId, status);
  };
  // The cycle store's record of each listed cycle, as runCycle writes it.
  const listed = new Map<string, CycleState>();
  const cycles: Pick<CycleStore, 'get' | 'abandon' | 'listed'> = {
    get: async (_tenantId, cycleId) => listed.get(cycleId) ?? null,
    abandon: async () => false,
    listed: async () => {},
  };
  const runs: number[] = [];
  const metrics = new Registry({ processMetrics: false });
  const { table, scheduler } = testScheduler({
    schedules,
    tenants,
    cycles,
    runCycle: async (input: CycleInput): Promise<CycleResult> => {
      runs.push(Date.now());
      const result = oneDeviceListed(Date.now());
      listed.set(input.cycleId, {
        tenantId: input.record.tenantId,
        cycleId: input.cycleId,
        startedAt: new Date(input.startedAt).toISOString(),
        deadlineAt: new Date(input.startedAt + 60_000).toISOString(),
        totalBatches: result.totalBatches,
        totalDevices: result.totalDevices,
        listedAt: new Date(result.listedAt).toISOString(),
        vulnerabilityMode: result.vulnerabilityMode,
        scoredBatches: 0,
      });
      return result;
    },
    intervalUnitMs: UNIT_MS,
    leaseMs: 1_000,
    maxBackoffMs: 60_000,
    logger: capturingLogger(lines),
    metrics,
    random: () => 0.5,
  });
  return { table, scheduler, schedules, tenants, runs, metrics };
}

describe('createScheduler: a listed cycle whose end fails to be recorded', () => {
  it.each([
    ['the status write (cycleListed)', 'tenants' as const],
    ["the schedule's end", 'schedules' as const],
  ])(
    'should end the cycle at the next try, without listing the tenant again, when %s fails',
    async (_name, store) => {
      const lines: LogLine[] = [];
      const { table, scheduler, schedules, tenants, runs, metrics } = onlyReplica({ store, left: 1 }, lines);
      await feed(table, [record('a')]);
      scheduler.start();
      try {
        await waitFor(() => tenants.statuses.get('a')?.deviceCount === 1, { timeoutMs: 5_000 });
        // Past when a failed cycle's retry would have listed it again (0.64–0.96 s after it failed).
        await sleep(1_200);
        expect(runs).toHaveLength(1);
        const schedule = await schedules.get('a');
        expect(schedule.runningCycleId).toBeUndefined();
        expect(schedule.failures).toBe(0);
        expect(schedule.retryAt).toBeUndefined();
        expect(tenants.statuses.get('a')).toMatchObject({ state: 'active', deviceCount: 1 });
        expect(tenants.statuses.get('a')?.lastCycleEndedAt).toBeDefined();
        expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="listed"}')).toBe(1);
        expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="infrastructure"}')).toBe(0);
        expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="transient"}')).toBe(0);
      } finally {
        await scheduler.close(1_000);
      }
    },
    15_000,
  );
});

/**
 * The cycle store of one replica's cycles in memory: a cycle is begun as its first batch goes out, its listing
 * recorded by `listed`, refused `refusals` times (Redis failing over), and abandoned by `abandon`.
 */
function memoryCycles(refusals: { left: number }) {
  const states = new Map<string, CycleState>();
  const abandoned: string[] = [];
  const cycles: Pick<CycleStore, 'get' | 'abandon' | 'listed'> = {
    get: async (_tenantId, cycleId) => {
      const state = states.get(cycleId);
      return state === undefined ? null : { ...state };
    },
    abandon: async (_tenantId, cycleId) => {
      abandoned.push(cycleId);
      return true;
    },
    listed: async (_tenantId, cycleId, totals) => {
      if (refusals.left-- > 0) throw new ReplyError("READONLY You can't write against a read only replica.");
      const state = states.get(cycleId);
      if (state === undefined) throw new Error(`cycle ${cycleId} never begun`);
      const { note, ...listing } = totals;
      states.set(cycleId, { ...state, ...listing, ...(note === undefined || note === null ? {} : { note }) });
    },
  };
  const begin = (input: CycleInput) =>
    states.set(input.cycleId, {
      tenantId: input.record.tenantId,
      cycleId: input.cycleId,
      startedAt: new Date(input.startedAt).toISOString(),
      deadlineAt: new Date(input.startedAt + 60_000).toISOString(),
      scoredBatches: 0,
    });
  return { cycles, begin, abandoned };
}

describe('createScheduler: a cycle whose every batch went out and whose listing the cycle store did not record', () => {
  it('should record its listing and end it at the next try, neither abandoning it nor listing the tenant again', async () => {
    const schedules = memorySchedules();
    const tenants = memoryStatus();
    const metrics = new Registry({ processMetrics: false });
    // Refused in place (runCycle's own retries, up to the lease's end), then recorded at the next try.
    const { cycles, begin, abandoned } = memoryCycles({ left: 1 });
    const runs: string[] = [];
    const { table, scheduler } = testScheduler({
      schedules,
      tenants,
      cycles,
      runCycle: async (input: CycleInput): Promise<CycleResult> => {
        runs.push(input.cycleId);
        begin(input);
        const result = oneDeviceListed(Date.now());
        const totals = {
          totalBatches: result.totalBatches,
          totalDevices: result.totalDevices,
          listedAt: new Date(result.listedAt).toISOString(),
          vulnerabilityMode: result.vulnerabilityMode,
          note: result.note,
        };
        try {
          await cycles.listed(input.record.tenantId, input.cycleId, totals);
        } catch (error) {
          throw new CycleListedNotRecordedError(error, totals);
        }
        return result;
      },
      intervalUnitMs: UNIT_MS,
      leaseMs: 1_000,
      maxBackoffMs: 60_000,
      metrics,
      random: () => 0.5,
    });
    await feed(table, [record('a')]);
    scheduler.start();
    try {
      await waitFor(() => tenants.statuses.get('a')?.lastCycleEndedAt !== undefined, {
        timeoutMs: 5_000,
        description: "a cycle's end recorded",
      });
      const [cycleId] = runs;
      expect(runs).toEqual([cycleId]);
      expect(abandoned).toEqual([]);
      expect(tenants.statuses.get('a')).toMatchObject({
        state: 'active',
        deviceCount: 1,
        lastCycleId: cycleId,
      });
      const schedule = await schedules.get('a');
      expect(schedule.runningCycleId).toBeUndefined();
      expect(schedule.failures).toBe(0);
      // Counted once, as the cycle listed it is: not under no outcome, nor as a failure.
      expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="listed"}')).toBe(1);
      expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="infrastructure"}')).toBe(0);
      expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="transient"}')).toBe(0);
    } finally {
      await scheduler.close(1_000);
    }
  }, 15_000);
});

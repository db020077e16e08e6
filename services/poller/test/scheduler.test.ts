import { randomBytes } from 'node:crypto';
import { ReplyError } from 'ioredis';
import type { TenantRecord } from '@urs/contracts';
import { UrsError } from '@urs/resilience';
import { createSecretSealer } from '@urs/secrets';
import type { CycleAbandonment, CycleState, PollLease, PollScheduleStore, TenantStatus } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { inboundMessage, waitFor } from '@urs/testkit';
import { cycleIdOf, type CycleInput } from '../src/cycle';
import { STATUS_READS_AT_ONCE, type Scheduler } from '../src/scheduler';
import {
  INTERVAL_MS,
  UNIT_MS,
  feed,
  memorySchedules,
  memoryStatus,
  record,
  replica,
  sampleOf,
  sleep,
  storeBackoff,
  type Run,
} from './support/scheduler';

/** The longest wait after a first transient failure: 2 "minutes" +20 % (see `transientRetryAt`). */
const FIRST_RETRY_AT_MOST_MS = 2 * UNIT_MS * 1.2;

describe('createScheduler', () => {
  const started: Scheduler[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((s) => s.close(100)));
  });

  it('createScheduler should poll each tenant once per interval across replicas, never twice at once', async () => {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    const slow = async (): Promise<void> => {
      await sleep(5 + Math.random() * 30);
    };
    const replicas = [0, 1, 2].map((i) => replica(i, schedules, status, runs, slow));
    for (const r of replicas) {
      await feed(
        r.table,
        ['a', 'b', 'c', 'd'].map((id) => record(id)),
      );
      r.scheduler.start();
      started.push(r.scheduler);
    }
    // Four cycles of each tenant, however late a loaded machine runs the timers (about 6 intervals otherwise).
    await waitFor(
      () => ['a', 'b', 'c', 'd'].every((id) => runs.filter((r) => r.tenantId === id).length >= 4),
      { timeoutMs: 10_000, intervalMs: 5, description: 'four cycles of each tenant' },
    );
    for (const tenantId of ['a', 'b', 'c', 'd']) {
      const mine = runs.filter((r) => r.tenantId === tenantId).sort((x, y) => x.start - y.start);
      expect(mine.length).toBeGreaterThanOrEqual(4);
      for (let i = 1; i < mine.length; i++) {
        expect((mine[i] as Run).start - (mine[i - 1] as Run).start).toBeGreaterThanOrEqual(INTERVAL_MS);
        // Never while the last cycle held its lease. A cycle that outlived it (its process stalled past the
        // 200 ms lease, as a loaded machine's may) may end after the next holder began: a real cycle sends
        // nothing more once its lease clock ran out (CycleInput.leaseHeld).
        if ((mine[i - 1] as Run).leaseHeld)
          expect((mine[i] as Run).start).toBeGreaterThanOrEqual((mine[i - 1] as Run).end);
      }
    }
    expect((await status.statuses.get('a'))?.state).toBe('active');
  });

  it('createScheduler should start the most overdue tenants first when more are due than it may run', async () => {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    // One cycle at a time, each 60 % of the interval: three tenants need more than the replica can give,
    // and whenever a cycle ends another tenant is due.
    const cycle = async (): Promise<void> => {
      await sleep(0.6 * INTERVAL_MS);
    };
    const { table, scheduler } = replica(0, schedules, status, runs, cycle, { maxConcurrentCycles: 1 });
    await feed(table, [record('a'), record('b'), record('c')]);
    scheduler.start();
    started.push(scheduler);
    // Eight cycles, not a fixed time: a loaded machine starts fewer in 7 intervals. Taking turns, each tenant
    // has had two or three.
    await waitFor(() => runs.length >= 8, { timeoutMs: 10_000, intervalMs: 5, description: 'eight cycles' });
    // In the table's order, a and b would take turns for ever and c would never be polled.
    for (const tenantId of ['a', 'b', 'c'])
      expect(runs.filter((r) => r.tenantId === tenantId).length).toBeGreaterThanOrEqual(2);
  });

  it('createScheduler should serve every cycle outcome at 0 before any cycle ends', () => {
    const metrics = new Registry();
    replica(0, memorySchedules(), memoryStatus(), [], async () => {}, { metrics });
    // Present from the start: increase() and rate() count nothing before a series' first sample, and the
    // alerts divide the failing outcomes by all of them.
    const exposed = metrics.expose();
    for (const outcome of ['listed', 'aborted', 'setup', 'throttled', 'transient', 'local', 'infrastructure'])
      expect(exposed).toContain(`urs_poll_cycles_total{outcome="${outcome}"} 0`);
  });

  it('createScheduler should count the tenants due that find no free place, and how late cycles start', async () => {
    const runs: Run[] = [];
    const metrics = new Registry();
    // One place, three tenants whose cycles take 60 % of the interval: two wait at every turn.
    const cycle = async (): Promise<void> => {
      await sleep(0.6 * INTERVAL_MS);
    };
    const { table, scheduler } = replica(0, memorySchedules(), memoryStatus(), runs, cycle, {
      maxConcurrentCycles: 1,
      metrics,
    });
    await feed(table, [record('a'), record('b'), record('c')]);
    scheduler.start();
    started.push(scheduler);
    let mostOverdue = 0;
    // The first cycles were due at once (never polled): only the later ones, due by their schedule, count.
    await waitFor(
      () => {
        mostOverdue = Math.max(mostOverdue, sampleOf(metrics, 'urs_poll_overdue_tenants') ?? -1);
        return mostOverdue >= 2 && (sampleOf(metrics, 'urs_poll_cycle_start_delay_seconds_count') ?? 0) > 0;
      },
      { intervalMs: 1, description: 'two tenants overdue and a cycle started late' },
    );
    expect(mostOverdue).toBe(2);
    expect(sampleOf(metrics, 'urs_poll_cycle_start_delay_seconds_sum')).toBeGreaterThan(0);
  });

  it('createScheduler should not count overdue a tenant whose lease another replica holds', async () => {
    const schedules = memorySchedules();
    const metrics = new Registry();
    // Another replica runs a's cycle all along; this one has one place, taken by b's long cycle.
    expect(await schedules.acquire('a', 'replica-other', 60_000)).not.toBeNull();
    const attempted: string[] = [];
    const cycle = async (input: CycleInput): Promise<void> => {
      attempted.push(input.record.tenantId);
      await sleep(10 * INTERVAL_MS);
    };
    // Its own leases of a minute: the other replica's, seen held, is taken as held that long (see below).
    const { table, scheduler } = replica(0, schedules, memoryStatus(), [], cycle, {
      maxConcurrentCycles: 1,
      metrics,
      leaseMs: 60_000,
    });
    await feed(table, [record('a'), record('b')]);
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => attempted.includes('b'), {
      timeoutMs: 5_000,
      intervalMs: 2,
      description: "b's cycle",
    });
    let mostOverdue = -1;
    for (const until = Date.now() + 3 * INTERVAL_MS; Date.now() < until; await sleep(2))
      mostOverdue = Math.max(mostOverdue, sampleOf(metrics, 'urs_poll_overdue_tenants') ?? -1);
    // Nothing waits for this replica: a runs elsewhere.
    expect(mostOverdue).toBe(0);
  });

  it('createScheduler should count overdue again a tenant whose lease another replica held, once that lease may have ended', async () => {
    const schedules = memorySchedules();
    const metrics = new Registry();
    // Another replica took a's lease (and may have died since); this one has one place, taken for good by b's
    // cycle, so it never tries a again.
    expect(await schedules.acquire('a', 'replica-other', 60_000)).not.toBeNull();
    const attempted: string[] = [];
    const cycle = async (input: CycleInput): Promise<void> => {
      attempted.push(input.record.tenantId);
      await new Promise((resolve) => input.signal.addEventListener('abort', resolve));
    };
    const { table, scheduler } = replica(0, schedules, memoryStatus(), [], cycle, {
      maxConcurrentCycles: 1,
      metrics,
    });
    await feed(table, [record('a'), record('b')]);
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => attempted.includes('b'), {
      timeoutMs: 5_000,
      intervalMs: 2,
      description: "b's cycle",
    });
    // Past a lease and a recheck since a was seen held elsewhere: a is due by this replica's view, and waits
    // for its place like any other (every replica full fires UrsPollTenantsOverdue).
    await waitFor(() => sampleOf(metrics, 'urs_poll_overdue_tenants') === 1, {
      timeoutMs: 5_000,
      intervalMs: 2,
      description: 'a counted overdue',
    });
    expect(attempted).toEqual(['b']);
  });

  it('createScheduler should count no tenant overdue while it has free places', async () => {
    const metrics = new Registry();
    let mostOverdue = -1;
    const sampleOverdue = (): void => {
      mostOverdue = Math.max(mostOverdue, sampleOf(metrics, 'urs_poll_overdue_tenants') ?? -1);
    };
    // Read as each cycle starts, when the tick that started it has just counted.
    const cycle = async (): Promise<void> => {
      sampleOverdue();
      await sleep(0.6 * INTERVAL_MS);
    };
    const runs: Run[] = [];
    const { table, scheduler } = replica(0, memorySchedules(), memoryStatus(), runs, cycle, { metrics });
    await feed(table, [record('a'), record('b'), record('c')]);
    scheduler.start();
    started.push(scheduler);
    // Counted, not timed: two cycles of each tenant, however late a loaded machine runs them.
    await waitFor(
      () => {
        sampleOverdue();
        return ['a', 'b', 'c'].every((id) => runs.filter((r) => r.tenantId === id).length >= 2);
      },
      { intervalMs: 1, description: 'two cycles of each tenant' },
    );
    expect(mostOverdue).toBe(0);
  });

  it('createScheduler should start the most overdue tenants first right after it starts, by their stored schedules', async () => {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    // What earlier pollers left: the last cycles' starts, overdue by 0.2, 2 and 1 intervals, one not due yet.
    const now = Date.now();
    const lastStarts: [string, number][] = [
      ['a', now - 1.2 * INTERVAL_MS],
      ['b', now - 3 * INTERVAL_MS],
      ['c', now - 2 * INTERVAL_MS],
      ['d', now - 0.5 * INTERVAL_MS],
    ];
    for (const [tenantId, startedAt] of lastStarts) {
      const lease = (await schedules.acquire(tenantId, 'earlier', 1_000)) as PollLease;
      await schedules.begin(lease, cycleIdOf(tenantId, startedAt), startedAt);
      await schedules.end(lease, { failures: 0, notBefore: null });
      await schedules.release(lease);
    }
    const { table, scheduler } = replica(0, schedules, status, runs, async () => undefined, {
      maxConcurrentCycles: 1,
    });
    await feed(table, [record('a'), record('b'), record('c'), record('d')]);
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => runs.length >= 3, { intervalMs: 1 });
    // In the table's order (every tenant due at 0 until this replica had looked at it) a would go first.
    expect(runs.slice(0, 3).map((r) => r.tenantId)).toEqual(['b', 'c', 'a']);
  });

  /** Stores for `count` tenants whose stored schedules hold a backoff that has ended (due at once). */
  async function backedOff(count: number) {
    const schedules = memorySchedules();
    const tenantIds = Array.from({ length: count }, (_, index) => `t${index}`);
    for (const tenantId of tenantIds) await storeBackoff(schedules, tenantId, Date.now() - INTERVAL_MS);
    return { schedules, tenantIds };
  }

  it('createScheduler should read the statuses of tenants with a stored backoff side by side after it starts', async () => {
    const { schedules, tenantIds } = await backedOff(6);
    const status = memoryStatus();
    const read = status.getStatus.bind(status);
    // Answers none of the first six reads until all six were asked: read one by one, none would answer.
    const waiting: (() => void)[] = [];
    status.getStatus = async (tenantId) => {
      if (waiting.length < tenantIds.length) {
        await new Promise<void>((resolve) => {
          waiting.push(resolve);
          if (waiting.length === tenantIds.length) for (const answer of waiting) answer();
        });
      }
      return read(tenantId);
    };
    const runs: Run[] = [];
    const { table, scheduler } = replica(0, schedules, status, runs, async () => undefined);
    await feed(
      table,
      tenantIds.map((tenantId) => record(tenantId)),
    );
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => new Set(runs.map((run) => run.tenantId)).size === tenantIds.length, {
      intervalMs: 1,
    });
  });

  it("createScheduler should read at most STATUS_READS_AT_ONCE stored backoffs' statuses at once", async () => {
    const { schedules, tenantIds } = await backedOff(STATUS_READS_AT_ONCE * 2 + 10);
    const status = memoryStatus();
    const read = status.getStatus.bind(status);
    let reading = 0;
    let mostAtOnce = 0;
    status.getStatus = async (tenantId) => {
      reading++;
      mostAtOnce = Math.max(mostAtOnce, reading);
      await new Promise((resolve) => setImmediate(resolve));
      reading--;
      return read(tenantId);
    };
    const runs: Run[] = [];
    const { table, scheduler } = replica(0, schedules, status, runs, async () => undefined, {
      maxConcurrentCycles: 4,
    });
    await feed(
      table,
      tenantIds.map((tenantId) => record(tenantId)),
    );
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => runs.length >= 1, { intervalMs: 1 });
    expect(mostAtOnce).toBe(STATUS_READS_AT_ONCE);
  });

  it('createScheduler should back off a tenant with a setup error without delaying the others', async () => {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    /** When each try of the bad tenant started (`CycleInput.startedAt`). */
    const badTries: number[] = [];
    const goodRuns = (): number => runs.filter((r) => r.tenantId === 'good').length;
    const { table, scheduler } = replica(0, schedules, status, runs, async (input) => {
      if (input.record.tenantId === 'bad') {
        badTries.push(input.startedAt);
        throw new UrsError('DEFENDER_INVALID_SECRET', 'the client secret is wrong: paste its Value');
      }
      // A cycle that lasts until the good tenant was polled three times more: one the slow cycle held up
      // would never come, and this one would never end.
      if (input.record.tenantId === 'slow') {
        const from = goodRuns();
        await waitFor(() => goodRuns() >= from + 3, { timeoutMs: 10_000, intervalMs: 5 });
      }
    });
    await feed(table, [record('bad'), record('slow'), record('good')]);
    scheduler.start();
    started.push(scheduler);
    // Counted, not timed: a loaded machine runs fewer cycles in a fixed time.
    // Three tries, the third one's backoff recorded.
    await waitFor(async () => badTries.length >= 3 && (await schedules.get('bad')).failures >= 3, {
      timeoutMs: 10_000,
      intervalMs: 1,
    });
    // New settings are tried at once, before the backoff's end (4 intervals after the third try).
    const tries = badTries.length;
    const { notBefore } = await schedules.get('bad');
    expect(notBefore).toBeGreaterThan(Date.now());
    await feed(table, [record('bad', 2)], { n: 100 });
    await waitFor(() => badTries.length > tries, { timeoutMs: 10_000, intervalMs: 1 });
    expect(badTries).toHaveLength(tries + 1);
    expect(badTries[tries]).toBeLessThan(notBefore as number);
    // Backoff 1, 2, 4 intervals after the failed starts.
    expect((badTries[1] as number) - (badTries[0] as number)).toBeGreaterThanOrEqual(INTERVAL_MS);
    expect((badTries[2] as number) - (badTries[1] as number)).toBeGreaterThanOrEqual(2 * INTERVAL_MS);
    expect(notBefore).toBeGreaterThanOrEqual((badTries[2] as number) + 4 * INTERVAL_MS);
    expect(status.statuses.get('bad')).toMatchObject({
      state: 'error',
      lastErrorCode: 'DEFENDER_INVALID_SECRET',
      lastErrorMessage: 'the client secret is wrong: paste its Value',
    });
    await waitFor(() => goodRuns() >= 5 && runs.some((r) => r.tenantId === 'slow'), {
      timeoutMs: 10_000,
      intervalMs: 5,
      description: 'five good cycles and a slow one',
    });
  });

  it('createScheduler should try a transient failure again after minutes, not after a whole interval', async () => {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    const tries: (TenantStatus | undefined)[] = [];
    // The scheduler's clock, moved on by the test only: the try 2 "minutes" later comes once the clock says so,
    // however late a loaded machine runs the ticks, and the day's cycle never.
    let clock = Date.now();
    const { table, scheduler } = replica(
      0,
      schedules,
      status,
      runs,
      async () => {
        tries.push(status.statuses.get('daily'));
        if (tries.length === 1) throw new UrsError('DEFENDER_UNAVAILABLE', 'Microsoft Defender answered 503');
      },
      { now: () => clock },
    );
    // Polled once a "day" (1440 "minutes" of 10 ms: 14.4 s).
    await feed(table, [{ ...record('daily'), defender: { pollIntervalMinutes: 1440 } } as TenantRecord]);
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => tries.length === 1 && scheduler.running() === 0, { intervalMs: 1 });
    // Tried again once 2 "minutes" (20 ms ±20 %) passed after the failure, the status saying why meanwhile.
    clock += FIRST_RETRY_AT_MOST_MS;
    await waitFor(() => runs.length === 1 && scheduler.running() === 0, {
      intervalMs: 1,
      description: 'the second try, 2 "minutes" after the first',
    });
    expect(tries).toHaveLength(2);
    expect(tries[1]).toMatchObject({ state: 'error', lastErrorCode: 'DEFENDER_UNAVAILABLE' });
    expect(runs.filter((r) => r.tenantId === 'daily')).toHaveLength(1);
    expect(status.statuses.get('daily')?.state).toBe('active');
    expect((await schedules.get('daily')).retryAt).toBeUndefined();
  });

  it("createScheduler should not count a cycle Redis failed as the tenant's failure, nor write its status as an error", async () => {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    const tries: { status: TenantStatus | undefined; failures: number }[] = [];
    // The scheduler's clock, moved on by the test only (see the test above).
    let clock = Date.now();
    const { table, scheduler } = replica(
      0,
      schedules,
      status,
      runs,
      async () => {
        tries.push({
          status: status.statuses.get('daily'),
          failures: (await schedules.get('daily')).failures,
        });
        // The shared call limiter's Redis out of memory, as Bottleneck passes it on.
        if (tries.length <= 2)
          throw new ReplyError("OOM command not allowed when used memory > 'maxmemory'.");
      },
      { now: () => clock },
    );
    // A tenant whose last cycle failed on Defender (a streak of one), polled once a "day" (14.4 s).
    const lastStartedAt = Date.now() - 2 * 1440 * UNIT_MS;
    const lease = await schedules.acquire('daily', 'earlier', 1_000);
    await schedules.begin(lease as PollLease, cycleIdOf('daily', lastStartedAt), lastStartedAt);
    await schedules.end(lease as PollLease, {
      failures: 1,
      notBefore: null,
      retryAt: null,
      failedRevision: 1,
    });
    await schedules.release(lease as PollLease);
    await feed(table, [{ ...record('daily'), defender: { pollIntervalMinutes: 1440 } } as TenantRecord]);
    scheduler.start();
    started.push(scheduler);
    // Each tried again as after a first transient failure: once 2 "minutes" (20 ms ±20 %) passed, not 4.
    for (const failed of [1, 2]) {
      await waitFor(() => tries.length === failed && scheduler.running() === 0, { intervalMs: 1 });
      clock += FIRST_RETRY_AT_MOST_MS;
    }
    await waitFor(() => runs.length === 1 && scheduler.running() === 0, {
      intervalMs: 1,
      description: 'the third try, 2 "minutes" after the second',
    });
    expect(tries).toHaveLength(3);
    // The streak stays the tenant's own (a transient one would have grown to 3, waiting 2, then 4 "minutes").
    expect(tries.map((t) => t.failures)).toEqual([1, 1, 1]);
    for (const t of tries.slice(1)) expect(t.status?.state).not.toBe('error');
    expect(tries[1]?.status?.lastErrorCode).toBeUndefined();
    expect(status.statuses.get('daily')?.state).toBe('active');
  });

  it("createScheduler should not back a tenant off for a secret this replica's key does not open", async () => {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    const registrar = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', randomBytes(32)]]) });
    // A replica started with another URS_SECRET_KEY under the same URS_SECRET_KEY_ID.
    const wrongKey = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', randomBytes(32)]]) });
    const sealed = registrar.seal('client-secret', 'daily');
    const tries: number[] = [];
    const { table, scheduler } = replica(0, schedules, status, runs, async () => {
      tries.push(Date.now());
      if (tries.length <= 3) wrongKey.open(sealed, 'daily');
    });
    // Polled once a "day" (1440 "minutes" of 10 ms: 14.4 s): a setup backoff would wait 1, 2, 4 days.
    await feed(table, [{ ...record('daily'), defender: { pollIntervalMinutes: 1440 } } as TenantRecord]);
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => tries.length >= 2, { intervalMs: 1 });
    const schedule = await schedules.get('daily');
    expect(schedule.failures).toBe(0);
    expect(schedule.notBefore).toBeUndefined();
    expect(status.statuses.get('daily')).toMatchObject({
      state: 'error',
      lastErrorCode: 'SECRET_UNREADABLE',
      lastErrorMessage: expect.stringMatching(/^poller replica-0: .*URS_SECRET_KEY\b/),
    });
    // Once the key is right the tenant is polled at once, not days later.
    await waitFor(() => runs.length === 1, { intervalMs: 1 });
    expect(tries).toHaveLength(4);
    expect(status.statuses.get('daily')?.state).toBe('active');
  });

  it("createScheduler should not honour a backoff an earlier poller stored for its own key's SECRET_UNREADABLE", async () => {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    // What an earlier poller with the wrong URS_SECRET_KEY left: 4 failures counted, backed off a thousand
    // intervals.
    for (const [tenantId, code] of [
      ['key-fault', 'SECRET_UNREADABLE'],
      ['bad-secret', 'DEFENDER_INVALID_SECRET'],
    ] as const) {
      const lease = (await schedules.acquire(tenantId, 'old-poller', 1_000)) as PollLease;
      await schedules.begin(lease, 'old-cycle', Date.now() - 2 * INTERVAL_MS);
      await schedules.end(lease, {
        failures: 4,
        notBefore: Date.now() + 1_000 * INTERVAL_MS,
        failedRevision: 1,
      });
      await schedules.release(lease);
      await status.updateStatus(tenantId, { state: 'error', lastErrorCode: code });
    }
    const { table, scheduler } = replica(0, schedules, status, runs, async () => undefined);
    await feed(table, [record('key-fault'), record('bad-secret')]);
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => runs.some((run) => run.tenantId === 'key-fault') && scheduler.running() === 0);
    expect(await schedules.get('key-fault')).toMatchObject({ failures: 0 });
    expect((await schedules.get('key-fault')).notBefore).toBeUndefined();
    // A backoff for the tenant's own failure still holds: key-fault polled again an interval later, not it.
    await waitFor(() => runs.filter((run) => run.tenantId === 'key-fault').length >= 2, {
      description: 'the second cycle of key-fault',
    });
    expect(runs.filter((run) => run.tenantId === 'bad-secret')).toEqual([]);
  });

  it('createScheduler should leave an error the vuln-fetcher reported for the cycle it just listed', async () => {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    const { table, scheduler } = replica(0, schedules, status, runs, async (input) => {
      // The export of a bulk cycle refused while the poller was still listing.
      await status.updateStatus('bulky', {
        state: 'error',
        lastErrorCode: 'DEFENDER_CONSENT_MISSING',
        lastErrorCycleId: input.cycleId,
      });
    });
    // Polled once a "day" (14.4 s): the cycle's end is the last word on its status.
    await feed(table, [{ ...record('bulky'), defender: { pollIntervalMinutes: 1440 } } as TenantRecord]);
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => runs.length === 1 && scheduler.running() === 0, { description: 'the cycle ended' });
    expect(runs).toHaveLength(1);
    expect(status.statuses.get('bulky')).toMatchObject({
      state: 'error',
      lastErrorCode: 'DEFENDER_CONSENT_MISSING',
    });
  });

  it("createScheduler should record a listed cycle in the tenant's status before its schedule's end, which may fail", async () => {
    let ends = 0;
    // Redis fails (or the poller dies) each time the schedule's end is written: the status already says the
    // cycle was listed, and the next holder ends the schedule (see the test below).
    const schedules: PollScheduleStore = {
      ...memorySchedules(),
      end: async () => {
        ends++;
        throw new Error('connection lost');
      },
    };
    const status = memoryStatus();
    const runs: Run[] = [];
    const { table, scheduler } = replica(0, schedules, status, runs, async () => undefined);
    await feed(table, [record('listed')]);
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => ends >= 1, { description: "the schedule's end" });
    expect(status.statuses.get('listed')).toMatchObject({ deviceCount: 1, vulnerabilityMode: 'per-device' });
  });

  it('createScheduler should end a cycle its killed poller had listed in full, and redo one it had not, recorded as abandoned', async () => {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    // What a poller killed after the cycle store's `listed` and before the schedule's `end` leaves, for a
    // tenant it had listed in full, and for one it was still listing.
    const startedAt = Date.now();
    for (const tenantId of ['listed', 'listing']) {
      const lease = (await schedules.acquire(tenantId, 'killed', 1_000)) as PollLease;
      await schedules.begin(lease, cycleIdOf(tenantId, startedAt), startedAt);
      await schedules.release(lease); // as if it had expired
    }
    const listedCycleId = cycleIdOf('listed', startedAt);
    // The vuln-fetcher's export was refused while the listing went on.
    await status.updateStatus('listed', {
      lastCycleId: listedCycleId,
      state: 'error',
      lastErrorCode: 'DEFENDER_CONSENT_MISSING',
      lastErrorCycleId: listedCycleId,
    });
    const begun = { startedAt: new Date(startedAt).toISOString(), deadlineAt: '', scoredBatches: 0 };
    const listedAt = new Date(startedAt + 20).toISOString();
    const note = 'bulk vulnerability export: 30000 devices exceed the 400 per-device calls';
    const abandoned: { cycleId: string; abandonment: CycleAbandonment; closeAt: number }[] = [];
    const cycles = {
      async abandon(_tenantId: string, cycleId: string, abandonment: CycleAbandonment, closeAt: number) {
        abandoned.push({ cycleId, abandonment, closeAt });
        return true;
      },
      async get(tenantId: string, cycleId: string): Promise<CycleState> {
        if (cycleId !== listedCycleId) return { tenantId, cycleId, ...begun };
        const totals = {
          totalBatches: 60,
          totalDevices: 30_000,
          listedAt,
          vulnerabilityMode: 'bulk' as const,
        };
        return { tenantId, cycleId, ...begun, ...totals, note };
      },
      async listed() {},
    };
    // The scheduler's clock, moved on by the test only: nothing comes due while the takeover is looked at,
    // however late a loaded machine runs the ticks.
    let clock = startedAt + UNIT_MS;
    const { table, scheduler } = replica(0, schedules, status, runs, async () => {}, {
      cycles,
      now: () => clock,
    });
    await feed(table, [record('listed'), record('listing')]);
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => runs.length >= 1 && scheduler.running() === 0, { description: 'the takeover' });
    expect(runs.map((r) => r.tenantId)).toEqual(['listing']);
    // The one redone is closed as partial a grace after the takeover, not at its deadline an hour later.
    expect(abandoned.map(({ cycleId, abandonment }) => [cycleId, abandonment.code])).toEqual([
      [cycleIdOf('listing', startedAt), 'POLLER_GONE'],
    ]);
    const [{ abandonment, closeAt }] = abandoned as [(typeof abandoned)[number]];
    expect(abandonment.batches).toBeUndefined();
    expect(closeAt - Date.parse(abandonment.at)).toBe(60_000);
    expect(await schedules.get('listed')).toEqual({ failures: 0, lastStartedAt: startedAt });
    expect(status.statuses.get('listed')).toMatchObject({
      lastCycleId: listedCycleId,
      lastCycleEndedAt: listedAt,
      deviceCount: 30_000,
      vulnerabilityMode: 'bulk',
      note,
      state: 'error',
      lastErrorCode: 'DEFENDER_CONSENT_MISSING',
    });
    // Its next cycle comes one interval after the start of the one ended for it (not before: it did not run
    // above).
    clock = startedAt + INTERVAL_MS;
    const listed = () => runs.filter((r) => r.tenantId === 'listed');
    await waitFor(() => listed().length >= 1 && scheduler.running() === 0, { description: 'its next cycle' });
    expect(listed()).toHaveLength(1);
    expect(listed()[0]?.start).toBe(startedAt + INTERVAL_MS);
  });

  it('createScheduler should stop polling a disabled or deleted tenant and abort its running cycle', async () => {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    const aborted: string[] = [];
    /** The cycles' starts, as each began (`Date.now`, the scheduler's clock). */
    const starts: { tenantId: string; at: number }[] = [];
    const { table, scheduler } = replica(0, schedules, status, runs, async (input) => {
      starts.push({ tenantId: input.record.tenantId, at: Date.now() });
      // The long cycle runs until it is stopped.
      if (input.record.tenantId === 'long') await waitFor(() => input.signal.aborted, { intervalMs: 1 });
      else await sleep(1);
      if (input.signal.aborted) {
        aborted.push(input.record.tenantId);
        throw new UrsError('CYCLE_ABORTED', 'stopped', { canRetry: true });
      }
    });
    const offset = { n: 0 };
    // `kept` stays enabled: its cycles tell how long the scheduler went on after the others stopped.
    const tenantIds = ['long', 'off', 'gone', 'kept'];
    await feed(
      table,
      tenantIds.map((tenantId) => record(tenantId)),
      offset,
    );
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => tenantIds.every((id) => starts.some((start) => start.tenantId === id)), {
      description: 'a cycle of each tenant',
    });
    await feed(table, [record('long', 2, false), record('off', 2, false)], offset);
    await table.handle(inboundMessage<TenantRecord>(null, { offset: String(offset.n++), key: 'gone' }));
    const stoppedAt = Date.now();
    // Two cycles of kept begun an interval after the stop: off and gone, polled with it before, were due
    // before them.
    await waitFor(
      () => starts.filter((s) => s.tenantId === 'kept' && s.at >= stoppedAt + INTERVAL_MS).length >= 2,
      { description: 'two cycles of kept an interval after the stop' },
    );
    expect(aborted).toEqual(['long']);
    expect(starts.filter((s) => s.tenantId !== 'kept' && s.at > stoppedAt)).toEqual([]);
  });

  it('createScheduler should begin no cycle of a tenant disabled while its schedule is read under the lease', async () => {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    let reached!: () => void;
    const atRead = new Promise<void>((resolve) => (reached = resolve));
    let read!: () => void;
    const readDone = new Promise<void>((resolve) => (read = resolve));
    const get = schedules.get.bind(schedules);
    schedules.get = async (tenantId) => {
      reached();
      await readDone;
      return get(tenantId);
    };
    const { table, scheduler } = replica(0, schedules, status, runs, async () => undefined);
    const offset = { n: 0 };
    await feed(table, [record('off')], offset);
    scheduler.start();
    started.push(scheduler);
    await atRead;
    // The registrar clears the schedule and writes the status; the poller reads the disabled record.
    await schedules.clear('off');
    await status.updateStatus('off', { state: 'disabled', nextPollAt: null });
    await feed(table, [record('off', 2, false)], offset);
    read();
    await waitFor(() => scheduler.running() === 0);
    expect(runs).toEqual([]);
    expect(await get('off')).toEqual({ failures: 0 });
    expect(await status.getStatus('off')).toEqual({ state: 'disabled' });
  });

  it("createScheduler should put a changed interval's due time in the tenant's status before the next cycle", async () => {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    const { table, scheduler } = replica(0, schedules, status, runs, async () => undefined);
    const withInterval = (revision: number, pollIntervalMinutes: number): TenantRecord =>
      ({ ...record('t', revision), defender: { pollIntervalMinutes } }) as TenantRecord;
    const offset = { n: 0 };
    // Polled every 1000 minutes (10 s here), then every 1440 (14.4 s): the next cycle moves 4.4 s on.
    await feed(table, [withInterval(1, 1000)], offset);
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => runs.length === 1, { intervalMs: 1 });
    const lastStartedAt = (runs[0] as Run).start;
    await waitFor(() => status.statuses.get('t')?.nextPollAt !== undefined, { intervalMs: 1 });
    expect(Date.parse(String(status.statuses.get('t')?.nextPollAt))).toBe(lastStartedAt + 1000 * UNIT_MS);
    await feed(table, [withInterval(2, 1440)], offset);
    const changed = new Date(lastStartedAt + 1440 * UNIT_MS).toISOString();
    await waitFor(() => status.statuses.get('t')?.nextPollAt === changed, {
      intervalMs: 1,
      description: "the status's nextPollAt one new interval after the last start",
    });
    expect(runs).toHaveLength(1);
  });
});

import { isKafkaAuthorizationRefusal, settledWithin } from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { createLeaseClock, errorMessage, leaseTime } from '@urs/resilience';
import type { Registry } from '@urs/telemetry';
import type {
  CycleBeginRefusal,
  CycleStore,
  PollLease,
  PollSchedule,
  PollScheduleStore,
  TenantStore,
} from '@urs/store';
import { createAttemptFailures } from './attempt-failures';
import { createBatchesRefused, stoppedForRefusal } from './batches-refused';
import { CycleListedNotRecordedError, cycleIdOf, type CycleInput, type CycleResult } from './cycle';
import { createCycleEnd } from './cycle-end';
import { createRunUnderLease } from './run-under-lease';
import { changedWithin, dueAt, type FailureKind, firstDueAt, withoutLocalBackoff } from './schedule';
import type { TenantTable } from './tenant-table';

export interface SchedulerDeps {
  table: TenantTable;
  schedules: PollScheduleStore;
  tenants: TenantStore;
  /**
   * The cycles' totals, read to tell whether a cycle left running had been listed in full; one that had not
   * is recorded as abandoned (see `endListedCycle`). A listing this replica could not record is recorded at
   * the tenant's next try.
   */
  cycles: Pick<CycleStore, 'get' | 'abandon' | 'listed'>;
  /** Runs one cycle (runCycle bound to its deps). */
  runCycle: (input: CycleInput) => Promise<CycleResult>;
  /** This replica's lease holder id (unique per process). */
  holderId: string;
  intervalUnitMs: number;
  leaseMs: number;
  maxConcurrentCycles: number;
  tickMs: number;
  recheckMs: number;
  /**
   * How long a cycle whose begin finds the tenant's record in Redis older than this replica's (missing, or
   * disabled at an older revision) is tried again at every tick, at debug level, before it is warned of and
   * looked at after `recheckMs` only: the registrar writes Kafka first, then Redis. Default
   * `REGISTRAR_WRITE_WAIT_MS`.
   */
  registrarWaitMs?: number;
  maxBackoffMs: number;
  /**
   * While Kafka refuses this replica's batches for want of an ACL, how long after a cycle that finds out (the
   * probe) the next may begin, ms. Default `BATCHES_PROBE_UNITS` of `intervalUnitMs`.
   */
  batchesProbeWaitMs?: number;
  logger: Logger;
  metrics: Registry;
  now?: () => number;
  /** The jitter of a failed attempt's wait, in [0, 1); injected so tests are deterministic. */
  random?: () => number;
}

export interface Scheduler {
  start(): void;
  /** Cycles running in this process now. */
  running(): number;
  /**
   * Stops starting cycles, lets running ones finish for up to `drainMs`, then aborts them and waits as long
   * again for them to return; an attempt still waiting then (on a Redis that is away: its commands wait for
   * its return) is left behind, logged, and its lease expires by itself. Idempotent.
   */
  close(drainMs?: number): Promise<void>;
}

interface Running {
  abort: AbortController;
  done: Promise<void>;
}

/**
 * How many tenants' statuses `readSchedules` reads at once (those with a stored backoff): after a restart
 * thousands may have one, and read one by one their round trips would hold back every new tenant's first
 * cycle.
 */
export const STATUS_READS_AT_ONCE = 100;

/** `SchedulerDeps.registrarWaitMs`'s default: a few seconds, far more than the registrar's two writes take. */
export const REGISTRAR_WRITE_WAIT_MS = 5_000;

/**
 * `SchedulerDeps.batchesProbeWaitMs`'s default, in the poll interval's unit: as long as a cycle Kafka refused
 * waits before its tenant is tried again (`transientRetryAt`), so a probe comes as often as each refused
 * tenant's retry did.
 */
export const BATCHES_PROBE_UNITS = 2;

/** How a cycle ends in `urs_poll_cycles_total`: listed in full, aborted (its lease lost), or its failure's kind. */
const CYCLE_OUTCOMES: readonly ('listed' | 'aborted' | FailureKind)[] = [
  'listed',
  'aborted',
  'setup',
  'throttled',
  'transient',
  'local',
  'infrastructure',
];

/** Buckets of `urs_poll_cycle_start_delay_seconds`: from a tick's delay to two hours, in seconds. */
const START_DELAY_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1_800, 3_600, 7_200];

/**
 * Polls every enabled tenant on its interval, with any number of replicas. Each replica knows every
 * tenant (TenantTable) and, when one is due by its local view, takes the tenant's lease in Redis
 * (SET NX PX, fenced) and reads the shared schedule under it: only if the cycle is really due does it
 * run, after recording the start (fenced). Another replica that takes the lease later sees the start
 * and waits for the next due time, so a tenant is polled once per interval however many replicas
 * run, and a restarted replica resumes from Redis without polling early or skipping. The lease is
 * renewed while the cycle runs; a lost lease aborts the cycle, and so does one not renewed in time (its
 * renewals failing with errors): a cycle emits no batch past its lease's end (`LeaseClock`). A killed
 * replica's lease expires after `leaseMs` and its abandoned cycle is redone by another replica, unless it
 * had been listed in full: then it is only ended (see `endListedCycle`).
 *
 * Cycles run concurrently (at most `maxConcurrentCycles`), each on its own: one tenant's slow or
 * failing cycle never delays another's. When more are due than may start, the most overdue go first.
 */
export function createScheduler(deps: SchedulerDeps): Scheduler {
  const now = deps.now ?? Date.now;
  const registrarWaitMs = deps.registrarWaitMs ?? REGISTRAR_WRITE_WAIT_MS;
  const log = deps.logger.child({ component: 'scheduler' });
  const cyclesTotal = deps.metrics.counter('urs_poll_cycles_total', 'Polling cycles, by outcome.');
  // Every outcome from the start: the alerts on the share of failing cycles divide by all of them, and
  // increase() counts nothing before a series' first sample.
  for (const outcome of CYCLE_OUTCOMES) cyclesTotal.init({ outcome });
  const cycleSeconds = deps.metrics.histogram(
    'urs_poll_cycle_seconds',
    'Duration of a polling cycle (listing and emitting), in seconds.',
  );
  deps.metrics.gauge('urs_poll_cycles_running', 'Polling cycles running in this process.', () => active.size);
  deps.metrics.gauge('urs_poll_tenants', 'Tenants known to this poller.', () => deps.table.size());
  deps.metrics.gauge(
    'urs_poll_overdue_tenants',
    'Tenants due by this poller that its last tick could not start: every cycle place was taken ' +
      '(those another replica held the lease of when last tried, within a lease and a recheck, not counted).',
    () => overdue,
  );
  const startDelaySeconds = deps.metrics.histogram(
    'urs_poll_cycle_start_delay_seconds',
    'How late polling cycles start after their due time, in seconds (tenants due at once not counted).',
    START_DELAY_BUCKETS,
  );
  const ends = createCycleEnd({
    schedules: deps.schedules,
    tenants: deps.tenants,
    cycles: deps.cycles,
    holderId: deps.holderId,
    intervalUnitMs: deps.intervalUnitMs,
    maxBackoffMs: deps.maxBackoffMs,
    log,
    cyclesTotal,
    now,
  });
  const refusal = createBatchesRefused({
    log,
    metrics: deps.metrics,
    probeWaitMs: deps.batchesProbeWaitMs ?? BATCHES_PROBE_UNITS * deps.intervalUnitMs,
    now,
  });
  const failures = createAttemptFailures({
    log,
    cyclesTotal,
    recheckMs: deps.recheckMs,
    maxWaitMs: deps.intervalUnitMs,
    now,
    random: deps.random,
  });
  /** Tenants whose attempt began a cycle: its outcome is counted by the cycle's end, not by a failed attempt. */
  const cycleBegun = new Set<string>();
  /** Per tenant, the revision whose refused begin was warned of (once a revision: it is looked at again often). */
  const refusedWarned = new Map<string, number>();
  /**
   * Per tenant, the revision whose record the registrar has not stored in Redis yet, and when a begin first
   * found so: looked for at every tick until `registrarWaitMs` has passed.
   */
  const awaitingRegistrar = new Map<string, { revision: number; since: number }>();
  /** Per tenant, when this replica should look again (its local view; Redis decides). */
  const localDue = new Map<string, number>();
  /** Tenants new to this replica (or enabled again) whose stored schedule it has not read yet. */
  const unread = new Set<string>();
  /**
   * Tenants whose lease another replica held when this one last tried (running their cycle, most often), each
   * with until when that is trusted: due again by this replica's view every URS_POLL_RECHECK_MS, they wait for
   * nothing here, and counted in `urs_poll_overdue_tenants` they made an install exactly at capacity fire
   * UrsPollTenantsOverdue. Counted again once this replica holds the lease or reads their schedule again, and a
   * lease and a recheck after that try: the other holder may be gone since (its lease expired), and a replica
   * with no free place tries no tenant again, so with every replica full such a tenant was never counted.
   */
  const leasedElsewhere = new Map<string, number>();
  let reading: Promise<void> | undefined;
  const active = new Map<string, Running>();
  const stop = new AbortController();
  let loop: Promise<void> | undefined;
  let wake: (() => void) | undefined;
  /** Tenants due at the last tick and not started for want of a free place (`urs_poll_overdue_tenants`). */
  let overdue = 0;
  /** The tenants' rebuild (`tenantsRebuiltAt`, none before the registrar's) whose spread this replica logged. */
  let spreadLogged: { rebuiltAt: number | undefined } | undefined;

  deps.table.onChange((tenantId, record) => {
    if (record !== null && record.enabled) {
      // Placed by its stored schedule before it is scheduled (see `readSchedules`).
      if (!localDue.has(tenantId)) unread.add(tenantId);
      // Look again at once: a new registration is polled within a tick, a changed interval is re-read.
      localDue.set(tenantId, 0);
    } else {
      // Only a tenant this replica polled: the log's replay at a start meets every disabled tenant again.
      if (localDue.has(tenantId))
        log.info('tenant deleted or disabled: no longer polled', { tenantId, deleted: record === null });
      localDue.delete(tenantId);
      unread.delete(tenantId);
      leasedElsewhere.delete(tenantId);
      refusedWarned.delete(tenantId);
      awaitingRegistrar.delete(tenantId);
      failures.forget(tenantId);
      if (record === null) ends.forget(tenantId);
      const running = active.get(tenantId);
      if (running) {
        log.info('tenant disabled or deleted: stopping its cycle', { tenantId });
        running.abort.abort();
      }
    }
    wake?.();
  });

  function intervalOf(record: TenantRecord): number {
    return record.defender.pollIntervalMinutes * deps.intervalUnitMs;
  }

  async function releaseQuietly(lease: PollLease): Promise<void> {
    await deps.schedules.release(lease).catch((error: unknown) => {
      log.warn('lease release failed (it expires by itself)', {
        tenantId: lease.tenantId,
        reason: errorMessage(error),
      });
    });
  }

  async function attempt(tenantId: string, abort: AbortController): Promise<void> {
    // By the lease's own clock, not the schedule's (`now`): a step of the wall clock is not time passed.
    const acquiredAt = leaseTime();
    const lease = await deps.schedules.acquire(tenantId, deps.holderId, deps.leaseMs);
    if (!lease) {
      localDue.set(tenantId, now() + deps.recheckMs);
      leasedElsewhere.set(tenantId, now() + deps.leaseMs + deps.recheckMs);
      return;
    }
    leasedElsewhere.delete(tenantId);
    let released = false;
    try {
      const record = deps.table.get(tenantId);
      // Stopping (the lease came after the stop began): no cycle begins that the drain would then cut.
      if (!record || !record.enabled || abort.signal.aborted || stop.signal.aborted) return;
      const intervalMs = intervalOf(record);
      let schedule = await deps.schedules.get(tenantId);
      if (
        schedule.runningCycleId !== undefined &&
        (await ends.endListedCycle(lease, schedule.runningCycleId, schedule.unrecordedListing))
      )
        schedule = await deps.schedules.get(tenantId);
      schedule = await honouredBackoff(tenantId, schedule, true);
      let rebuiltAt: number | undefined;
      const first = await firstDue(
        record,
        schedule,
        intervalMs,
        async () => (rebuiltAt = await deps.schedules.tenantsRebuiltAt()),
      );
      const due = dueAt(schedule, intervalMs, record.revision, first);
      const startedAt = now();
      if (due > startedAt) {
        // Its schedule lost with Redis while this replica ran: the first tenant placed so tells the spread.
        if (first > startedAt) logSpread(rebuiltAt, { tenantId });
        localDue.set(tenantId, due);
        await statusDueAt(tenantId, due);
        return;
      }
      if (schedule.runningCycleId !== undefined) {
        log.warn('taking over an abandoned cycle', { tenantId, abandonedCycleId: schedule.runningCycleId });
      }
      // Disabled or deleted, or the scheduler stopping, while its schedule was read: no cycle of it begins.
      if (abort.signal.aborted || stop.signal.aborted) return;
      const cycleId = cycleIdOf(tenantId, startedAt);
      const begun = await deps.schedules.begin(lease, cycleId, startedAt);
      if (begun !== true) {
        refusedBegin(record, begun);
        return;
      }
      cycleBegun.add(tenantId);
      refusedWarned.delete(tenantId);
      awaitingRegistrar.delete(tenantId);
      // `due`: when the schedule had it due, `at once` for a tenant due as soon as seen (new, new settings, a cycle
      // taken over).
      log.debug('cycle started', {
        tenantId,
        cycleId,
        holderId: deps.holderId,
        due: due > 0 ? new Date(due).toISOString() : 'at once',
      });
      // A tenant due at once (new, a cycle taken over, new settings) has no due time to be late for.
      if (due > 0) startDelaySeconds.observe((startedAt - due) / 1000);
      // A record changed since it was read (new settings, due at once) keeps the due time its change set.
      if (deps.table.get(tenantId)?.revision === record.revision)
        localDue.set(tenantId, startedAt + intervalMs);
      // A failure streak counts only while the settings stay the same.
      const previous =
        schedule.failedRevision === record.revision
          ? {
              failures: schedule.failures,
              ...(schedule.failedKind === undefined ? {} : { kind: schedule.failedKind }),
            }
          : { failures: 0 };
      const clock = createLeaseClock(acquiredAt, deps.leaseMs);
      await runUnderLease(record, { lease, clock }, cycleId, startedAt, intervalMs, previous, abort);
      released = true;
    } finally {
      if (!released) await releaseQuietly(lease);
    }
  }

  /**
   * A cycle the schedule refused to begin. A record Redis holds older than this replica's (missing, or disabled
   * at an older revision: a new registration or a re-enabling whose Kafka record came first, the registrar
   * writing Redis second) is looked for again at the next tick, at debug level, for `registrarWaitMs`: the
   * first cycle starts as soon as the write lands, not a recheck wait later with a warning. Otherwise (the
   * lease lost, this replica not having read the tenant's deletion or disabling yet, or the wait over) it is
   * looked at again after URS_POLL_RECHECK_MS, not at every tick, and told once a revision at warn: a record
   * Kafka has and Redis never gets (its write failed after the send) is otherwise never polled without a word.
   */
  function refusedBegin(record: TenantRecord, refusal: CycleBeginRefusal): void {
    const { tenantId, revision } = record;
    const fields = { tenantId, revision, reason: refusal.reason };
    const redisBehind =
      refusal.reason === 'record-missing' ||
      (refusal.reason === 'record-disabled' && (refusal.storedRevision ?? 0) < revision);
    if (redisBehind && localDue.has(tenantId)) {
      const waiting = awaitingRegistrar.get(tenantId);
      const since = waiting?.revision === revision ? waiting.since : now();
      awaitingRegistrar.set(tenantId, { revision, since });
      if (now() - since < registrarWaitMs) {
        log.debug(
          "cycle not begun: the tenant's record not in Redis yet; looked for again at the next tick",
          fields,
        );
        localDue.set(tenantId, now() + deps.tickMs);
        return;
      }
    }
    const warn = refusedWarned.get(tenantId) !== revision;
    refusedWarned.set(tenantId, revision);
    const message =
      "cycle not begun: the lease lost, or the tenant's record in Redis missing or disabled; looked at again";
    const recheck = { ...fields, recheckMs: deps.recheckMs };
    if (warn) log.warn(message, recheck);
    else log.debug(message, recheck);
    if (localDue.has(tenantId)) localDue.set(tenantId, now() + deps.recheckMs);
  }

  /**
   * Puts the tenant's due time in its status's `nextPollAt` when it says another: the last cycle's end wrote
   * it with the interval then in force, and a changed interval (or a dropped backoff) moves it before the next
   * cycle starts. Read first, so that the attempts finding the tenant not due (one per cycle of another
   * replica) write nothing when it is right. Only a hint for the admin: a Redis that fails here does not fail
   * the attempt.
   */
  async function statusDueAt(tenantId: string, due: number): Promise<void> {
    try {
      const { nextPollAt } = await deps.tenants.getStatus(tenantId);
      // None yet: no cycle of the tenant has ended, and the first one's end writes it.
      if (nextPollAt === undefined || Date.parse(nextPollAt) === due) return;
      await deps.tenants.updatePollingStatus(tenantId, { nextPollAt: new Date(due).toISOString() });
    } catch (error) {
      log.warn("tenant's nextPollAt not updated: its next cycle's end writes it", {
        tenantId,
        reason: errorMessage(error),
      });
    }
  }

  /**
   * The schedule as it is honoured: a backoff an earlier poller stored for its own URS_SECRET_KEY is dropped
   * (see `withoutLocalBackoff`; the tenant's status is read only when a backoff is stored). The cycle that
   * follows writes the schedule again. `announce`: log the drop (under the lease, once per due check).
   */
  async function honouredBackoff(
    tenantId: string,
    schedule: PollSchedule,
    announce: boolean,
  ): Promise<PollSchedule> {
    if (schedule.notBefore === undefined) return schedule;
    const { lastErrorCode } = await deps.tenants.getStatus(tenantId);
    const honoured = withoutLocalBackoff(schedule, lastErrorCode);
    if (announce && honoured !== schedule && schedule.notBefore > now())
      log.info("dropping a backoff stored for a poller's own URS_SECRET_KEY, not the tenant's failure", {
        tenantId,
        code: lastErrorCode,
        notBefore: new Date(schedule.notBefore).toISOString(),
      });
    return honoured;
  }

  /**
   * The first due time of a tenant with no cycle started in its schedule (`dueAt`'s `firstDue`): at once when
   * its record changed within an interval, else at its place in the interval that follows the tenants' rebuild
   * (`firstDueAt`): it was polled before, and Redis lost its schedule. `rebuiltAt` is read only then; while
   * the registrar has not rebuilt the tenants, the place follows now (no record is in Redis to begin with).
   */
  async function firstDue(
    record: TenantRecord,
    schedule: PollSchedule,
    intervalMs: number,
    rebuiltAt: () => Promise<number | undefined>,
  ): Promise<number> {
    if (schedule.lastStartedAt !== undefined || changedWithin(record, intervalMs, now())) return 0;
    return firstDueAt(record.tenantId, intervalMs, (await rebuiltAt()) ?? now());
  }

  /**
   * Logs that Redis lost the poll schedules and the tenants polled before are spread over their interval
   * (`firstDue`), once per rebuild of the tenants: by `readSchedules` with the count of the tenants it placed
   * (a replica started after the wipe), else by `attempt` with the first tenant placed so (a replica that ran
   * through it places each tenant when its due time comes).
   */
  function logSpread(rebuiltAt: number | undefined, fields: Record<string, unknown>): void {
    if (spreadLogged !== undefined && spreadLogged.rebuiltAt === rebuiltAt) return;
    spreadLogged = { rebuiltAt };
    log.info('poll schedules lost with Redis: the tenants polled before spread over their interval', {
      ...fields,
      rebuiltAt: new Date(rebuiltAt ?? now()).toISOString(),
    });
  }

  /**
   * Sets when this replica looks at the tenant again after a cycle of the record's `revision`. A record changed
   * while the cycle ran stays due at once (as its change made it): Redis decides, and a failure of the older
   * record does not hold the new one back (`dueAt`); placed by the failed cycle's backoff instead, a secret an
   * admin fixed meanwhile waited up to `URS_POLL_MAX_BACKOFF_MS` on a single replica. A tenant disabled or
   * deleted meanwhile is not placed again.
   */
  function placeAt(tenantId: string, at: number, revision: number): void {
    const current = deps.table.get(tenantId);
    if (!current?.enabled || !localDue.has(tenantId) || current.revision !== revision) return;
    localDue.set(tenantId, at);
  }

  /**
   * Runs a cycle, telling `refusal` what Kafka answered its batches: a batch taken (as it is sent, or the
   * cycle listed in full: every batch of it went out) resumes the cycles held; one refused for want of an ACL
   * holds them. A cycle begun before the hold stops listing once it began (`batchesRefused`).
   */
  async function runWatched(input: CycleInput): Promise<CycleResult> {
    try {
      const tenantId = input.record.tenantId;
      const result = await deps.runCycle({
        ...input,
        batchTaken: () => refusal.taken(),
        batchesRefused: () => refusal.stopping(tenantId),
      });
      refusal.taken();
      return result;
    } catch (error) {
      if (error instanceof CycleListedNotRecordedError) refusal.taken();
      else if (isKafkaAuthorizationRefusal(error) && !stoppedForRefusal(error))
        refusal.refused(input.record.tenantId, error);
      throw error;
    }
  }

  const runUnderLease = createRunUnderLease({
    schedules: deps.schedules,
    tenants: deps.tenants,
    runCycle: runWatched,
    leaseMs: deps.leaseMs,
    recheckMs: deps.recheckMs,
    ends,
    log,
    cyclesTotal,
    cycleSeconds,
    stop: stop.signal,
    placeAt,
    releaseQuietly,
    now,
  });

  /**
   * Places the tenants new to this replica by the due times stored in Redis, read in one batch when the
   * table first fills and then for the tenants that appear. Right after a start every tenant is new:
   * counted as due at 0 until this replica had looked at each once, they would start in the table's order
   * rather than the most overdue first. The statuses of those with a stored backoff are read side by side
   * (`STATUS_READS_AT_ONCE`); a tenant whose record changed meanwhile keeps the placement its change set. A
   * failed read leaves them due at 0 (each attempt reads its
   * schedule under the lease anyway): the order is a preference, not worth holding polling back for.
   */
  async function readSchedules(): Promise<void> {
    const tenantIds = [...unread];
    try {
      const schedules = await deps.schedules.getMany(tenantIds);
      let rebuiltAt: Promise<number | undefined> | undefined;
      /** Tenants whose schedule Redis lost, placed later in their interval. */
      let spread = 0;
      /** Places the tenant by its stored schedule, as honoured (its status read when it holds a backoff). */
      const place = async (tenantId: string): Promise<void> => {
        // The record now, not when the read began: it may have changed or been disabled meanwhile.
        const record = deps.table.get(tenantId);
        const stored = schedules.get(tenantId);
        if (!record?.enabled || !stored || !localDue.has(tenantId)) return;
        const schedule = await honouredBackoff(tenantId, stored, false);
        const intervalMs = intervalOf(record);
        const first = await firstDue(
          record,
          schedule,
          intervalMs,
          () => (rebuiltAt ??= deps.schedules.tenantsRebuiltAt()),
        );
        // Left as it is when its record changed while its status was read (`onChange` made the new revision
        // due at once) or went: placed by the older record's backoff, a secret an admin just fixed would wait
        // out the old secret's failure.
        if (!localDue.has(tenantId) || deps.table.get(tenantId)?.revision !== record.revision) return;
        localDue.set(tenantId, dueAt(schedule, intervalMs, record.revision, first));
        leasedElsewhere.delete(tenantId);
        if (first > now()) spread++;
      };
      await atMostAtOnce(tenantIds, STATUS_READS_AT_ONCE, place);
      if (spread > 0) logSpread(await rebuiltAt, { tenants: spread });
    } catch (error) {
      if (!stop.signal.aborted) {
        log.warn('stored schedules not read: these tenants start in the table order', {
          tenants: tenantIds.length,
          reason: errorMessage(error),
        });
      }
    } finally {
      for (const tenantId of tenantIds) unread.delete(tenantId);
    }
  }

  /**
   * The tenants due by this replica's view and not running here, the most overdue first. When more are
   * due than cycles may start, the table's order would let the tenants near its start take every free
   * slot each time they come due again, and those near its end would wait for ever; the longest waiting
   * go first instead. Ties (e.g. tenants never polled, due at 0) keep the table's order. Tenants whose
   * stored schedule is not read yet wait for it.
   */
  function dueTenants(at: number): string[] {
    const due: { tenantId: string; dueAt: number }[] = [];
    for (const record of deps.table.enabled()) {
      const dueAt = localDue.get(record.tenantId) ?? 0;
      if (dueAt <= at && !active.has(record.tenantId) && !unread.has(record.tenantId))
        due.push({ tenantId: record.tenantId, dueAt });
    }
    return due.sort((a, b) => a.dueAt - b.dueAt).map(({ tenantId }) => tenantId);
  }

  /** Whether the tenant's lease was held by another replica at this one's last try, recently enough to trust. */
  function heldElsewhere(tenantId: string, at: number): boolean {
    return (leasedElsewhere.get(tenantId) ?? 0) > at;
  }

  function tick(): void {
    if (stop.signal.aborted || !deps.table.caughtUp()) return;
    // In the background: the tenants already placed keep starting, and a stop does not wait for Redis.
    if (unread.size > 0) {
      reading ??= readSchedules().finally(() => {
        reading = undefined;
        wake?.();
      });
    }
    const at = now();
    const due = dueTenants(at);
    const free = Math.max(deps.maxConcurrentCycles - active.size, 0);
    if (refusal.held()) {
      // Kafka refuses this replica's batches: only the probe begins (see `BatchesRefused`). The tenants it
      // holds wait for no place, so they are not counted as overdue (UrsPollerBatchesRefused pages instead).
      overdue = 0;
      const probe = refusal.probeDue(at) && free > 0 ? due[0] : undefined;
      if (probe !== undefined) {
        refusal.probeStarted(probe);
        startAttempt(probe);
      }
      return;
    }
    const starting = due.slice(0, free);
    overdue = due.slice(starting.length).filter((tenantId) => !heldElsewhere(tenantId, at)).length;
    for (const tenantId of starting) startAttempt(tenantId);
  }

  function startAttempt(tenantId: string): void {
    const abort = new AbortController();
    const done = attempt(tenantId, abort)
      .then(
        () => failures.succeeded(tenantId),
        (error: unknown) => {
          localDue.set(tenantId, now() + failures.failed(tenantId, error, cycleBegun.has(tenantId)));
        },
      )
      .finally(() => {
        refusal.attemptEnded(tenantId, cycleBegun.has(tenantId));
        cycleBegun.delete(tenantId);
        active.delete(tenantId);
        wake?.();
      });
    active.set(tenantId, { abort, done });
  }

  async function run(): Promise<void> {
    while (!stop.signal.aborted) {
      tick();
      // Woken early (a cycle ended, a record changed, the stop), the wait leaves no timer behind: with
      // thousands of tenants many cycles end within one tick.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deps.tickMs);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  }

  let closing: Promise<void> | undefined;
  return {
    start() {
      loop ??= run();
    },
    running: () => active.size,
    close(drainMs = 10_000) {
      closing ??= (async () => {
        stop.abort();
        wake?.();
        await loop;
        const all = [...active.values()].map((running) => running.done);
        if (await settledWithin(all, drainMs)) return;
        for (const running of active.values()) running.abort.abort();
        if (await settledWithin(all, drainMs)) return;
        log.warn(
          'poll attempts did not return when aborted: left behind, their leases expire by themselves',
          {
            tenantIds: [...active.keys()],
            leaseMs: deps.leaseMs,
          },
        );
      })();
      return closing;
    },
  };
}

/**
 * Runs `work` on every item, at most `limit` at once, each started as soon as a place frees. The first
 * failure starts no more, waits for those running and is thrown.
 */
async function atMostAtOnce<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const item = items[next++] as T;
      try {
        await work(item);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  const workers = await Promise.allSettled(
    Array.from({ length: Math.min(limit, items.length) }, () => worker()),
  );
  for (const outcome of workers) if (outcome.status === 'rejected') throw outcome.reason;
}

import { createHash } from 'node:crypto';
import { isKafkaAuthorizationRefusal } from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { errorCode, isInfrastructureFault } from '@urs/resilience';
import type { PollSchedule } from '@urs/store';
import { DefenderErrorCode, isSetupErrorCode, LONGEST_QUOTA_WINDOW_MS } from './defender';

/**
 * When a tenant's next cycle is due, read under the tenant's lease: one interval after the last cycle
 * started, with the interval in force now (a changed interval applies from the next cycle), and not
 * before a backoff's end. A tenant with no cycle started in the schedule is due at `firstDue` (see
 * `firstDueAt`). A cycle still marked running (under a lease that is now ours) was abandoned by a poller that
 * died or stopped mid-cycle: due at once, so the tenant is not skipped for a whole interval. After a failure,
 * a newer record is due at once.
 */
export function dueAt(schedule: PollSchedule, intervalMs: number, revision: number, firstDue = 0): number {
  if (schedule.runningCycleId !== undefined) return 0;
  // The last cycle failed with an older record (an admin just fixed the secret): try the new one at once.
  // Not when the failure is of a newer record than this one: this replica has not read it yet, and the
  // registrar's re-seal of a secret (same settings, another key) moves the failure onto the revision it
  // writes before the pollers read it (`carryFailure`), so that it does not make the tenant due at once.
  if (schedule.failures > 0 && schedule.failedRevision !== undefined && schedule.failedRevision < revision)
    return 0;
  const next = schedule.lastStartedAt === undefined ? firstDue : schedule.lastStartedAt + intervalMs;
  // A transient failure is tried again before the next interval (see `transientRetryAt`), a throttled one
  // when its quota frees (`retryAt` its backoff's end, see `backoffUntil`).
  const due = schedule.retryAt === undefined ? next : Math.min(next, schedule.retryAt);
  return Math.max(due, schedule.notBefore ?? 0);
}

/**
 * Whether a tenant with no schedule is due at once: its record changed less than an interval ago (`updatedAt`:
 * registered, enabled again, new settings; a re-sealed secret keeps it), or does not say when. An older record
 * was polled before, and Redis lost when (`firstDueAt`).
 */
export function changedWithin(
  record: Pick<TenantRecord, 'updatedAt'>,
  intervalMs: number,
  now: number,
): boolean {
  return !(now - Date.parse(record.updatedAt) >= intervalMs);
}

/**
 * When a tenant whose schedule Redis lost (its record older than its interval, see `changedWithin`) is first
 * due: at its place in the interval that follows `lostAt` (the tenants' rebuild), a share of the interval from
 * a hash of its id. Every replica places it alike, and the tenants spread evenly over the interval instead of
 * all polling at once (their backoffs and quota counters lost too). Long after the rebuild that place is
 * past: due at once.
 */
export function firstDueAt(tenantId: string, intervalMs: number, lostAt: number): number {
  const share = createHash('sha256').update(tenantId).digest().readUInt32BE(0) / 2 ** 32;
  return lostAt + Math.floor(share * intervalMs);
}

/**
 * Errors an administrator must fix for the tenant: Defender's setup errors, a secret sealed with a key
 * this process does not hold (a retired key: re-seal it), and a stored secret this process's key does not
 * open while it opens other tenants' (a bad record: register it again). Retrying soon only hammers Entra ID,
 * or, for a bad record, retries every 2 minutes what only the admin can fix.
 */
const SECRET_ERRORS = new Set<string>(['SECRET_KEY_UNKNOWN', 'SECRET_RECORD_UNREADABLE']);

/**
 * Errors of this process's configuration, not of the tenant: a secret sealed with a key id this process
 * holds that does not open with its key, which opens no other tenant's secret either (a replica started with
 * another URS_SECRET_KEY under the same URS_SECRET_KEY_ID; when it opens others, the cycle fails with the
 * tenant's SECRET_RECORD_UNREADABLE instead, see `runCycle`). Backing the tenant off for it kept the tenant unpolled for hours after the key was
 * fixed; no call reaches Microsoft before the secret opens, so trying again soon costs nothing.
 */
const LOCAL_ERRORS = new Set<string>(['SECRET_UNREADABLE']);

/**
 * `local`: this process's configuration is at fault; `infrastructure`: a dependency of every tenant's cycle
 * (Redis, Kafka) is. For both the tenant's failure streak and backoff are left alone.
 */
export type FailureKind = 'setup' | 'throttled' | 'transient' | 'local' | 'infrastructure';

export function classifyFailure(code: string): FailureKind {
  if (LOCAL_ERRORS.has(code)) return 'local';
  if (isSetupErrorCode(code) || SECRET_ERRORS.has(code)) return 'setup';
  if (code === DefenderErrorCode.THROTTLED) return 'throttled';
  return 'transient';
}

/**
 * What kind of failure a cycle's error is: by its code (`classifyFailure`), unless it is a fault of Redis or
 * Kafka (`isInfrastructureFault`: the shared call limiter's or the quota counters' Redis refusing writes or
 * away, the cycle store's, the batches' topic unreachable) or Kafka refusing the batches for want of an ACL
 * (`isKafkaAuthorizationRefusal`: the poller's principal may not write `urs.device-batches`). That fault is
 * the replica's, not the tenant's: counted as a transient failure of the tenant it grew the tenant's retry
 * wait (2, 4, 8, … minutes) and wrote the tenant's status as an error for an outage of ours, or for one
 * missing ACL every tenant's in turn.
 */
export function failureKindOf(error: unknown): FailureKind {
  const kind = classifyFailure(errorCode(error));
  if (kind === 'local') return kind;
  return isInfrastructureFault(error) || isKafkaAuthorizationRefusal(error) ? 'infrastructure' : kind;
}

/** A tenant's failed cycles in a row, of one kind, with the settings (record revision) in force now. */
export interface FailureStreak {
  failures: number;
  /** Their kind; absent in a schedule an older poller wrote (taken as the kind of the next failure). */
  kind?: string;
}

/**
 * The streak after a failed cycle of `kind`. Each kind counts its own: the backoffs grow with failures of one
 * kind in a row, so a tenant throttled 4 times then failing on a 503 is tried again 2 minutes later (not a
 * whole interval), and a setup error after throttling backs off one interval (not 16). A failure of this
 * process's configuration (`local`) or of Redis or Kafka (`infrastructure`) is not the tenant's: the streak
 * stays as it was.
 */
export function nextStreak(previous: FailureStreak, kind: FailureKind): FailureStreak {
  if (kind === 'local' || kind === 'infrastructure') return previous;
  const same = previous.kind === undefined || previous.kind === kind;
  return { failures: (same ? previous.failures : 0) + 1, kind };
}

export interface BackoffInput {
  kind: FailureKind;
  /** Consecutive failed cycles of this kind, this one included (≥ 1). */
  failures: number;
  startedAt: number;
  now: number;
  intervalMs: number;
  maxBackoffMs: number;
  /** The API's Retry-After, for throttling, in ms. */
  retryAfterMs?: number;
}

/** Throttled tenants wait at least a minute (or what the API or the quota asked) before the next try. */
const MIN_THROTTLE_WAIT_MS = 60_000;

/**
 * The schedule without a backoff an earlier poller stored for a failure of its own configuration. Before
 * SECRET_UNREADABLE was `local`, a replica with the wrong URS_SECRET_KEY backed the tenant off 1, 2, 4, …
 * intervals (up to a day), and that backoff stays in Redis after the key is fixed. The schedule does not keep
 * the failure's code, the tenant's status does (`lastErrorCode`, written with the backoff): a backoff whose
 * status names a `local` code was never the tenant's, since no poller sets one for it now. It is dropped, with
 * the failure streak it was counted from; the tenant is then due by its interval (at once, mostly).
 */
export function withoutLocalBackoff(
  schedule: PollSchedule,
  lastErrorCode: string | null | undefined,
): PollSchedule {
  if (schedule.notBefore === undefined || !lastErrorCode || classifyFailure(lastErrorCode) !== 'local')
    return schedule;
  const cleared: PollSchedule = { ...schedule, failures: 0 };
  delete cleared.notBefore;
  return cleared;
}

/**
 * The earliest next try after a failed cycle, or null for the normal schedule. Setup errors back off
 * exponentially from one interval (1, 2, 4, … intervals after the failed start), capped at
 * `maxBackoffMs` but never below one interval. Throttling delays only this tenant, by what its quota still
 * holds its calls back (a 429's Retry-After, a spent hourly window) or a minute, at most an hour (Microsoft's
 * longest quota window), also past its interval: a try before the quota frees would only end at once
 * again, throttled. The try is due then, also before the next interval (the cycle's end stores it as its
 * `retryAt` as well). Transient failures, this process's own (`local`) and its
 * dependencies' (`infrastructure`) set no backoff: they are tried again sooner than the schedule
 * (`transientRetryAt`).
 */
export function backoffUntil(input: BackoffInput): number | null {
  if (input.kind === 'setup') {
    const factor = Math.pow(2, Math.min(Math.max(input.failures - 1, 0), 30));
    const delay = Math.max(input.intervalMs, Math.min(input.intervalMs * factor, input.maxBackoffMs));
    return input.startedAt + delay;
  }
  if (input.kind === 'throttled') {
    const wait = Math.min(Math.max(input.retryAfterMs ?? 0, MIN_THROTTLE_WAIT_MS), LONGEST_QUOTA_WINDOW_MS);
    return input.now + wait;
  }
  return null;
}

/** The first wait after a transient failure, in minutes; it doubles with each one after it. */
const TRANSIENT_RETRY_MINUTES = 2;

/**
 * The next try after a transient failure (a Defender outage the client's retries did not outlast, a
 * malformed answer): 2, 4, 8, … minutes after it ended, ±20 % so that the tenants of one outage do not come
 * back at once, and never later than one interval; after a fault of Redis or Kafka (`infrastructure`), or
 * of the process (`local`), always as after a first one. A tenant polled once a day would otherwise lose
 * the day's scores to a minute's outage. `minuteMs` is the poll interval's unit (a minute, shorter in tests).
 */
export function transientRetryAt(
  failures: number,
  now: number,
  intervalMs: number,
  minuteMs: number,
  random: () => number = Math.random,
): number {
  const wait = TRANSIENT_RETRY_MINUTES * minuteMs * Math.pow(2, Math.min(Math.max(failures - 1, 0), 20));
  return now + Math.min(Math.round(wait * (0.8 + 0.4 * random())), intervalMs);
}

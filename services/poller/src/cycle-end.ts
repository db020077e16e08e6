import { isKafkaAuthorizationRefusal } from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { errorCode, errorMessage } from '@urs/resilience';
import type { Counter } from '@urs/telemetry';
import type { CycleStore, PollLease, PollScheduleStore, TenantStore, UnrecordedListing } from '@urs/store';
import { ABANDONED_CYCLE_GRACE_MS, type CycleTotals } from './cycle';
import { backoffUntil, failureKindOf, type FailureStreak, nextStreak, transientRetryAt } from './schedule';

export interface CycleEndDeps {
  /** Where a cycle's end is recorded, and a listing the cycle store did not record kept (`keepListing`). */
  schedules: Pick<PollScheduleStore, 'end' | 'keepListing'>;
  /**
   * The status is written only while the tenant's record is there and enabled, checked in Redis: a tenant
   * disabled or deleted while its cycle ends keeps the status the registrar wrote (`updatePollingStatus`).
   */
  tenants: Pick<TenantStore, 'cycleListed' | 'updatePollingStatus'>;
  /**
   * The cycles' totals, read to tell whether a cycle left running had been listed in full; one that had not
   * is recorded as abandoned. A listing this replica could not record is recorded at the next try.
   */
  cycles: Pick<CycleStore, 'get' | 'abandon' | 'listed'>;
  /** This replica's lease holder id, named in the status of a cycle its own URS_SECRET_KEY failed. */
  holderId: string;
  intervalUnitMs: number;
  maxBackoffMs: number;
  /** The scheduler's log. */
  log: Logger;
  /** `urs_poll_cycles_total`, by outcome. */
  cyclesTotal: Counter;
  now: () => number;
}

/** A cycle that failed (not aborted) under its tenant's lease. */
export interface FailedCycle {
  record: TenantRecord;
  lease: PollLease;
  cycleId: string;
  startedAt: number;
  intervalMs: number;
  /** The tenant's failure streak before this cycle, under the same settings. */
  previous: FailureStreak;
  error: unknown;
}

/** How a cycle's end is recorded in the tenant's schedule and status, under its lease. */
export interface CycleEnd {
  /** A listed cycle's end: the tenant's status, then the schedule's (false when the lease was lost). */
  endListed(
    lease: PollLease,
    cycleId: string,
    status: Parameters<TenantStore['cycleListed']>[2],
  ): Promise<boolean>;
  /**
   * Ends a cycle left marked running whose listing had ended; false when it must be redone, after recording
   * it as abandoned. A listing of it kept (`listedNotRecorded`), here or in its schedule (`kept`, by any
   * replica), is recorded first.
   */
  endListedCycle(lease: PollLease, cycleId: string, kept?: UnrecordedListing): Promise<boolean>;
  /**
   * Keeps the totals of a cycle of the tenant whose every batch went out and whose listing the cycle store did
   * not record, until the next try under the tenant's lease records them (`endListedCycle`): in the tenant's
   * schedule, under the cycle's lease, for whichever replica holds the lease next; on this replica too, for
   * when Redis refuses that write as well.
   */
  listedNotRecorded(lease: PollLease, cycleId: string, totals: CycleTotals): Promise<void>;
  /** The tenant is deleted: a listing kept for it is dropped. */
  forget(tenantId: string): void;
  /**
   * A failed cycle: the tenant's failure streak, backoff and retry in the schedule, then its status.
   * `placeAt` gets when this replica should look at the tenant again, as soon as the schedule is written:
   * before the status is, so a change of the tenant's record meanwhile (looked at again at once) wins.
   */
  endFailed(cycle: FailedCycle, placeAt: (at: number) => void): Promise<void>;
}

export function createCycleEnd(deps: CycleEndDeps): CycleEnd {
  const { log, now, cyclesTotal } = deps;
  /** Per tenant, the listing of its last cycle that the cycle store did not record (`listedNotRecorded`). */
  const unrecorded = new Map<string, { cycleId: string; totals: CycleTotals }>();

  /**
   * Records a listed cycle's end: the tenant's status (its error kept when the vuln-fetcher reported it for
   * this cycle), then the schedule's (fenced: false, and nothing written, when the lease was lost). In this
   * order, a poller that stops between the two leaves a true status and a cycle still marked running, which
   * the next holder ends (`endListedCycle`); the other way round the status stayed stale for an interval.
   */
  async function endListed(
    lease: PollLease,
    cycleId: string,
    status: Parameters<TenantStore['cycleListed']>[2],
  ): Promise<boolean> {
    await deps.tenants.cycleListed(lease.tenantId, cycleId, status);
    return deps.schedules.end(lease, { failures: 0, notBefore: null, retryAt: null });
  }

  /**
   * Ends a cycle left marked running whose listing had ended: its poller died (or lost its lease) after
   * the cycle store recorded the totals and before the schedule recorded the end. Every batch of it is on
   * `urs.device-batches` and the publisher completes it, so redoing it would only list the whole tenant
   * and fetch its vulnerabilities again within the same interval. It is ended as its poller would have
   * ended it, and the next cycle is due one interval after its start. False when its listing had not
   * ended (it is redone, see `abandonTakenOver`) or the lease was lost.
   */
  async function endListedCycle(
    lease: PollLease,
    cycleId: string,
    kept?: UnrecordedListing,
  ): Promise<boolean> {
    await recordListing(lease.tenantId, cycleId, kept);
    let cycle = await deps.cycles.get(lease.tenantId, cycleId);
    if (cycle === null) return false;
    if (cycle.listedAt === undefined && cycle.pendingListing !== undefined && cycle.abandoned === undefined) {
      // Its poller stopped right after sending its last batch (or while sending it), before it recorded the
      // listing: that batch carries the totals to the publisher, and the cycle is ended as listed from the ones
      // the poller kept before the send. Redone, the tenant was listed again at once (its quota spent twice, its
      // bulk export read twice) and the cycle closed partial a minute later, as its last batch was still under
      // way. A send that failed while the poller lived recorded the cycle abandoned: that one is redone. None
      // are kept before a last batch the topic may refuse as too large (`BatchFit`): refused, it never went, and
      // nothing here could tell it from one taken.
      await deps.cycles.listed(lease.tenantId, cycleId, cycle.pendingListing);
      // Counted listed here, once (the listing recorded, the next try takes the branch below): its poller
      // counted nothing of it (killed), or `aborted` (its lease lost), as before a redo that counted it listed.
      // Its duration is not observed: only its poller knew when its listing ended.
      cyclesTotal.inc({ outcome: 'listed' });
      log.info('listing of a cycle recorded from the totals kept before its last batch', {
        tenantId: lease.tenantId,
        cycleId,
      });
      cycle = await deps.cycles.get(lease.tenantId, cycleId);
      if (cycle === null) return false;
    }
    if (cycle.listedAt === undefined) {
      await abandonTakenOver(lease.tenantId, cycleId);
      return false;
    }
    log.warn('ending a cycle listed in full before its poller stopped', {
      tenantId: lease.tenantId,
      cycleId,
    });
    return endListed(lease, cycleId, {
      lastCycleEndedAt: cycle.listedAt,
      deviceCount: cycle.totalDevices,
      vulnerabilityMode: cycle.vulnerabilityMode,
      // A bulk cycle's note, else none (a cycle listed by an older poller, which kept no mode, leaves both).
      note: cycle.vulnerabilityMode === undefined ? undefined : (cycle.note ?? null),
    });
  }

  /**
   * Records the listing kept for the tenant's cycle left running (`listedNotRecorded`), by this replica or, in
   * the cycle's schedule (`inSchedule`), by whichever replica ran it: every batch of it went out, and Redis
   * failed only the record of its totals. Found without it, the cycle was taken for one its poller left
   * mid-listing: recorded as abandoned (`POLLER_GONE`, closed partial a minute later) and the tenant listed
   * again at once, its quota spent twice and a second summary sent. A Redis that fails here again fails the
   * attempt (tried again after the attempts' backoff), the listing still kept. One kept for another cycle
   * (ended or taken over by another replica since) is dropped.
   */
  async function recordListing(
    tenantId: string,
    cycleId: string,
    inSchedule: UnrecordedListing | undefined,
  ): Promise<void> {
    const here = unrecorded.get(tenantId);
    const kept = [here, inSchedule].find((listing) => listing?.cycleId === cycleId);
    if (kept !== undefined) {
      await deps.cycles.listed(tenantId, cycleId, kept.totals);
      log.info('listing of a cycle recorded at the next try', { tenantId, cycleId });
    }
    unrecorded.delete(tenantId);
  }

  async function listedNotRecorded(lease: PollLease, cycleId: string, totals: CycleTotals): Promise<void> {
    const tenantId = lease.tenantId;
    unrecorded.set(tenantId, { cycleId, totals });
    // Kept in Redis too: a replica that takes the tenant over (this one stopped, or its lease lapsed) ends the
    // cycle as listed instead of abandoning it and listing the tenant again. Refused (Redis still away, the
    // lease lost), the copy here is what the next try of this replica records.
    try {
      if (!(await deps.schedules.keepListing(lease, cycleId, totals)))
        log.debug('unrecorded listing not kept in the schedule, the lease lost: kept on this replica only', {
          tenantId,
          cycleId,
        });
    } catch (error) {
      log.debug('unrecorded listing not kept in the schedule: kept on this replica only', {
        tenantId,
        cycleId,
        reason: errorMessage(error),
      });
    }
  }

  function forget(tenantId: string): void {
    unrecorded.delete(tenantId);
  }

  /**
   * A cycle left marked running and not listed in full, under a lease now this replica's: its poller died (or
   * lost the lease without recording the cycle as abandoned), and the cycle is redone. Recorded as abandoned,
   * as its poller would have (`runCycle`), it is closed as partial a grace after now, most often before the
   * new cycle's summary, instead of at its deadline (up to an hour later, after the new one's). How many
   * batches it emitted is not known, so only then, not as soon as they are in. A cycle its poller recorded already, or
   * that never emitted a batch (never begun), is left as it is. A Redis that fails here leaves it to its
   * deadline: the new cycle is not held up for it. A poller alive after all (its renewals failed) sends no
   * batch past its lease's end, so none after now; one that had sent its last batch by then records the
   * listing later, which undoes this (`CycleStore.listed`).
   */
  async function abandonTakenOver(tenantId: string, cycleId: string): Promise<void> {
    const at = now();
    try {
      const abandonment = { code: 'POLLER_GONE', at: new Date(at).toISOString() };
      if (await deps.cycles.abandon(tenantId, cycleId, abandonment, at + ABANDONED_CYCLE_GRACE_MS))
        log.info('cycle of a poller that is gone recorded as abandoned: its close brought forward', {
          tenantId,
          cycleId,
        });
    } catch (error) {
      log.warn('abandoned cycle not recorded: its deadline closes it', {
        tenantId,
        cycleId,
        reason: errorMessage(error),
      });
    }
  }

  async function endFailed(cycle: FailedCycle, placeAt: (at: number) => void): Promise<void> {
    const { record, lease, cycleId, startedAt, intervalMs, previous, error } = cycle;
    const tenantId = record.tenantId;
    const nextPollAt = startedAt + intervalMs;
    const code = errorCode(error);
    const kind = failureKindOf(error);
    // This replica's own fault (its URS_SECRET_KEY does not open the secret): the status names the
    // replica, and the tenant's streak is not counted, so no backoff outlives the key's fix.
    const local = kind === 'local';
    // Redis or Kafka failed the cycle (the shared call limiter, the quota counters, the cycle store, the
    // batches' topic): not the tenant's failure either. Its streak is not counted and its status not
    // written as an error; it is tried again as after a first transient failure.
    const infrastructure = kind === 'infrastructure';
    const message = local ? `poller ${deps.holderId}: ${errorMessage(error)}` : errorMessage(error);
    const streak = nextStreak(previous, kind);
    const failures = streak.failures;
    const ended = now();
    const retryAfterMs = (error as { retryAfterMs?: number }).retryAfterMs;
    const notBefore = backoffUntil({
      kind,
      failures,
      startedAt,
      now: ended,
      intervalMs,
      maxBackoffMs: deps.maxBackoffMs,
      ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
    });
    // A throttled tenant is tried again when its quota frees, also before its next interval: a tenant polled
    // once a day would otherwise lose the day to a minute's quota. Its backoff keeps it from an earlier try.
    const retryAt =
      kind === 'transient' || local || infrastructure
        ? transientRetryAt(kind === 'transient' ? failures : 1, ended, intervalMs, deps.intervalUnitMs)
        : kind === 'throttled'
          ? notBefore
          : null;
    // Counted before anything is written: under a Redis refusing writes the writes below fail, and the
    // cycle's failure must still show (the alert on `infrastructure` outcomes would never fire).
    cyclesTotal.inc({ outcome: kind });
    // Under a Redis refusing writes this fails too: the cycle stays marked running, and the next holder
    // takes it over (when the scheduler tries the tenant again, with backoff: `createAttemptFailures`).
    await deps.schedules.end(lease, {
      failures,
      notBefore,
      retryAt,
      failedRevision: record.revision,
      ...(streak.kind === undefined ? {} : { failedKind: streak.kind }),
    });
    // When the tenant is due by the schedule just written (as `dueAt` reads it).
    const next = Math.max(retryAt === null ? nextPollAt : Math.min(nextPollAt, retryAt), notBefore ?? 0);
    placeAt(next);
    if (infrastructure) {
      await deps.tenants.updatePollingStatus(tenantId, { nextPollAt: new Date(next).toISOString() });
      const fields = { tenantId, cycleId, code, reason: message, nextPollAt: new Date(next).toISOString() };
      // Waiting does not mend a missing ACL: an operator grants it.
      if (isKafkaAuthorizationRefusal(error))
        log.error(
          "cycle failed: Kafka refused the poller for want of an ACL (grant its principal Write on the batches' topic), not on the tenant's side: tried again soon",
          fields,
        );
      else log.warn("cycle failed on Redis or Kafka, not on the tenant's side: tried again soon", fields);
      return;
    }
    await deps.tenants.updatePollingStatus(tenantId, {
      state: 'error',
      lastCycleEndedAt: new Date(ended).toISOString(),
      nextPollAt: new Date(next).toISOString(),
      lastErrorCode: code,
      lastErrorMessage: message,
      lastErrorAt: new Date(ended).toISOString(),
      lastErrorCycleId: cycleId,
    });
    if (local) {
      log.error("cycle failed: this poller's URS_SECRET_KEY does not open the tenant's secret", {
        tenantId,
        cycleId,
        code,
        reason: message,
        variables: ['URS_SECRET_KEY', 'URS_SECRET_KEY_ID'],
        nextPollAt: new Date(next).toISOString(),
      });
      return;
    }
    log.warn('cycle failed', {
      tenantId,
      cycleId,
      code,
      reason: message,
      failures,
      nextPollAt: new Date(next).toISOString(),
    });
  }

  return { endListed, endListedCycle, listedNotRecorded, forget, endFailed };
}

// A begun cycle's run under its tenant's lease (see scheduler.ts): the lease renewed while it runs, its end
// recorded (listed, aborted or failed), the lease released after.
import type { TenantRecord } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { errorMessage, holdRenewed, type LeaseClock } from '@urs/resilience';
import type { Counter, Histogram } from '@urs/telemetry';
import type { PollLease, PollScheduleStore, TenantStore } from '@urs/store';
import { CycleAbortedError, CycleListedNotRecordedError, type CycleInput, type CycleResult } from './cycle';
import type { CycleEnd } from './cycle-end';
import type { FailureStreak } from './schedule';

export interface RunUnderLeaseDeps {
  schedules: Pick<PollScheduleStore, 'renew'>;
  tenants: Pick<TenantStore, 'updatePollingStatus'>;
  /** Runs one cycle (runCycle bound to its deps). */
  runCycle: (input: CycleInput) => Promise<CycleResult>;
  leaseMs: number;
  recheckMs: number;
  ends: CycleEnd;
  /** The scheduler's log. */
  log: Logger;
  /** `urs_poll_cycles_total`, by outcome. */
  cyclesTotal: Counter;
  /** `urs_poll_cycle_seconds`. */
  cycleSeconds: Histogram;
  /** Aborted when the scheduler stops. */
  stop: AbortSignal;
  /**
   * Sets when this replica should look at the tenant again (its local view), after a cycle of the record's
   * `revision`: not when the record changed since (looked at again at once) or went.
   */
  placeAt: (tenantId: string, at: number, revision: number) => void;
  /** Releases the lease, a failure only logged (it expires by itself). */
  releaseQuietly: (lease: PollLease) => Promise<void>;
  now: () => number;
}

export type RunUnderLease = (
  record: TenantRecord,
  held: { lease: PollLease; clock: LeaseClock },
  cycleId: string,
  startedAt: number,
  intervalMs: number,
  previous: FailureStreak,
  abort: AbortController,
) => Promise<void>;

export function createRunUnderLease(deps: RunUnderLeaseDeps): RunUnderLease {
  const { ends, log, cyclesTotal, cycleSeconds, stop, releaseQuietly, now } = deps;
  /**
   * Runs the cycle while its lease is renewed (`holdRenewed`: at once, then every third of it). A renewal Redis
   * answers false aborts the cycle (the lease was lost). One that fails with an error, or that Redis does not
   * answer (the client queues it while Redis is away), is tried again at the next renewal, and once the lease may
   * have lapsed meanwhile (`LeaseClock`: its length passed since the last renewal that held it) the cycle is
   * aborted too, then and not only at a renewal that fails: its listing stops, and it emits nothing more in any
   * case.
   */
  return async function runUnderLease(
    record: TenantRecord,
    { lease, clock }: { lease: PollLease; clock: LeaseClock },
    cycleId: string,
    startedAt: number,
    intervalMs: number,
    previous: FailureStreak,
    abort: AbortController,
  ): Promise<void> {
    const tenantId = record.tenantId;
    const nextPollAt = startedAt + intervalMs;
    /** The lease was lost to another holder; why it lapsed, when its renewals held nothing for its length. */
    let lost = false;
    let lapsed: unknown;
    // Renewed at once: the lease was taken before the schedule's reads and the cycle's begin, and on a slow
    // Redis those may have used much of it.
    const hold = holdRenewed({
      clock,
      leaseMs: deps.leaseMs,
      immediately: true,
      renew: () => deps.schedules.renew(lease, deps.leaseMs),
      // The cycle is aborted through `abort` (see `onLost`), not through the hold's own signal.
      lost: () => new CycleAbortedError(),
      what: `the poll lease of tenant ${tenantId}`,
      onLost: (cause) => {
        if (cause === undefined) {
          log.warn('lease lost: aborting the cycle', { tenantId, cycleId });
          lost = true;
        } else {
          log.warn('lease not renewed before it may have lapsed: aborting the cycle', {
            tenantId,
            cycleId,
            reason: errorMessage(cause),
          });
          lapsed = cause;
        }
        abort.abort();
      },
      onRenewalError: (error) =>
        log.warn('lease renewal failed', { tenantId, cycleId, reason: errorMessage(error) }),
    });
    /** Counts the cycle as listed in full, with its duration. */
    const countListed = (): void => {
      cyclesTotal.inc({ outcome: 'listed' });
      cycleSeconds.observe((now() - startedAt) / 1000);
    };
    /** What runCycle answered: once it has, the cycle was listed in full and never fails (see below). */
    let result: CycleResult | undefined;
    try {
      // Its tenant disabled or deleted since the cycle began: nothing of it is written (see below).
      if (abort.signal.aborted) throw new CycleAbortedError();
      // In the try: a begun cycle whose start cannot be recorded fails like any other, and is counted.
      // Written only while the tenant's record is enabled (in Redis): the registrar's `disabled` stays.
      await deps.tenants.updatePollingStatus(tenantId, {
        lastCycleId: cycleId,
        lastCycleStartedAt: new Date(startedAt).toISOString(),
        nextPollAt: new Date(nextPollAt).toISOString(),
      });
      result = await deps.runCycle({
        record,
        cycleId,
        startedAt,
        intervalMs,
        lease,
        signal: abort.signal,
        leaseHeld: hold.held,
      });
      hold.stop();
      countListed();
      await ends.endListed(lease, cycleId, {
        lastCycleEndedAt: new Date(result.listedAt).toISOString(),
        deviceCount: result.totalDevices,
        vulnerabilityMode: result.vulnerabilityMode,
        note: result.note,
      });
    } catch (error) {
      hold.stop();
      // Listed in full (its totals are in the cycle store), and its end not recorded: Redis failed the status's
      // or the schedule's write (a failover's READONLY, a connection reset). Not a failed cycle: ended as failed,
      // it was listed again within minutes (the tenant's quota spent twice, a second summary for the VMS), its
      // status never showed the listing, and a fault of Redis counted as the tenant's failure. It is left marked
      // running; the attempt fails (tried again after the attempts' backoff, a fault of Redis warned of once per
      // outage), and the next holder of the lease ends it as listed (`endListedCycle`). So is one whose every
      // batch went out and whose listing the cycle store could not record, though tried again in place while
      // the lease held (`CycleListedNotRecordedError`): ended as failed, it was listed again ~2 minutes later,
      // counted as an infrastructure failure. Its batches are on their way, the last with the totals the
      // publisher completes it by. It is counted as listed, and its totals kept in its schedule (and on this
      // replica, for a Redis refusing that write too): the next try under the lease, on whichever replica,
      // records them first (`endListedCycle`), then ends it as listed. Found without them, it was taken for a
      // cycle left mid-listing, abandoned (closed partial) and the tenant listed again at once.
      if (error instanceof CycleListedNotRecordedError) {
        countListed();
        await ends.listedNotRecorded(lease, cycleId, error.totals);
      }
      if (result !== undefined || error instanceof CycleListedNotRecordedError) {
        log.warn('listed cycle not ended: the next try ends it', {
          tenantId,
          cycleId,
          reason: errorMessage(error),
        });
        throw error;
      }
      if (error instanceof CycleAbortedError || abort.signal.aborted) {
        // Left marked running: the next holder redoes it (unless the tenant was disabled or deleted).
        cyclesTotal.inc({ outcome: 'aborted' });
        log.warn('cycle aborted', { tenantId, cycleId });
        // Ended by its lease: redone soon, by this replica too (its due time stays the interval's end
        // otherwise, and with one replica nobody would redo it before). A lease lost to another holder is
        // looked at again after URS_POLL_RECHECK_MS; one that lapsed while its renewals failed (Redis away or
        // refusing) fails the attempt with the last renewal's error (REDIS_UNAVAILABLE when Redis answered none
        // since the last that held it): tried again after the attempts' backoff,
        // counted, warned of once per outage. Aborted for a stop, or its tenant disabled or deleted (the lease
        // still held), it is left as it is.
        if (stop.aborted) return;
        if (lost) deps.placeAt(tenantId, now() + deps.recheckMs, record.revision);
        else if (lapsed !== undefined || !clock.held()) throw lapsed ?? error;
        return;
      }
      await ends.endFailed({ record, lease, cycleId, startedAt, intervalMs, previous, error }, (next) =>
        deps.placeAt(tenantId, next, record.revision),
      );
    } finally {
      hold.stop();
      await releaseQuietly(lease);
    }
  };
}

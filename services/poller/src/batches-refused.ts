import type { Logger } from '@urs/logging';
import { UrsError, errorCode, errorMessage } from '@urs/resilience';
import type { Registry } from '@urs/telemetry';

export interface BatchesRefusedOptions {
  /** The scheduler's log. */
  log: Logger;
  metrics: Registry;
  /** How long after a cycle of the hold (a probe) another may begin, ms. */
  probeWaitMs: number;
  now: () => number;
}

/**
 * Whether Kafka refuses this replica's batches for want of an ACL (its principal lacks Write on the batches'
 * topic), and the one cycle at a time that finds out when it takes them again. Every tenant's batches go to
 * the same topic under the same principal, so one refusal answers for all; Kafka has no produce-free check of
 * an ACL (KafkaJS asks no broker for a topic's authorised operations), so the check is a cycle's own send.
 * Until a batch is taken, the scheduler begins no cycle but the probe: each cycle spends its tenant's Defender
 * calls (token, listing pages, their quota) before its first send, and with every tenant tried again ~2 minutes
 * after its refusal, a missing ACL spent the whole install's quota for nothing.
 */
export interface BatchesRefused {
  /** Whether cycles are held: a batch was refused for want of an ACL, and none taken since. */
  held(): boolean;
  /**
   * Whether a probe may begin at `at`: cycles held, no probe running, and the wait since the last one over.
   * Cycles begun before the hold do not put it off: they may still be running, and stop before their next
   * listing page (`stopping`), so a probe can begin alongside them.
   */
  probeDue(at: number): boolean;
  /** The tenant whose attempt the scheduler starts as the probe. */
  probeStarted(tenantId: string): void;
  /**
   * A tenant's attempt ended. The probe's frees the place for the next; one that began a cycle (its Defender
   * calls spent) makes the next wait `probeWaitMs`, one that began none (not due, leased elsewhere) does not.
   */
  attemptEnded(tenantId: string, cycleBegun: boolean): void;
  /** A cycle's batch was refused for want of an ACL: cycles are held, or stay held. */
  refused(tenantId: string, error: unknown): void;
  /** A batch was taken: cycles resume. */
  taken(): void;
  /**
   * While cycles are held, the error a cycle of `tenantId` begun before the hold stops its listing with
   * (`CycleInput.batchesRefused`, `BATCHES_REFUSED`, the refusal its cause); none for the probe's.
   */
  stopping(tenantId: string): Error | undefined;
}

/** The code of a cycle stopped by the hold, not refused by Kafka itself: it does not put the next probe off. */
export const BATCHES_REFUSED = 'BATCHES_REFUSED';

/** Whether `error` stopped a cycle for the hold (`BatchesRefused.stopping`), not a send Kafka refused. */
export function stoppedForRefusal(error: unknown): boolean {
  return errorCode(error) === BATCHES_REFUSED;
}

export function createBatchesRefused(options: BatchesRefusedOptions): BatchesRefused {
  const { log, now } = options;
  /** Since when cycles are held, and how many refusals came since; undefined while batches are taken. */
  let hold: { since: number; refusals: number; stop: Error } | undefined;
  let probe: string | undefined;
  let nextProbeAt = 0;
  options.metrics.gauge(
    'urs_poll_batches_refused',
    "Whether Kafka refuses this poller's batches for want of an ACL (1): its cycles are held, one tenant's " +
      'cycle tried again every ~2 minutes until a batch is taken.',
    () => (hold === undefined ? 0 : 1),
  );

  return {
    held: () => hold !== undefined,
    probeDue: (at) => hold !== undefined && probe === undefined && at >= nextProbeAt,
    probeStarted(tenantId) {
      probe = tenantId;
    },
    attemptEnded(tenantId, cycleBegun) {
      if (tenantId !== probe) return;
      probe = undefined;
      if (hold !== undefined && cycleBegun) nextProbeAt = Math.max(nextProbeAt, now() + options.probeWaitMs);
    },
    refused(tenantId, error) {
      nextProbeAt = now() + options.probeWaitMs;
      if (hold !== undefined) {
        hold.refusals++;
        return;
      }
      const stop = new UrsError(
        BATCHES_REFUSED,
        "Kafka refuses the poller's batches for want of an ACL: the cycle stopped listing, its send would be " +
          `refused too (${errorMessage(error)})`,
        { canRetry: true, cause: error },
      );
      hold = { since: now(), refusals: 1, stop };
      // Waiting does not mend a missing ACL: an operator grants it (alert UrsPollerBatchesRefused).
      log.error(
        "cycles held: Kafka refuses the poller's batches for want of an ACL (grant its principal Write on the " +
          "batches' topic); one tenant's cycle tries again every probe wait, the others wait for it",
        { tenantId, reason: errorMessage(error), probeWaitMs: options.probeWaitMs },
      );
    },
    taken() {
      if (hold === undefined) return;
      log.info("Kafka takes the poller's batches again: cycles resume", {
        heldMs: now() - hold.since,
        refusals: hold.refusals,
      });
      hold = undefined;
      nextProbeAt = 0;
    },
    stopping: (tenantId) => (hold === undefined || tenantId === probe ? undefined : hold.stop),
  };
}

import type { Logger } from '@urs/logging';
import { errorCode, errorMessage, isInfrastructureFault, retryDelayMs, retryPolicy } from '@urs/resilience';
import type { Counter } from '@urs/telemetry';

export interface AttemptFailuresOptions {
  /** The scheduler's log. */
  log: Logger;
  /** `urs_poll_cycles_total`, by outcome. */
  cyclesTotal: Counter;
  /** The shortest wait before a tenant whose attempt failed is tried again, in ms (URS_POLL_RECHECK_MS). */
  recheckMs: number;
  /** The longest, in ms (the poll interval's unit, a minute): a tenant is back within it of Redis's return. */
  maxWaitMs: number;
  now?: () => number;
  /** In [0, 1); injected so tests are deterministic. */
  random?: () => number;
}

/**
 * The attempts that failed outside what a cycle's end records: the lease, the schedule or the status could
 * not be read or written, or a failed cycle's end could not be recorded (Redis refusing writes, away, or
 * failed over). Such a failure is tried again by this replica alone, so it must back off by itself: Redis
 * refusing writes fails every tenant's attempt alike, and a retry a second later, per tenant, logged at error
 * each time, filled the log with thousands of lines a minute and kept Redis busy with doomed commands.
 */
export interface AttemptFailures {
  /**
   * A tenant's attempt failed: the wait before this replica tries it again, in ms. A fault of Redis or Kafka
   * is counted in `urs_poll_cycles_total{outcome="infrastructure"}` unless it ended a cycle `endFailed` had
   * counted already (`cycleCounted`), and warned of once per outage; any other failure is logged as an error.
   */
  failed(tenantId: string, error: unknown, cycleCounted: boolean): number;
  /** A tenant's attempt went through: its streak ends, and the outage, said once, with it. */
  succeeded(tenantId: string): void;
  /** The tenant is gone (deleted, disabled): its streak is dropped. */
  forget(tenantId: string): void;
}

export function createAttemptFailures(options: AttemptFailuresOptions): AttemptFailures {
  const { log, cyclesTotal } = options;
  const now = options.now ?? Date.now;
  // Full jitter above the floor of `recheckMs`: the tenants of one outage come back spread out.
  const policy = retryPolicy({
    maxAttempts: Infinity,
    initialDelayMs: options.recheckMs,
    maxDelayMs: Math.max(options.recheckMs, options.maxWaitMs - options.recheckMs),
    multiplier: 2,
  });
  /** Per tenant, its attempts failed in a row. */
  const streaks = new Map<string, number>();
  /** When the outage began (the first attempt failed on Redis or Kafka since one went through), or undefined. */
  let outageSince: number | undefined;
  let outageFailures = 0;

  return {
    failed(tenantId, error, cycleCounted) {
      const streak = (streaks.get(tenantId) ?? 0) + 1;
      streaks.set(tenantId, streak);
      const waitMs = options.recheckMs + retryDelayMs(policy, streak, options.random);
      const fields = { tenantId, code: errorCode(error), reason: errorMessage(error) };
      if (!isInfrastructureFault(error)) {
        log.error('poll attempt failed', { ...fields, failures: streak, retryInMs: waitMs });
        return waitMs;
      }
      if (!cycleCounted) cyclesTotal.inc({ outcome: 'infrastructure' });
      outageFailures++;
      if (outageSince === undefined) {
        outageSince = now();
        log.warn(
          'poll attempts failing on Redis or Kafka: each tenant tried again with backoff until it is back',
          {
            ...fields,
            maxRetryInMs: options.maxWaitMs,
          },
        );
      } else log.debug('poll attempt failed on Redis or Kafka again', { ...fields, failures: streak });
      return waitMs;
    },
    succeeded(tenantId) {
      streaks.delete(tenantId);
      if (outageSince === undefined) return;
      log.info('poll attempts go through again', {
        downMs: now() - outageSince,
        failedAttempts: outageFailures,
      });
      outageSince = undefined;
      outageFailures = 0;
    },
    forget(tenantId) {
      streaks.delete(tenantId);
    },
  };
}

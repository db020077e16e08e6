import type { Logger } from '@urs/logging';
import { errorCode, errorMessage } from '@urs/resilience';
import type { Gauge } from '@urs/telemetry';

/**
 * The messages a runner holds because a dependency every message needs (Redis, Kafka) failed them
 * (`isInfrastructureFault`): retried for as long as it stays down, never dead-lettered for it. One outage
 * makes every message fail alike, so it is told once: how many are held (a gauge), whether they have been
 * held long enough for the service to stop saying it is ready, and a warning at most every `logIntervalMs`
 * instead of one per attempt of each message.
 */
export interface HeldMessages {
  /** A message failed on an infrastructure fault: it is held until its hold is released. */
  hold(error: unknown, fields: Record<string, unknown>): Hold;
  /** Messages held now. */
  readonly count: number;
  /** Whether messages have been held without a pause for longer than `notReadyAfterMs`. */
  isStalled(): boolean;
}

export interface Hold {
  /** The held message failed again (on an infrastructure fault). */
  failedAgain(error: unknown, fields: Record<string, unknown>): void;
  /** The message is no longer held (handled, dead-lettered for its own fault, or given up). Idempotent. */
  release(): void;
}

export interface HeldMessagesOptions {
  log: Logger;
  /** Set to the number of messages held, with `labels`. */
  gauge: Gauge;
  labels: Record<string, string>;
  /** See ConsumerRunnerOptions.heldNotReadyAfterMs. */
  notReadyAfterMs: number;
  /** See ConsumerRunnerOptions.heldLogIntervalMs. */
  logIntervalMs: number;
  /** The clock, ms. Default Date.now. */
  now?: () => number;
}

export function createHeldMessages(options: HeldMessagesOptions): HeldMessages {
  const { log } = options;
  const now = options.now ?? Date.now;
  let count = 0;
  /** When messages began to be held without a pause (the outage, as the runner sees it). */
  let since: number | undefined;
  let lastWarnedAt = -Infinity;
  /** Whether this outage was warned of: then its end is told too. */
  let warned = false;

  function setCount(change: number): void {
    count += change;
    options.gauge.set(count, options.labels);
  }

  /** A warning, unless one was logged less than logIntervalMs ago (of this outage or the one before). */
  function warn(error: unknown, fields: Record<string, unknown>): void {
    const at = now();
    if (at - lastWarnedAt < options.logIntervalMs) return;
    lastWarnedAt = at;
    warned = true;
    log.warn('messages held: a dependency failed; retried until it is back, not dead-lettered', {
      ...fields,
      held: count,
      heldForMs: at - (since ?? at),
      code: errorCode(error),
      reason: errorMessage(error),
    });
  }

  return {
    hold(error, fields) {
      if (count === 0) since = now();
      setCount(1);
      warn(error, fields);
      let released = false;
      return {
        failedAgain: (again, againFields) => warn(again, againFields),
        release() {
          if (released) return;
          released = true;
          setCount(-1);
          if (count > 0) return;
          if (warned) log.info('no message held any more', { heldForMs: now() - (since ?? now()) });
          since = undefined;
          warned = false;
        },
      };
    },
    get count() {
      return count;
    },
    isStalled() {
      return since !== undefined && now() - since > options.notReadyAfterMs;
    },
  };
}

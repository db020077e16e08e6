import type { Logger } from '@urs/logging';
import { errorCode, errorMessage } from '@urs/resilience';
import type { Gauge } from '@urs/telemetry';

/**
 * Why a message is held, each told in its own words:
 * - `dependency`: a dependency every message needs (Redis, Kafka) failed it (`isInfrastructureFault`), its
 *   handler, its dead letter or what the letter stands for: retried for as long as it stays down;
 * - `not-authorized`: Kafka refused its handler a request for want of an ACL (`isKafkaAuthorizationRefusal`):
 *   retried until an operator grants it;
 * - `dead-letter-refused`: its attempts are spent, and Kafka refuses its dead letter for a reason only an
 *   operator mends (an ACL, a letter too large): the letter written again until Kafka takes it;
 * - `dead-letter-busy`: another process claimed its dead letter and has not written it yet;
 * - `catching-up`: its handler waits for the service to read, at its start, what it needs to handle it (a
 *   topic read to its end: `TopicSubscription.catchingUp`): a service at its start is not broken, and waits
 *   a bounded time, so such messages are counted and warned of but do not make it not ready.
 */
export type HoldReason =
  'dependency' | 'not-authorized' | 'dead-letter-refused' | 'dead-letter-busy' | 'catching-up';

/** The warning of each reason: what holds the messages, and what becomes of them. */
const HELD_WARNINGS: Record<HoldReason, string> = {
  dependency: 'messages held: a dependency failed; retried until it is back, not dead-lettered',
  'not-authorized':
    'messages held: Kafka refused a request for want of an ACL; retried until it is granted, not dead-lettered',
  'dead-letter-refused':
    'messages held: Kafka refused their dead letter; written again until it takes it, their handler not run again',
  'dead-letter-busy':
    'messages held: another process is writing their dead letter; held until it is written or its claim lapses',
  'catching-up':
    'messages held: the service has not read what they need since it started; retried until it has, not dead-lettered',
};

/**
 * The messages a runner holds (see HoldReason): never dead-lettered for a dependency's fault, nor their
 * handler run again once their attempts are spent. One outage makes every message fail alike, so it is told
 * once: how many are held (a gauge), whether they have been held long enough for the service to stop saying
 * it is ready, and a warning of each reason at most every `logIntervalMs` instead of one per attempt of each
 * message (one reason's warnings do not hide another's).
 */
export interface HeldMessages {
  /** A message failed for `reason` (default `dependency`): it is held until its hold is released. */
  hold(error: unknown, fields: Record<string, unknown>, reason?: HoldReason): Hold;
  /** Messages held now. */
  readonly count: number;
  /**
   * Whether messages have been held without a pause for longer than `notReadyAfterMs`, for a reason that
   * counts against readiness (every one but `catching-up`).
   */
  isStalled(): boolean;
}

export interface Hold {
  /** The held message failed again, for `reason` (default `dependency`). */
  failedAgain(error: unknown, fields: Record<string, unknown>, reason?: HoldReason): void;
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
  /** When each reason was last warned of. */
  const lastWarnedAt = new Map<HoldReason, number>();
  /** Whether this outage was warned of: then its end is told too. */
  let warned = false;
  /** Messages held for a reason that counts against readiness (all but `catching-up`), and since when. */
  let stalling = 0;
  let stallingSince: number | undefined;
  const countsAgainstReadiness = (reason: HoldReason): boolean => reason !== 'catching-up';
  function setStalling(change: number): void {
    if (stalling === 0 && change > 0) stallingSince = now();
    stalling += change;
    if (stalling === 0) stallingSince = undefined;
  }

  function setCount(change: number): void {
    count += change;
    options.gauge.set(count, options.labels);
  }

  /**
   * A warning, unless one of the same reason was logged less than logIntervalMs ago (of this outage or the one
   * before).
   */
  function warn(error: unknown, fields: Record<string, unknown>, reason: HoldReason): void {
    const at = now();
    if (at - (lastWarnedAt.get(reason) ?? -Infinity) < options.logIntervalMs) return;
    lastWarnedAt.set(reason, at);
    warned = true;
    log.warn(HELD_WARNINGS[reason], {
      ...fields,
      holdReason: reason,
      held: count,
      heldForMs: at - (since ?? at),
      code: errorCode(error),
      reason: errorMessage(error),
    });
  }

  return {
    hold(error, fields, reason = 'dependency') {
      if (count === 0) since = now();
      setCount(1);
      let counts = countsAgainstReadiness(reason);
      if (counts) setStalling(1);
      warn(error, fields, reason);
      let released = false;
      return {
        failedAgain(again, againFields, againReason = 'dependency') {
          const countsNow = countsAgainstReadiness(againReason);
          if (!released && countsNow !== counts) {
            counts = countsNow;
            setStalling(counts ? 1 : -1);
          }
          warn(again, againFields, againReason);
        },
        release() {
          if (released) return;
          released = true;
          if (counts) setStalling(-1);
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
      return stallingSince !== undefined && now() - stallingSince > options.notReadyAfterMs;
    },
  };
}

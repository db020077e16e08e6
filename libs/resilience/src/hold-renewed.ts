import { UrsError } from './errors';
import { createLeaseClock, type LeaseClock } from './lease-clock';
import { keepRenewing } from './lifecycle';

/** A hold on something renewed in Redis (see `holdRenewed`). */
export interface RenewedHold {
  /** Aborts, with the error `lost` made, once the hold is lost or may have lapsed. */
  readonly signal: AbortSignal;
  /**
   * Throws that error once the hold is lost, or once its length has passed since the last renewal that held
   * it (told by the clock too, should the timer that aborts `signal` not have run yet).
   */
  throwIfLost(): void;
  /** Whether it is surely still held now: `throwIfLost` would not throw (and, like it, loses it when it lapsed). */
  held(): boolean;
  /** Stops renewing and watching: the work under the hold ended. The caller gives the hold back. */
  stop(): void;
}

interface HoldOptions {
  /** The hold's length, ms; renewed every third of it (at least every 10 ms). */
  leaseMs: number;
  /** Renews the hold in Redis: true while it is still held, false once another holds it (or none does). */
  renew: () => Promise<boolean>;
  /**
   * The error `signal` aborts with once the hold is lost: `cause` undefined when a renewal found it gone,
   * else why Redis held nothing (a renewal's error, or a `REDIS_UNAVAILABLE` when none was answered).
   */
  lost: (cause?: unknown) => Error;
  /** What is held, as Redis's lapse message names it ("the tenant lease"). */
  what: string;
  /** Called once, right before `signal` aborts, with the same `cause` as `lost`. */
  onLost?: (cause?: unknown) => void;
  /** Called on each renewal that failed (it is tried again at the next tick). */
  onRenewalError?: (error: unknown) => void;
  /**
   * The first renewal goes at once, not a third of the hold's length from now: the hold was taken a while ago
   * (reads and writes under it before its work began, on a slow Redis). Default false.
   */
  immediately?: boolean;
}

/**
 * `takenAt`: when the take was asked, a `leaseTime` reading: the hold lasts `leaseMs` from then unless renewed.
 * Or `clock`: the hold's clock, made by the caller when it took the hold (`createLeaseClock(takenAt, leaseMs)`).
 */
export type HoldRenewedOptions = HoldOptions & ({ takenAt: number } | { clock: LeaseClock });

/**
 * Holds something taken in Redis (a lock, a lease) while a work runs, renewing it every third of its length,
 * so work that outlasts it (a broker failing over, a large snapshot) keeps it.
 *
 * A renewal that finds it another's (or gone) loses it. So does Redis not answering: a renewal that fails, or
 * that the client queues while Redis is away, holds nothing, and the hold counts as lost once its length has
 * passed since the last renewal that held it (or the take): by then another holder may have taken it. That time
 * is told by a monotonic clock (`createLeaseClock`): by the wall clock, an NTP step forward of the hold's length
 * failed every work under way, blamed on Redis. Either way `signal` aborts with `lost(cause)`, `cause` a fault
 * of Redis (the last renewal's error, or `REDIS_UNAVAILABLE`) when Redis did not answer.
 */
export function holdRenewed(options: HoldRenewedOptions): RenewedHold {
  const { leaseMs, what } = options;
  const lost = new AbortController();
  const everyMs = Math.max(10, Math.floor(leaseMs / 3));
  /** The hold lasts `leaseMs` from when the last renewal that found it held (or the take) was asked. */
  const clock = 'clock' in options ? options.clock : createLeaseClock(options.takenAt, leaseMs);
  /** Why the renewals since then did not hold it: the last one's error, if one failed. */
  let renewalError: unknown;
  let stopped = false;
  const lose = (cause?: unknown): void => {
    if (lost.signal.aborted || stopped) return;
    options.onLost?.(cause);
    lost.abort(options.lost(cause));
  };
  const lapse = (): void =>
    lose(
      renewalError ??
        new UrsError('REDIS_UNAVAILABLE', `Redis answered no renewal of ${what} for ${leaseMs} ms`, {
          canRetry: true,
          infrastructure: true,
        }),
    );
  let timer: NodeJS.Timeout | undefined;
  /** Arms the lapse for when the hold's length has passed since the last renewal that held it. */
  const watch = (): void => {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(lapse, clock.remainingMs());
  };
  const stopRenewing = keepRenewing(
    async () => {
      const sentAt = clock.reading();
      const held = await options.renew();
      if (held && !lost.signal.aborted) {
        clock.confirmed(sentAt);
        renewalError = undefined;
        watch();
      }
      return held;
    },
    everyMs,
    {
      onLost: () => lose(),
      // Tried again at the next tick; the lapse decides when the hold may have lapsed meanwhile.
      onError: (error) => {
        renewalError = error;
        options.onRenewalError?.(error);
      },
    },
    { immediately: options.immediately ?? false },
  );
  watch();
  const held = (): boolean => {
    if (!lost.signal.aborted && !clock.held()) lapse();
    return !lost.signal.aborted;
  };
  return {
    signal: lost.signal,
    throwIfLost() {
      if (!held()) throw lost.signal.reason;
    },
    held,
    stop() {
      stopped = true;
      clearTimeout(timer);
      stopRenewing();
    },
  };
}

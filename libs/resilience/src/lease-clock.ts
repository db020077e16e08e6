/**
 * How long a holder surely holds a lease in Redis (a poller's on a tenant, a publisher replica's on a tenant),
 * by its own clock: the lease's length after it sent the last acquisition or renewal Redis confirmed. Redis set
 * the lease's expiry when that command arrived, so no earlier than this. Past it another holder may have taken
 * it: a renewal that fails with an error (a Redis away or refusing, a timeout) tells nothing of whether the lease
 * still stands, and the holder must do no more of the lease's work then.
 */
export interface LeaseClock {
  /** This clock's time now, ms: what a renewal about to be sent is confirmed with. */
  reading(): number;
  /** Redis confirmed an acquisition or renewal sent at `sentAt` (a `reading()`). */
  confirmed(sentAt: number): void;
  /** Whether the lease surely still stands now. */
  held(): boolean;
  /** How long, ms, the lease surely still stands from now; 0 once it may have lapsed. */
  remainingMs(): number;
}

/**
 * The clock leases are held by: monotonic, never stepped. By the wall clock (`Date.now()`), an NTP step of
 * ~20 s forward made every lease of the replica look lapsed and aborted all its work, and one backward let it
 * go on past its lease's end. Times shared by replicas (schedules, deadlines) stay on the wall clock.
 */
export const leaseTime = (): number => performance.now();

/**
 * `acquiredAt`: when the acquisition was sent, by `now`. `leaseMs`: the lease's length, ms. `now`: the clock,
 * `leaseTime` unless a test gives its own.
 */
export function createLeaseClock(
  acquiredAt: number,
  leaseMs: number,
  now: () => number = leaseTime,
): LeaseClock {
  let heldUntil = acquiredAt + leaseMs;
  return {
    reading: now,
    confirmed(sentAt) {
      heldUntil = Math.max(heldUntil, sentAt + leaseMs);
    },
    held: () => now() < heldUntil,
    remainingMs: () => Math.max(0, heldUntil - now()),
  };
}

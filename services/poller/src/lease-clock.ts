/**
 * How long this poller surely holds a tenant's lease, by its own clock: `leaseMs` after it sent the last
 * acquisition or renewal Redis confirmed. Redis set the lease's expiry when that command arrived, so no
 * earlier than this. Past it another poller may hold the tenant and redo its cycle: a renewal that fails with
 * an error (a Redis away or refusing, a timeout) tells nothing of whether the lease still stands, and the cycle
 * must emit no more batches then, or they come after the cycle was taken over and closed as partial.
 */
export interface LeaseClock {
  /** This clock's time now, ms: what a renewal about to be sent is confirmed with. */
  reading(): number;
  /** Redis confirmed an acquisition or renewal sent at `sentAt` (a `reading()`). */
  confirmed(sentAt: number): void;
  /** Whether the lease surely still stands now. */
  held(): boolean;
}

/**
 * The clock leases are held by: monotonic, never stepped. By the wall clock (`Date.now()`), an NTP step of
 * ~20 s forward made every lease of the replica look lapsed and aborted all its cycles, and one backward let a
 * cycle send batches past its lease's end. Schedule times stay on the wall clock: they are shared by replicas.
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
  };
}

/**
 * How long this poller surely holds a tenant's lease, by its own clock: `leaseMs` after it sent the last
 * acquisition or renewal Redis confirmed. Redis set the lease's expiry when that command arrived, so no
 * earlier than this. Past it another poller may hold the tenant and redo its cycle: a renewal that fails with
 * an error (a Redis away or refusing, a timeout) tells nothing of whether the lease still stands, and the cycle
 * must emit no more batches then, or they come after the cycle was taken over and closed as partial.
 */
export interface LeaseClock {
  /** Redis confirmed an acquisition or renewal sent at `sentAt` (epoch ms). */
  confirmed(sentAt: number): void;
  /** Whether the lease surely still stands now. */
  held(): boolean;
}

/** `acquiredAt`: when the acquisition was sent (epoch ms). `leaseMs`: the lease's length, ms. */
export function createLeaseClock(acquiredAt: number, leaseMs: number, now: () => number): LeaseClock {
  let heldUntil = acquiredAt + leaseMs;
  return {
    confirmed(sentAt) {
      heldUntil = Math.max(heldUntil, sentAt + leaseMs);
    },
    held: () => now() < heldUntil,
  };
}

/**
 * A poller's hold on one tenant while it runs a cycle. `token` is the fencing token: unique per
 * acquisition (a per-tenant counter plus the holder's id), so a holder whose lease expired (a long GC
 * pause, a Redis flush) can never renew, release or write the schedule of the next holder.
 */
export interface PollLease {
  tenantId: string;
  token: string;
}

/** The tenant's poll lease: a string holding its holder's token, with the lease's expiry (PX). */
export const pollLeaseKey = (prefix: string, tenantId: string): string => `${prefix}poll-lease:${tenantId}`;

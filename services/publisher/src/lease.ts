import { randomUUID } from 'node:crypto';
import type { Logger } from '@urs/logging';
import { UrsError, errorMessage, holdRenewed, leaseTime, sleep } from '@urs/resilience';
import { TenantLeaseLostError, type PublishedStore, type TenantLease } from '@urs/store';

/**
 * How long a tenant's lease lasts unless renewed: a replica that dies holding it holds back the tenant's
 * summaries on the other replicas' sweeps (and, after a rebalance, the tenant's batches) at most this long.
 */
const DEFAULT_TENANT_LEASE_MS = 10_000;

/** How often a replica asks again for a tenant's lease while another replica holds it, ms. */
const LEASE_WAIT_MS = 50;

/** This replica's leases on tenants (see `TenantLease`): its id as their holder, and their length. */
export type TenantLeasing = Omit<TenantLease, 'tenantId'>;

export function tenantLeasing(ttlMs = DEFAULT_TENANT_LEASE_MS): TenantLeasing {
  return { holder: randomUUID(), ttlMs };
}

/**
 * The hold a leased work has on its tenant (see `whileHeld`): it checks it before each send to Kafka and each
 * Redis step, so that once the lease may be another replica's the work writes nothing more of the tenant.
 */
export interface LeaseHeld {
  /** Aborts, with a `TenantLeaseLostError`, once the lease is lost or may have lapsed. */
  readonly signal: AbortSignal;
  /**
   * Throws that error once the lease is lost, or once its length has passed since the last renewal that held
   * it (told by the clock too, should the timer that aborts `signal` not have run yet).
   */
  throwIfLost(): void;
}

/**
 * Runs `work` on a lease already taken (its take asked at `takenAt`, a `leaseTime` reading), renewing it every
 * third of its length, so work that outlasts it (a broker failing over, a snapshot of a large fleet) keeps it.
 * Gives nothing back: the caller does.
 *
 * A renewal that finds the lease another's (or none) loses it. So does Redis not answering: a renewal that
 * fails, or that the client queues while Redis is away, holds nothing, and the lease counts as lost once its
 * length has passed since the last renewal that held it (or the take): by then another replica may have taken
 * it. That time is told by a monotonic clock (see `holdRenewed`): by the wall clock, an NTP step forward of the
 * lease's length failed every batch and summary under way with `TENANT_LEASE_LOST`, blamed on Redis. Either
 * way `held` aborts with a `TenantLeaseLostError` (its cause a Redis fault, when Redis did not answer), and the
 * work, checking it before each step, stops before its next send or write: it would otherwise send a tombstone
 * or a snapshot of a state another replica has changed since.
 */
export async function whileHeld<T>(
  published: Pick<PublishedStore, 'renewTenantLease'>,
  lease: TenantLease,
  takenAt: number,
  logger: Logger,
  work: (held: LeaseHeld) => Promise<T>,
): Promise<T> {
  const hold = holdRenewed({
    takenAt,
    leaseMs: lease.ttlMs,
    renew: () => published.renewTenantLease(lease),
    lost: (cause) => new TenantLeaseLostError(lease.tenantId, cause),
    what: 'the tenant lease',
    onLost: (cause) =>
      logger.warn('tenant lease lapsed while held: its work stops before its next step', {
        tenantId: lease.tenantId,
        ...(cause === undefined ? {} : { reason: errorMessage(cause) }),
      }),
    onRenewalError: (error) =>
      logger.warn('tenant lease not renewed', { tenantId: lease.tenantId, reason: errorMessage(error) }),
  });
  const held: LeaseHeld = { signal: hold.signal, throwIfLost: () => hold.throwIfLost() };
  try {
    return await work(held);
  } finally {
    hold.stop();
  }
}

/**
 * What `attempt` gives once it is not null, asking again every LEASE_WAIT_MS while it is (another replica
 * holds the tenant's lease: a batch it records, a summary its batch or sweep sends, a deletion it
 * tombstones). Throws a retryable error once `signal` aborted: the runner gave the message up, and whoever
 * handles it next asks.
 */
export async function onceLeased<T>(
  attempt: () => Promise<T | null>,
  signal: AbortSignal | undefined,
): Promise<T> {
  for (;;) {
    const result = await attempt();
    if (result !== null) return result;
    if (signal?.aborted)
      throw new UrsError('STOPPING', "the message was given up waiting for its tenant's lease", {
        canRetry: true,
      });
    await sleep(LEASE_WAIT_MS, signal);
  }
}

/**
 * What to do while another replica holds the tenant's lease: wait for it (asking again every LEASE_WAIT_MS,
 * until `signal` aborted, see `onceLeased`), or skip the work.
 */
export type WhenLeased = { wait: AbortSignal | undefined } | 'skip';

type LeaseCalls = Pick<PublishedStore, 'takeTenantLease' | 'renewTenantLease' | 'releaseTenantLease'>;

/**
 * Takes the tenant's lease, runs `work` while it is held (see `whileHeld`: `work` checks `held` before each
 * step), and gives it back, if still its own, even when `work` fails. Null, `work` not run, when another
 * replica holds the lease and `whenLeased` is 'skip'.
 */
export function withTenantLease<T>(
  published: LeaseCalls,
  lease: TenantLease,
  logger: Logger,
  whenLeased: { wait: AbortSignal | undefined },
  work: (held: LeaseHeld) => Promise<T>,
): Promise<T>;
export function withTenantLease<T>(
  published: LeaseCalls,
  lease: TenantLease,
  logger: Logger,
  whenLeased: WhenLeased,
  work: (held: LeaseHeld) => Promise<T>,
): Promise<T | null>;
export async function withTenantLease<T>(
  published: LeaseCalls,
  lease: TenantLease,
  logger: Logger,
  whenLeased: WhenLeased,
  work: (held: LeaseHeld) => Promise<T>,
): Promise<T | null> {
  let takenAt = leaseTime();
  const take = async (): Promise<true | null> => {
    takenAt = leaseTime();
    return (await published.takeTenantLease(lease)) ? true : null;
  };
  if (whenLeased === 'skip') {
    if (!(await take())) return null;
  } else {
    await onceLeased(take, whenLeased.wait);
  }
  try {
    return await whileHeld(published, lease, takenAt, logger, work);
  } finally {
    await published.releaseTenantLease(lease);
  }
}

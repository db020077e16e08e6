import { randomUUID } from 'node:crypto';
import type { Logger } from '@urs/logging';
import { UrsError, errorMessage, keepRenewing, sleep } from '@urs/resilience';
import type { PublishedStore, TenantLease } from '@urs/store';

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
 * Runs `work` on a lease already taken, renewing it every third of its length, so work that outlasts it
 * (a broker failing over, a snapshot of a large fleet) keeps it. Gives nothing back: the caller does.
 */
export async function whileHeld<T>(
  published: Pick<PublishedStore, 'renewTenantLease'>,
  lease: TenantLease,
  logger: Logger,
  work: () => Promise<T>,
): Promise<T> {
  const stopRenewing = keepRenewing(
    () => published.renewTenantLease(lease),
    Math.max(10, Math.floor(lease.ttlMs / 3)),
    {
      onLost: () => logger.warn('tenant lease lapsed while held', { tenantId: lease.tenantId }),
      onError: (error) =>
        logger.warn('tenant lease not renewed', { tenantId: lease.tenantId, reason: errorMessage(error) }),
    },
  );
  try {
    return await work();
  } finally {
    stopRenewing();
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
 * Takes the tenant's lease, runs `work` while it is held (see `whileHeld`), and gives it back, even when
 * `work` fails. Null, `work` not run, when another replica holds the lease and `whenLeased` is 'skip'.
 */
export function withTenantLease<T>(
  published: LeaseCalls,
  lease: TenantLease,
  logger: Logger,
  whenLeased: { wait: AbortSignal | undefined },
  work: () => Promise<T>,
): Promise<T>;
export function withTenantLease<T>(
  published: LeaseCalls,
  lease: TenantLease,
  logger: Logger,
  whenLeased: WhenLeased,
  work: () => Promise<T>,
): Promise<T | null>;
export async function withTenantLease<T>(
  published: LeaseCalls,
  lease: TenantLease,
  logger: Logger,
  whenLeased: WhenLeased,
  work: () => Promise<T>,
): Promise<T | null> {
  if (whenLeased === 'skip') {
    if (!(await published.takeTenantLease(lease))) return null;
  } else {
    await onceLeased(async () => ((await published.takeTenantLease(lease)) ? true : null), whenLeased.wait);
  }
  try {
    return await whileHeld(published, lease, logger, work);
  } finally {
    await published.releaseTenantLease(lease);
  }
}

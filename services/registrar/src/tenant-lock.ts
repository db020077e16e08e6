import { UrsError, sleep } from '@urs/resilience';
import type { RegistrarStateStore } from '@urs/store';

/** How long one write of a tenant holds its lock at most (a record to Kafka, then to Redis). */
const WRITE_LOCK_MS = 15_000;
/** How long a write waits for another writer of the same tenant before it fails (retryably). */
const WRITE_LOCK_WAIT_MS = 20_000;

/**
 * The stop cut the request before its write started: nothing was written. A write started after the stop
 * answered 503 would run while the publisher and Redis close, and could reach Kafka and not Redis.
 */
export class RequestCutError extends UrsError {
  constructor(tenantId: string, cause: unknown) {
    super('REQUEST_CUT', `the write of tenant ${tenantId} was not started: the service is stopping`, {
      canRetry: true,
      cause,
    });
  }
}

/** Throws `RequestCutError` once `signal` aborted: called right before a write starts. */
export function throwIfCut(tenantId: string, signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new RequestCutError(tenantId, signal.reason);
}

/**
 * Runs `work` under the tenant's write lock: what it reads of the record is still the record when it
 * writes (a Director push and a REST call of one tenant, on one replica or two, one after the other).
 * Waits up to 20 s for another writer (then `TENANT_BUSY`, retryable); a cut `signal` stops the wait.
 */
export type TenantLock = <T>(
  tenantId: string,
  signal: AbortSignal | undefined,
  work: () => Promise<T>,
) => Promise<T>;

export function createTenantLock(
  state: Pick<RegistrarStateStore, 'lockTenant' | 'unlockTenant'>,
): TenantLock {
  return async function locked<T>(
    tenantId: string,
    signal: AbortSignal | undefined,
    work: () => Promise<T>,
  ): Promise<T> {
    const deadline = Date.now() + WRITE_LOCK_WAIT_MS;
    throwIfCut(tenantId, signal);
    let token = await state.lockTenant(tenantId, WRITE_LOCK_MS);
    while (token === null) {
      throwIfCut(tenantId, signal);
      if (Date.now() >= deadline) {
        const message = `tenant ${tenantId} is being written by another request; try again`;
        throw new UrsError('TENANT_BUSY', message, { canRetry: true });
      }
      await sleep(5 + Math.floor(Math.random() * 20));
      token = await state.lockTenant(tenantId, WRITE_LOCK_MS);
    }
    try {
      return await work();
    } finally {
      await state.unlockTenant(tenantId, token);
    }
  };
}

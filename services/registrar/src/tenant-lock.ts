import { UrsError, errorCode, holdRenewed, leaseTime, sleep } from '@urs/resilience';
import type { RegistrarStateStore } from '@urs/store';

/**
 * How long a tenant's write lock lasts unless renewed: a replica that dies holding it holds the tenant's
 * writes back at most this long. Renewed every third of it while the write runs (a record to Kafka, then to
 * Redis), so a slow produce (a broker failing over, the producer's retries) keeps it.
 */
const WRITE_LOCK_MS = 15_000;
/** How long a write waits for another writer of the same tenant before it fails (retryably). */
const WRITE_LOCK_WAIT_MS = 20_000;

export interface TenantLockOptions {
  /** The lock's length, renewed every third of it while the work runs. Default 15 s. */
  lockMs?: number;
  /** How long a write waits for another writer before `TENANT_BUSY`. Default 20 s. */
  waitMs?: number;
}

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

/**
 * The write's lock lapsed before the write was done: its renewal found another holder (or none), or could
 * not reach Redis for the lock's length (then `cause` is Redis's error, an infrastructure fault). Another
 * writer may be writing the tenant: the write stopped before its next step, so it writes nothing of an older
 * revision after a newer one. Retryable: written again, it gets a newer revision. `sentTo`: the topic its
 * record already went to (it cannot be recalled), so the message says the change may have been applied.
 */
export class TenantLockLostError extends UrsError {
  /** Whether the write's record was already sent (to `sentTo`): then it may have been applied. */
  readonly sent: boolean;
  constructor(tenantId: string, cause?: unknown, sentTo?: string) {
    const lapsed = `the write lock of tenant ${tenantId} lapsed before its write was done`;
    super(
      'TENANT_LOCK_LOST',
      sentTo === undefined
        ? `${lapsed}; try again`
        : `${lapsed}, its record already sent to ${sentTo}, where it cannot be recalled: the change may ` +
            'have been applied; read the tenant back before trying again',
      { canRetry: true, ...(cause === undefined ? {} : { cause }) },
    );
    this.sent = sentTo !== undefined;
  }
}

/** How a failed write is said to have ended: not applied, unless its record was already sent. */
export function notApplied(error: unknown): string {
  return error instanceof TenantLockLostError && error.sent ? 'perhaps applied' : 'not applied';
}

/** Throws `RequestCutError` once `signal` aborted: called right before a write starts. */
export function throwIfCut(tenantId: string, signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new RequestCutError(tenantId, signal.reason);
}

/**
 * Throws the `TenantLockLostError` `held` aborted with, once the lock was lost: called before each write of
 * a locked work (to Kafka, to Redis).
 */
export function throwIfLost(held: AbortSignal): void {
  if (held.aborted) throw held.reason;
}

/**
 * `throwIfLost` once the write's record went to `topic`: the `TenantLockLostError` (its cause kept) then says
 * the change may have been applied.
 */
export function throwIfLostAfterSend(held: AbortSignal, tenantId: string, topic: string): void {
  if (held.aborted) throw new TenantLockLostError(tenantId, (held.reason as Error).cause, topic);
}

/**
 * Whether `error` says another writer holds (or took) the tenant: `TENANT_BUSY` (its lock held past the
 * wait) or `TENANT_LOCK_LOST`. Nothing of the write was written after; trying again may succeed.
 */
export function isTenantContention(error: unknown): boolean {
  const code = errorCode(error);
  return code === 'TENANT_BUSY' || code === 'TENANT_LOCK_LOST';
}

/**
 * Runs `work` under the tenant's write lock: what it reads of the record is still the record when it
 * writes (a Director push and a REST call of one tenant, on one replica or two, one after the other).
 * Waits up to 20 s for another writer (then `TENANT_BUSY`, retryable); a cut `signal` stops the wait.
 * The lock is renewed while `work` runs; once a renewal finds it lost, `held` aborts with a
 * `TenantLockLostError`, and `work` checks it before each write (`throwIfLost`).
 */
export type TenantLock = <T>(
  tenantId: string,
  signal: AbortSignal | undefined,
  work: (held: AbortSignal) => Promise<T>,
) => Promise<T>;

export function createTenantLock(
  state: Pick<RegistrarStateStore, 'lockTenant' | 'renewTenantLock' | 'unlockTenant'>,
  options: TenantLockOptions = {},
): TenantLock {
  const lockMs = options.lockMs ?? WRITE_LOCK_MS;
  const waitMs = options.waitMs ?? WRITE_LOCK_WAIT_MS;
  return async function locked<T>(
    tenantId: string,
    signal: AbortSignal | undefined,
    work: (held: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const deadline = Date.now() + waitMs;
    throwIfCut(tenantId, signal);
    let askedAt = leaseTime();
    let token = await state.lockTenant(tenantId, lockMs);
    while (token === null) {
      throwIfCut(tenantId, signal);
      if (Date.now() >= deadline) {
        const message = `tenant ${tenantId} is being written by another request; try again`;
        throw new UrsError('TENANT_BUSY', message, { canRetry: true });
      }
      await sleep(5 + Math.floor(Math.random() * 20));
      askedAt = leaseTime();
      token = await state.lockTenant(tenantId, lockMs);
    }
    const owned = token;
    /**
     * The lock lasts `lockMs` from when the last renewal that found it held (or the take) was asked, told by a
     * monotonic clock: by the wall clock, an NTP step forward of the lock's length failed every write under way
     * with `TENANT_LOCK_LOST`, blamed on Redis. A renewal that fails, or that Redis does not answer (the client
     * queues it while Redis is away), holds nothing: the lock counts as lost once `lockMs` passed since the last
     * renewal that held it, a fault of Redis.
     */
    const hold = holdRenewed({
      takenAt: askedAt,
      leaseMs: lockMs,
      renew: () => state.renewTenantLock(tenantId, owned, lockMs),
      lost: (cause) => new TenantLockLostError(tenantId, cause),
      what: 'the lock',
    });
    try {
      return await work(hold.signal);
    } finally {
      hold.stop();
      await state.unlockTenant(tenantId, owned);
    }
  };
}

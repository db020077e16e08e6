import type { DeviceBatch, TenantRecord } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { tenantsNotRebuilt, type TenantStore } from '@urs/store';
import type { FetchError } from './enrichment';
import { sleepUntil, throwIfStopping } from './interruption';
import { isTenantWideCode } from './sources';

export interface TenantStateDeps {
  tenants: Pick<TenantStore, 'lookup' | 'updatePollingStatus'>;
  /** How long a batch waits for a missing tenant record, in milliseconds (see EnrichHandlerDeps). Default 30000. */
  tenantWaitMs?: number;
  /** Pause between two looks for a missing tenant record, in milliseconds. Default 1000. */
  tenantPollMs?: number;
  now: () => Date;
}

/** What the handler knows of a batch's tenant beyond its batch. */
export interface TenantState {
  /**
   * The batch's tenant record, waited for up to `tenantWaitMs` when the rebuilt tenant store does not hold it
   * (the registrar sends a record to `urs.tenants` before it writes it to Redis). Null when it is still missing:
   * the tenant was deleted during the cycle. Fails with TENANTS_NOT_REBUILT (retryable, an infrastructure
   * fault: the bus holds the batch) when the record is missing while the store is not rebuilt (`lookup`): Redis
   * lost its data and the registrar has not written the records back, which says nothing of the tenant.
   */
  record(
    batch: DeviceBatch,
    cycleKey: string,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<{ record: TenantRecord | null; waitedMs: number }>;
  /**
   * The failure of the whole tenant an earlier batch of the cycle (`tenantId/cycleId`) met, if any, while it
   * holds: for the rest of the cycle when it is the tenant's setup's, for `OUTAGE_HOLD_BACK_MS` when it is an
   * outage of its API; and only while the tenant's record (`revision`, the batch's) is the one it was met
   * with: a record an administrator has changed since (a new secret, consent granted) is asked with again.
   */
  failureOf(cycleKey: string, revision: number): FetchError | undefined;
  /**
   * Writes a failure of the whole tenant to its status, then remembers it for the cycle's later batches (not
   * when the write fails: the batch fails with it, and its next try meets the failure again): a failure of
   * its setup (`isTenantWideCode`: credentials, consent, its stored secret) for the rest of the cycle, which
   * no call mends until an administrator acts; an outage (calls failing in a row, throttled, held back by the
   * Defender client) for `OUTAGE_HOLD_BACK_MS`, after which the cycle's next batch asks again.
   */
  failed(
    batch: DeviceBatch,
    cycleKey: string,
    revision: number,
    error: FetchError,
    log: Logger,
  ): Promise<void>;
}

/**
 * The cycles (`tenantId/cycleId`) remembered of each kind (tenant-wide failures, so later batches of the
 * cycle do not call again; records missing; calls answered), the oldest let go beyond it.
 */
const REMEMBERED_CYCLES = 1000;

/** Lets the oldest of `cycles` go once they are more than `REMEMBERED_CYCLES`. */
export function forgetOldestCycle(cycles: Map<string, unknown> | Set<string>): void {
  if (cycles.size <= REMEMBERED_CYCLES) return;
  const oldest = cycles.keys().next().value;
  if (oldest !== undefined) cycles.delete(oldest);
}

/**
 * How long an outage of a tenant's Defender API stops its cycle's calls, in milliseconds: the Defender
 * client's own hold-back of a tenant whose calls keep failing (CallHealth's `holdBackMs`), sooner than which
 * a call would only meet it. Not a wait: the batches that come meanwhile go on without vulnerabilities at
 * once, so the tenant's partition (other tenants' batches too) is not held up; the first batch after it
 * calls again, and a cycle whose outage passed gets the vulnerabilities of its later batches.
 */
export const OUTAGE_HOLD_BACK_MS = 30_000;

/**
 * A failure of the whole tenant remembered for its cycle, met with the tenant record's `revision`: until
 * `until` (epoch ms) when it is an outage.
 */
interface RememberedFailure {
  error: FetchError;
  revision: number;
  until?: number;
}

export function createTenantState(deps: TenantStateDeps): TenantState {
  const { now } = deps;
  const failedCycles = new Map<string, RememberedFailure>();
  /**
   * The cycles (`tenantId/cycleId`) whose tenant record stayed missing for a whole `tenantWaitMs`: their
   * later batches look once and do not wait again (a deleted tenant's cycle would wait once per batch).
   */
  const missingRecords = new Set<string>();

  /** The tenant's record, null when missing from a rebuilt store; TENANTS_NOT_REBUILT when it is not rebuilt. */
  async function lookup(tenantId: string): Promise<TenantRecord | null> {
    const { record, rebuilt } = await deps.tenants.lookup(tenantId);
    if (record === null && !rebuilt) throw tenantsNotRebuilt(tenantId);
    return record;
  }

  async function tenantRecord(
    batch: DeviceBatch,
    cycleKey: string,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<{ record: TenantRecord | null; waitedMs: number }> {
    const found = await lookup(batch.tenantId);
    if (found !== null || missingRecords.has(cycleKey)) return { record: found, waitedMs: 0 };
    const waitMs = deps.tenantWaitMs ?? 30_000;
    const started = Date.now();
    log.warn('tenant record missing from Redis: waiting for the registrar to write it', {
      code: 'TENANT_UNKNOWN',
      waitMs,
    });
    while (Date.now() - started < waitMs) {
      await sleepUntil(Math.min(deps.tenantPollMs ?? 1_000, waitMs - (Date.now() - started)), signal);
      throwIfStopping(signal);
      const record = await lookup(batch.tenantId);
      if (record !== null) {
        log.info('tenant record back in Redis', { waitedMs: Date.now() - started });
        return { record, waitedMs: Date.now() - started };
      }
    }
    missingRecords.add(cycleKey);
    forgetOldestCycle(missingRecords);
    return { record: null, waitedMs: Date.now() - started };
  }

  function rememberFailure(key: string, revision: number, error: FetchError): void {
    const setup = isTenantWideCode(error.code);
    failedCycles.set(
      key,
      setup ? { error, revision } : { error, revision, until: now().getTime() + OUTAGE_HOLD_BACK_MS },
    );
    forgetOldestCycle(failedCycles);
  }

  async function reportTenantFailure(batch: DeviceBatch, error: FetchError, log: Logger): Promise<void> {
    log.warn('tenant vulnerabilities unavailable', { code: error.code, reason: error.message });
    // Of this cycle: the poller, ending the cycle's listing after it, leaves it (`cycleListed`).
    await deps.tenants.updatePollingStatus(batch.tenantId, {
      state: 'error',
      lastErrorCode: error.code,
      lastErrorMessage: error.message,
      lastErrorAt: now().toISOString(),
      lastErrorCycleId: batch.cycleId,
    });
  }

  function failureOf(cycleKey: string, revision: number): FetchError | undefined {
    const remembered = failedCycles.get(cycleKey);
    if (remembered === undefined) return undefined;
    const over = remembered.until !== undefined && now().getTime() >= remembered.until;
    if (over || revision > remembered.revision) {
      failedCycles.delete(cycleKey);
      return undefined;
    }
    return remembered.error;
  }

  return {
    record: tenantRecord,
    failureOf,
    async failed(batch, cycleKey, revision, error, log) {
      // Remembered only once written: a write Redis refuses (READONLY, OOM) fails the batch, held by the bus,
      // and its next try must meet the failure again and write it. Remembered first, the next try would send
      // the devices on without vulnerabilities and the status would never say why (a bulk export refused for
      // missing consent is seen by no other stage).
      await reportTenantFailure(batch, error, log);
      rememberFailure(cycleKey, revision, error);
    },
  };
}

import type { TenantRecord } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import type { RegistrarStateStore, TenantStatus, TenantStore } from '@urs/store';
import { throwIfLost } from './tenant-lock';
import { listedViolations, refusalMessage, type Violation } from './validation';

/**
 * A tenant's refused registrations, as its status keeps them (`registrationError`): recorded when one is refused,
 * cleared when the registration in force is sent again, ended when Director no longer registers the tenant.
 * The registry's part that writes no record: each function runs under the tenant's write lock (`held`), which
 * the registry (`createTenantRegistry`) takes.
 */

/**
 * What a refused registration did to the tenant's status: `recorded`, a refusal new to it; `recorded-before`,
 * the status held this refusal already (the same source and generation: the same push handled again);
 * `not-recorded`, the status was left alone (see `TenantRegistry.reject`).
 */
export type RefusalRecord = 'recorded' | 'recorded-before' | 'not-recorded';

/**
 * Why a valid registration was not applied (a Director push's entry whose write failed for the tenant's own
 * reason: its lock held by another writer past every attempt, a secret that could not be sealed): its status
 * says so as it says a refusal, with the failure's code and message and no violations. Never a value.
 */
export interface RegistrationFailure {
  code: string;
  message: string;
}

/**
 * Who sent the registration (the registry's `RegistrationOrigin`): a record's source and generation, and when
 * Director's push of that generation was first handled.
 */
type RegistrationOrigin = Pick<TenantRecord, 'source' | 'generation'> & { pushStartedAt?: Date };

export interface TenantRefusalsDeps {
  tenants: TenantStore;
  state: RegistrarStateStore;
  /** The registry's own: a refusal's lines are the registry's. */
  log: Logger;
  now: () => Date;
}

/**
 * Whether a Director write of `origin` leaves the tenant's record `current` as it is: an administrator wrote it
 * over REST after the push of `origin.generation` was first handled (`updatedAt` at or after
 * `origin.pushStartedAt`, both read from Redis's clock, so the replicas' own clocks do not enter), or after
 * that generation (or a newer one) wrote the tenant (a REST write keeps the `generation` of Director's last
 * write: what tells it when the push's start is not known, say Redis was wiped since). A push handled again,
 * held midway for a fault or delivered again after a restart, must not undo what was changed since it began;
 * a REST record written before, it writes over (or disables) as the first handling would have. Decided per
 * tenant, each time the push reaches it.
 */
export function restRecordKept(current: TenantRecord | null, origin: RegistrationOrigin): boolean {
  if (current?.source !== 'rest' || origin.source !== 'director') return false;
  const { pushStartedAt } = origin;
  if (pushStartedAt !== undefined && Date.parse(current.updatedAt) >= pushStartedAt.getTime()) return true;
  return origin.generation !== undefined && (current.generation ?? -1) >= origin.generation;
}

/** What the registry asks of a tenant's refusals; each is documented where it is made, below. */
export interface TenantRefusals {
  deletedByAdministrator(tenantId: string, generation: number): Promise<boolean>;
  clearRefusal(current: TenantRecord, held: AbortSignal, status?: TenantStatus): Promise<void>;
  clearDirectorRefusal(
    current: TenantRecord,
    generation: number | undefined,
    held: AbortSignal,
  ): Promise<void>;
  /** `TenantRegistry.reject`, under the tenant's lock `held`. */
  reject(
    tenantId: string,
    reason: Violation[] | RegistrationFailure,
    origin: RegistrationOrigin,
    held: AbortSignal,
  ): Promise<RefusalRecord>;
  /** `TenantRegistry.endRefusal`, under the tenant's lock `held`. */
  endRefusal(
    tenantId: string,
    origin: RegistrationOrigin & { generation: number },
    held: AbortSignal,
  ): Promise<boolean>;
}

/** See `TenantRegistry.reject` and `TenantRegistry.endRefusal` for what a refusal does to a tenant. */
export function createTenantRefusals(deps: TenantRefusalsDeps): TenantRefusals {
  const { now, log } = deps;
  return { deletedByAdministrator, clearRefusal, clearDirectorRefusal, reject, endRefusal };

  /**
   * A registration refused before, now sent again as the record already has it: the status no longer
   * says it was refused (the registration in force is the one sent). A status that still says so as its
   * state (written before the refusal had fields of its own) gets the record's state back. `read`: the
   * tenant's status when the caller read it already.
   */
  async function clearRefusal(current: TenantRecord, held: AbortSignal, read?: TenantStatus): Promise<void> {
    const status = read ?? (await deps.tenants.getStatus(current.tenantId));
    const stateSaysRefused = status.state === 'registration-rejected';
    if (!status.registrationError && !stateSaysRefused) return;
    throwIfLost(held);
    await deps.tenants.updateStatus(current.tenantId, {
      registrationError: null,
      ...(stateSaysRefused
        ? {
            state: current.enabled ? 'active' : 'disabled',
            lastErrorCode: null,
            lastErrorMessage: null,
            lastErrorAt: null,
            lastErrorCycleId: null,
          }
        : {}),
    });
  }

  /**
   * Clears a refusal of Director's from the tenant's status, unless a newer push than `generation` (handled
   * meanwhile on another replica) refused it: that refusal stands.
   */
  async function clearDirectorRefusal(
    current: TenantRecord,
    generation: number | undefined,
    held: AbortSignal,
  ): Promise<void> {
    const refusal = (await deps.tenants.getStatus(current.tenantId)).registrationError;
    if (refusal?.source !== 'director') return;
    if (generation !== undefined && (refusal.generation ?? -1) > generation) return;
    await clearRefusal(current, held);
  }

  /**
   * Whether an administrator deleted the tenant over REST while Director's `generation` or a newer one was in
   * force, and nothing registered it since: that generation must not bring it back.
   */
  async function deletedByAdministrator(tenantId: string, generation: number): Promise<boolean> {
    return (
      (await deps.state.deletionGeneration(tenantId)) >= generation &&
      (await deps.tenants.get(tenantId)) === null
    );
  }

  async function reject(
    tenantId: string,
    reason: Violation[] | RegistrationFailure,
    origin: RegistrationOrigin,
    held: AbortSignal,
  ): Promise<RefusalRecord> {
    if (origin.generation !== undefined && (await deletedByAdministrator(tenantId, origin.generation)))
      return 'not-recorded';
    const current = await deps.tenants.get(tenantId);
    if (restRecordKept(current, origin)) return 'not-recorded';
    // Fields of its own: the poller's cycle bookkeeping rewrites `state` and `lastError*` after each cycle,
    // and a refused update (a rotated secret refused, the old one still polling) must stay in sight.
    const registrationError = {
      ...(Array.isArray(reason)
        ? {
            code: 'REGISTRATION_INVALID',
            message: refusalMessage(reason),
            // The first ones, as the message lists them (`MAX_VIOLATIONS_LISTED`): it counts the others.
            violations: listedViolations(reason).map(({ field, rule }) => ({ field, rule })),
          }
        : { code: reason.code, message: reason.message, violations: [] }),
      at: now().toISOString(),
      source: origin.source,
      ...(origin.generation === undefined ? {} : { generation: origin.generation }),
    };
    throwIfLost(held);
    const isNew = await deps.tenants.recordRefusal(tenantId, registrationError, {
      rejected: current === null,
    });
    return isNew ? 'recorded' : 'recorded-before';
  }

  async function endRefusal(
    tenantId: string,
    origin: RegistrationOrigin & { generation: number },
    held: AbortSignal,
  ): Promise<boolean> {
    if ((await deps.tenants.get(tenantId)) !== null) return false;
    const status = await deps.tenants.getStatus(tenantId);
    const refusal = status.registrationError;
    if (status.state !== 'registration-rejected' || refusal?.source !== 'director') return false;
    // Refused by a newer push than this one (handled meanwhile on another replica): that refusal stands.
    if ((refusal.generation ?? -1) > origin.generation) return false;
    // No record: nothing on urs.tenants to end, only the status in Redis.
    throwIfLost(held);
    await deps.tenants.remove(tenantId);
    log.info('refused tenant left out of a full push: its status ended', {
      tenantId,
      generation: origin.generation,
      refusedIn: refusal.generation,
    });
    return true;
  }
}

import type { Publisher } from '@urs/bus';
import {
  TENANT_GENERATION_HEADER,
  TENANT_REVISION_HEADER,
  type TenantRecord,
  type TenantRegistration,
} from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { errorMessage } from '@urs/resilience';
import { canonicalJson } from '@urs/scoring';
import type { SecretSealer } from '@urs/secrets';
import type { PollScheduleStore, RegistrarStateStore, TenantStore } from '@urs/store';
import { forEachLimit } from './concurrency';
import { openKeptSecret, sameSecret, secretToWrite } from './record-secret';
import {
  createTenantRefusals,
  restRecordKept,
  type RefusalRecord,
  type RegistrationFailure,
} from './refusals';
import {
  createTenantLock,
  throwIfCut,
  type TenantLock,
  throwIfLost,
  throwIfLostAfterSend,
  type TenantLockOptions,
} from './tenant-lock';
import type { TenantLogEntry } from './rebuild';
import type { Violation } from './validation';

export interface RegistrationOrigin {
  source: 'director' | 'rest';
  /** Director's generation, for pushes. */
  generation?: number;
  /**
   * When Director's push of `generation` was first handled (`RegistrarStateStore.pushStarted`): a REST record
   * written since is left as it is (`restRecordKept`).
   */
  pushStartedAt?: Date;
}

export interface RegisterOptions {
  /**
   * Keep the secret of the tenant's record as it is when written (a REST update that left `clientSecret`
   * out): read under the tenant's write lock, so a secret rotated meanwhile is the one kept. A tenant
   * deleted meanwhile has none to keep: `TenantGoneError`. A stored secret this registrar's keys do not
   * open cannot be kept: the sealer's `SecretError`; nor one of another app than the registration names
   * (`switchesApp`): `SecretForOtherAppError`.
   */
  keepSecret?: boolean;
  /**
   * Write nothing when the tenant's record already says the same (Director's repeated full pushes, a REST
   * client retrying its PUT): no new revision, and the tenant's status (its last error) stays. A write of
   * the other source than the record's is always a change: REST over Director's makes the tenant the
   * administrator's, Director over REST (a REST record not kept, see `restRecordKept`) makes it Director's again.
   */
  skipIfUnchanged?: boolean;
  /**
   * The REST request's signal: once it aborted (the stop cut the request and answered it 503), the write
   * does not start (`RequestCutError`). Checked under the tenant's lock, before the record goes to Kafka.
   */
  signal?: AbortSignal;
}

export interface TenantRegistry {
  /** Seals the secret, assigns a revision, writes the record to `urs.tenants`, then to Redis. */
  register(
    registration: TenantRegistration,
    origin: RegistrationOrigin,
    options?: RegisterOptions,
  ): Promise<{ record: TenantRecord; changed: boolean; created: boolean }>;
  /**
   * Director's registration of a tenant of the push of `origin.generation`: `register`, unless an
   * administrator deleted the tenant over REST while that generation or a newer one was in force (its push
   * begun, see `generationInForce`), also before this push reached the tenant. Then
   * nothing is written (`record` null): the generation delivered again must not undo the deletion, as
   * it does not undo a REST update (`restRecordKept`). A newer generation listing it registers it again.
   */
  registerUnlessDeleted(
    registration: TenantRegistration,
    origin: RegistrationOrigin & { generation: number },
    options?: RegisterOptions,
  ): Promise<{ record: TenantRecord | null; changed: boolean }>;
  /**
   * A new revision with `enabled: false` and the reason; null when the tenant is unknown, already
   * disabled, or its record (read under the tenant's write lock) does not pass `onlyIf`. A tenant disabled
   * now or before (and passing `onlyIf`) loses its `registrationError`: the update refused before is
   * overtaken by the decision to disable it. One that does not pass `onlyIf` (an administrator's record a
   * Director `full` push left out) is left enabled, but loses a refusal of Director's when `origin` is
   * Director's, unless a newer generation than `origin`'s refused it.
   */
  disable(
    tenantId: string,
    reason: string,
    origin: RegistrationOrigin,
    onlyIf?: (current: TenantRecord) => boolean,
  ): Promise<TenantRecord | null>;
  /**
   * A tombstone on `urs.tenants` (with the deletion's revision and the Director generation in force) and
   * the record gone from Redis; false when the tenant is unknown.
   */
  remove(tenantId: string, options?: { signal?: AbortSignal }): Promise<boolean>;
  /**
   * Reports a refused registration in the tenant's status (`registrationError`), until a registration of
   * the tenant is accepted: what polls the tenant leaves it there. A registered tenant keeps its record and
   * its polling state; one without a record is `registration-rejected`. Under the tenant's write lock, so
   * a registration written meanwhile is not marked refused. Nothing is reported (`not-recorded`) where the
   * registration, had it been valid, would have left the tenant as it is: a record an administrator wrote
   * over REST since the push began (`restRecordKept`), a tenant an administrator deleted (see `registerUnlessDeleted`).
   * `recorded-before`: the status held the refusal of this source and generation already. `reason`: the
   * violations, or the failure of a valid registration (`RegistrationFailure`), reported the same way.
   */
  reject(
    tenantId: string,
    reason: Violation[] | RegistrationFailure,
    origin: RegistrationOrigin,
  ): Promise<RefusalRecord>;
  /**
   * Ends the status of a tenant with no record whose registration Director refused (`registration-rejected`):
   * a `full` push of `origin.generation` left it out, so Director no longer registers it and the refusal
   * describes nothing pending (as `disable` clears the refusal of a tenant with a record). The status is
   * removed: the tenant is unknown, as before its first registration. False, and nothing done, when the
   * tenant has a record (read under its write lock), its status is not `registration-rejected`, or its
   * refusal is not Director's (an administrator's, like a record written over REST, is not Director's to
   * end) or is of a newer generation than `origin`'s.
   */
  endRefusal(tenantId: string, origin: RegistrationOrigin & { generation: number }): Promise<boolean>;
  /**
   * Re-seals the tenant's stored secret with the active key when it is sealed with a retired one (read
   * under the tenant's write lock: another replica may have done it meanwhile): a new revision of the record
   * that is the same in all else (source, generation, enabled, settings, `updatedAt`). Its status (the last
   * error) stays, and a failure of the old revision is carried onto the new one, so the pollers do not poll
   * it early. `current`: nothing to re-seal (already under the active key, or deleted); `polling`: a poller
   * holds the tenant (see `PollScheduleStore.carryFailure`), nothing written: try again later. A secret
   * this registrar's keys do not open throws the sealer's `SecretError`.
   */
  reseal(
    tenantId: string,
  ): Promise<
    { outcome: 'resealed'; record: TenantRecord; fromKeyId: string } | { outcome: 'current' | 'polling' }
  >;
  /**
   * Brings Redis up to `urs.tenants`: of `entries` (the last word of the topic on each tenant, `readTenantLog`),
   * each newer than the tenant's record in Redis is applied as its write would have been (`catchUpPending`).
   * What a write sent to Kafka and could not store (a kill between the two, Redis failing after the send)
   * is found so at the next start.
   */
  catchUp(entries: readonly TenantLogEntry[]): Promise<CatchUpResult>;
  /**
   * Stores what this registrar sent to `urs.tenants` and did not get into Redis (and what `catchUp` found
   * behind), each under its tenant's write lock: a record (or a deletion) newer than Redis's is applied as its
   * write would have applied it, and a record stored whose status or schedule step failed gets those steps. A
   * record older than the tenant's deletion is not stored (`TenantStore.put`). One that fails stays to catch
   * up, tried again at the next call and before the next write of its tenant. Never rejects.
   */
  catchUpPending(): Promise<CatchUpResult>;
}

/**
 * An entry of `urs.tenants` Redis is behind on. `recordStored`: its record (or its deletion) is in Redis, the
 * steps its write takes after it (the schedule's clear, the status's update) are not: only those are left.
 */
type PendingEntry = TenantLogEntry & { recordStored?: true };

/** What a catch-up of Redis to `urs.tenants` did: entries applied, and those still to catch up. */
export interface CatchUpResult {
  applied: number;
  pending: number;
}

export interface TenantRegistryDeps {
  tenants: TenantStore;
  state: RegistrarStateStore;
  publisher: Publisher;
  tenantsTopic: string;
  sealer: SecretSealer;
  /**
   * Whether the active key is proven right (`DirectorSide.activeKeyProven`): until it is, a write that brings
   * a secret sealed with a retired key unchanged keeps it sealed as it is. Default: always.
   */
  activeKeyProven?: () => Promise<boolean>;
  /**
   * The pollers' schedules: forgotten when a tenant is disabled or deleted, so that enabling or
   * registering it again polls at once instead of one interval after its last cycle. A re-sealed
   * secret carries the tenant's failure onto the new revision instead (`reseal`).
   */
  schedules: Pick<PollScheduleStore, 'clear' | 'carryFailure'>;
  logger: Logger;
  /**
   * The time a refusal is recorded at (`registrationError.at`). Not a record's `updatedAt`: that is Redis's
   * time when its revision is assigned (`RegistrarStateStore.nextRevisionStamp`), one clock for every
   * replica, as it is compared with when a push began (`restRecordKept`).
   */
  now?: () => Date;
  /** The tenants' write lock's length and wait (see `createTenantLock`). */
  writeLock?: TenantLockOptions;
}

type StatusUpdate = Parameters<TenantStore['updateStatus']>[1];

/** The status a disabled tenant gets from `disable`: not polled, no next poll time, no refusal pending. */
const DISABLED_STATUS: StatusUpdate = { state: 'disabled', nextPollAt: null, registrationError: null };

/** The status a record written by `register` starts: no error, no refusal pending. */
function writtenStatus(record: TenantRecord): StatusUpdate {
  return {
    state: record.enabled ? 'active' : 'disabled',
    // A disabled tenant is not polled: no next poll time in its status, as `disable` leaves it.
    ...(record.enabled ? {} : { nextPollAt: null }),
    lastErrorCode: null,
    lastErrorMessage: null,
    lastErrorAt: null,
    lastErrorCycleId: null,
    registrationError: null,
  };
}

/** Whether two records say the same thing (ignoring revision, time, origin; the secrets compared opened). */
function sameSettings(
  current: TenantRecord,
  next: Omit<TenantRecord, 'defender'> & { defender: Omit<TenantRecord['defender'], 'clientSecret'> },
  secretMatches: boolean,
): boolean {
  const { clientSecret: _sealed, ...currentDefender } = current.defender;
  return (
    secretMatches &&
    current.enabled === next.enabled &&
    (current.disabledReason ?? null) === (next.disabledReason ?? null) &&
    canonicalJson(currentDefender) === canonicalJson(next.defender)
  );
}

/**
 * The one way a tenant record is made, for both doors (Director and REST). Kafka first, Redis second:
 * `urs.tenants` is the durable record; a failed produce leaves nothing behind and the caller is told to retry.
 * A record (or deletion) that reached Kafka but not Redis (Redis failing after the send, the lock lost, the
 * process killed between the two) is caught up: kept in memory and stored again (`catchUpPending`, before the
 * tenant's next write and every URS_REBUILD_CHECK_MS), and, for a process that died, by the next start's
 * read of `urs.tenants` (`catchUp`). Until then the pollers, which read Kafka, and Redis disagree.
 */
export function createTenantRegistry(deps: TenantRegistryDeps): TenantRegistry {
  const now = deps.now ?? (() => new Date());
  const log = deps.logger.child({ component: 'registry' });
  const lock = createTenantLock(deps.state, deps.writeLock);
  /**
   * What this registrar sent to `urs.tenants` and has not stored in Redis yet (and what `catchUp` found Redis
   * behind on), by tenant: the last entry sent. Dropped once stored with the steps its write takes after it
   * (the schedule's clear, the status's update), or once Redis holds as new a revision.
   */
  const pending = new Map<string, PendingEntry>();
  /** The tenant's write lock, under which its pending entry is stored first: the write reads Redis after it. */
  const locked: TenantLock = (tenantId, signal, work) =>
    lock(tenantId, signal, async (held) => {
      const entry = pending.get(tenantId);
      if (entry) await catchUpEntry(entry, held);
      return work(held);
    });
  const { deletedByAdministrator, clearRefusal, clearDirectorRefusal, reject, endRefusal } =
    createTenantRefusals({ tenants: deps.tenants, state: deps.state, log, now });

  /**
   * The record to Kafka, then to Redis, each while the tenant's lock is `held`: a write whose lock was lost
   * stops before its next step (`TenantLockLostError`), so it lands no older revision after a newer one. Lost
   * once the record was sent, the error says the change may have been applied (`lostAfterSend`). The entry
   * returned stays to catch up until the caller's steps after the record (schedule, status) are done: `stored`.
   */
  async function write(record: TenantRecord, held: AbortSignal): Promise<PendingEntry> {
    throwIfLost(held);
    await deps.publisher.send(deps.tenantsTopic, 'urs/tenant-record', [
      { key: record.tenantId, value: record },
    ]);
    const sent = sentAhead({ tenantId: record.tenantId, record });
    lostAfterSend(record.tenantId, held);
    await deps.tenants.put(record);
    return recordStored(sent);
  }

  /** An entry on `urs.tenants` that Redis does not have yet: to catch up until `stored`. */
  function sentAhead(entry: PendingEntry): PendingEntry {
    pending.set(entry.tenantId, entry);
    return entry;
  }

  /** The entry's record (or deletion) is in Redis, the steps after it not yet (see `PendingEntry`). */
  function recordStored(entry: PendingEntry): PendingEntry {
    const next: PendingEntry = { ...entry, recordStored: true };
    if (pending.get(entry.tenantId) === entry) pending.set(entry.tenantId, next);
    return next;
  }

  function stored(entry: PendingEntry): void {
    if (pending.get(entry.tenantId) === entry) pending.delete(entry.tenantId);
  }

  /**
   * Applies `entry` of `urs.tenants` to Redis as its write would have, if it is newer than the tenant's record
   * there (see `catchUpPending`); under the tenant's lock, checked again after each write to Redis (as `write`
   * does): a catch-up that lost its lock stops there, and writes no status over a newer write's. What it
   * stored stays to catch up (`recordStored`) until the steps after it are done. True when something was written.
   */
  async function catchUpEntry(entry: PendingEntry, held: AbortSignal): Promise<boolean> {
    const { tenantId } = entry;
    const current = await deps.tenants.get(tenantId);
    if (entry.record === null) {
      // A deletion: of a record Redis still holds, older than it, or of one it no longer holds (removed, or
      // never stored): its revision is remembered all the same, so that no older record of the tenant comes
      // back (`TenantStore.remove`). (One without a revision is not compared.)
      const { revision, generation } = entry;
      if (revision === undefined || (current !== null && current.revision >= revision)) return settled(entry);
      throwIfLost(held);
      await deps.state.observeRevision(tenantId, revision);
      if (generation !== undefined) await deps.state.observeDeletion(tenantId, generation);
      await deps.tenants.remove(tenantId, revision);
      const removed = recordStored(entry);
      throwIfLost(held);
      await deps.schedules.clear(tenantId);
      settled(removed);
      log.warn('tenant deletion on urs.tenants caught up in Redis', {
        tenantId,
        revision,
        ...(generation === undefined ? {} : { generation }),
      });
      return true;
    }
    const record = entry.record;
    if (entry.recordStored) {
      // Stored by its write, whose steps after it failed: those only, while Redis holds that record still.
      if (current?.revision !== record.revision) return settled(entry);
      throwIfLost(held);
      await applyStatus(record);
      settled(entry);
      log.warn('tenant status caught up with its record in Redis', {
        tenantId,
        revision: record.revision,
        enabled: record.enabled,
      });
      return true;
    }
    if (current && current.revision >= record.revision) return settled(entry);
    throwIfLost(held);
    await deps.state.observeRevision(tenantId, record.revision);
    if (!(await deps.tenants.put(record))) {
      // The tenant was deleted at this revision or after it: it stays deleted. The record may be the topic's
      // last word about it (a write whose lock lapsed while Kafka retried its send lands after the deletion's
      // tombstone, and compaction drops the tombstone): a new tombstone, so that urs.tenants agrees with
      // Redis, and no start after the removal marker expires puts the record back.
      const revision = await deps.state.nextRevision(tenantId, record.revision);
      await tombstone(tenantId, revision, await deletionGeneration(record), held);
      log.warn('tenant record on urs.tenants older than its deletion left out of Redis, tombstoned again', {
        tenantId,
        revision: record.revision,
        tombstoneRevision: revision,
      });
      return settled(entry);
    }
    // The status its write leaves: a re-seal (`updatedAt` kept) none; a disabled record `disable`'s, its
    // schedule forgotten; an enabled one `register`'s.
    const resealed = current !== null && current.updatedAt === record.updatedAt;
    if (resealed) settled(entry);
    else {
      const put = recordStored(entry);
      throwIfLost(held);
      await applyStatus(record);
      settled(put);
    }
    log.warn('tenant record on urs.tenants caught up in Redis', {
      tenantId,
      revision: record.revision,
      ...(current ? { redisRevision: current.revision } : {}),
      enabled: record.enabled,
    });
    return true;
  }

  /**
   * The steps after a record's write: a disabled tenant's schedule forgotten, then its status `status`
   * (`register`'s, `disable`'s; a catch-up, which cannot tell which wrote the record, `disable`'s for a
   * disabled one).
   */
  async function applyStatus(
    record: TenantRecord,
    status = record.enabled ? writtenStatus(record) : DISABLED_STATUS,
  ): Promise<void> {
    if (!record.enabled) await deps.schedules.clear(record.tenantId);
    await deps.tenants.updateStatus(record.tenantId, status);
  }

  function logRevision(entry: TenantLogEntry): number {
    return entry.record === null ? (entry.revision ?? 0) : entry.record.revision;
  }

  /** `stored`, false: nothing to write, Redis holds as new a revision. */
  function settled(entry: PendingEntry): false {
    stored(entry);
    return false;
  }

  async function catchUpPending(): Promise<CatchUpResult> {
    let applied = 0;
    await forEachLimit([...pending.values()], 32, async (entry) => {
      try {
        // The tenant's entry then: a write meanwhile may have stored it, or sent a newer one.
        const written = await lock(entry.tenantId, undefined, async (held) => {
          const current = pending.get(entry.tenantId);
          return current ? catchUpEntry(current, held) : false;
        });
        if (written) applied++;
      } catch (error) {
        log.warn('tenant on urs.tenants not caught up in Redis yet; tried again', {
          tenantId: entry.tenantId,
          reason: errorMessage(error),
        });
      }
    });
    return { applied, pending: pending.size };
  }

  /** `throwIfLost` once the tenant's record (or tombstone) is on `urs.tenants`, where it cannot be recalled. */
  function lostAfterSend(tenantId: string, held: AbortSignal): void {
    throwIfLostAfterSend(held, tenantId, deps.tenantsTopic);
  }

  return {
    register(registration, origin, options = {}) {
      return locked(registration.tenantId, options.signal, (held) =>
        register(registration, origin, options, held),
      );
    },
    registerUnlessDeleted(registration, origin, options = {}) {
      const { tenantId } = registration;
      return locked(tenantId, options.signal, async (held) => {
        // Read under the lock: no DELETE can come between this check and the write.
        if (await deletedByAdministrator(tenantId, origin.generation)) {
          log.info('tenant an administrator deleted left deleted', {
            tenantId,
            generation: origin.generation,
          });
          return { record: null, changed: false };
        }
        return register(registration, origin, options, held);
      });
    },
    disable(tenantId, reason, origin, onlyIf) {
      return locked(tenantId, undefined, (held) => disable(tenantId, reason, origin, held, onlyIf));
    },
    remove(tenantId, options = {}) {
      return locked(tenantId, options.signal, (held) => remove(tenantId, options.signal, held));
    },
    reject(tenantId, reason, origin) {
      return locked(tenantId, undefined, (held) => reject(tenantId, reason, origin, held));
    },
    endRefusal(tenantId, origin) {
      return locked(tenantId, undefined, (held) => endRefusal(tenantId, origin, held));
    },
    reseal(tenantId) {
      return locked(tenantId, undefined, (held) => reseal(tenantId, held));
    },
    async catchUp(entries) {
      // Compared without the lock first (a rebuild's worth of tenants, read 1000 to a round trip): only the
      // entries newer than Redis's are taken up, each under its lock.
      const inRedis = await deps.tenants.getMany(entries.map((entry) => entry.tenantId));
      let behind = 0;
      for (const entry of entries) {
        const redisRevision = inRedis.get(entry.tenantId)?.revision;
        const ahead =
          entry.record === null
            ? entry.revision !== undefined && redisRevision !== undefined && redisRevision < entry.revision
            : redisRevision === undefined || redisRevision < entry.record.revision;
        if (!ahead) continue;
        behind++;
        // One this registrar sent since is newer: kept.
        const mine = pending.get(entry.tenantId);
        if (!mine || logRevision(mine) < logRevision(entry)) pending.set(entry.tenantId, entry);
      }
      if (behind === 0) return { applied: 0, pending: pending.size };
      log.warn('Redis behind urs.tenants: catching its tenants up', { tenants: behind });
      return catchUpPending();
    },
    catchUpPending,
  };

  async function register(
    registration: TenantRegistration,
    origin: RegistrationOrigin,
    options: RegisterOptions,
    held: AbortSignal,
  ): Promise<{ record: TenantRecord; changed: boolean; created: boolean }> {
    const { tenantId, defender } = registration;
    const current = await deps.tenants.get(tenantId);
    const settings = {
      azureTenantId: defender.azureTenantId,
      clientId: defender.clientId,
      pollIntervalMinutes: defender.pollIntervalMinutes,
      cloud: defender.cloud ?? 'commercial',
      region: defender.region ?? null,
      riskProfile: defender.riskProfile ?? null,
    };
    // The same words for every push that disables it (the record's `generation` says which one last
    // wrote it): a generation number here made every push a change, and a new revision on urs.tenants.
    const disabledReason = defender.enabled
      ? undefined
      : origin.source === 'director'
        ? 'disabled by Director'
        : 'disabled by an administrator';
    if (current && restRecordKept(current, origin))
      return { record: current, changed: false, created: false };
    const kept = options.keepSecret ? openKeptSecret(deps.sealer, tenantId, current, defender) : undefined;
    // A tenant changing hands is a change even with the same settings: taken over by an administrator, a
    // full push leaving it out no longer disables it; taken back by a newer Director generation (a REST
    // record not kept, see `restRecordKept`), it does again.
    const changesHands = current !== null && current.source !== origin.source;
    // Asked only of a secret a write would re-seal: it reads Redis.
    const reseals =
      current === null || !deps.sealer.isStale(current.defender.clientSecret)
        ? true
        : await (deps.activeKeyProven?.() ?? Promise.resolve(true));
    if (options.skipIfUnchanged && current && !changesHands) {
      const secretMatches = sameSecret(deps.sealer, tenantId, current, defender.clientSecret, kept, reseals);
      const candidate = {
        schemaVersion: 1 as const,
        tenantId,
        revision: current.revision,
        updatedAt: current.updatedAt,
        source: origin.source,
        enabled: defender.enabled,
        ...(disabledReason === undefined ? {} : { disabledReason }),
        defender: settings,
      };
      if (sameSettings(current, candidate, secretMatches)) {
        await settle(current, writtenStatus(current), held);
        return { record: current, changed: false, created: false };
      }
    }
    const sealed = secretToWrite(deps.sealer, tenantId, current, defender.clientSecret, kept, reseals);
    // A REST write keeps the generation of Director's last write: the tenant stays Director's, and a full
    // push leaving it out disables it (`registeredByDirector`).
    const generation = origin.generation ?? current?.generation;
    const { revision, at } = await deps.state.nextRevisionStamp(tenantId, current?.revision ?? 0);
    const record: TenantRecord = {
      schemaVersion: 1,
      tenantId,
      revision,
      updatedAt: at.toISOString(),
      source: origin.source,
      ...(generation === undefined ? {} : { generation }),
      enabled: defender.enabled,
      ...(disabledReason === undefined ? {} : { disabledReason }),
      defender: { ...settings, clientSecret: sealed },
    };
    throwIfCut(tenantId, options.signal);
    const sent = await write(record, held);
    lostAfterSend(tenantId, held);
    await applyStatus(record, writtenStatus(record));
    stored(sent);
    log.info('tenant registered', {
      tenantId,
      revision: record.revision,
      source: origin.source,
      generation: origin.generation,
      enabled: record.enabled,
    });
    return { record, changed: true, created: current === null };
  }

  /**
   * A write that finds the record as it would write it (nothing to write), with the status `update` the write
   * leaves: the record's write tried again, say, after Redis failed on the steps after it (the schedule's
   * clear, the status's update), which a record already written would otherwise never see again. A status
   * that disagrees with the record (a disabled tenant not `disabled` or with a next poll time, an enabled one
   * `disabled`) is brought in line, the schedule of a disabled tenant cleared first as the write does; one
   * that agrees only loses a refusal the registration in force overtakes (`clearRefusal`).
   */
  async function settle(current: TenantRecord, update: StatusUpdate, held: AbortSignal): Promise<void> {
    const { tenantId } = current;
    const status = await deps.tenants.getStatus(tenantId);
    const disagrees = current.enabled
      ? status.state === 'disabled'
      : status.state !== 'disabled' || status.nextPollAt !== undefined;
    if (!disagrees) return clearRefusal(current, held, status);
    throwIfLost(held);
    await applyStatus(current, update);
    log.info('tenant status brought in line with its record', { tenantId, enabled: current.enabled });
  }

  async function disable(
    tenantId: string,
    reason: string,
    origin: RegistrationOrigin,
    held: AbortSignal,
    onlyIf?: (current: TenantRecord) => boolean,
  ): Promise<TenantRecord | null> {
    const current = await deps.tenants.get(tenantId);
    if (!current) return null;
    if (onlyIf && !onlyIf(current)) {
      // Not Director's to disable (an administrator's record), but a refused update Director sent of it is
      // overtaken all the same: Director no longer registers the tenant.
      if (origin.source === 'director') await clearDirectorRefusal(current, origin.generation, held);
      return null;
    }
    if (!current.enabled) {
      await settle(current, DISABLED_STATUS, held);
      return null;
    }
    const { revision, at } = await deps.state.nextRevisionStamp(tenantId, current.revision);
    const record: TenantRecord = {
      ...current,
      revision,
      updatedAt: at.toISOString(),
      source: origin.source,
      ...(origin.generation === undefined ? {} : { generation: origin.generation }),
      enabled: false,
      disabledReason: reason,
    };
    const sent = await write(record, held);
    lostAfterSend(tenantId, held);
    await applyStatus(record);
    stored(sent);
    log.info('tenant disabled', { tenantId, revision: record.revision, reason });
    return record;
  }

  async function remove(
    tenantId: string,
    signal: AbortSignal | undefined,
    held: AbortSignal,
  ): Promise<boolean> {
    const current = await deps.tenants.get(tenantId);
    if (!current) {
      // Every registration of it refused: no record, only the status saying why. Deleting it ends that.
      const status = await deps.tenants.getStatus(tenantId);
      if (status.state !== 'registration-rejected') return false;
      // Remembered as a deletion of a record is: the generation that refused it, or a push under way, delivered
      // again or reaching the tenant after this, must not put the refusal back (see `reject`).
      const generation = Math.max(await generationInForce(), status.registrationError?.generation ?? -1);
      throwIfLost(held);
      if (generation >= 0) await deps.state.observeDeletion(tenantId, generation);
      await deps.tenants.remove(tenantId);
      log.info('refused tenant deleted', { tenantId, ...(generation < 0 ? {} : { generation }) });
      return true;
    }
    const revision = await deps.state.nextRevision(tenantId, current.revision);
    const generation = await deletionGeneration(current);
    throwIfCut(tenantId, signal);
    await tombstone(tenantId, revision, generation, held);
    log.info('tenant deleted', { tenantId, revision, ...(generation < 0 ? {} : { generation }) });
    return true;
  }

  /**
   * The generation in force, sent with a deletion of `record`: the last applied, the one of a push under way
   * (that wrote it, or begun before the deletion and yet to reach it), whichever is newest.
   */
  async function deletionGeneration(record: TenantRecord): Promise<number> {
    return Math.max(await generationInForce(), record.generation ?? -1);
  }

  /**
   * The last generation applied, or a newer one whose push began (`generationStarted`): a deletion made once a
   * push began records its generation, so that push, reaching the tenant after the deletion or handled again,
   * leaves it deleted (`registerUnlessDeleted`), as it keeps a record written over REST since it began
   * (`restRecordKept`). Redis orders the push's start and the deletion, one clock for every replica.
   */
  async function generationInForce(): Promise<number> {
    const [last, started] = await Promise.all([deps.state.lastGeneration(), deps.state.generationStarted()]);
    return Math.max(last, started);
  }

  /**
   * The tenant's tombstone at `revision` (with `generation`, if any) to `urs.tenants`, then its deletion in
   * Redis and its schedule forgotten, each while the tenant's lock is `held` (as `write`).
   */
  async function tombstone(
    tenantId: string,
    revision: number,
    generation: number,
    held: AbortSignal,
  ): Promise<void> {
    throwIfLost(held);
    await deps.publisher.send(deps.tenantsTopic, 'urs/tenant-record', [
      {
        key: tenantId,
        value: null,
        headers: {
          [TENANT_REVISION_HEADER]: String(revision),
          ...(generation < 0 ? {} : { [TENANT_GENERATION_HEADER]: String(generation) }),
        },
      },
    ]);
    const sent = sentAhead({
      tenantId,
      record: null,
      revision,
      ...(generation < 0 ? {} : { generation }),
    });
    lostAfterSend(tenantId, held);
    if (generation >= 0) await deps.state.observeDeletion(tenantId, generation);
    await deps.tenants.remove(tenantId, revision);
    const removed = recordStored(sent);
    lostAfterSend(tenantId, held);
    await deps.schedules.clear(tenantId);
    stored(removed);
  }

  async function reseal(
    tenantId: string,
    held: AbortSignal,
  ): Promise<
    { outcome: 'resealed'; record: TenantRecord; fromKeyId: string } | { outcome: 'current' | 'polling' }
  > {
    const current = await deps.tenants.get(tenantId);
    if (!current || !deps.sealer.isStale(current.defender.clientSecret)) return { outcome: 'current' };
    const fromKeyId = current.defender.clientSecret.keyId;
    const clientSecret = deps.sealer.seal(
      deps.sealer.open(current.defender.clientSecret, tenantId),
      tenantId,
    );
    // `updatedAt` stays: it says when the tenant's registration last changed, and nothing of it did.
    const record: TenantRecord = {
      ...current,
      revision: await deps.state.nextRevision(tenantId, current.revision),
      defender: { ...current.defender, clientSecret },
    };
    // Before the record goes out: a poller that reads it must find the failure already carried onto it. A
    // record Kafka then refuses leaves the failure on a revision never written; the next re-seal carries it on.
    throwIfLost(held);
    if (!(await deps.schedules.carryFailure(tenantId, current.revision, record.revision)))
      return { outcome: 'polling' };
    stored(await write(record, held));
    log.debug('tenant secret re-sealed with the active key', {
      tenantId,
      revision: record.revision,
      fromKeyId,
      keyId: clientSecret.keyId,
    });
    return { outcome: 'resealed', record, fromKeyId };
  }
}

import {
  createCatchUp,
  readToEndSubscription,
  stopWaitingAfter,
  type CatchUp,
  type MessageHandler,
  type TopicSubscription,
} from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { UrsError, errorCode, errorMessage } from '@urs/resilience';
import { compileProfile, parseProfile, type CompiledProfile } from '@urs/scoring';
import { tenantsNotRebuilt, type TenantStore } from '@urs/store';
import type { Counter, Registry } from '@urs/telemetry';

export class ScorerError extends UrsError {}

/** What a batch says of the profile its cycle started with. */
export interface CycleProfile {
  /** The hash of the profile the cycle started with (absent from the batches of an older poller). */
  profileHash?: string;
  /** The threshold the batch's CVEs were counted at: the cycle's, when it started. */
  cvssThreshold?: number;
}

export interface ProfileCache extends CatchUp {
  /**
   * The tenant's compiled profile: from memory, else from the tenant store (a tenant not yet read, or one
   * whose record in memory is older than the store's while `urs.tenants` is still read to the end it had
   * at the start: its revisions come one by one then, the first long out of date; or one whose cycle's
   * profile memory does not hold, which may be the store's newer record, not read from `urs.tenants` yet; or a
   * batch without the cycle's hash once the wait for that read was given up short of its end: memory's latest may
   * be a revision long replaced, and the store's is the tenant's profile now). With `cycle`, the
   * profile the cycle started with when it is held (see `profileOf`): the tenant changed its profile
   * during the cycle, and the cycle is scored with the one it started with. From the tenant store, the
   * store's profile counts as the latest and the ones in memory as the ones it replaced; a cycle whose own
   * profile is not among them then throws PROFILE_NOT_READ_YET (retryable, held as an infrastructure fault:
   * one of the revisions still to be read may be it). Null when the tenant was
   * deleted (its tombstone read, or its record gone from the rebuilt tenant store): its batches still on their
   * way are expected, not poison. A tenant neither in memory nor in the store while `urs.tenants` is still
   * read throws PROFILE_NOT_READ_YET too (its tombstone may be still to read). Throws TENANT_UNKNOWN for a
   * tenant neither registered nor known deleted once the read ended, and
   * TENANTS_NOT_REBUILT (retryable, an infrastructure fault: the bus holds the batch and tries it again) when
   * its record is missing from a tenant store the registrar has not rebuilt since Redis lost its data.
   */
  get(tenantId: string, cycle?: CycleProfile): Promise<CompiledProfile | null>;
  /** Applies one `urs.tenants` record (null: the tenant was deleted). */
  apply(tenantId: string, record: TenantRecord | null): void;
  /** Tenants held in memory. */
  size(): number;
  /**
   * Whether `urs.tenants` was in fact read to the end it had at the start. `caughtUp` is true as well once the
   * wait for it was given up (`stopWaiting`: `bindCatchUpTimeout`); this, only once the reader, which goes on
   * reading after that, gets there.
   */
  readToEnd(): boolean;
}

interface Entry {
  revision: number;
  /** The latest profile first, then the ones it replaced, newest first: for the cycles started before. */
  profiles: HeldProfiles;
}

/**
 * Profiles held per tenant, the latest included: a cycle started before more changes than that is scored
 * as a batch without the profile's hash is.
 */
const PROFILES_HELD = 4;

type HeldProfiles = readonly [CompiledProfile, ...CompiledProfile[]];

/** Deleted tenants remembered, so their late batches are told apart from batches of unknown tenants. */
const REMEMBERED_DELETIONS = 10_000;

/**
 * The tenants' risk profiles in memory, refreshed from `urs.tenants`. A disabled or deleted tenant is
 * dropped. A batch of a tenant not (yet) in memory takes the profile from the tenant store in Redis, which
 * the registrar writes first. So does every batch until `urs.tenants` was read to the end it had at the
 * start (`expectEnd`): a compacted topic's active segment still holds a tenant's every revision, replayed
 * one by one, and a batch scored with the first would carry out-of-date weights and profile hash.
 */
export function createProfileCache(deps: {
  tenants: Pick<TenantStore, 'lookup'>;
  logger: Logger;
}): ProfileCache {
  const entries = new Map<string, Entry>();
  const deleted = new Set<string>();
  const catchUp = createCatchUp();
  /**
   * The same read, never given up (`stopWaiting`): whether `urs.tenants` was in fact read to its end. Past the
   * catch-up timeout short of it, memory's latest may be a revision the tenant has long replaced.
   */
  const wholeRead = createCatchUp();
  const compile = (record: TenantRecord): CompiledProfile =>
    compileProfile(parseProfile(record.defender.riskProfile));
  return {
    async get(tenantId, cycle = {}) {
      const entry = entries.get(tenantId);
      if (entry && catchUp.caughtUp()) {
        const exact = exactProfileOf(entry.profiles, cycle);
        // A batch without the cycle's hash (an older poller) is scored with the tenant's profile as it is
        // now: after the wait for the read was given up, memory's may be older than the store's.
        if (exact && (cycle.profileHash !== undefined || wholeRead.caughtUp())) return exact;
        // Not held: the cycle started before more changes than are held, or with a revision not read yet
        // (the registrar writes the tenant store before this scorer reads the record): the store tells.
      }
      const { record, rebuilt } = await deps.tenants.lookup(tenantId);
      if (record === null) {
        if (deleted.has(tenantId)) return null;
        if (!rebuilt) throw tenantsNotRebuilt(tenantId);
        // Held in memory and gone from the store: deleted, its tombstone not read yet.
        if (entry) return null;
        // Neither in memory nor in the store while `urs.tenants` is still read: a tenant deleted while its
        // batch waited, whose tombstone is still to read (then dropped as a deleted tenant's), or one never
        // registered (then TENANT_UNKNOWN). Held until the read ends rather than dead-lettered now.
        if (!catchUp.caughtUp()) throw tenantNotReadYet(tenantId);
        throw new ScorerError(
          'TENANT_UNKNOWN',
          `tenant ${tenantId} is not registered: no risk profile to score with`,
          {
            canRetry: false,
          },
        );
      }
      // As new as the store's: memory read every revision before it, and holds what it will once caught up.
      if (entry && entry.revision >= record.revision) return profileOf(entry.profiles, cycle);
      // Not cached, or cached older: the record may be a disabled tenant finishing its last cycle, which is
      // still scored. Its profile is the latest, and the ones held before it are still the cycles' that
      // started with them: chosen among as memory will hold them once the record is read.
      const held = heldWith(compile(record), entry?.profiles ?? []);
      // The cycle's own profile not among them while `urs.tenants` is still read: one of the revisions to
      // come may be it. Held (the bus tries the batch again) rather than scored with another profile, whose
      // hash VMS would get for this batch and not for the cycle's later ones.
      if (!catchUp.caughtUp() && exactProfileOf(held, cycle) === undefined)
        throw profileNotReadYet(tenantId, cycle);
      return profileOf(held, cycle);
    },
    apply(tenantId, record) {
      if (record === null) {
        entries.delete(tenantId);
        // Added again at the end: past the bound, the deletion read longest ago is forgotten first.
        deleted.delete(tenantId);
        deleted.add(tenantId);
        if (deleted.size > REMEMBERED_DELETIONS) {
          const oldest = deleted.values().next().value;
          if (oldest !== undefined) deleted.delete(oldest);
        }
        return;
      }
      deleted.delete(tenantId);
      if (!record.enabled) {
        entries.delete(tenantId);
        return;
      }
      const current = entries.get(tenantId);
      if (current && current.revision >= record.revision) return;
      try {
        entries.set(tenantId, {
          revision: record.revision,
          profiles: heldWith(compile(record), current?.profiles ?? []),
        });
      } catch (error) {
        // The registrar validates profiles; a record that still fails keeps the last good profile.
        deps.logger.error('risk profile rejected', {
          tenantId,
          revision: record.revision,
          reason: errorMessage(error),
        });
      }
    },
    read(partition, offset) {
      catchUp.read(partition, offset);
      wholeRead.read(partition, offset);
    },
    expectEnd(lastOffsets) {
      catchUp.expectEnd(lastOffsets);
      wholeRead.expectEnd(lastOffsets);
    },
    caughtUp: () => catchUp.caughtUp(),
    stopWaiting: () => catchUp.stopWaiting(),
    size: () => entries.size,
    readToEnd: () => wholeRead.caughtUp(),
  };
}

/**
 * The profiles held once `latest` comes after `earlier` (newest first). A record that leaves the profile as
 * it was (a new secret, say) keeps the ones before it; one that brings an earlier profile back holds it once.
 */
function heldWith(latest: CompiledProfile, earlier: readonly CompiledProfile[]): HeldProfiles {
  const before = earlier.filter((held) => held.hash !== latest.hash);
  return [latest, ...before.slice(0, PROFILES_HELD - 1)];
}

/**
 * Of the profiles held (the latest first), the one with the cycle's `profileHash`; else (a batch of an
 * older poller, or a cycle started before more changes than are held) the newest that counts CVEs at the
 * cycle's `cvssThreshold`, as the batch's counts were made for it; else the latest, with which the handler
 * scores no count made at another threshold (criticalCves missing, `CVSS_THRESHOLD_CHANGED`).
 */
function profileOf(profiles: HeldProfiles, cycle: CycleProfile): CompiledProfile {
  return (
    profiles.find((profile) => profile.hash === cycle.profileHash) ??
    profiles.find((profile) => profile.cvssThreshold === cycle.cvssThreshold) ??
    profiles[0]
  );
}

/**
 * The profile the cycle is scored with by right: the one with its `profileHash`; for a batch without one (an
 * older poller), the newest counting CVEs at its `cvssThreshold`, or the latest when it has no counts.
 */
function exactProfileOf(profiles: HeldProfiles, cycle: CycleProfile): CompiledProfile | undefined {
  if (cycle.profileHash !== undefined) return profiles.find((profile) => profile.hash === cycle.profileHash);
  if (cycle.cvssThreshold !== undefined)
    return profiles.find((profile) => profile.cvssThreshold === cycle.cvssThreshold);
  return profiles[0];
}

/**
 * A batch whose cycle's profile (or whose tenant) the scorer does not hold yet, while it reads `urs.tenants`
 * to the end it had at its start: held, as a dependency's fault is (retried until the read ends, or its wait
 * is given up: `bindCatchUpTimeout`; never dead-lettered for it).
 */
export const PROFILE_NOT_READ_YET = 'PROFILE_NOT_READ_YET';

function profileNotReadYet(tenantId: string, cycle: CycleProfile): ScorerError {
  const which =
    cycle.profileHash !== undefined
      ? `profile ${cycle.profileHash}`
      : `profile counting CVEs at CVSS ${String(cycle.cvssThreshold)}`;
  return new ScorerError(
    PROFILE_NOT_READ_YET,
    `tenant ${tenantId}: the cycle's ${which} is neither in memory nor the tenant's record in Redis, and ` +
      'urs.tenants is not read to its end yet: held until it is',
    { canRetry: true, infrastructure: true },
  );
}

/**
 * Whether a batch's failure is its hold while `urs.tenants` is read at the start (PROFILE_NOT_READ_YET): the
 * runner holds it as `catching-up`, counted and warned of but not against readiness (a scorer reading its
 * topic at start is not broken, and `bindCatchUpTimeout` bounds the wait).
 */
export function heldWhileCatchingUp(error: unknown): boolean {
  return errorCode(error) === PROFILE_NOT_READ_YET;
}

function tenantNotReadYet(tenantId: string): ScorerError {
  return new ScorerError(
    PROFILE_NOT_READ_YET,
    `tenant ${tenantId} is neither in memory nor in Redis, and urs.tenants is not read to its end yet ` +
      '(its deletion may be still to read): held until it is',
    { canRetry: true, infrastructure: true },
  );
}

/** The `urs.tenants` handler: keeps the profile cache current, and says how far the topic was read. */
export function createTenantsHandler(profiles: ProfileCache): MessageHandler<TenantRecord> {
  return async (message) => {
    const tenantId = message.value?.tenantId ?? message.key;
    if (tenantId) profiles.apply(tenantId, message.value);
    profiles.read(message.partition, message.offset);
  };
}

/**
 * The subscription of the profiles' reader of `urs.tenants` (`topic`): the whole topic, tombstones
 * included, from its beginning. A record dead-lettered counts as read: the last of its partition, it
 * would otherwise keep every batch reading its profile from Redis.
 */
export function tenantsSubscription(
  topic: string,
  profiles: ProfileCache,
): TopicSubscription<'urs/tenant-record'> {
  return readToEndSubscription(topic, 'urs/tenant-record', createTenantsHandler(profiles), profiles);
}

/**
 * The profiles' metrics, registered at the start: how many are held, whether `urs.tenants` was in fact read to
 * its end (0 also once its wait was given up short of it, until the reader gets there), and the catch-up
 * timeouts, served at 0 from the start: an alert or a dashboard counts their increase, which the first
 * timeout alone (the series appearing at 1) would not show.
 */
export function registerProfileMetrics(
  profiles: Pick<ProfileCache, 'size' | 'readToEnd'>,
  metrics: Registry,
): void {
  metrics.gauge('urs_scorer_profiles', 'Tenant profiles held in memory.', () => profiles.size());
  metrics.gauge(
    'urs_scorer_profiles_caught_up',
    '1 once urs.tenants was read to the end it had at the start; 0 until then, also after URS_SCORER_CATCHUP_TIMEOUT_MS stopped the wait for it.',
    () => (profiles.readToEnd() ? 1 : 0),
  );
  catchUpTimeouts(metrics).init();
}

function catchUpTimeouts(metrics: Registry): Counter {
  return metrics.counter(
    'urs_scorer_profiles_catchup_timeouts_total',
    'Starts at which urs.tenants was not read to its end within URS_SCORER_CATCHUP_TIMEOUT_MS: profiles then used as read so far.',
  );
}

/**
 * Stops `profiles` waiting for the rest of `urs.tenants` once `timeoutMs` passed since this call (the
 * scorer's start) without the read reaching the end it had then: a reader that no longer moves (a record
 * whose dead letter Kafka refuses) would otherwise hold every batch whose cycle's profile it has not read
 * for ever. The batches held then are scored as once caught up: with the cycle's profile when memory or the
 * tenant store holds it, else with the fallback (see `profileOf`), which never scores a count made at
 * another CVSS threshold. A batch without the cycle's hash (an older poller) takes the tenant store's record
 * until the read does reach its end, as one does before the timeout. Logged as a warning and counted
 * (`urs_scorer_profiles_catchup_timeouts_total`); `urs_scorer_profiles_caught_up` stays 0 until the reader,
 * which goes on, reaches the end.
 * Returns what cancels the timer (at the stop).
 */
export function bindCatchUpTimeout(
  profiles: Pick<ProfileCache, 'stopWaiting'>,
  options: { timeoutMs: number; logger: Logger; metrics: Registry },
): () => void {
  const timeouts = catchUpTimeouts(options.metrics);
  return stopWaitingAfter(profiles, options.timeoutMs, (behind) => {
    timeouts.inc();
    options.logger.warn('urs.tenants not read to its end in time; scoring with the profiles read so far', {
      partitionsBehind: behind,
      timeoutMs: options.timeoutMs,
    });
  });
}

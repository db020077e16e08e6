import {
  createCatchUp,
  readWhenDeadLettered,
  type CatchUp,
  type MessageHandler,
  type TopicSubscription,
} from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { UrsError, errorMessage } from '@urs/resilience';
import { compileProfile, parseProfile, type CompiledProfile } from '@urs/scoring';
import type { TenantStore } from '@urs/store';

export class ScorerError extends UrsError {}

export interface ProfileCache extends Omit<CatchUp, 'stopWaiting'> {
  /**
   * The tenant's compiled profile: from memory, else from the tenant store (a tenant not yet read, or one
   * whose record in memory is older than the store's while `urs.tenants` is still read to the end it had
   * at the start: its revisions come one by one then, the first long out of date). With
   * `cvssThreshold` (the one the cycle's CVEs were counted at, when it started), the profile before the
   * latest when only that one counts CVEs so: the tenant changed its threshold during the cycle, and the
   * cycle is scored with the profile it started with, as its counts were made for it. Null when the tenant
   * was deleted (its tombstone read, its record gone from the tenant store): its batches still on their way
   * are expected, not poison. Throws TENANT_UNKNOWN for a tenant neither registered nor known deleted.
   */
  get(tenantId: string, cvssThreshold?: number): Promise<CompiledProfile | null>;
  /** Applies one `urs.tenants` record (null: the tenant was deleted). */
  apply(tenantId: string, record: TenantRecord | null): void;
  /** Tenants held in memory. */
  size(): number;
}

interface Entry {
  revision: number;
  profile: CompiledProfile;
  /** The profile this one replaced, for the cycles that started before it came. */
  previous?: CompiledProfile;
}

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
  tenants: Pick<TenantStore, 'get'>;
  logger: Logger;
}): ProfileCache {
  const entries = new Map<string, Entry>();
  const deleted = new Set<string>();
  const catchUp = createCatchUp();
  const compile = (record: TenantRecord): CompiledProfile =>
    compileProfile(parseProfile(record.defender.riskProfile));
  return {
    async get(tenantId, cvssThreshold) {
      const entry = entries.get(tenantId);
      if (entry && catchUp.caughtUp()) return profileOf(entry, cvssThreshold);
      const record = await deps.tenants.get(tenantId);
      if (record === null) {
        // Held in memory and gone from the store: deleted, its tombstone not read yet.
        if (entry || deleted.has(tenantId)) return null;
        throw new ScorerError(
          'TENANT_UNKNOWN',
          `tenant ${tenantId} is not registered: no risk profile to score with`,
          {
            canRetry: false,
          },
        );
      }
      if (entry && entry.revision >= record.revision) return profileOf(entry, cvssThreshold);
      // Not cached, or cached older: the record may be a disabled tenant finishing its last cycle, which is
      // still scored.
      return compile(record);
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
        const profile = compile(record);
        // A record that leaves the profile as it was (a new secret, say) keeps the one before it.
        const previous = current?.profile.hash === profile.hash ? current.previous : current?.profile;
        entries.set(tenantId, { revision: record.revision, profile, ...(previous ? { previous } : {}) });
      } catch (error) {
        // The registrar validates profiles; a record that still fails keeps the last good profile.
        deps.logger.error('risk profile rejected', {
          tenantId,
          revision: record.revision,
          reason: errorMessage(error),
        });
      }
    },
    read: (partition, offset) => catchUp.read(partition, offset),
    expectEnd: (lastOffsets) => catchUp.expectEnd(lastOffsets),
    caughtUp: () => catchUp.caughtUp(),
    size: () => entries.size,
  };
}

/**
 * The entry's profile, or the one before it when the cycle's CVEs were counted at that one's threshold
 * (`cvssThreshold`: the tenant changed its threshold during the cycle).
 */
function profileOf(entry: Entry, cvssThreshold: number | undefined): CompiledProfile {
  const { profile, previous } = entry;
  const startedWithPrevious =
    cvssThreshold !== undefined &&
    profile.cvssThreshold !== cvssThreshold &&
    previous?.cvssThreshold === cvssThreshold;
  return startedWithPrevious ? previous : profile;
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
  return {
    topic,
    contract: 'urs/tenant-record',
    tombstones: true,
    fromBeginning: true,
    handler: createTenantsHandler(profiles),
    deadLettering: readWhenDeadLettered(profiles),
  };
}

import type { MessageHandler } from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { UrsError, errorMessage } from '@urs/resilience';
import { compileProfile, parseProfile, type CompiledProfile } from '@urs/scoring';
import type { TenantStore } from '@urs/store';

export class ScorerError extends UrsError {}

export interface ProfileCache {
  /**
   * The tenant's compiled profile: from memory, else from the tenant store (a tenant not yet read). With
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
 * dropped. A batch of a tenant not (yet) in memory, e.g. right after a start while `urs.tenants` is
 * still being read, takes the profile from the tenant store in Redis, which the registrar writes first.
 */
export function createProfileCache(deps: {
  tenants: Pick<TenantStore, 'get'>;
  logger: Logger;
}): ProfileCache {
  const entries = new Map<string, Entry>();
  const deleted = new Set<string>();
  const compile = (record: TenantRecord): CompiledProfile =>
    compileProfile(parseProfile(record.defender.riskProfile));
  return {
    async get(tenantId, cvssThreshold) {
      const entry = entries.get(tenantId);
      if (entry) {
        const { profile, previous } = entry;
        const startedWithPrevious =
          cvssThreshold !== undefined &&
          profile.cvssThreshold !== cvssThreshold &&
          previous?.cvssThreshold === cvssThreshold;
        return startedWithPrevious ? previous : profile;
      }
      const record = await deps.tenants.get(tenantId);
      if (record === null) {
        if (deleted.has(tenantId)) return null;
        throw new ScorerError(
          'TENANT_UNKNOWN',
          `tenant ${tenantId} is not registered: no risk profile to score with`,
          {
            canRetry: false,
          },
        );
      }
      // Not cached: the record may be a disabled tenant finishing its last cycle, which is still scored.
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
    size: () => entries.size,
  };
}

/** The `urs.tenants` handler: keeps the profile cache current. */
export function createTenantsHandler(profiles: ProfileCache): MessageHandler<TenantRecord> {
  return async (message) => {
    const tenantId = message.value?.tenantId ?? message.key;
    if (!tenantId) return;
    profiles.apply(tenantId, message.value);
  };
}

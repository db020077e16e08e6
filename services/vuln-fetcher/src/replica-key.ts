import { probeSecretKey, type SecretSealer, type StoredSecrets } from '@urs/secrets';

export interface ReplicaKeyCheckDeps {
  sealer: SecretSealer;
  /** The stored tenant records (the tenant store): only their sealed secrets are read. */
  secrets: StoredSecrets;
  /** The key ids this process holds (URS_SECRET_KEY_ID and URS_SECRET_KEYS_PREVIOUS). */
  keyIds: ReadonlySet<string>;
  /** How long a verdict is kept before the stored secrets are tried again, in milliseconds. Default 60000. */
  verdictMs?: number;
  /** Other tenants' secrets tried at most. Default 5. */
  sample?: number;
  /** Milliseconds since the epoch. Default Date.now. */
  now?: () => number;
}

/** Whose fault a stored secret this replica's key does not open (SECRET_UNREADABLE) is. */
export interface ReplicaKeyCheck {
  /**
   * Whether this replica's key opens another tenant's stored secret than `tenantId`'s: then its key is
   * right and `tenantId`'s record is bad (the tenant's failure). False when it opens none of them, or there
   * is no other secret to try: the replica's key is taken to be wrong. A fault of Redis is thrown as it is.
   */
  opensOthers(tenantId: string): Promise<boolean>;
}

/**
 * The sealer cannot tell a wrong key from a bad record, and the vuln-fetcher reads the tenant's latest record,
 * which may be newer than the one the poller opened (a revision sealed by a registrar with another key, or
 * altered): blamed on the replica, its batches would be held on every replica for as long as the record
 * stays, and the tenant's status would never say so. Other tenants' secrets settle it. The verdict is kept
 * for `verdictMs`, so the held batches of a replica with a wrong key, retried in turn, do not read Redis
 * for it on each try.
 */
export function createReplicaKeyCheck(deps: ReplicaKeyCheckDeps): ReplicaKeyCheck {
  const now = deps.now ?? Date.now;
  const verdictMs = deps.verdictMs ?? 60_000;
  /** The last verdict: the tenant whose secret opened (undefined: none did), and when it was had. */
  let verdict: { openedBy: string | undefined; at: number } | undefined;
  return {
    async opensOthers(tenantId) {
      const at = now();
      // A verdict resting on this very tenant's secret (it opened then, not now) says nothing of it.
      if (verdict === undefined || at - verdict.at > verdictMs || verdict.openedBy === tenantId) {
        const probe = await probeSecretKey({
          sealer: deps.sealer,
          tenants: deps.secrets,
          keyIds: deps.keyIds,
          except: new Set([tenantId]),
          ...(deps.sample === undefined ? {} : { sample: deps.sample }),
        });
        verdict = { openedBy: probe.openedBy, at };
      }
      return verdict.openedBy !== undefined;
    },
  };
}

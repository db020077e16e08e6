import { probeSecretKey, type KeyFingerprints, type StoredSecrets } from './key-check';
import { SecretError, type SecretSealer } from './sealer';

export interface ReplicaKeyCheckDeps {
  sealer: SecretSealer;
  /** The stored tenant records (the tenant store): only their sealed secrets are read. */
  secrets: StoredSecrets;
  /** The key ids this process holds (URS_SECRET_KEY_ID and URS_SECRET_KEYS_PREVIOUS). */
  keyIds: ReadonlySet<string>;
  /** The key ids' fingerprints: what settles it when no other secret is sealed under the key id. */
  fingerprints?: KeyFingerprints;
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
   * Whether this replica's key of `keyId` (the key id `tenantId`'s secret is sealed with) opens another
   * tenant's stored secret sealed under that same key id: then that key is right and `tenantId`'s record is
   * bad (the tenant's failure). Secrets of other key ids say nothing of it (a right previous key beside a
   * wrong active one). False when it opens none of them. When no other secret of that key id is stored, the
   * key id's stored fingerprint settles it (matched: the record is bad; differs: the replica's key is wrong);
   * with none stored, a secret of another key id this replica's keys open says the record is bad. A fault of
   * Redis is thrown as it is.
   */
  opensOthers(tenantId: string, keyId: string): Promise<boolean>;
}

/**
 * The sealer cannot tell a wrong key from a bad record (a revision sealed by a registrar with another
 * URS_SECRET_KEY under the same URS_SECRET_KEY_ID, or altered). Blamed on the replica, a bad record was tried
 * again for as long as it stays, on every replica (the poller's cycles every 2 minutes, the vuln-fetcher's
 * held batches), and the tenant's status never said what its admin must do; the vuln-fetcher also reads the
 * tenant's latest record, which may be newer than the one the poller opened. Other tenants' secrets settle
 * it. The verdict is kept for `verdictMs`, so the retries of a replica with a wrong key (its cycles, its held
 * batches) do not read Redis for it on each try.
 */
export function createReplicaKeyCheck(deps: ReplicaKeyCheckDeps): ReplicaKeyCheck {
  const now = deps.now ?? Date.now;
  const verdictMs = deps.verdictMs ?? 60_000;
  /** The last verdict per key id: whether the record is at fault, the tenant whose secret said so, and when. */
  const verdicts = new Map<string, { recordBad: boolean; openedBy: string | undefined; at: number }>();

  /** Whose fault it is, from the other stored secrets and the key id's fingerprint. */
  async function judge(
    tenantId: string,
    keyId: string,
  ): Promise<{ recordBad: boolean; openedBy: string | undefined }> {
    const probe = (keyIds: ReadonlySet<string>) =>
      probeSecretKey({
        sealer: deps.sealer,
        tenants: deps.secrets,
        keyIds,
        except: new Set([tenantId]),
        ...(deps.sample === undefined ? {} : { sample: deps.sample }),
      });
    const sameKey = await probe(new Set([keyId]));
    if (sameKey.tried > 0) return { recordBad: sameKey.openedBy !== undefined, openedBy: sameKey.openedBy };
    // The tenant's secret is the only one sealed under its key id (early in a rotation): blamed on the key,
    // a damaged record would be tried again without backoff, or held, for as long as it stays.
    const stored = await deps.fingerprints?.get(keyId);
    if (stored !== undefined && stored !== null)
      return { recordBad: stored === deps.sealer.fingerprint(keyId), openedBy: undefined };
    const otherKeys = await probe(deps.keyIds);
    return { recordBad: otherKeys.openedBy !== undefined, openedBy: otherKeys.openedBy };
  }

  return {
    async opensOthers(tenantId, keyId) {
      if (!deps.keyIds.has(keyId)) return false;
      const at = now();
      let verdict = verdicts.get(keyId);
      // A verdict resting on this very tenant's secret (it opened then, not now) says nothing of it.
      if (verdict === undefined || at - verdict.at > verdictMs || verdict.openedBy === tenantId) {
        verdict = { ...(await judge(tenantId, keyId)), at };
        verdicts.set(keyId, verdict);
      }
      return verdict.recordBad;
    },
  };
}

export interface UnreadableRecord {
  tenantId: string;
  /** The revision of the tenant's record whose secret did not open. */
  revision: number;
  /** The stage whose key did not open it (`poller`, `vuln-fetcher`), named in the message. */
  service: string;
  /** The sealer's SECRET_UNREADABLE. */
  cause?: unknown;
}

/**
 * The tenant's failure when its stored secret does not open with a key that opens other tenants' secrets
 * (`ReplicaKeyCheck.opensOthers`): `SECRET_RECORD_UNREADABLE`, a code of its own so that it is never taken
 * for a replica's wrong key (`SECRET_UNREADABLE`), with what the tenant's admin can do. Every stage says the
 * same in the tenant's status.
 */
export function secretRecordUnreadable(record: UnreadableRecord): SecretError {
  return new SecretError(
    'SECRET_RECORD_UNREADABLE',
    `the stored client secret of tenant ${record.tenantId} (record revision ${record.revision}) does not ` +
      `open with the ${record.service}'s key, which opens other tenants' secrets: the record is damaged, or ` +
      'was sealed by a registrar with another URS_SECRET_KEY under the same URS_SECRET_KEY_ID; register the ' +
      "tenant's client secret again (and check the registrars' URS_SECRET_KEY)",
    record.cause,
  );
}

import { ConfigError } from '@urs/config';
import type { Logger } from '@urs/logging';
import { errorCode } from '@urs/resilience';
import type { SealedSecret, SecretSealer } from './sealer';

/** Where the sealed secrets are stored (the tenant store in Redis): only what the check reads of it. */
export interface StoredSecrets {
  /** Every stored tenant id. */
  ids(): Promise<string[]>;
  /** The records of `tenantIds` at once (pipelined), by tenant id; none for a tenant with none. */
  getMany(
    tenantIds: readonly string[],
  ): Promise<ReadonlyMap<string, { defender: { clientSecret: SealedSecret } }>>;
}

/** Records read by the first round trip of `sealedSecrets`, and by the biggest: each reads twice the one before. */
const READS = { first: 16, most: 1000 };

/**
 * The stored secrets of `tenantIds`, in that order, read a chunk at a time, pipelined: the first chunk small,
 * as the first records mostly settle what is asked, each next one twice as big up to 1000 records, so that
 * reading every record (for a key id no stored secret uses) takes a few round trips, not one per tenant. A
 * caller that stops early reads no further chunk.
 */
async function* sealedSecrets(
  tenants: StoredSecrets,
  tenantIds: readonly string[],
): AsyncGenerator<[tenantId: string, sealed: SealedSecret]> {
  let size = READS.first;
  for (let start = 0; start < tenantIds.length; start += size, size = Math.min(size * 2, READS.most)) {
    const chunk = tenantIds.slice(start, start + size);
    const records = await tenants.getMany(chunk);
    for (const tenantId of chunk) {
      const sealed = records.get(tenantId)?.defender.clientSecret;
      if (sealed) yield [tenantId, sealed];
    }
  }
}

/** Whether `sealed` opens with this process's key of its key id. A fault other than an unreadable secret is thrown. */
function opens(sealer: SecretSealer, sealed: SealedSecret, tenantId: string): boolean {
  try {
    sealer.open(sealed, tenantId);
    return true;
  } catch (error) {
    if (errorCode(error) !== 'SECRET_UNREADABLE') throw error;
    return false;
  }
}

/** What `probeSecretKey` found: whether a stored secret opened, and how many were tried. */
export interface SecretKeyProbe {
  /** The tenant whose secret this process's keys opened; undefined when none of those tried opened. */
  openedBy: string | undefined;
  /** Stored secrets tried (sealed with a key id this process holds). 0: nothing to try. */
  tried: number;
  /** The key id of the last secret tried. */
  keyId: string | undefined;
  /** Stored tenant ids in all. */
  tenants: number;
}

export interface SecretKeyProbeDeps {
  sealer: SecretSealer;
  tenants: StoredSecrets;
  /** The key ids this process holds (URS_SECRET_KEY_ID and URS_SECRET_KEYS_PREVIOUS). */
  keyIds: ReadonlySet<string>;
  /** Records tried at most. Default 5. */
  sample?: number;
  /** Tenants whose secret is not tried (the one whose secret did not open, when asking whose fault it is). */
  except?: ReadonlySet<string>;
}

/**
 * Tries up to `sample` stored secrets sealed with a key id this process holds, and stops at the first that
 * opens. The sealer cannot tell a wrong key from a damaged record; one secret that opens says the key is
 * right, none of several says it is wrong. A fault of the store is thrown as it is.
 */
export async function probeSecretKey(deps: SecretKeyProbeDeps): Promise<SecretKeyProbe> {
  const sample = deps.sample ?? 5;
  const ids = await deps.tenants.ids();
  const toRead = deps.except === undefined ? ids : ids.filter((tenantId) => !deps.except?.has(tenantId));
  let tried = 0;
  let keyId: string | undefined;
  for await (const [tenantId, sealed] of sealedSecrets(deps.tenants, toRead)) {
    if (!deps.keyIds.has(sealed.keyId)) continue;
    tried++;
    keyId = sealed.keyId;
    if (opens(deps.sealer, sealed, tenantId))
      return { openedBy: tenantId, tried, keyId, tenants: ids.length };
    if (tried >= sample) break;
  }
  return { openedBy: undefined, tried, keyId, tenants: ids.length };
}

/**
 * Where each key id's fingerprint is kept (Redis): an HMAC of a constant under the key, written by the first
 * process that proves or claims the key, so a key no stored secret uses yet is still compared across processes.
 */
export interface KeyFingerprints {
  get(keyId: string): Promise<string | null>;
  /** Writes `fingerprint` unless one is stored; answers the one stored afterwards. */
  claim(keyId: string, fingerprint: string): Promise<string>;
  /** Where the fingerprint of `keyId` is kept (its Redis key), named when a key is refused. */
  where(keyId: string): string;
}

export interface SecretKeyCheckDeps {
  sealer: SecretSealer;
  tenants: StoredSecrets;
  /** The key ids this process holds (URS_SECRET_KEY_ID and URS_SECRET_KEYS_PREVIOUS). */
  keyIds: ReadonlySet<string>;
  logger: Logger;
  /** Records tried at most per key id. Default 5. */
  sample?: number;
  /** The key ids' fingerprints; without them only stored secrets prove a key. */
  fingerprints?: KeyFingerprints;
  /**
   * Whether a held key id that neither a stored secret nor a fingerprint proves has its fingerprint written
   * by this process (the poller and the vuln-fetcher, rolled out first with a new key). The registrar does
   * not: its own fingerprint would prove nothing, and it seals what every other stage must open.
   */
  claimNewKeys?: boolean;
}

/** What `checkSecretKey` found. */
export interface SecretKeyCheck {
  /** Held key ids proven right: a stored secret sealed with it opened, or its fingerprint matched. */
  proven: ReadonlySet<string>;
}

/** The variable that holds a key id's key, named when it is refused. */
function variableOf(sealer: SecretSealer, keyId: string): string {
  return keyId === sealer.activeKeyId ? 'URS_SECRET_KEY' : 'URS_SECRET_KEYS_PREVIOUS';
}

/** Refuses the key of `keyId`: its fingerprint is not the one stored, with how to recover from a mistyped one. */
function fingerprintDiffers(
  deps: SecretKeyCheckDeps,
  fingerprints: KeyFingerprints,
  keyId: string,
): ConfigError {
  return new ConfigError(
    variableOf(deps.sealer, keyId),
    `differs from the key other processes hold under key id ${keyId} (it does not match the key's fingerprint ` +
      `stored at ${fingerprints.where(keyId)}). When that fingerprint is a mistyped key's and no stored secret ` +
      `is sealed under key id ${keyId} yet, delete that Redis key and start again; otherwise give the new key ` +
      'a new key id',
  );
}

/**
 * Whether the key of `keyId` is proven by its fingerprint, given what its stored secrets said (`opened`: one
 * opened; `failed`: some were tried, none opened). A stored fingerprint it does not match refuses the start,
 * even when secrets opened: they may be ones this very key sealed. None stored: one the stored secrets proved
 * writes its own; one no stored secret uses is claimed (`claimNewKeys`) or left unproven; one whose secrets
 * all failed writes nothing (it may be wrong).
 */
async function fingerprintMatches(
  deps: SecretKeyCheckDeps,
  fingerprints: KeyFingerprints,
  keyId: string,
  secrets: { opened: boolean; failed: boolean },
): Promise<boolean> {
  const own = deps.sealer.fingerprint(keyId);
  const claims = secrets.opened || (!secrets.failed && deps.claimNewKeys === true);
  const stored = claims ? await fingerprints.claim(keyId, own) : await fingerprints.get(keyId);
  if (stored === null) return false;
  if (stored !== own) throw fingerprintDiffers(deps, fingerprints, keyId);
  return true;
}

/** What the stored secrets of one held key id said. */
interface KeySecrets {
  keyId: string;
  /** Whether one of them opened. */
  opened: boolean;
  /** How many were tried (0: none is stored). */
  tried: number;
}

/**
 * Up to `sample` stored secrets of each held key id, looked for wherever they are in one pass over the
 * records, which stops once every held key id is settled (one of its secrets opened, or `sample` were tried).
 * The first records mostly settle them all; a key id no stored secret uses (a new active key before anything
 * is sealed with it, a previous one once none is left) is only settled by reading every record, which the
 * pipelined reads of `sealedSecrets` keep to a few round trips. Searching the first records only took a
 * previous key id whose last secrets came later for one no secret uses: a mistyped key of it was not warned of,
 * and with no fingerprint stored (after a Redis wipe) a poller or vuln-fetcher claimed it as a new key, so that
 * every stage holding the right one was refused at its next start.
 */
async function trySecretsPerKey(deps: SecretKeyCheckDeps): Promise<{ keys: KeySecrets[]; tenants: number }> {
  const sample = deps.sample ?? 5;
  const keys = new Map([...deps.keyIds].map((keyId) => [keyId, { keyId, opened: false, tried: 0 }]));
  const settled = (key: KeySecrets) => key.opened || key.tried >= sample;
  const ids = await deps.tenants.ids();
  for await (const [tenantId, sealed] of sealedSecrets(deps.tenants, ids)) {
    const key = keys.get(sealed.keyId);
    if (key === undefined || settled(key)) continue;
    key.tried++;
    key.opened = opens(deps.sealer, sealed, tenantId);
    if ([...keys.values()].every(settled)) break;
  }
  return { keys: [...keys.values()], tenants: ids.length };
}

/**
 * Refuses the start when the active key opens none of the stored secrets sealed under its key id: a replica
 * given another URS_SECRET_KEY under the same URS_SECRET_KEY_ID stayed ready and failed every tenant's work (a
 * poller's cycles, a vuln-fetcher's batches), or, in the registrar, sealed new secrets with a key the other
 * stages do not hold. Each held key id is checked on its own: a right previous key opening its secrets says
 * nothing of a mistyped new one, which the registrar would re-seal every secret with. Up to `sample` records
 * per key id are tried; one that opens is enough (a single altered record is that tenant's fault, and its
 * cycles say so). A previous key id none of whose secrets opens is only warned about: late in a rotation the
 * records left on it are the damaged ones the re-sealer could not open, and one tenant's record must not stop
 * every stage; its fingerprint, when stored, still refuses a wrong key. Every held key id is compared with its
 * fingerprint, written by the first process that proved or claimed it. Nothing to try lets the start go on;
 * the key ids left unproven are not in `proven` (the registrar re-seals nothing with an unproven active key).
 */
export async function checkSecretKey(deps: SecretKeyCheckDeps): Promise<SecretKeyCheck> {
  const { keys, tenants } = await trySecretsPerKey(deps);
  const active = keys.find((key) => key.keyId === deps.sealer.activeKeyId);
  if (active !== undefined && !active.opened && active.tried > 0)
    throw new ConfigError(
      'URS_SECRET_KEY',
      `does not open any of the ${active.tried} stored tenant secrets tried (sealed with key ${active.keyId}): ` +
        'it differs from the key the registrar sealed them with under that URS_SECRET_KEY_ID',
    );
  if (keys.every((key) => key.tried === 0))
    deps.logger.info('no stored tenant secret to check URS_SECRET_KEY against', { tenants });
  const proven = new Set(keys.filter((key) => key.opened).map((key) => key.keyId));
  for (const key of keys) {
    const failed = !key.opened && key.tried > 0;
    const fingerprints = deps.fingerprints;
    if (
      fingerprints !== undefined &&
      (await fingerprintMatches(deps, fingerprints, key.keyId, { ...key, failed }))
    )
      proven.add(key.keyId);
    if (failed)
      deps.logger.warn(
        'URS_SECRET_KEYS_PREVIOUS opens none of the stored secrets tried under one of its key ids',
        {
          keyId: key.keyId,
          tried: key.tried,
          action:
            'check that key against the other stages; the records are damaged when it is right: register those ' +
            "tenants' client secrets again",
        },
      );
  }
  return { proven };
}

import { ConfigError } from '@urs/config';
import type { Logger } from '@urs/logging';
import { errorCode } from '@urs/resilience';
import type { SealedSecret, SecretSealer } from './sealer';

/** Where the sealed secrets are stored (the tenant store in Redis): only what the check reads of it. */
export interface StoredSecrets {
  /** Every stored tenant id. */
  ids(): Promise<string[]>;
  get(tenantId: string): Promise<{ defender: { clientSecret: SealedSecret } } | null>;
}

export interface SecretKeyCheckDeps {
  sealer: SecretSealer;
  tenants: StoredSecrets;
  /** The key ids this process holds (URS_SECRET_KEY_ID and URS_SECRET_KEYS_PREVIOUS). */
  keyIds: ReadonlySet<string>;
  logger: Logger;
  /** Records tried at most. Default 5. */
  sample?: number;
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
  let tried = 0;
  let keyId: string | undefined;
  for (const tenantId of ids) {
    if (tried >= sample) break;
    if (deps.except?.has(tenantId)) continue;
    const record = await deps.tenants.get(tenantId);
    const sealed = record?.defender.clientSecret;
    if (!sealed || !deps.keyIds.has(sealed.keyId)) continue;
    tried++;
    keyId = sealed.keyId;
    try {
      deps.sealer.open(sealed, tenantId);
      return { openedBy: tenantId, tried, keyId, tenants: ids.length };
    } catch (error) {
      if (errorCode(error) !== 'SECRET_UNREADABLE') throw error;
    }
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

/**
 * Whether the key of `keyId` is proven by its fingerprint. One stored secrets proved writes its fingerprint
 * when none is stored; one they did not is compared with the stored fingerprint, or claimed (`claimNewKeys`),
 * or left unproven. A stored fingerprint it does not match refuses the start.
 */
async function fingerprintMatches(
  deps: SecretKeyCheckDeps,
  fingerprints: KeyFingerprints,
  keyId: string,
  openedSecrets: boolean,
): Promise<boolean> {
  const own = deps.sealer.fingerprint(keyId);
  if (openedSecrets) {
    await fingerprints.claim(keyId, own);
    return true;
  }
  const stored =
    (await fingerprints.get(keyId)) ?? (deps.claimNewKeys ? await fingerprints.claim(keyId, own) : null);
  if (stored === null) return false;
  if (stored !== own)
    throw new ConfigError(
      variableOf(deps.sealer, keyId),
      `differs from the key other processes hold under key id ${keyId} (it does not match the key's stored ` +
        'fingerprint)',
    );
  return true;
}

/**
 * Up to `sample` stored secrets of each held key id: the key ids one of them opened, and those none did (with
 * how many were tried). Every record is read unless every key id opened first: a key id whose secrets come
 * late in the list is checked all the same.
 */
async function trySecretsPerKey(
  deps: SecretKeyCheckDeps,
): Promise<{ opened: Set<string>; refused: Map<string, number>; tenants: number }> {
  const sample = deps.sample ?? 5;
  const ids = await deps.tenants.ids();
  const opened = new Set<string>();
  const tried = new Map<string, number>();
  const refused = new Map<string, number>();
  for (const tenantId of ids) {
    if (opened.size === deps.keyIds.size) break;
    const sealed = (await deps.tenants.get(tenantId))?.defender.clientSecret;
    if (!sealed || !deps.keyIds.has(sealed.keyId) || opened.has(sealed.keyId)) continue;
    const count = tried.get(sealed.keyId) ?? 0;
    if (count >= sample) continue;
    tried.set(sealed.keyId, count + 1);
    try {
      deps.sealer.open(sealed, tenantId);
      opened.add(sealed.keyId);
      refused.delete(sealed.keyId);
    } catch (error) {
      if (errorCode(error) !== 'SECRET_UNREADABLE') throw error;
      refused.set(sealed.keyId, count + 1);
    }
  }
  return { opened, refused, tenants: ids.length };
}

/**
 * Refuses the start when one of this process's keys opens none of the stored secrets sealed under its key id:
 * a replica given another URS_SECRET_KEY under the same URS_SECRET_KEY_ID stayed ready and failed every
 * tenant's work (a poller's cycles, a vuln-fetcher's batches), or, in the registrar, sealed new secrets with a
 * key the other stages do not hold. Each held key id is checked on its own: a right previous key opening its
 * secrets says nothing of a mistyped new one, which the registrar would re-seal every secret with. Up to
 * `sample` records per key id are tried; one that opens is enough (a single altered record is that tenant's
 * fault, and its cycles say so). A key id no stored secret uses is compared with its fingerprint instead,
 * written by the first process that proved or claimed it. Nothing to try lets the start go on; the key ids
 * left unproven are not in `proven` (the registrar re-seals nothing with an unproven active key).
 */
export async function checkSecretKey(deps: SecretKeyCheckDeps): Promise<SecretKeyCheck> {
  const { opened, refused, tenants } = await trySecretsPerKey(deps);
  const [refusal] = refused;
  if (refusal !== undefined) {
    const [keyId, tried] = refusal;
    const variable = variableOf(deps.sealer, keyId);
    throw new ConfigError(
      variable,
      `does not open any of the ${tried} stored tenant secrets tried (sealed with key ${keyId}): it differs ` +
        `from the key the registrar sealed them with under that ${variable === 'URS_SECRET_KEY' ? 'URS_SECRET_KEY_ID' : 'key id'}`,
    );
  }
  if (opened.size === 0)
    deps.logger.info('no stored tenant secret to check URS_SECRET_KEY against', { tenants });
  const proven = new Set(opened);
  if (deps.fingerprints === undefined) return { proven };
  for (const id of deps.keyIds) {
    if (await fingerprintMatches(deps, deps.fingerprints, id, opened.has(id))) proven.add(id);
  }
  return { proven };
}

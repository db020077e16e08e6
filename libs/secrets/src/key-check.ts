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
 * Refuses the start when this process's keys open none of the stored secrets they should open: a replica
 * given another URS_SECRET_KEY under the same URS_SECRET_KEY_ID stayed ready and failed every tenant's
 * work (a poller's cycles, a vuln-fetcher's batches), or, in the registrar, sealed new secrets with a key
 * the other stages do not hold. Up to `sample` records sealed with a key id this process holds are tried;
 * one that opens is enough (a single altered record is that tenant's fault, and its cycles say so).
 * Nothing to try (a fresh system, Redis wiped before the registrar rebuilt it, only records of keys not
 * held) lets the start go on: the work then reports the key.
 */
export async function checkSecretKey(deps: SecretKeyCheckDeps): Promise<void> {
  const { openedBy, tried, keyId, tenants } = await probeSecretKey(deps);
  if (openedBy !== undefined) return;
  if (tried === 0) {
    deps.logger.info('no stored tenant secret to check URS_SECRET_KEY against', { tenants });
    return;
  }
  throw new ConfigError(
    'URS_SECRET_KEY',
    `does not open any of the ${tried} stored tenant secrets tried (sealed with key ${keyId ?? '?'}): ` +
      'it differs from the key the registrar sealed them with under that URS_SECRET_KEY_ID',
  );
}

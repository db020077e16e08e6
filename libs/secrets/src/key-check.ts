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
  const sample = deps.sample ?? 5;
  const ids = await deps.tenants.ids();
  let tried = 0;
  let keyId: string | undefined;
  for (const tenantId of ids) {
    if (tried >= sample) break;
    const record = await deps.tenants.get(tenantId);
    const sealed = record?.defender.clientSecret;
    if (!sealed || !deps.keyIds.has(sealed.keyId)) continue;
    tried++;
    keyId = sealed.keyId;
    try {
      deps.sealer.open(sealed, tenantId);
      return;
    } catch (error) {
      if (errorCode(error) !== 'SECRET_UNREADABLE') throw error;
    }
  }
  if (tried === 0) {
    deps.logger.info('no stored tenant secret to check URS_SECRET_KEY against', { tenants: ids.length });
    return;
  }
  throw new ConfigError(
    'URS_SECRET_KEY',
    `does not open any of the ${tried} stored tenant secrets tried (sealed with key ${keyId ?? '?'}): ` +
      'it differs from the key the registrar sealed them with under that URS_SECRET_KEY_ID',
  );
}

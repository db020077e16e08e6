import type { Logger } from '@urs/logging';
import { errorCode, errorMessage, sleep } from '@urs/resilience';
import { SecretError, type SecretSealer } from '@urs/secrets';
import type { TenantStore } from '@urs/store';
import type { Registry } from '@urs/telemetry';
import type { TenantRegistry } from './registry';
import { isTenantContention } from './tenant-lock';

export interface SecretResealerDeps {
  tenants: Pick<TenantStore, 'ids' | 'getMany'>;
  registry: Pick<TenantRegistry, 'reseal'>;
  sealer: Pick<SecretSealer, 'isStale' | 'activeKeyId'>;
  /** The key ids `sealer` holds (URS_SECRET_KEY_ID and URS_SECRET_KEYS_PREVIOUS): the secrets it can re-seal. */
  keyIds: ReadonlySet<string>;
  /** Resolves once Redis holds the tenants of `urs.tenants` (the registrar's `ready`): awaited by each pass. */
  ready: () => Promise<void>;
  /** Whether the active key is proven right (`DirectorSide.activeKeyProven`): nothing is re-sealed until it is. */
  activeKeyProven: () => Promise<boolean>;
  metrics: Registry;
  logger: Logger;
  /** Records re-sealed at most per pass. */
  batch: number;
  random?: () => number;
}

/** What one pass found and did. */
export interface ResealPass {
  /** Stored secrets sealed with a key other than the active one, after the pass. */
  retired: number;
  /** Re-sealed by this pass, by the key id they were sealed with. */
  resealed: Record<string, number>;
}

export interface SecretResealer {
  /** Counts the stored secrets sealed with a retired key and re-seals up to `batch` of them. */
  pass(signal?: AbortSignal): Promise<ResealPass>;
  /** A pass at once, then one every `intervalMs`, until `signal`; a failed pass is logged and tried again. */
  watch(intervalMs: number, signal: AbortSignal): Promise<void>;
}

/**
 * Moves the stored secrets onto the active key. A record is otherwise re-sealed only when it is written
 * again, and a tenant that never changes would keep its retired key for ever: the key could never be
 * dropped from URS_SECRET_KEYS_PREVIOUS without breaking that tenant's cycles (`SECRET_KEY_UNKNOWN`).
 * Each pass re-seals at most `batch` records, one after the other, so a rotation over thousands of tenants
 * reaches `urs.tenants` (and every poller, scorer and publisher reading it) a batch at a time. Replicas run
 * passes alike; each starts at a random place in the list so that they mostly take different tenants, and the
 * registry re-checks each record under the tenant's lock. `urs_secrets_on_retired_keys` says how many remain:
 * at 0 the retired keys can be dropped.
 */
export function createSecretResealer(deps: SecretResealerDeps): SecretResealer {
  const log = deps.logger.child({ component: 'reseal' });
  const random = deps.random ?? Math.random;
  // Unset until the first pass counted: a 0 before then would say the old key can go.
  const gauge = deps.metrics.gauge(
    'urs_secrets_on_retired_keys',
    'Tenants whose stored client secret is sealed with a key other than the active one (at 0 the keys of URS_SECRET_KEYS_PREVIOUS can be dropped).',
  );
  /** Tenants (and the key) already warned about: each pass meets them again. */
  const warned = new Set<string>();

  function warnOnce(tenantId: string, keyId: string, message: string, fields: Record<string, unknown>): void {
    const key = `${tenantId}\n${keyId}`;
    if (warned.has(key)) return;
    warned.add(key);
    log.warn(message, { tenantId, keyId, ...fields });
  }

  /** Whether the active key being unproven was logged (once until it is proven). */
  let unprovenWarned = false;

  function warnUnproven(): void {
    if (unprovenWarned) return;
    unprovenWarned = true;
    // A mistyped URS_SECRET_KEY under a new URS_SECRET_KEY_ID opens no stored secret yet, so nothing
    // refused it: re-sealed with it, every tenant's secret would be unreadable to the poller and vuln-fetcher.
    log.warn('stored secrets not re-sealed: the active key is not proven yet', {
      keyId: deps.sealer.activeKeyId,
      action:
        'roll out the poller or the vuln-fetcher with this URS_SECRET_KEY first (they record its fingerprint), ' +
        'or check URS_SECRET_KEY against theirs',
    });
  }

  async function pass(signal?: AbortSignal): Promise<ResealPass> {
    await deps.ready();
    const retired: { tenantId: string; keyId: string }[] = [];
    for (const [tenantId, record] of await deps.tenants.getMany(await deps.tenants.ids())) {
      const sealed = record.defender.clientSecret;
      if (sealed && deps.sealer.isStale(sealed)) retired.push({ tenantId, keyId: sealed.keyId });
    }
    const resealable = retired.filter(({ tenantId, keyId }) => {
      if (deps.keyIds.has(keyId)) return true;
      warnOnce(
        tenantId,
        keyId,
        'stored secret sealed with a key this registrar does not hold: not re-sealed',
        {
          action: 'PUT the tenant clientSecret again, or add its key to URS_SECRET_KEYS_PREVIOUS',
        },
      );
      return false;
    });
    if (resealable.length > 0 && !(await deps.activeKeyProven())) {
      gauge.set(retired.length);
      warnUnproven();
      return { retired: retired.length, resealed: {} };
    }
    unprovenWarned = false;
    const start = Math.floor(random() * resealable.length);
    const batch = [...resealable.slice(start), ...resealable.slice(0, start)].slice(0, deps.batch);
    const resealed: Record<string, number> = {};
    let done = 0;
    for (const { tenantId, keyId } of batch) {
      if (signal?.aborted) break;
      try {
        const result = await deps.registry.reseal(tenantId);
        if (result.outcome === 'polling') continue;
        done++;
        if (result.outcome === 'resealed') resealed[result.fromKeyId] = (resealed[result.fromKeyId] ?? 0) + 1;
      } catch (error) {
        // Its lock held past the wait (a push or a REST write of the tenant under way), or lost while the
        // re-seal ran: a later pass.
        if (isTenantContention(error)) continue;
        // A record this registrar's key does not open (damaged): the tenant's cycles report it too.
        if (!(error instanceof SecretError)) throw error;
        warnOnce(tenantId, keyId, 'stored secret not re-sealed: it does not open', {
          code: errorCode(error),
          reason: errorMessage(error),
        });
      }
    }
    const remaining = retired.length - done;
    gauge.set(remaining);
    const count = Object.values(resealed).reduce((sum, n) => sum + n, 0);
    if (count > 0)
      log.info('stored secrets re-sealed with the active key', {
        resealed: count,
        fromKeyIds: resealed,
        remaining,
      });
    return { retired: remaining, resealed };
  }

  return {
    pass,
    async watch(intervalMs, signal) {
      let failing = false;
      while (!signal.aborted) {
        try {
          await pass(signal);
          if (failing) log.info('re-sealing stored secrets: succeeded again');
          failing = false;
        } catch (error) {
          if (signal.aborted) break;
          // One warning per outage (Kafka or Redis away); the next pass tries again.
          if (!failing)
            log.warn('re-sealing stored secrets failed; tried again at the next pass', {
              code: errorCode(error),
              reason: errorMessage(error),
            });
          failing = true;
        }
        await sleep(intervalMs, signal);
      }
    },
  };
}

import type { SealedSecretRecord, TenantRecord } from '@urs/contracts';
import { UrsError } from '@urs/resilience';
import type { SecretSealer } from '@urs/secrets';

/**
 * Which secret a tenant's next record carries: the one its registration sends, or the stored one a REST update
 * keeps by leaving `clientSecret` out; and whether it is the secret the record already has. The rules: a
 * secret belongs to one app registration, and one sealed with a retired key is sealed again with the active one.
 */

/**
 * Whether `defender` names another app registration than `current`: another Entra tenant, app or cloud (GUIDs
 * compared in any case, a cloud left out or null is the default). A secret kept across such a change is
 * another app's, and the tenant would fail later with a sign-in error that does not say why.
 */
export function switchesApp(
  current: TenantRecord,
  defender: { readonly azureTenantId?: unknown; readonly clientId?: unknown; readonly cloud?: unknown },
): boolean {
  const guid = (value: unknown) => (typeof value === 'string' ? value.toLowerCase() : value);
  return (
    guid(defender.azureTenantId) !== current.defender.azureTenantId.toLowerCase() ||
    guid(defender.clientId) !== current.defender.clientId.toLowerCase() ||
    (defender.cloud ?? 'commercial') !== current.defender.cloud
  );
}

/** `register` with `keepSecret` when the record names another app than the one its stored secret is for. */
export class SecretForOtherAppError extends UrsError {
  constructor(tenantId: string) {
    super(
      'SECRET_FOR_OTHER_APP',
      `tenant ${tenantId}'s stored clientSecret is for another app registration: send the clientSecret`,
      { canRetry: false },
    );
  }
}

/** A REST update kept the stored secret of a tenant that was deleted before it could be written. */
export class TenantGoneError extends UrsError {
  constructor(tenantId: string) {
    super(
      'TENANT_NOT_FOUND',
      `tenant ${tenantId} was deleted while this update was made: register it again with its clientSecret`,
      { canRetry: false },
    );
  }
}

/**
 * The stored secret of `current`, opened, for a registration that keeps it (`keepSecret`); `current` is read
 * under the tenant's write lock. Throws `TenantGoneError` when there is none, `SecretForOtherAppError` when
 * `defender` names another app, the sealer's `SecretError` when no key here opens it.
 */
export function openKeptSecret(
  sealer: SecretSealer,
  tenantId: string,
  current: TenantRecord | null,
  defender: { readonly azureTenantId: string; readonly clientId: string; readonly cloud?: unknown },
): string {
  if (!current) throw new TenantGoneError(tenantId);
  // Checked again here, under the lock: a PUT with another app and its secret may have landed since the
  // caller read the record.
  if (switchesApp(current, defender)) throw new SecretForOtherAppError(tenantId);
  // Opened even when its sealed form is kept: one that no key here opens would be kept useless, and the
  // write would erase the status that says why the tenant's cycles fail. The sealer's SecretError
  // reaches the caller instead.
  return sealer.open(current.defender.clientSecret, tenantId);
}

/**
 * Whether `current` already holds the secret a registration brings: `sent`, or the stored one when it is
 * `kept`. A secret sealed with a retired key is never the same when the active key may re-seal it
 * (`reseals`, key rotation): the write re-seals it. One no key here opens is not the same either.
 */
export function sameSecret(
  sealer: SecretSealer,
  tenantId: string,
  current: TenantRecord,
  sent: string,
  kept: string | undefined,
  reseals = true,
): boolean {
  if (reseals && sealer.isStale(current.defender.clientSecret)) return false;
  if (kept !== undefined) return true;
  return opensTo(sealer, tenantId, current.defender.clientSecret, sent);
}

/** Whether `sealed` opens to `secret` with a key here. */
function opensTo(
  sealer: SecretSealer,
  tenantId: string,
  sealed: SealedSecretRecord,
  secret: string,
): boolean {
  try {
    return sealer.open(sealed, tenantId) === secret;
  } catch {
    return false;
  }
}

/**
 * The sealed secret of the tenant's next record: `current`'s when it is `kept`, else `sent`, sealed. A stored
 * secret sealed with a retired key is sealed again with the active one (key rotation) only when the active
 * key may re-seal (`reseals`: it is proven right); until then the stored secret stays as it is when the
 * registration brings it unchanged, so that a mistyped new key seals nothing but new secrets.
 */
export function secretToWrite(
  sealer: SecretSealer,
  tenantId: string,
  current: TenantRecord | null,
  sent: string,
  kept: string | undefined,
  reseals = true,
): SealedSecretRecord {
  if (!current) return sealer.seal(sent, tenantId);
  const stored = current.defender.clientSecret;
  const stale = sealer.isStale(stored);
  if (kept !== undefined) return stale && reseals ? sealer.seal(kept, tenantId) : stored;
  if (stale && !reseals && opensTo(sealer, tenantId, stored, sent)) return stored;
  return sealer.seal(sent, tenantId);
}

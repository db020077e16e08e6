import type { TenantRecord } from '@urs/contracts';
import type { TenantStore } from '@urs/store';
import { restRefusal } from '../validation';
import { ApiError } from './router';

export interface RegisteredTenantDeps {
  tenants: Pick<TenantStore, 'get' | 'getStatus'>;
  /** Resolves once Redis holds the tenants of `urs.tenants` (see rebuiltGate). */
  ensureRebuilt: () => Promise<void>;
}

/**
 * The tenant's record, for the routes of a registered tenant. Without one, a 404 that says why:
 * `TENANT_NOT_REGISTERED` with the refusal when every registration of the tenant was refused (its message, and
 * its fields and rules as the 400's `violations`: both naming fields as the REST body does, never a value),
 * `TENANT_NOT_FOUND` when it has none.
 */
export async function registeredTenant(deps: RegisteredTenantDeps, tenantId: string): Promise<TenantRecord> {
  await deps.ensureRebuilt();
  const record = await deps.tenants.get(tenantId);
  if (record) return record;
  const status = await deps.tenants.getStatus(tenantId);
  const refusal = status.registrationError ? restRefusal(status.registrationError) : undefined;
  // `lastErrorMessage`: a refusal stored before it had fields of its own (its message alone).
  const message = refusal?.message ?? status.lastErrorMessage;
  if (status.state === 'registration-rejected' && message) {
    throw new ApiError(
      404,
      'TENANT_NOT_REGISTERED',
      `tenant ${tenantId} has no accepted registration; the last one was refused: ${message}`,
      refusal?.violations ?? [],
    );
  }
  throw new ApiError(404, 'TENANT_NOT_FOUND', `tenant ${tenantId} has no Defender registration`);
}

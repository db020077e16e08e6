import { CallHealth, type CallHealthOptions } from './call-health';
import type { DefenderEndpoints } from './endpoints';

/** Who a tenant's client calls Defender as: its directory and application. */
export interface DefenderApp {
  azureTenantId: string;
  clientId: string;
}

/** A client's CallHealth, with the app and API host its calls were made to (see `callHealthOfApp`). */
export interface AppCallHealth {
  /** The API host and app, as `apiBase/azureTenantId/clientId` (ids in lower case). */
  app: string;
  health: CallHealth;
}

/**
 * The CallHealth a tenant's new client starts with. Kept from the client it replaces when that one called
 * the same API host (`endpoints.apiBase`: the cloud's, the region's, or the operator's) as the same app (the
 * tenant's record re-sealed, or its secret rotated; ids compared in any case): what the calls showed of the
 * tenant's API stays with the tenant, so a slow tenant capped to 2 of the 10 shared slots, or one whose calls
 * are held back, does not get them all back with each new client. Another app, cloud or region is another API
 * to judge afresh (a tenant held back for calls to the wrong regional host is not held back once its region
 * is fixed): a new CallHealth of `options`.
 */
export function callHealthOfApp(
  tenant: DefenderApp,
  endpoints: Pick<DefenderEndpoints, 'apiBase'>,
  replaced: AppCallHealth | undefined,
  options?: CallHealthOptions,
): AppCallHealth {
  const app = `${endpoints.apiBase}/${tenant.azureTenantId.toLowerCase()}/${tenant.clientId.toLowerCase()}`;
  if (replaced?.app === app) return replaced;
  return { app, health: new CallHealth(tenant.azureTenantId, options) };
}

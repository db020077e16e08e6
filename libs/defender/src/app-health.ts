import { CallHealth, type CallHealthOptions } from './call-health';

/** Who a tenant's client calls Defender as: its directory, application and cloud. */
export interface DefenderApp {
  azureTenantId: string;
  clientId: string;
  cloud?: string | null | undefined;
}

/** A client's CallHealth, with the app its calls were made as (see `callHealthOfApp`). */
export interface AppCallHealth {
  /** The app, as `azureTenantId/clientId/cloud`. */
  app: string;
  health: CallHealth;
}

/**
 * The CallHealth a tenant's new client starts with. Kept from the client it replaces when that one called
 * as the same app (the tenant's record re-sealed, or its secret rotated): what the calls showed of the
 * tenant's API stays with the tenant, so a slow tenant capped to 2 of the 10 shared slots, or one whose calls
 * are held back, does not get them all back with each new client. Another app (or cloud) is another API to
 * judge afresh: a new CallHealth of `options`.
 */
export function callHealthOfApp(
  tenant: DefenderApp,
  replaced: AppCallHealth | undefined,
  options?: CallHealthOptions,
): AppCallHealth {
  const app = `${tenant.azureTenantId}/${tenant.clientId}/${tenant.cloud ?? ''}`;
  if (replaced?.app === app) return replaced;
  return { app, health: new CallHealth(tenant.azureTenantId, options) };
}

import { randomUUID } from 'node:crypto';
import type { Agent } from 'node:https';
import type { TenantRecord } from '@urs/contracts';
import { createLocalQuotaGate, type CallLimiter } from '@urs/defender';
import { silentLogger } from '@urs/logging';
import type { Simulator } from '@urs/simulator';
import { Registry } from '@urs/telemetry';
import { sealedTenantRecord } from '@urs/testkit';
import { createDefenderGateway, type DefenderGateway, type DefenderGatewayDeps } from '../../src/defender';
import { sealer } from './cycle';

/**
 * The poller's Defender gateway against the simulator `sim` (its CA trusted by `agent`), calling under
 * `limiter`: a quota gate of its own, a silent logger and a registry of its own, unless `deps` says otherwise.
 */
export function simGateway(
  sim: Simulator,
  agent: Agent,
  limiter: CallLimiter,
  deps: Partial<DefenderGatewayDeps> = {},
): DefenderGateway {
  return createDefenderGateway({
    limiter,
    quota: createLocalQuotaGate(),
    logger: silentLogger,
    overrides: { authorityHost: sim.baseUrl, apiBase: sim.baseUrl },
    httpsAgent: agent,
    metrics: new Registry(),
    ...deps,
  });
}

/** A tenant of the simulator: its app's credentials, unique to the test. */
export interface SimTenant {
  tenantId: string;
  azureTenantId: string;
  clientId: string;
  secret: string;
}

/** Tenant `tenantId`, with an Azure tenant, an app and a secret of its own. */
export const simTenant = (tenantId: string): SimTenant => ({
  tenantId,
  azureTenantId: randomUUID(),
  clientId: randomUUID(),
  secret: `Zx8Q~${randomUUID().replace(/-/g, '')}`,
});

/** Adds each of `tenants` to `sim`, with its app and a fleet of 3 devices. */
export function addSimTenants(sim: Simulator, tenants: readonly SimTenant[]): void {
  for (const tenant of tenants)
    sim.addTenant({
      azureTenantId: tenant.azureTenantId,
      apps: [{ clientId: tenant.clientId, clientSecret: tenant.secret }],
      fleet: { size: 3, seed: 7 },
    });
}

/** `tenant`'s record, polled every `pollIntervalMinutes` (10 unless told), its secret sealed by `sealer`. */
export const simRecord = (tenant: SimTenant, pollIntervalMinutes = 10): TenantRecord =>
  sealedTenantRecord(
    tenant.tenantId,
    { azureTenantId: tenant.azureTenantId, clientId: tenant.clientId, clientSecret: tenant.secret },
    sealer,
    { source: 'rest', updatedAt: '2026-01-01T00:00:00.000Z', pollIntervalMinutes },
  );

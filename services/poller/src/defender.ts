import type { Agent } from 'node:https';
import type { Machine } from '@urs/contracts';
import {
  callHealthOfApp,
  createDefenderClient,
  createTenantClientCache,
  DefenderErrorCode,
  isSetupErrorCode,
  listedMachine,
  LONGEST_QUOTA_WINDOW_MS,
  MAX_MACHINE_PAGE_SIZE,
  planVulnerabilityMode,
  resolveEndpoints,
  type AppCallHealth,
  type CallHealthOptions,
  type CallLimiter,
  type DefenderEndpointOverrides,
  type QuotaGate,
} from '@urs/defender';
import type { Logger } from '@urs/logging';
import type { Registry } from '@urs/telemetry';

export { DefenderErrorCode, isSetupErrorCode, LONGEST_QUOTA_WINDOW_MS };

/** A tenant's credentials, the secret in clear (only in this process's memory, only for the cycle). */
export interface TenantCredentials {
  azureTenantId: string;
  clientId: string;
  clientSecret: string;
  cloud: string;
  region: string | null;
}

/** One page of a tenant's device listing, as the poller needs it. */
export interface DevicePage {
  devices: { machine: Machine; merged: boolean }[];
}

/** What a cycle needs of Microsoft: the device pages (the client gets and caches the token). */
export interface TenantDefender {
  listDevicePages(signal: AbortSignal): AsyncIterable<DevicePage>;
}

/** Which tenant, and which of its records: a client is kept for as long as the revision stays the same. */
export interface TenantVersion {
  tenantId: string;
  revision: number;
}

export interface DefenderGateway {
  /**
   * The tenant's client: the one kept for this revision of its record (with the token it holds), else a new
   * one from `credentials`, called only then. Owned by the gateway: the cycle does not close it.
   */
  forTenant(tenant: TenantVersion, credentials: () => TenantCredentials): TenantDefender;
  /** Lets the tenant's client go, with its secret (the tenant was deleted or disabled). */
  forget(tenantId: string): void;
  /** Closes every tenant's client. */
  close(): void;
  /**
   * Per-device vulnerability calls when the fleet fits the interval within the tenant's share of its app's
   * quota (shared by `sharers` tenants registered with the app, the tenant included; default 1), else the bulk
   * export.
   */
  planMode(
    deviceCount: number,
    pollIntervalMinutes: number,
    sharers?: number,
  ): { mode: 'per-device' | 'bulk'; perDeviceCapacity: number };
}

export interface DefenderGatewayDeps {
  limiter: CallLimiter;
  quota: QuotaGate;
  logger: Logger;
  overrides: DefenderEndpointOverrides;
  httpsAgent: Agent;
  /** The process's registry: the calls are counted there (`urs_defender_*`). */
  metrics: Registry;
  /** How long a call may go without an answer, in milliseconds (`URS_DEFENDER_REQUEST_TIMEOUT_MS`). */
  requestTimeoutMs?: number;
  /** How long a token request to Entra ID may take, in milliseconds (`URS_TOKEN_REQUEST_TIMEOUT_MS`). */
  tokenRequestTimeoutMs?: number;
  /** Devices per page of a listing (`URS_POLL_PAGE_SIZE`). Default the client's (10,000). */
  pageSize?: number;
  /**
   * Longest a call waits for the tenant's quota, in all for 429s, and, its tenant degraded, in all for a place
   * among the degraded tenants' calls, in milliseconds (`URS_POLL_MAX_QUOTA_WAIT_MS`): a longer wait fails it
   * THROTTLED at once (with what is left to wait, for the quota). Default: the client's (no limit for the quota
   * nor the degraded tenants' places, 10 minutes for 429s).
   */
  maxQuotaWaitMs?: number;
  /** A tenant's client is let go of after this long without a cycle, ms. Default an hour (a token's life). */
  idleMs?: number;
  /** When a tenant's calls go one at a time, then are held back, after failing in a row. Default CallHealth's. */
  health?: CallHealthOptions;
}

/**
 * Listings in a row, whole and with no page halved, after which a tenant's listings start at twice the page
 * size again (up to the configured one).
 */
export const CLEAN_LISTINGS_TO_GROW = 5;

/**
 * The page size a tenant's listings start at: the configured one until a page times out, then the size the
 * listing halved to, so the next cycle does not pay the timeouts again (each a call of its quota and a slow
 * failure in its call health, holding a shared slot up to the request timeout). It doubles back after
 * CLEAN_LISTINGS_TO_GROW clean listings: a larger size that still times out halves back at once and waits as
 * long again, so at most one listing in CLEAN_LISTINGS_TO_GROW + 1 pays a timeout, never one every cycle.
 */
function listingPageSize(configured: number) {
  let size = configured;
  let clean = 0;
  return {
    get size() {
      return size;
    },
    halved(pageSize: number) {
      size = pageSize;
      clean = 0;
    },
    listed() {
      if (++clean < CLEAN_LISTINGS_TO_GROW) return;
      size = Math.min(configured, size * 2);
      clean = 0;
    },
  };
}

/** A tenant's client, kept with its CallHealth (closed with it). */
interface KeptClient extends TenantDefender {
  /** What the client's calls showed of the tenant's API, handed on to the next client of the same app. */
  callHealth: AppCallHealth;
  close(): void;
}

/**
 * The gateway over @urs/defender: one client per tenant, sharing the call slots, the quota gate and the agent,
 * kept across cycles and their retries while the tenant's record is the same (createTenantClientCache, as the
 * vuln-fetcher keeps its own): a cycle retried after Redis or Kafka failed it asks Entra for no new token. A
 * new record of the same app and API host (its secret re-sealed) gets a new client with the old one's CallHealth
 * (`callHealthOfApp`): a tenant whose calls are held back, or capped for answering slowly, stays so.
 */
export function createDefenderGateway(deps: DefenderGatewayDeps): DefenderGateway {
  const clients = createTenantClientCache<KeptClient>(
    deps.idleMs === undefined ? {} : { idleMs: deps.idleMs },
  );

  function clientOf(credentials: TenantCredentials, replaced: KeptClient | undefined): KeptClient {
    const { region, ...rest } = credentials;
    const endpoints = resolveEndpoints(credentials.cloud, region ?? undefined, deps.overrides);
    const callHealth = callHealthOfApp(credentials, endpoints, replaced?.callHealth, deps.health);
    const client = createDefenderClient(region === null ? rest : { ...rest, region }, {
      limiter: deps.limiter,
      quota: deps.quota,
      logger: deps.logger,
      overrides: deps.overrides,
      httpsAgent: deps.httpsAgent,
      metrics: deps.metrics,
      callHealth: callHealth.health,
      ...(deps.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: deps.requestTimeoutMs }),
      ...(deps.tokenRequestTimeoutMs === undefined
        ? {}
        : { tokenRequestTimeoutMs: deps.tokenRequestTimeoutMs }),
      ...(deps.maxQuotaWaitMs === undefined
        ? {}
        : {
            maxQuotaWaitMs: deps.maxQuotaWaitMs,
            maxThrottleWaitMs: deps.maxQuotaWaitMs,
            maxDegradedWaitMs: deps.maxQuotaWaitMs,
          }),
    });
    // Kept with the client: a new one (the tenant's record changed, or the process restarted) starts over.
    const pageSize = listingPageSize(deps.pageSize ?? MAX_MACHINE_PAGE_SIZE);
    return {
      async *listDevicePages(signal) {
        let halved = false;
        const pages = client.listMachinePages({
          pageSize: pageSize.size,
          signal,
          onPageSizeHalved: (size) => {
            halved = true;
            pageSize.halved(size);
          },
        });
        for await (const page of pages) {
          yield {
            devices: page.machines.map((entry) => ({
              machine: listedMachine(entry.record),
              merged: entry.flags.merged,
            })),
          };
        }
        // Reached only when the listing ended whole (not failed, nor stopped by its caller).
        if (!halved) pageSize.listed();
      },
      callHealth,
      close: () => client.close(),
    };
  }

  return {
    forTenant: (tenant, credentials) =>
      clients.get(tenant.tenantId, tenant.revision, (replaced) => clientOf(credentials(), replaced)),
    forget: (tenantId) => clients.forget(tenantId),
    close: () => clients.close(),
    planMode: (deviceCount, pollIntervalMinutes, sharers) =>
      planVulnerabilityMode(deviceCount, pollIntervalMinutes, { sharers }),
  };
}

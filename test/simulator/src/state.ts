import { Fleet, type FleetSpec, type JsonCacheBudget } from './fleet';
import { MDE_QUOTAS, SlidingWindow, type QuotaKind } from './quota';
import type { MachineRecord } from './types';

export const DEFAULT_ROLES = ['Machine.Read.All', 'Vulnerability.Read.All', 'Alert.Read.All'];

export interface AppSpec {
  clientId: string;
  clientSecret: string;
  /** Application permissions granted with admin consent; default Machine/Vulnerability/Alert.Read.All. */
  roles?: string[];
  /** The secret matches but has expired (AADSTS7000222). Default false. */
  secretExpired?: boolean;
}

export interface TenantSpec {
  azureTenantId: string;
  apps: AppSpec[];
  fleet?: FleetSpec;
  machines?: MachineRecord[];
  /** false: the WindowsDefenderATP service principal is absent (AADSTS500011). Default true. */
  defenderProvisioned?: boolean;
}

/** Fault probabilities (0..1 each), rolled independently per MDE API call. */
export interface FaultSpec {
  /** Answer a 5xx (500 or 503 unless `status5xxStatuses` says otherwise) with the body `status5xxBody` says. */
  status5xxRate?: number;
  /** The statuses status5xxRate answers, one picked at random per fault. Default [503, 500]. */
  status5xxStatuses?: number[];
  /**
   * The body of status5xxRate's answers: 'mde' (default) MDE's error JSON; 'empty' none at all; 'html' a
   * gateway's HTML error page (`text/html`), as the Azure front end before the service answers when the
   * service behind it fails.
   */
  status5xxBody?: FiveXxBody;
  /**
   * Answer every MDE API call of the tenant 403 with a body that is not MDE's error JSON, as a proxy, firewall
   * or gateway in front of the service refusing the call: 'empty' none at all, 'html' a gateway's HTML page
   * (`text/html`). Checked once the token names the tenant, before its roles. Default none.
   */
  gateway403?: GatewayBody;
  /**
   * Answer every MDE API call of the tenant 404 with a body that is not MDE's error JSON, as a gateway or
   * proxy in front of the service that does not route the call (a wrong base path): 'empty' none at all,
   * 'html' a gateway's HTML page (`text/html`). Checked where gateway403 is, after it. Default none.
   */
  gateway404?: GatewayBody;
  /**
   * The tenant's next this many MDE API calls (after the role and licence checks) are answered 429
   * `TooManyRequests` whatever the quota's room, as a front end throttling before the service; counted
   * down as they happen.
   */
  throttledCalls?: number;
  /**
   * The tenant's next this many MDE API calls (after the quota) are answered 404 `ResourceNotFound` with
   * MDE's error body whatever exists, as Microsoft has been seen answering calls that succeed when asked
   * again (a listing's: as for a tenant with no machine); counted down as they happen.
   */
  notFoundCalls?: number;
  /** The wait throttledCalls' 429s ask for, in seconds (see retryAfter for how). Default 1. */
  throttleRetryAfterSec?: number;
  /**
   * Entra answers the tenant's token requests 429 (`temporarily_unavailable`, AADSTS50196) with
   * `Retry-After` of this many seconds, every one while set. Default none.
   */
  tokenThrottleRetryAfterSec?: number;
  /**
   * How every 429 of the tenant (its quota's and throttledCalls') carries its wait: 'seconds' (default,
   * `Retry-After: 12` as MDE sends it), 'httpDate' (`Retry-After: <HTTP date>`, which RFC 9110 allows too)
   * or 'none' (no Retry-After at all, as some gateways answer).
   */
  retryAfter?: RetryAfterStyle;
  /**
   * An origin (`https://api.securitycenter.microsoft.com`) that the device listing's and the bulk export's
   * `@odata.nextLink` and `@odata.context` name instead of the simulator's own, as Microsoft's examples show
   * links to the global host while a regional one was called. The links still lead to this simulator's
   * routes by path; a client following them to the host they name would leave the simulator.
   */
  nextLinkOrigin?: string;
  /**
   * Gzip MDE API answers (`Content-Encoding: gzip`) to requests whose Accept-Encoding names gzip, as
   * Azure's front ends do. Default false: answers go uncompressed.
   */
  gzip?: boolean;
  /** Destroy the TCP/TLS connection without answering. */
  resetRate?: number;
  /** Never answer; the request hangs until the client gives up (or the simulator closes). */
  timeoutRate?: number;
  /**
   * Answer 200 and then send the body a byte every 100 ms, never ending it: a connection that is never idle
   * long enough for an idle timeout, so only a deadline on the whole answer stops the call.
   */
  slowBodyRate?: number;
  /**
   * Send the tenant's MDE API answers at this many bytes per second (after gzip), a slice every 50 ms: a
   * large page on a slow link (a 10,000-device listing page is ~15 MB), whose last byte comes long after its
   * first, where `latency` delays only the first. Default none: as fast as the client reads.
   */
  bodyBytesPerSec?: number;
  /** Answer 200 with truncated JSON. */
  malformedRate?: number;
  /** /api/machines: return only part of a full page although more devices remain. */
  shortPageRate?: number;
  /**
   * How /api/machines answers a `$skip` past its last device: 'notFound' (default) 404 `ResourceNotFound`,
   * as for any listing with no machine in it; 'empty' 200 with `"value": []`, which Microsoft does not rule
   * out (it documents the 404 only for a tenant with no recent machines). A listing at `$skip` 0 with no
   * machine answers 404 either way.
   */
  pastEndPage?: PastEndPage;
  /**
   * The tenant's next this many requests for its OpenID metadata document (what a client reads before its
   * first token) have their connection reset, then it is served again: a passing failure, on demand.
   * Counted down as they happen.
   */
  openIdFailures?: number;
  /**
   * Also apply status5xxRate, resetRate and timeoutRate to the token endpoint (Entra answers 503
   * `temporarily_unavailable`). Default false: only MDE API calls see faults.
   */
  tokenEndpoint?: boolean;
  /**
   * Endpoint kinds answered 403 `DisabledFeature` ("Tenant feature isn't enabled."), every call: a tenant
   * without the licence they need, e.g. no Defender Vulnerability Management (`['vulnerabilities', 'bulk',
   * 'exportFiles']`). Checked after the role, before the quota.
   */
  disabledFeature?: QuotaKind[];
}

/** A body of the front end's own: none, or its HTML error page. */
export type GatewayBody = 'empty' | 'html';
export type FiveXxBody = 'mde' | GatewayBody;
export type RetryAfterStyle = 'seconds' | 'httpDate' | 'none';

export type PastEndPage = 'notFound' | 'empty';

export interface TenantState {
  id: string;
  apps: Map<string, Required<AppSpec>>;
  fleet: Fleet;
  defenderProvisioned: boolean;
  /**
   * Per app (its client id in lower case, the token's `appid`), its quotas: Microsoft counts them per
   * application and tenant. Made at the app's first call.
   */
  quotas: Map<string, Map<QuotaKind, SlidingWindow>>;
  /** The length of the quotas' per-minute window (see SimulatorOptions.quotaMinuteMs). */
  quotaMinuteMs: number | undefined;
}

const QUOTA_KINDS: readonly QuotaKind[] = ['machines', 'vulnerabilities', 'bulk', 'exportFiles'];

/** The window of `kind` of app `appId` in `tenant`, made at the app's first call. */
export function quotaOf(tenant: TenantState, appId: string, kind: QuotaKind): SlidingWindow {
  const id = appId.toLowerCase();
  let quotas = tenant.quotas.get(id);
  if (!quotas) {
    quotas = new Map(
      QUOTA_KINDS.map((k) => [k, new SlidingWindow(MDE_QUOTAS[k], tenant.quotaMinuteMs)] as const),
    );
    tenant.quotas.set(id, quotas);
  }
  return quotas.get(kind) as SlidingWindow;
}

export function validateFaults(faults: FaultSpec): FaultSpec {
  const out: FaultSpec = {};
  for (const key of [
    'status5xxRate',
    'resetRate',
    'timeoutRate',
    'slowBodyRate',
    'malformedRate',
    'shortPageRate',
  ] as const) {
    const value = faults[key];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !(value >= 0 && value <= 1))
      throw new Error(`faults.${key} must be a number between 0 and 1, got ${String(value)}`);
    out[key] = value;
  }
  if (faults.openIdFailures !== undefined) {
    const n = faults.openIdFailures;
    if (!Number.isInteger(n) || n < 0)
      throw new Error(`faults.openIdFailures must be a non-negative integer, got ${String(n)}`);
    out.openIdFailures = n;
  }
  if (faults.disabledFeature !== undefined) {
    const kinds = faults.disabledFeature as unknown;
    if (!Array.isArray(kinds) || kinds.some((kind) => !QUOTA_KINDS.includes(kind as QuotaKind)))
      throw new Error(
        `faults.disabledFeature must be an array of ${QUOTA_KINDS.join(', ')}, got ${JSON.stringify(kinds)}`,
      );
    out.disabledFeature = [...(kinds as QuotaKind[])];
  }
  if (faults.bodyBytesPerSec !== undefined) {
    const rate = faults.bodyBytesPerSec;
    if (!Number.isInteger(rate) || rate < 1)
      throw new Error(`faults.bodyBytesPerSec must be a positive integer, got ${String(rate)}`);
    out.bodyBytesPerSec = rate;
  }
  for (const key of [
    'throttledCalls',
    'notFoundCalls',
    'throttleRetryAfterSec',
    'tokenThrottleRetryAfterSec',
  ] as const) {
    const n = faults[key];
    if (n === undefined) continue;
    if (!Number.isInteger(n) || n < 0)
      throw new Error(`faults.${key} must be a non-negative integer, got ${String(n)}`);
    out[key] = n;
  }
  if (faults.status5xxStatuses !== undefined) {
    const statuses = faults.status5xxStatuses as unknown;
    if (
      !Array.isArray(statuses) ||
      statuses.length === 0 ||
      statuses.some((s) => !Number.isInteger(s) || (s as number) < 500 || (s as number) > 599)
    )
      throw new Error(
        `faults.status5xxStatuses must be a non-empty array of statuses 500..599, got ${JSON.stringify(statuses)}`,
      );
    out.status5xxStatuses = [...(statuses as number[])];
  }
  const body = oneOf(faults.status5xxBody, 'status5xxBody', ['mde', 'empty', 'html'] as const);
  if (body) out.status5xxBody = body;
  const gateway403 = oneOf(faults.gateway403, 'gateway403', ['empty', 'html'] as const);
  if (gateway403) out.gateway403 = gateway403;
  const gateway404 = oneOf(faults.gateway404, 'gateway404', ['empty', 'html'] as const);
  if (gateway404) out.gateway404 = gateway404;
  const retryAfter = oneOf(faults.retryAfter, 'retryAfter', ['seconds', 'httpDate', 'none'] as const);
  if (retryAfter) out.retryAfter = retryAfter;
  const pastEndPage = oneOf(faults.pastEndPage, 'pastEndPage', ['notFound', 'empty'] as const);
  if (pastEndPage) out.pastEndPage = pastEndPage;
  if (faults.nextLinkOrigin !== undefined) {
    let origin: string;
    try {
      const link = new URL(faults.nextLinkOrigin);
      if (link.protocol !== 'https:' && link.protocol !== 'http:') throw new Error(link.protocol);
      origin = link.origin;
    } catch {
      throw new Error(`faults.nextLinkOrigin must be an http(s) URL, got ${String(faults.nextLinkOrigin)}`);
    }
    out.nextLinkOrigin = origin;
  }
  if (faults.gzip !== undefined) {
    if (typeof faults.gzip !== 'boolean')
      throw new Error(`faults.gzip must be a boolean, got ${String(faults.gzip)}`);
    out.gzip = faults.gzip;
  }
  if (faults.tokenEndpoint !== undefined) {
    if (typeof faults.tokenEndpoint !== 'boolean')
      throw new Error(`faults.tokenEndpoint must be a boolean, got ${String(faults.tokenEndpoint)}`);
    out.tokenEndpoint = faults.tokenEndpoint;
  }
  return out;
}

/** `value` when it is one of `allowed` (or absent); throws naming the fault otherwise. */
function oneOf<T extends string>(value: unknown, key: string, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!allowed.includes(value as T))
    throw new Error(`faults.${key} must be one of ${allowed.join(', ')}, got ${String(value)}`);
  return value as T;
}

const TENANT_ID =
  /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?=.{1,253}$)([a-z0-9-]{1,63}\.)+[a-z]{2,63})$/i;

export function createTenant(
  spec: TenantSpec,
  epochMs: number,
  budget?: JsonCacheBudget,
  exportBudget?: JsonCacheBudget,
  quotaMinuteMs?: number,
): TenantState {
  if (typeof spec.azureTenantId !== 'string' || spec.azureTenantId.length === 0)
    throw new Error('azureTenantId must be a non-empty string');
  // Entra answers AADSTS900023 for anything else, so such a tenant could never get a token.
  if (!TENANT_ID.test(spec.azureTenantId))
    throw new Error(`azureTenantId must be a GUID or a domain name, got '${spec.azureTenantId}'`);
  if (!Array.isArray(spec.apps)) throw new Error('apps must be an array');
  const apps = new Map<string, Required<AppSpec>>();
  for (const app of spec.apps) {
    if (!app.clientId || !app.clientSecret) throw new Error('every app needs clientId and clientSecret');
    apps.set(app.clientId.toLowerCase(), {
      clientId: app.clientId,
      clientSecret: app.clientSecret,
      roles: app.roles ?? [...DEFAULT_ROLES],
      secretExpired: app.secretExpired ?? false,
    });
  }
  const size = spec.fleet?.size ?? 0;
  if (!Number.isInteger(size) || size < 0 || size > 10_000_000)
    throw new Error(`fleet.size must be an integer 0..10000000, got ${String(size)}`);
  const snapshotMs = spec.fleet?.exportSnapshotMs ?? 0;
  if (typeof snapshotMs !== 'number' || !Number.isFinite(snapshotMs) || snapshotMs < 0)
    throw new Error(`fleet.exportSnapshotMs must be a number of milliseconds ≥ 0, got ${String(snapshotMs)}`);
  const multiProductCves: unknown = spec.fleet?.multiProductCves;
  if (multiProductCves !== undefined && typeof multiProductCves !== 'boolean')
    throw new Error(`fleet.multiProductCves must be a boolean, got ${String(multiProductCves)}`);
  return {
    id: spec.azureTenantId.toLowerCase(),
    apps,
    fleet: new Fleet(
      spec.azureTenantId.toLowerCase(),
      spec.fleet,
      spec.machines,
      epochMs,
      budget,
      exportBudget,
    ),
    defenderProvisioned: spec.defenderProvisioned ?? true,
    quotas: new Map(),
    quotaMinuteMs,
  };
}

export interface SimStats {
  /**
   * Calls per endpoint kind: openid, token, machines, machine, vulnerabilities, bulk, exportFiles
   * (SoftwareVulnerabilitiesExport), exportFile (a download of one of its files), jwks, other.
   */
  calls: Record<string, number>;
  /** Same, per Azure tenant id. */
  callsByTenant: Record<string, Record<string, number>>;
  /** Most requests ever in flight at once across the server (control API excluded). */
  peakConcurrency: number;
  peakConcurrencyByTenant: Record<string, number>;
  inFlight: number;
  inFlightByTenant: Record<string, number>;
  /** 429 answers sent. */
  throttled: number;
  throttledByTenant: Record<string, number>;
  faultsInjected: number;
  faultsByKind: Record<string, number>;
  /**
   * Per endpoint kind, the calls answered and their total time from the request's arrival to the answer
   * handed over (the configured latency plus the simulator's own work and its timer's lateness):
   * `totalMs / answered` is the mean latency clients actually saw from the server.
   */
  serviceTimeByKind: Record<string, { answered: number; totalMs: number }>;
  /**
   * Per endpoint kind, when its first call (since the statistics were last reset) arrived: epoch ms by
   * `Date.now()`, the clock of the pipeline's own timestamps.
   */
  firstCallAtByKind: Record<string, number>;
}

export function emptyStats(inFlight = 0, inFlightByTenant: Record<string, number> = {}): SimStats {
  return {
    calls: {},
    callsByTenant: {},
    peakConcurrency: inFlight,
    peakConcurrencyByTenant: { ...inFlightByTenant },
    inFlight,
    inFlightByTenant,
    throttled: 0,
    throttledByTenant: {},
    faultsInjected: 0,
    faultsByKind: {},
    serviceTimeByKind: {},
    firstCallAtByKind: {},
  };
}

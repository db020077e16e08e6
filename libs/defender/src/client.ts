import type { Agent } from 'node:https';
import type { Logger } from '@urs/logging';
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from '@urs/resilience';
import type { Registry } from '@urs/telemetry';
import { type ApiResult, withRequestId } from './answers';
import type { CallHealth, CallHealthOptions } from './call-health';
import { type DefenderEndpointOverrides, type DefenderEndpoints, resolveEndpoints } from './endpoints';
import { DefenderError, DefenderErrorCode, isSetupErrorCode } from './errors';
import { createApiCaller } from './http';
import type { CallLimiter } from './limiter';
import {
  type InvalidRecord,
  type ListMachinesOptions,
  type Machine,
  type MachinePage,
  readFirstMachinesPage,
  walkMachines,
} from './machines';
import type { ODataSink } from './odata-rows';
import type { QuotaGate } from './quota';
import type { Vulnerability } from './schema';
import { createHttpsAgent } from './tls';
import {
  type DefenderCredentials,
  type TokenClaims,
  createTokenSource,
  decodeTokenClaims,
  grantsPermission,
} from './token';
import {
  type BulkExportRead,
  type BulkOptions,
  type BulkRowHandler,
  type ExportGeneration,
  fetchExportGeneration,
  fetchMachineVulnerabilities,
  readVulnerabilitiesByMachine,
  scanVulnerabilitiesByMachine,
  type VulnerabilitiesByMachine,
  type VulnerabilityMode,
  vulnerabilitiesByMachine,
} from './vulnerabilities';

/** A tenant's Defender setup, as registered (a cloud and a region, never a URL). */
export interface DefenderTenant extends DefenderCredentials {
  /** `commercial` (default), `gcc`, `gcc-high` or `dod`. */
  cloud?: string;
  /** `us`, `eu`, `uk`, `au`, `swa`, `ina`, `aea`, or none for the global host. */
  region?: string;
}

export interface DefenderClientDeps {
  /** The shared slots of calls in flight (createSharedLimiter; createLocalLimiter in the CLI). */
  limiter: CallLimiter;
  /** The tenant's quota (createRedisQuotaGate; createLocalQuotaGate in the CLI). */
  quota: QuotaGate;
  logger: Logger;
  /** Operator overrides read once from the environment (URS_DEFENDER_AUTHORITY_HOST, URS_DEFENDER_API_BASE). */
  overrides?: DefenderEndpointOverrides;
  /**
   * The keep-alive agent for Entra and MDE calls; share one per process. Default: a new one owned (and
   * destroyed on close) by this client. Create it with `createHttpsAgent({ extraCa })` to trust a private CA.
   */
  httpsAgent?: Agent;
  /** Retries of 5xx, resets, timeouts, malformed bodies. Default DEFAULT_RETRY_POLICY (5 attempts, 200 ms–10 s). */
  retryPolicy?: RetryPolicy;
  /**
   * Timeout of one HTTP call, in milliseconds (silence; for an answer read whole, the whole answer). Default
   * 30000; keep it below the limiter's job expiration.
   */
  requestTimeoutMs?: number;
  /**
   * How long one token request to Entra ID may take, in milliseconds, before its callers fail (retryably) and
   * its connection is closed. Default 60000 (see TokenSourceOptions.tokenRequestTimeoutMs).
   */
  tokenRequestTimeoutMs?: number;
  /**
   * When the tenant's calls are limited after slow calls in a row, go one at a time or are held back after
   * failures in a row. Default CallHealth's.
   */
  health?: CallHealthOptions;
  /**
   * The tenant's call health, shared with the client this one replaces (the same app, its record re-sealed):
   * what its calls showed of the tenant's API stays with the tenant, so a slow tenant does not get all the
   * shared slots back with each new client. Default a new one of `health`.
   */
  callHealth?: CallHealth;
  /** How long one call may wait out 429s in total, in milliseconds. Default 600000 (10 min). */
  maxThrottleWaitMs?: number;
  /** Shortest wait after a 429 without Retry-After, in milliseconds (see ApiCallerOptions). Default 5000. */
  throttleWaitWithoutRetryAfterMs?: number;
  /**
   * How long one call may wait for the tenant's quota, in milliseconds; a longer wait fails it THROTTLED at
   * once (see ApiCallerOptions). Default: no limit.
   */
  maxQuotaWaitMs?: number;
  /**
   * How long one call of a degraded tenant may wait, in all, for a place among the degraded tenants' calls, in
   * milliseconds; a longer wait fails it THROTTLED (see ApiCallerOptions). Default: no limit.
   */
  maxDegradedWaitMs?: number;
  /**
   * When every call must be answered by (epoch ms): a longer wait for the quota or out a 429 fails the call
   * THROTTLED at once (see ApiCallerOptions). Default none.
   */
  deadline?: number;
  /** Told about every record skipped as invalid (they are also logged). */
  onInvalidRecord?: (record: InvalidRecord) => void;
  /** Where the calls are counted and timed (`urs_defender_*`); share the process's registry. None by default. */
  metrics?: Registry;
  /** Source of randomness for the backoff jitter, in [0, 1). */
  random?: () => number;
}

/**
 * The WindowsDefenderATP application permissions the pipeline uses: the device list and the vulnerabilities.
 * Nothing reads alerts, so Alert.Read.All is not asked for: an app without it passes the access test.
 */
export const REQUIRED_PERMISSIONS = ['Machine.Read.All', 'Vulnerability.Read.All'] as const;
export type RequiredPermission = (typeof REQUIRED_PERMISSIONS)[number];

export interface AccessReport {
  /** Token issued, device list and vulnerabilities readable, every required permission granted. */
  ok: boolean;
  tokenIssued: boolean;
  /**
   * One page of `/api/machines?$top=1` was read (an empty fleet counts; a 404 is asked once more, as the
   * listing asks it, see readFirstMachinesPage).
   */
  machinesReadable: boolean;
  /**
   * A vulnerability call of the kind the tenant's cycles make was answered, not refused (see AccessCheckOptions):
   * the listed device's `/api/machines/{id}/vulnerabilities`, or one row of the bulk export. False when it was
   * refused or not asked (the device list failed, or the token lacks Vulnerability.Read.All).
   */
  vulnerabilitiesReadable: boolean;
  /**
   * The device list was read and listed no device (MDE's 404 twice in a row, or a page without one): access
   * works, but the tenant has no device that reported recently, or is not the tenant of its devices (an app
   * registered in another Entra tenant, Defender for Endpoint not onboarded). False when it listed one or was
   * not read.
   */
  noDevices: boolean;
  /** Roles in the token. */
  roles: string[];
  /** Whether each required permission is in the token (a ReadWrite role counts for its Read). */
  permissions: Record<RequiredPermission, boolean>;
  /** Roles in the token that nothing here uses (Alert.Read.All, say): they may be removed. */
  unusedRoles: string[];
  /** One line an administrator can act on. */
  verdict: string;
  /** The failure, when there was one. */
  error?: { code: string; message: string };
}

export interface AccessCheckOptions {
  /**
   * How the tenant's vulnerabilities are read (the mode of its last cycle): `bulk` asks the bulk export for
   * one row, `per-device` (the default: a fleet the per-device quota serves, or not polled yet) asks for the
   * vulnerabilities of the device the list answered with, or for one row of the bulk export when the fleet
   * is empty.
   */
  vulnerabilityMode?: VulnerabilityMode;
}

export interface DefenderClient {
  readonly azureTenantId: string;
  readonly endpoints: DefenderEndpoints;
  /** Pages of the tenant's devices, streamed (see walkMachines). */
  listMachinePages(options?: ListMachinesOptions): AsyncGenerator<MachinePage>;
  /** Every device of the tenant (for small fleets and the CLI; the poller streams pages instead). */
  listMachines(options?: ListMachinesOptions): Promise<Machine[]>;
  /** One device's vulnerabilities (per-device endpoint). */
  getMachineVulnerabilities(machineId: string, signal?: AbortSignal): Promise<Vulnerability[]>;
  /** The bulk export `SoftwareVulnerabilitiesByMachine`, each row handed to `onRow` as it is read. */
  readVulnerabilitiesByMachine(onRow: BulkRowHandler, options?: BulkOptions): Promise<BulkExportRead>;
  /** The bulk export's pages into a sink of the caller's, which reads their rows (see scanVulnerabilitiesByMachine). */
  scanVulnerabilitiesByMachine(
    sink: (reportInvalid: (reason: string) => void) => ODataSink,
    options?: BulkOptions,
  ): Promise<{ pages: number }>;
  /** Which snapshot the bulk export serves now (`SoftwareVulnerabilitiesExport`'s `generatedTime`). */
  getExportGeneration(signal?: AbortSignal): Promise<ExportGeneration>;
  /**
   * The whole bulk export merged per device (CVE-deduplicated), as the pipeline reads it: a row that could
   * not be read is skipped, reported (`onInvalidRecord`, the log) and counted in `invalid`, and a device whose
   * rows all were skipped is null (its CVEs unknown), not a device without CVEs.
   */
  getVulnerabilitiesByMachine(options?: BulkOptions): Promise<VulnerabilitiesByMachine>;
  /** Token claims (roles) of the current token. */
  tokenClaims(signal?: AbortSignal): Promise<TokenClaims | undefined>;
  /**
   * Gets a token, reads one page of devices and asks for vulnerabilities as the tenant's cycles do: what works
   * and what an administrator must fix. Never throws a DefenderError.
   */
  checkAccess(signal?: AbortSignal, options?: AccessCheckOptions): Promise<AccessReport>;
  /** Releases the client's own https agent (not a shared one). */
  close(): void;
}

/** Whether a role grants one of the required permissions. */
function used(role: string): boolean {
  return REQUIRED_PERMISSIONS.some((permission) => grantsPermission([role], permission));
}

/**
 * Why a `/api/machines?$top=1` answer lists no device (MDE's 404, or 200 with none), in words; undefined
 * when it lists one.
 */
function emptyListing(page: ApiResult): string | undefined {
  if (page.status === 404) return `the Defender API answered 404${page.api ? ` ${page.api}` : ''}`;
  const value = (page.body as { value?: unknown } | null)?.value;
  return Array.isArray(value) && value.length > 0 ? undefined : 'the Defender API listed no device';
}

/** The id of the first device of a `/api/machines` page, if it has one. */
function firstMachineId(body: unknown): string | undefined {
  const value = (body as { value?: unknown } | null)?.value;
  const id = Array.isArray(value) ? (value[0] as { id?: unknown } | undefined)?.id : undefined;
  return typeof id === 'string' && id !== '' ? id : undefined;
}

/** A message as a sentence, ending with a full stop. */
function sentence(text: string): string {
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

const ADD_PERMISSIONS = 'add these WindowsDefenderATP application permissions and grant admin consent';

/**
 * The check's one line. A call refused for a permission names every permission the token lacks, not only the
 * one that call needs, so that one change in Entra ID mends them all; another failure names them too.
 */
function accessVerdict(
  report: AccessReport,
  missing: RequiredPermission[],
  failure?: DefenderError,
  noDevices?: string,
): string {
  const lacks = missing.join(', ');
  if (failure) {
    const message = failure.message;
    if (!report.tokenIssued || missing.length === 0) {
      if (!report.machinesReadable) return `FAIL: ${message}`;
      // A refusal stays until an administrator acts; a passing failure (throttled, unreachable) may not.
      return isSetupErrorCode(failure.code)
        ? `FAIL: credentials work and the device list is readable, but vulnerabilities are not: ${message}`
        : `FAIL: credentials work and the device list is readable, but the vulnerability call failed: ${message}`;
    }
    // A token of another API: its error names the audience and the scope to fix, not permissions to grant.
    if (failure.code === DefenderErrorCode.CONSENT_MISSING && typeof failure.details.audience === 'string')
      return `FAIL: ${message}`;
    if (failure.code === DefenderErrorCode.CONSENT_MISSING) {
      const path = typeof failure.details.path === 'string' ? failure.details.path : 'a call';
      const api =
        typeof failure.details.api === 'string' && failure.details.api ? ` ${failure.details.api}` : '';
      const carries = report.roles.length ? report.roles.join(', ') : 'no roles';
      return withRequestId(
        `FAIL: the Defender API refused ${path} (403${api}): the token lacks ${lacks}: ${ADD_PERMISSIONS} ` +
          `(the token carries: ${carries}).`,
        failure.details.requestId,
      );
    }
    return `FAIL: ${sentence(message)} The token also lacks ${lacks}: ${ADD_PERMISSIONS}.`;
  }
  if (missing.length > 0) return `FAIL: credentials work, but the token lacks ${lacks}: ${ADD_PERMISSIONS}.`;
  const unused = report.unusedRoles;
  // An empty device list is MDE's answer for a tenant without recent devices: access works, but a tenant
  // with onboarded devices may be the wrong one.
  const empty = noDevices
    ? `, but the device list is empty: ${sentence(noDevices)} If the tenant has onboarded devices, check ` +
      'that this is their tenant and that they reported to Defender for Endpoint recently.'
    : '.';
  return (
    `OK: credentials and consent work; the token carries ${REQUIRED_PERMISSIONS.join(', ')}${empty}` +
    (unused.length > 0
      ? ` ${unused.join(', ')} ${unused.length === 1 ? 'is' : 'are'} not needed and may be removed.`
      : '')
  );
}

export function createDefenderClient(tenant: DefenderTenant, deps: DefenderClientDeps): DefenderClient {
  const endpoints = resolveEndpoints(tenant.cloud, tenant.region, deps.overrides);
  const ownAgent = deps.httpsAgent ? undefined : createHttpsAgent();
  const httpsAgent = deps.httpsAgent ?? (ownAgent as Agent);
  const credentials: DefenderCredentials = {
    azureTenantId: tenant.azureTenantId,
    clientId: tenant.clientId,
    clientSecret: tenant.clientSecret,
  };
  const logger = deps.logger.child({ azureTenantId: tenant.azureTenantId });
  const tokens = createTokenSource({
    endpoints,
    credentials,
    httpsAgent,
    logger,
    ...(deps.tokenRequestTimeoutMs === undefined
      ? {}
      : { tokenRequestTimeoutMs: deps.tokenRequestTimeoutMs }),
  });
  const api = createApiCaller({
    azureTenantId: tenant.azureTenantId,
    clientId: tenant.clientId,
    apiBase: endpoints.apiBase,
    tokens,
    limiter: deps.limiter,
    quota: deps.quota,
    httpsAgent,
    retryPolicy: deps.retryPolicy ?? DEFAULT_RETRY_POLICY,
    requestTimeoutMs: deps.requestTimeoutMs ?? 30_000,
    maxThrottleWaitMs: deps.maxThrottleWaitMs ?? 600_000,
    ...(deps.maxQuotaWaitMs === undefined ? {} : { maxQuotaWaitMs: deps.maxQuotaWaitMs }),
    ...(deps.maxDegradedWaitMs === undefined ? {} : { maxDegradedWaitMs: deps.maxDegradedWaitMs }),
    ...(deps.deadline === undefined ? {} : { deadline: deps.deadline }),
    ...(deps.throttleWaitWithoutRetryAfterMs === undefined
      ? {}
      : { throttleWaitWithoutRetryAfterMs: deps.throttleWaitWithoutRetryAfterMs }),
    ...(deps.health ? { health: deps.health } : {}),
    ...(deps.callHealth ? { callHealth: deps.callHealth } : {}),
    logger,
    ...(deps.metrics ? { metrics: deps.metrics } : {}),
    ...(deps.random ? { random: deps.random } : {}),
  });
  const walkDeps = {
    api,
    logger,
    azureTenantId: tenant.azureTenantId,
    ...(deps.onInvalidRecord ? { onInvalidRecord: deps.onInvalidRecord } : {}),
  };

  /**
   * One vulnerability call of the kind the tenant's cycles make, through the same call slots and quota: the
   * per-device endpoint for `machineId`, or one row of the bulk export (the bulk mode's read, and what an
   * empty fleet can be asked). An answer, 404 included (a device removed since it was listed, an export not
   * generated yet), shows the call is allowed; a refusal throws its DefenderError.
   */
  async function probeVulnerabilities(
    mode: VulnerabilityMode,
    machineId: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    if (mode === 'per-device' && machineId !== undefined) {
      const path = `/api/machines/${encodeURIComponent(machineId)}/vulnerabilities`;
      await api.get('vulnerabilities', path, undefined, signal);
      return;
    }
    await api.get('bulk', '/api/machines/SoftwareVulnerabilitiesByMachine', { pageSize: 1 }, signal);
  }

  async function checkAccess(signal?: AbortSignal, options: AccessCheckOptions = {}): Promise<AccessReport> {
    const report: AccessReport = {
      ok: false,
      tokenIssued: false,
      machinesReadable: false,
      vulnerabilitiesReadable: false,
      noDevices: false,
      roles: [],
      permissions: { 'Machine.Read.All': false, 'Vulnerability.Read.All': false },
      unusedRoles: [],
      verdict: '',
    };
    let failure: DefenderError | undefined;
    let noDevices: string | undefined;
    try {
      const token = await tokens.getToken(signal);
      report.tokenIssued = true;
      report.roles = decodeTokenClaims(token.token)?.roles ?? [];
      for (const permission of REQUIRED_PERMISSIONS)
        report.permissions[permission] = grantsPermission(report.roles, permission);
      report.unusedRoles = report.roles.filter((role) => !used(role));
      // MDE's 404 is asked again as the listing asks it: a passing one would tell of an empty fleet.
      const page = await readFirstMachinesPage(
        walkDeps,
        () => api.get('machines', '/api/machines', { $top: 1 }, signal),
        (answer) => emptyListing(answer) === undefined,
      );
      report.machinesReadable = true;
      noDevices = emptyListing(page);
      report.noDevices = noDevices !== undefined;
      // A token without the role would be refused: the verdict names the permission, no call is spent on it.
      if (report.permissions['Vulnerability.Read.All']) {
        const first = page.status === 200 ? firstMachineId(page.body) : undefined;
        await probeVulnerabilities(options.vulnerabilityMode ?? 'per-device', first, signal);
        report.vulnerabilitiesReadable = true;
      }
    } catch (error) {
      if (!(error instanceof DefenderError)) throw error;
      failure = error;
      report.error = { code: error.code, message: error.message };
    }
    const missing = REQUIRED_PERMISSIONS.filter((p) => !report.permissions[p]);
    report.ok =
      report.tokenIssued && report.machinesReadable && report.vulnerabilitiesReadable && missing.length === 0;
    report.verdict = accessVerdict(report, missing, failure, noDevices);
    return report;
  }

  return {
    azureTenantId: tenant.azureTenantId,
    endpoints,
    listMachinePages: (options) => walkMachines(walkDeps, options),
    async listMachines(options) {
      const all: Machine[] = [];
      for await (const page of walkMachines(walkDeps, options)) all.push(...page.machines);
      return all;
    },
    getMachineVulnerabilities: (machineId, signal) =>
      fetchMachineVulnerabilities(walkDeps, machineId, signal),
    readVulnerabilitiesByMachine: (onRow, options) => readVulnerabilitiesByMachine(walkDeps, onRow, options),
    scanVulnerabilitiesByMachine: (sink, options) => scanVulnerabilitiesByMachine(walkDeps, sink, options),
    getExportGeneration: (signal) => fetchExportGeneration(walkDeps, signal),
    getVulnerabilitiesByMachine: (options) => vulnerabilitiesByMachine(walkDeps, options),
    async tokenClaims(signal) {
      return decodeTokenClaims((await tokens.getToken(signal)).token);
    },
    checkAccess,
    close() {
      ownAgent?.destroy();
    },
  };
}

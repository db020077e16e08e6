export { DefenderError, DefenderErrorCode, isDefenderError, isSetupErrorCode, scrubSecret } from './errors';
export type { DefenderErrorCodeValue, DefenderErrorOptions } from './errors';
export { DEFENDER_CLOUDS, DEFENDER_REGIONS, resolveEndpoints } from './endpoints';
export type {
  DefenderCloud,
  DefenderRegion,
  DefenderEndpoints,
  DefenderEndpointOverrides,
} from './endpoints';
export { createTokenSource, decodeTokenClaims } from './token';
export type { DefenderCredentials, TokenClaims, TokenSource, TokenSourceOptions } from './token';
export { mapAuthError } from './auth-errors';
export { createHttpsAgent } from './tls';
export type { HttpsAgentOptions } from './tls';
export {
  LONGEST_QUOTA_WINDOW_MS,
  MICROSOFT_QUOTAS,
  UNLIMITED_QUOTA_GATE,
  appQuotaId,
  createRedisQuotaGate,
  createLocalQuotaGate,
  quotaGateFor,
} from './quota';
export type {
  DefenderEndpointClass,
  QuotaWindow,
  QuotaLimits,
  QuotaClaim,
  QuotaGate,
  QuotaGateOptions,
} from './quota';
export { createSharedLimiter, createLocalLimiter } from './limiter';
export { withSlotHandOff } from './handoff';
export type { SlotHandOffOptions } from './handoff';
export type { CallLimiter, SharedLimiterOptions } from './limiter';
export { CallHealth } from './call-health';
export type { CallHealthOptions, CallOutcome, TurnWait } from './call-health';
export { DEGRADED_CALLS_LIMIT, DegradedCalls } from './degraded-calls';
export type { CallTurn } from './degraded-calls';
export { callHealthOfApp } from './app-health';
export type { AppCallHealth, DefenderApp } from './app-health';
export { parseRetryAfterMs } from './answers';
export { createApiCaller } from './http';
export { createCallMetrics } from './call-metrics';
export { environmentHasProxy } from './requests';
export type { ApiCaller, ApiCallerOptions, ApiResult, RowsScan } from './http';
export {
  listedMachine,
  parseMachine,
  parseVulnerability,
  parseSoftwareVulnerabilityRow,
  vulnerabilityFromRow,
} from './schema';
export { readCvss } from '@urs/contracts/vulnerabilities';
export type { MachineRecord, Vulnerability, SoftwareVulnerabilityRow, ParseResult } from './schema';
export { MAX_MACHINE_PAGE_SIZE, isScorable, walkMachines } from './machines';
export type { Machine, MachineFlags, MachinePage, InvalidRecord, ListMachinesOptions } from './machines';
export {
  MAX_BULK_PAGE_SIZE,
  DEFAULT_BULK_PAGE_SIZE,
  MIN_HALVED_BULK_PAGE_SIZE,
  fetchExportGeneration,
  fetchMachineVulnerabilities,
  readVulnerabilitiesByMachine,
  scanVulnerabilitiesByMachine,
  planVulnerabilityMode,
} from './vulnerabilities';
export { MalformedODataError } from './odata-rows';
export type { ODataRest, ODataSink } from './odata-rows';
export type {
  BulkExportRead,
  BulkOptions,
  BulkRowHandler,
  ExportGeneration,
  VulnerabilitiesByMachine,
  VulnerabilityMode,
  VulnerabilityPlan,
  VulnerabilityPlanOptions,
} from './vulnerabilities';
export { chooseVulnerabilityMode } from './vulnerability-mode';
export type { VulnerabilityModeChoice } from './vulnerability-mode';
export { REQUIRED_PERMISSIONS, createDefenderClient } from './client';
export type {
  DefenderTenant,
  DefenderClientDeps,
  DefenderClient,
  AccessReport,
  AccessCheckOptions,
  RequiredPermission,
} from './client';
export { createTenantClientCache } from './tenant-clients';
export type { Closable, TenantClientCache, TenantClientCacheOptions } from './tenant-clients';

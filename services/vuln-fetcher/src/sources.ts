import type { Agent } from 'node:https';
import type { TenantRecord } from '@urs/contracts';
import {
  callHealthOfApp,
  createDefenderClient,
  createTenantClientCache,
  isDefenderError,
  isSetupErrorCode,
  resolveEndpoints,
  type AppCallHealth,
  type BulkOptions,
  type CallLimiter,
  type DefenderEndpointOverrides,
  type InvalidRecord,
  type QuotaGate,
} from '@urs/defender';
import type { Logger } from '@urs/logging';
import type { Registry } from '@urs/telemetry';
import { UrsError, errorCode, errorMessage } from '@urs/resilience';
import type { SecretSealer } from '@urs/secrets';
import { createExportFolds } from './export-fold';
import type { VulnerabilityFolder, VulnerabilityLike } from './summarise';

/** Where one tenant's vulnerabilities come from (the Defender API; a fake in unit tests). */
export interface VulnerabilitySource {
  /** One device's vulnerabilities (per-device endpoint, one call of the shared limit). */
  machineVulnerabilities(machineId: string, signal?: AbortSignal): Promise<VulnerabilityLike[]>;
  /**
   * The tenant's bulk export, each row handed to `onRow` as it is read (a device and one of its CVEs,
   * none for a row of software without one, or null for a row that could not be read), so the caller
   * folds it in and keeps no row. A page retried midway gives its rows again: `onRow` must be idempotent.
   */
  bulkVulnerabilities(
    onRow: (deviceId: string, vulnerability: VulnerabilityLike | undefined | null) => void,
    signal?: AbortSignal,
  ): Promise<void>;
  /**
   * The bulk export read and its rows folded on a thread of their own (when so configured): the same fold
   * as `bulkVulnerabilities`' rows would make.
   */
  bulkFold?(signal?: AbortSignal): Promise<VulnerabilityFolder>;
  /** The `generatedTime` of the export snapshot Microsoft serves now (one call of its own 5/min, 20/h quota). */
  exportGeneratedTime?(signal?: AbortSignal): Promise<string>;
}

/**
 * Gives each tenant's source; throws a tenant-wide error (a secret sealed with a key id not held), or
 * ReplicaSecretKeyError when this replica's key does not open the secret (whose fault it is, the handler
 * finds out).
 */
export interface SourceProvider {
  forTenant(record: TenantRecord): VulnerabilitySource;
  /**
   * Lets the tenant's client go, with its token: after a setup failure an administrator may fix without
   * changing the record (consent granted), which a token kept from before would go on being refused for.
   */
  forget(tenantId: string): void;
  close(): void;
}

/** A failure of the tenant as a whole (credentials, consent, setup): no device of it can be fetched. */
export class TenantAccessError extends UrsError {
  constructor(code: string, message: string, cause?: unknown) {
    super(code, message, { canRetry: false, cause });
  }
}

/**
 * This replica's key does not open a secret sealed under a key id it holds (SECRET_UNREADABLE): taken for this
 * replica's own fault (another URS_SECRET_KEY under the same URS_SECRET_KEY_ID) once the handler found that
 * its key opens no other tenant's stored secret either (`ReplicaKeyCheck`; when it opens others, the
 * tenant's record is bad and the handler makes it the tenant's failure). Then the tenant is neither marked
 * failed nor its cycle sent on as the tenant's setup error. Like Redis or Kafka away, it is no fault of the
 * message (`infrastructure`): the bus holds the batch, retried for as long as the key stays wrong and never
 * dead-lettered for it, and the replica stops saying it is ready once it held it a while, so the wrong key
 * is seen (ConsumerRunnerOptions.retry). The batch stays with this replica until it is restarted with the
 * right key (or stopped, and its partitions go to the others).
 */
export class ReplicaSecretKeyError extends UrsError {
  constructor(message: string, cause?: unknown) {
    super('SECRET_UNREADABLE', message, {
      canRetry: true,
      infrastructure: true,
      cause,
      details: { variables: ['URS_SECRET_KEY', 'URS_SECRET_KEY_ID', 'URS_SECRET_KEYS_PREVIOUS'] },
    });
  }
}

/**
 * Whether an error code means that no call of this tenant can succeed until an admin fixes something: a
 * Defender setup error, a secret sealed with a key id no process holds any more (re-seal it), or a bad
 * stored secret (`secretRecordUnreadable`: register it again).
 */
export function isTenantWideCode(code: string): boolean {
  return isSetupErrorCode(code) || code === 'SECRET_KEY_UNKNOWN' || code === 'SECRET_RECORD_UNREADABLE';
}

/** Whether an error is a tenant-wide failure (see isTenantWideCode). */
export function isTenantWideFailure(error: unknown): boolean {
  if (error instanceof TenantAccessError) return true;
  return isDefenderError(error) && isTenantWideCode(errorCode(error));
}

export interface DefenderSourceDeps {
  sealer: SecretSealer;
  limiter: CallLimiter;
  quota: QuotaGate;
  httpsAgent: Agent;
  overrides: DefenderEndpointOverrides;
  logger: Logger;
  /** The process's registry: the calls are counted there (`urs_defender_*`). */
  metrics: Registry;
  /** How long a call may go without an answer, in milliseconds; default the client's (30,000). */
  requestTimeoutMs?: number;
  /** How long a token request to Entra ID may take, in milliseconds; default the client's (60,000). */
  tokenRequestTimeoutMs?: number;
  /** Rows per page of the bulk export; default the client's (50,000). */
  bulkPageSize?: number;
  /**
   * Longest a call waits for its tenant's quota, and in all for 429s, in milliseconds
   * (`URS_VULN_MAX_QUOTA_WAIT_MS`). Default DEFAULT_MAX_QUOTA_WAIT_MS.
   */
  maxQuotaWaitMs?: number;
  /**
   * Longest a call of a degraded tenant waits, in all, for one of the places of degraded tenants' calls, in
   * milliseconds (`URS_VULN_MAX_DEGRADED_WAIT_MS`). Default DEFAULT_MAX_DEGRADED_WAIT_MS.
   */
  maxDegradedWaitMs?: number;
  /**
   * Scan and fold the bulk export on a thread of its own, at most FOLD_THREADS at once in the process (the
   * exports read meanwhile fold on the main thread).
   */
  foldThread?: boolean;
  /** A tenant's client is let go of after this long without a batch. Default an hour. */
  idleMs?: number;
  now?: () => number;
}

/**
 * How long a device call waits for its tenant's quota (a window's room, or the block of a 429's Retry-After)
 * by default, in milliseconds. A longer wait fails the call THROTTLED at once, not retried within the call:
 * the batch's other calls end as quickly, count towards the tenant's outage and its status is written,
 * instead of each waiting up to an hour (an hourly quota spent) past the cycle's deadline.
 */
export const DEFAULT_MAX_QUOTA_WAIT_MS = 180_000;

/**
 * How long a device call of a degraded tenant (its last call failed slowly, see CallHealth) waits, in all, for
 * one of the install's places of degraded tenants' calls by default, in milliseconds. Each place frees only when
 * a call of a degraded tenant ends, up to a request timeout (30 s) after it started, and every degraded tenant's
 * calls queue for the same 2: without a bound a batch of such a tenant sits until its cycle's deadline closes it
 * partial. A longer wait fails the call THROTTLED at once, as a wait for the quota does: it counts towards the
 * tenant's outage, and 10 in a row end the batch's device calls, its status written. Two request timeouts: a
 * call waits out the calls holding the places and those queued just before it, not a backlog of them.
 */
export const DEFAULT_MAX_DEGRADED_WAIT_MS = 60_000;

/** A tenant's source, kept with the client it calls through (closed with it). */
interface KeptSource {
  source: VulnerabilitySource;
  /** What the client's calls showed of the tenant's API, handed on to the next client of the same app. */
  callHealth: AppCallHealth;
  close(): void;
}

/**
 * One Defender client per tenant (createTenantClientCache), kept while the tenant's record revision is the
 * same, so its token is reused across the batches of a cycle and across cycles. The secret is opened here and lives only in
 * the client's memory. A client no batch asked for within `idleMs` (an hour, about a token's life) is let
 * go of, with its secret: a deleted or disabled tenant's secret does not stay in memory until a restart.
 * A new revision of the same app and API host (the registrar re-sealed its secret) gets a new client with the old one's
 * CallHealth (`callHealthOfApp`): a slow tenant capped to 2 of the 10 shared slots would otherwise get all 10
 * back at each re-seal.
 */
export function createDefenderSources(deps: DefenderSourceDeps): SourceProvider {
  const unreadable = deps.metrics.counter(
    'urs_vulnerability_rows_unreadable_total',
    'Vulnerability rows skipped as unreadable (a CVSS score neither a number from 0 to 10 nor null, a row of the wrong shape), by mode (per-device, bulk).',
  );
  // Served at 0 from the start: UrsVulnerabilityRowsUnreadable alerts on the first row skipped.
  for (const mode of ['per-device', 'bulk']) unreadable.init({ mode });
  /** Every vulnerability row the client skips: the per-device endpoint's and the export's. */
  const onInvalidRecord = (record: InvalidRecord): void => {
    if (record.kind !== 'machine')
      unreadable.inc({ mode: record.kind === 'bulk-row' ? 'bulk' : 'per-device' });
  };
  const exportOptions = (signal: AbortSignal | undefined): BulkOptions => ({
    ...(signal ? { signal } : {}),
    ...(deps.bulkPageSize === undefined ? {} : { pageSize: deps.bulkPageSize }),
  });
  const maxQuotaWaitMs = deps.maxQuotaWaitMs ?? DEFAULT_MAX_QUOTA_WAIT_MS;
  const maxDegradedWaitMs = deps.maxDegradedWaitMs ?? DEFAULT_MAX_DEGRADED_WAIT_MS;
  // The process's fold threads, shared by every tenant's source (see createExportFolds).
  const foldExport = deps.foldThread ? createExportFolds(deps.metrics) : undefined;
  // The source is built with its client and kept with it: the same tenant's batches get the same one.
  const clients = createTenantClientCache<KeptSource>({
    ...(deps.idleMs === undefined ? {} : { idleMs: deps.idleMs }),
    ...(deps.now ? { now: deps.now } : {}),
  });
  return {
    forTenant(record) {
      return clients.get(record.tenantId, record.revision, (replaced) => sourceOf(record, replaced)).source;
    },
    forget: (tenantId) => clients.forget(tenantId),
    close: () => clients.close(),
  };

  function sourceOf(record: TenantRecord, replaced: KeptSource | undefined): KeptSource {
    let clientSecret: string;
    try {
      clientSecret = deps.sealer.open(record.defender.clientSecret, record.tenantId);
    } catch (error) {
      const keyId = record.defender.clientSecret.keyId;
      if (errorCode(error) === 'SECRET_UNREADABLE')
        throw new ReplicaSecretKeyError(
          `this vuln-fetcher cannot open the stored client secret of tenant ${record.tenantId}: ` +
            `${errorMessage(error)}; the batch is held until this replica runs with the key that sealed it`,
          error,
        );
      throw new TenantAccessError(
        'SECRET_KEY_UNKNOWN',
        `the stored client secret of tenant ${record.tenantId} is sealed with key id ${keyId}, which this ` +
          'vuln-fetcher does not hold: register the secret again, or add that key to URS_SECRET_KEYS_PREVIOUS',
        error,
      );
    }
    const endpoints = resolveEndpoints(
      record.defender.cloud,
      record.defender.region || undefined,
      deps.overrides,
    );
    const callHealth = callHealthOfApp(record.defender, endpoints, replaced?.callHealth);
    const client = createDefenderClient(
      {
        azureTenantId: record.defender.azureTenantId,
        clientId: record.defender.clientId,
        clientSecret,
        cloud: record.defender.cloud,
        ...(record.defender.region ? { region: record.defender.region } : {}),
      },
      {
        limiter: deps.limiter,
        quota: deps.quota,
        httpsAgent: deps.httpsAgent,
        overrides: deps.overrides,
        logger: deps.logger.child({ tenantId: record.tenantId }),
        metrics: deps.metrics,
        callHealth: callHealth.health,
        onInvalidRecord,
        ...(deps.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: deps.requestTimeoutMs }),
        ...(deps.tokenRequestTimeoutMs === undefined
          ? {}
          : { tokenRequestTimeoutMs: deps.tokenRequestTimeoutMs }),
        // Waiting out 429s no longer than the quota's wait: the call that drew one would otherwise wait
        // while the tenant's other calls, held back by the same block, fail at once.
        maxQuotaWaitMs,
        maxThrottleWaitMs: maxQuotaWaitMs,
        maxDegradedWaitMs,
      },
    );
    const source: VulnerabilitySource = {
      machineVulnerabilities: (machineId, signal) => client.getMachineVulnerabilities(machineId, signal),
      bulkVulnerabilities: async (onRow, signal) => {
        await client.readVulnerabilitiesByMachine(onRow, exportOptions(signal));
      },
      exportGeneratedTime: async (signal) => (await client.getExportGeneration(signal)).generatedTime,
      ...(foldExport
        ? { bulkFold: (signal?: AbortSignal) => foldExport(client, exportOptions(signal)) }
        : {}),
    };
    return { source, callHealth, close: () => client.close() };
  }
}

import type { TenantRecord } from '@urs/contracts';
import { isKafkaRecordTooLarge } from '@urs/bus';
import { REQUIRED_PERMISSIONS } from '@urs/defender';
import { isUrsError } from '@urs/resilience';
import { SecretError, type SecretSealer } from '@urs/secrets';
import type { TenantStatus, TenantStore } from '@urs/store';
import { SecretForOtherAppError, TenantGoneError, switchesApp } from '../record-secret';
import type { TenantRegistry } from '../registry';
import { restRefusal, restViolations, validateRegistration, type Violation } from '../validation';
import { tenantIdOf } from './params';
import { registeredTenant } from './registered';
import { ApiError, type ApiRequest, type ApiResponse, type Route } from './router';

/** What the `/defender/test` check needs of a tenant (the secret in clear, only in this process's memory). */
export interface AccessCheckTenant {
  azureTenantId: string;
  clientId: string;
  clientSecret: string;
  cloud: string;
  region: string | null;
  /** How its last cycle read vulnerabilities (its status); the check asks for them the same way. */
  vulnerabilityMode?: 'per-device' | 'bulk';
}

/** The verdict of a check: a token, one page of devices, one vulnerability call, the roles. */
export interface AccessCheckResult {
  ok: boolean;
  /** One line an administrator can act on. */
  verdict: string;
  tokenIssued: boolean;
  machinesReadable: boolean;
  /** A vulnerability call as the tenant's cycles make them was answered, not refused. */
  vulnerabilitiesReadable: boolean;
  /** The device list was read and listed no device: access works, but no device is seen (see AccessReport). */
  noDevices: boolean;
  roles: string[];
  permissions: Record<string, boolean>;
  error?: { code: string; message: string };
}

/**
 * Runs the check against Microsoft (the Defender client's checkAccess in production). `signal` aborts at the
 * check's time limit, `deadline` (a `Date.now()`), or when the server stops.
 */
export type AccessChecker = (
  tenant: AccessCheckTenant,
  signal: AbortSignal,
  deadline: number,
) => Promise<AccessCheckResult>;

export interface TenantRoutesDeps {
  registry: TenantRegistry;
  tenants: TenantStore;
  sealer: SecretSealer;
  checkAccess: AccessChecker;
  /** Resolves once Redis holds the tenants of `urs.tenants`. */
  ensureRebuilt: () => Promise<void>;
  /** Longest wait of the access check, in milliseconds. */
  accessTestTimeoutMs: number;
}

/** Placeholder validated in place of a secret the request left out because one is already stored. */
const STORED_SECRET = 'stored-secret';

/** Why a stored secret cannot be kept: it belongs to the app registration it was made for. */
const SECRET_FOR_NEW_APP = {
  field: 'clientSecret',
  rule: 'is required when azureTenantId, clientId or cloud changes',
};

/**
 * What an administrator is told of a stored secret this registrar's keys do not open (its key retired and
 * no longer configured, or a damaged record): the sealer's reason names key ids and settings, never the
 * secret, and only a new clientSecret mends it.
 */
function secretUnavailable(tenantId: string, error: SecretError): string {
  return (
    `the stored clientSecret of tenant ${tenantId} cannot be opened with this registrar's keys ` +
    `(${error.message}): PUT the tenant's clientSecret again`
  );
}

/**
 * What an administrator is told of a registration whose record Kafka refused as too large (the publisher's
 * RECORD_TOO_LARGE, or Kafka's answer as it is): the record's bytes when the publisher counted them, and the
 * part that makes a record large, the riskProfile; never a value of it, nor the secret.
 */
function recordTooLarge(tenantId: string, error: unknown): string {
  let bytes: unknown;
  for (let e: unknown = error, depth = 0; typeof e === 'object' && e !== null && depth < 5; depth++) {
    if (isUrsError(e) && e.code === 'RECORD_TOO_LARGE') bytes = e.details['largestRecordBytes'];
    e = (e as { cause?: unknown }).cause;
  }
  const size = typeof bytes === 'number' ? ` (${bytes} bytes of key and value)` : '';
  return (
    `the record of tenant ${tenantId}${size} is larger than urs.tenants takes (its max.message.bytes): ` +
    'make the riskProfile smaller; nothing was written'
  );
}

/**
 * The tenant's configuration as an admin may see it: everything but the secret, and the polling status (a
 * refused update in it naming fields as the REST body does, `restRefusal`).
 */
export function tenantView(record: TenantRecord, status: TenantStatus): Record<string, unknown> {
  const { clientSecret, ...defender } = record.defender;
  const { registrationError } = status;
  return {
    tenantId: record.tenantId,
    revision: record.revision,
    updatedAt: record.updatedAt,
    source: record.source,
    ...(record.generation === undefined ? {} : { generation: record.generation }),
    enabled: record.enabled,
    ...(record.disabledReason === undefined ? {} : { disabledReason: record.disabledReason }),
    defender: { ...defender, clientSecretSet: true, clientSecretKeyId: clientSecret.keyId },
    status: registrationError ? { ...status, registrationError: restRefusal(registrationError) } : status,
  };
}

/** `PUT|GET|DELETE /v1/tenants/{tenantId}/defender` and `POST /v1/tenants/{tenantId}/defender/test`. */
/**
 * The app a PUT's body names (`switchesApp`), from the fields that passed validation: a field refused or left
 * out names no app (its violation says so on its own), so it stands for the record's own.
 */
function appNamed(
  current: TenantRecord,
  body: Record<string, unknown>,
  violations: readonly Violation[],
): Parameters<typeof switchesApp>[1] {
  const refused = new Set(violations.map(({ field }) => field));
  const field = (name: 'azureTenantId' | 'clientId' | 'cloud'): unknown =>
    refused.has(`defender.${name}`) ? current.defender[name] : body[name];
  return { azureTenantId: field('azureTenantId'), clientId: field('clientId'), cloud: field('cloud') };
}

export function tenantRoutes(deps: TenantRoutesDeps): Route[] {
  const load = (tenantId: string): Promise<TenantRecord> => registeredTenant(deps, tenantId);

  async function put(request: ApiRequest): Promise<ApiResponse> {
    const tenantId = tenantIdOf(request);
    if (request.body === null || typeof request.body !== 'object' || Array.isArray(request.body)) {
      throw new ApiError(
        400,
        'VALIDATION_FAILED',
        'the body must be a JSON object with the Defender settings',
        [{ field: '(body)', rule: 'must be an object' }],
      );
    }
    await deps.ensureRebuilt();
    const current = await deps.tenants.get(tenantId);
    const body = request.body as Record<string, unknown>;
    const omitted = body['clientSecret'] === undefined && current !== null;
    const candidate = { tenantId, defender: omitted ? { ...body, clientSecret: STORED_SECRET } : body };
    const validated = validateRegistration(candidate);
    const switched =
      omitted && switchesApp(current, appNamed(current, body, validated.ok ? [] : validated.violations));
    const keepSecret = omitted && !switched;
    if (!validated.ok || switched) {
      const violations = validated.ok ? [] : restViolations(validated.violations);
      if (switched) violations.push(SECRET_FOR_NEW_APP);
      throw new ApiError(
        400,
        'VALIDATION_FAILED',
        `the registration is not valid: ${violations.length} problem(s)`,
        violations,
      );
    }
    let registered;
    try {
      // The request's signal: a request the stop cut (and answered 503) does not start its write. The same
      // PUT again (a client retrying) writes nothing: no new revision for the pollers to take for a fix.
      registered = await deps.registry.register(
        validated.registration,
        { source: 'rest' },
        { keepSecret, skipIfUnchanged: true, signal: request.signal },
      );
    } catch (error) {
      if (error instanceof TenantGoneError) throw new ApiError(409, 'TENANT_NOT_FOUND', error.message);
      if (error instanceof SecretForOtherAppError) {
        throw new ApiError(400, 'VALIDATION_FAILED', 'the registration is not valid: 1 problem(s)', [
          SECRET_FOR_NEW_APP,
        ]);
      }
      if (keepSecret && error instanceof SecretError)
        throw new ApiError(409, 'SECRET_UNAVAILABLE', secretUnavailable(tenantId, error));
      // Refused again however often it is sent: the request's to mend, not a fault of the service.
      if (isKafkaRecordTooLarge(error))
        throw new ApiError(413, 'RECORD_TOO_LARGE', recordTooLarge(tenantId, error));
      throw error;
    }
    const { record, created } = registered;
    return { status: created ? 201 : 200, body: tenantView(record, await deps.tenants.getStatus(tenantId)) };
  }

  async function get(request: ApiRequest): Promise<ApiResponse> {
    const tenantId = tenantIdOf(request);
    const record = await load(tenantId);
    return { status: 200, body: tenantView(record, await deps.tenants.getStatus(tenantId)) };
  }

  async function remove(request: ApiRequest): Promise<ApiResponse> {
    const tenantId = tenantIdOf(request);
    await deps.ensureRebuilt();
    if (!(await deps.registry.remove(tenantId, { signal: request.signal }))) {
      throw new ApiError(404, 'TENANT_NOT_FOUND', `tenant ${tenantId} has no Defender registration`);
    }
    return { status: 204 };
  }

  async function test(request: ApiRequest): Promise<ApiResponse> {
    const tenantId = tenantIdOf(request);
    const record = await load(tenantId);
    // Gives up at its timeout, or when the server stops before it finished (its answer is then the stop's 503).
    const deadline = Date.now() + deps.accessTestTimeoutMs;
    const signal = AbortSignal.any([request.signal, AbortSignal.timeout(deps.accessTestTimeoutMs)]);
    let opened: string | SecretError;
    try {
      opened = deps.sealer.open(record.defender.clientSecret, tenantId);
    } catch (error) {
      if (!(error instanceof SecretError)) throw error;
      opened = error;
    }
    let result: AccessCheckResult;
    if (opened instanceof SecretError) {
      // Nothing to ask Microsoft with: a verdict in the check's shape says what to mend.
      const message = secretUnavailable(tenantId, opened);
      result = {
        ok: false,
        verdict: `FAIL: ${message}`,
        tokenIssued: false,
        machinesReadable: false,
        vulnerabilitiesReadable: false,
        noDevices: false,
        roles: [],
        permissions: Object.fromEntries(REQUIRED_PERMISSIONS.map((permission) => [permission, false])),
        error: { code: 'SECRET_UNAVAILABLE', message },
      };
    } else {
      const { vulnerabilityMode } = await deps.tenants.getStatus(tenantId);
      result = await deps.checkAccess(
        {
          azureTenantId: record.defender.azureTenantId,
          clientId: record.defender.clientId,
          clientSecret: opened,
          cloud: record.defender.cloud,
          region: record.defender.region,
          ...(vulnerabilityMode === undefined ? {} : { vulnerabilityMode }),
        },
        signal,
        deadline,
      );
    }
    return {
      status: 200,
      body: {
        tenantId,
        ok: result.ok,
        verdict: result.verdict,
        tokenIssued: result.tokenIssued,
        machinesReadable: result.machinesReadable,
        vulnerabilitiesReadable: result.vulnerabilitiesReadable,
        noDevices: result.noDevices,
        roles: result.roles,
        permissions: result.permissions,
        ...(result.error ? { error: result.error } : {}),
      },
    };
  }

  return [
    { method: 'PUT', path: '/v1/tenants/:tenantId/defender', handler: put },
    { method: 'GET', path: '/v1/tenants/:tenantId/defender', handler: get },
    { method: 'DELETE', path: '/v1/tenants/:tenantId/defender', handler: remove },
    { method: 'POST', path: '/v1/tenants/:tenantId/defender/test', handler: test },
  ];
}

import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readBody, sendJson } from './http';
import type { TenantState } from './state';
import { GRAPH_RESOURCE, ISSUED_AUDIENCES, MDE_AUDIENCES, type TokenSigner } from './tokens';

// Microsoft Entra ID (login.microsoftonline.com) as msal-node / @azure/identity use it for the
// client-credentials flow: tenant discovery metadata, JWKS, v2 and v1 token endpoints, and the
// real AADSTS error body `{error, error_description, error_codes, timestamp, trace_id, correlation_id, error_uri}`.

export interface EntraDeps {
  baseUrl(): string;
  tenant(id: string): TenantState | undefined;
  signer: TokenSigner;
  tokenLifetimeSec(): number;
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DOMAIN = /^(?=.{1,253}$)([a-z0-9-]{1,63}\.)+[a-z]{2,63}$/i;

function entraTimestamp(date: Date): string {
  return `${date.toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

export function sendAadError(
  deps: EntraDeps,
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  error: string,
  code: number,
  message: string,
  headers: Record<string, string> = {},
): void {
  const now = new Date();
  const traceId = randomUUID();
  const correlationId = (req.headers['client-request-id'] as string | undefined) ?? randomUUID();
  const timestamp = entraTimestamp(now);
  sendJson(
    res,
    status,
    {
      error,
      error_description: `AADSTS${code}: ${message}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${timestamp}`,
      error_codes: [code],
      timestamp,
      trace_id: traceId,
      correlation_id: correlationId,
      error_uri: `${deps.baseUrl()}/error?code=${code}`,
    },
    {
      'Cache-Control': 'no-store, no-cache',
      Pragma: 'no-cache',
      'x-ms-request-id': traceId,
      'client-request-id': correlationId,
      ...headers,
    },
  );
}

/** Resolves the `{tenant}` path segment; answers the AADSTS error itself and returns undefined when it fails. */
function resolveTenant(
  deps: EntraDeps,
  req: IncomingMessage,
  res: ServerResponse,
  segment: string,
): TenantState | undefined {
  const tenantSegment = decodeURIComponent(segment);
  if (!GUID.test(tenantSegment) && !DOMAIN.test(tenantSegment)) {
    sendAadError(
      deps,
      req,
      res,
      400,
      'invalid_request',
      900023,
      `Specified tenant identifier '${tenantSegment}' is neither a valid DNS name, nor a valid external domain.`,
    );
    return undefined;
  }
  const tenant = deps.tenant(tenantSegment);
  if (!tenant) {
    sendAadError(
      deps,
      req,
      res,
      400,
      'invalid_tenant',
      90002,
      `Tenant '${tenantSegment}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.`,
    );
    return undefined;
  }
  return tenant;
}

export function handleOpenIdConfiguration(
  deps: EntraDeps,
  req: IncomingMessage,
  res: ServerResponse,
  segment: string,
): void {
  const tenant = resolveTenant(deps, req, res, segment);
  if (!tenant) return;
  const base = deps.baseUrl();
  const t = tenant.id;
  sendJson(res, 200, {
    token_endpoint: `${base}/${t}/oauth2/v2.0/token`,
    token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
    jwks_uri: `${base}/${t}/discovery/v2.0/keys`,
    response_modes_supported: ['query', 'fragment', 'form_post'],
    subject_types_supported: ['pairwise'],
    id_token_signing_alg_values_supported: ['RS256'],
    response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
    scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
    issuer: `${base}/${t}/v2.0`,
    request_uri_parameter_supported: false,
    userinfo_endpoint: 'https://graph.microsoft.com/oidc/userinfo',
    authorization_endpoint: `${base}/${t}/oauth2/v2.0/authorize`,
    device_authorization_endpoint: `${base}/${t}/oauth2/v2.0/devicecode`,
    http_logout_supported: true,
    frontchannel_logout_supported: true,
    end_session_endpoint: `${base}/${t}/oauth2/v2.0/logout`,
    claims_supported: [
      'sub',
      'iss',
      'cloud_instance_name',
      'cloud_instance_host_name',
      'cloud_graph_host_name',
      'msgraph_host',
      'aud',
      'exp',
      'iat',
      'auth_time',
      'acr',
      'nonce',
      'preferred_username',
      'name',
      'tid',
      'ver',
      'at_hash',
      'c_hash',
      'email',
    ],
    kerberos_endpoint: `${base}/${t}/kerberos`,
    tenant_region_scope: 'NA',
    cloud_instance_name: 'microsoftonline.com',
    cloud_graph_host_name: 'graph.windows.net',
    msgraph_host: 'graph.microsoft.com',
    rbac_url: 'https://pas.windows.net',
  });
}

export function handleJwks(deps: EntraDeps, res: ServerResponse): void {
  sendJson(res, 200, deps.signer.jwks());
}

function clientCredentialsFrom(
  req: IncomingMessage,
  form: URLSearchParams,
): { clientId: string | null; secret: string | null } {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Basic ')) {
    const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
    const at = decoded.indexOf(':');
    if (at > 0)
      return {
        clientId: decodeURIComponent(decoded.slice(0, at)),
        secret: decodeURIComponent(decoded.slice(at + 1)),
      };
  }
  return { clientId: form.get('client_id'), secret: form.get('client_secret') };
}

/**
 * Client-credentials token request. `version` 2 takes `scope=<resource>/.default`; version 1
 * (`/oauth2/token`) takes `resource=<resource>`.
 */
export async function handleToken(
  deps: EntraDeps,
  req: IncomingMessage,
  res: ServerResponse,
  segment: string,
  version: 1 | 2,
): Promise<void> {
  const body = await readBody(req);
  const tenant = resolveTenant(deps, req, res, segment);
  if (!tenant) return;
  const form = new URLSearchParams(body);
  const fail = (status: number, error: string, code: number, message: string): void =>
    sendAadError(deps, req, res, status, error, code, message);
  const grantType = form.get('grant_type');
  if (!grantType)
    return fail(
      400,
      'invalid_request',
      900144,
      "The request body must contain the following parameter: 'grant_type'.",
    );
  if (grantType !== 'client_credentials')
    return fail(
      400,
      'unsupported_grant_type',
      70003,
      `The app requested an unsupported grant type '${grantType}'.`,
    );
  const { clientId, secret } = clientCredentialsFrom(req, form);
  if (!clientId)
    return fail(
      400,
      'invalid_request',
      900144,
      "The request body must contain the following parameter: 'client_id'.",
    );
  const app = tenant.apps.get(clientId.toLowerCase());
  if (!app) {
    return fail(
      400,
      'unauthorized_client',
      700016,
      `Application with identifier '${clientId}' was not found in the directory '${tenant.id}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.`,
    );
  }
  if (!secret)
    return fail(
      401,
      'invalid_client',
      7000218,
      "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    );
  if (secret !== app.clientSecret) {
    return fail(
      401,
      'invalid_client',
      7000215,
      `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${app.clientId}'.`,
    );
  }
  if (app.secretExpired) {
    return fail(
      401,
      'invalid_client',
      7000222,
      `The provided client secret keys for app '${app.clientId}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.`,
    );
  }

  let resource: string;
  if (version === 2) {
    const scope = form.get('scope');
    if (!scope)
      return fail(
        400,
        'invalid_scope',
        70011,
        "The provided request must include a 'scope' input parameter.",
      );
    const scopes = scope.split(' ').filter((s) => s.length > 0);
    const defaults = scopes.filter((s) => s.endsWith('/.default'));
    if (
      defaults.length !== 1 ||
      scopes.some((s) => !s.endsWith('/.default') && !['openid', 'profile', 'offline_access'].includes(s))
    ) {
      return fail(
        400,
        'invalid_scope',
        1002012,
        `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`,
      );
    }
    resource = (defaults[0] as string).slice(0, -'/.default'.length);
  } else {
    const r = form.get('resource');
    if (!r)
      return fail(
        400,
        'invalid_request',
        900144,
        "The request body must contain the following parameter: 'resource'.",
      );
    resource = r;
  }
  const normalised = resource.replace(/\/+$/, '').toLowerCase();
  // Microsoft Graph is in every tenant; the Defender resources only where Defender for Endpoint is.
  if (!ISSUED_AUDIENCES.has(normalised) || (!tenant.defenderProvisioned && normalised !== GRAPH_RESOURCE)) {
    return fail(
      400,
      'invalid_resource',
      500011,
      `The resource principal named ${resource} was not found in the tenant named ${tenant.id}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.`,
    );
  }

  const lifetime = deps.tokenLifetimeSec();
  // The app's roles are WindowsDefenderATP's: a token for another resource carries none of them.
  const roles = MDE_AUDIENCES.has(normalised) ? app.roles : [];
  const accessToken = deps.signer.issue(tenant.id, app.clientId, normalised, roles, lifetime);
  const headers = {
    'Cache-Control': 'no-store, no-cache',
    Pragma: 'no-cache',
    'x-ms-request-id': randomUUID(),
  };
  if (version === 2) {
    sendJson(
      res,
      200,
      { token_type: 'Bearer', expires_in: lifetime, ext_expires_in: lifetime, access_token: accessToken },
      headers,
    );
  } else {
    const now = Math.floor(Date.now() / 1000);
    sendJson(
      res,
      200,
      {
        token_type: 'Bearer',
        expires_in: String(lifetime),
        ext_expires_in: String(lifetime),
        expires_on: String(now + lifetime),
        not_before: String(now),
        resource,
        access_token: accessToken,
      },
      headers,
    );
  }
}

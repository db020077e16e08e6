import { redactText } from '@urs/logging';
import { type DefenderEndpoints, scopeVariable } from './endpoints';
import { DefenderError, DefenderErrorCode, scrubSecret } from './errors';

interface AppIdentity {
  azureTenantId: string;
  clientId: string;
  clientSecret: string;
}

/** The facts we keep from a sign-in failure: codes and ids, never the raw error (it may hold request data). */
interface AuthFailure {
  aadsts: number[];
  error?: string;
  status?: number;
  description: string;
  correlationId?: string;
  traceId?: string;
  name: string;
  networkCode?: string;
}

function readFailure(error: unknown): AuthFailure {
  const e = (typeof error === 'object' && error !== null ? error : {}) as Record<string, unknown>;
  const response = (
    typeof e.errorResponse === 'object' && e.errorResponse !== null ? e.errorResponse : {}
  ) as Record<string, unknown>;
  const message = typeof e.message === 'string' ? e.message : String(error);
  const description = typeof response.errorDescription === 'string' ? response.errorDescription : message;
  const codes = new Set<number>();
  if (Array.isArray(response.errorCodes)) {
    for (const code of response.errorCodes) if (Number.isInteger(Number(code))) codes.add(Number(code));
  }
  // MSAL's ServerError (wrapped by @azure/identity into AuthenticationRequiredError) keeps the codes only in text.
  for (const text of [description, message]) {
    for (const match of text.matchAll(/AADSTS(\d{4,7})/g)) codes.add(Number(match[1]));
  }
  const failure: AuthFailure = {
    aadsts: [...codes],
    description,
    name: typeof e.name === 'string' ? e.name : 'Error',
  };
  // MSAL's ServerError, rewrapped, keeps Entra's OAuth error only as the message's first word.
  const oauthError =
    typeof response.error === 'string' ? response.error : OAUTH_ERROR_PREFIX.exec(message)?.[1];
  if (oauthError !== undefined) failure.error = oauthError;
  if (typeof e.statusCode === 'number') failure.status = e.statusCode;
  if (typeof response.correlationId === 'string') failure.correlationId = response.correlationId;
  if (typeof response.traceId === 'string') failure.traceId = response.traceId;
  const networkCode = typeof e.code === 'string' ? e.code : undefined;
  if (networkCode && /^E[A-Z_]+$/.test(networkCode)) failure.networkCode = networkCode;
  return failure;
}

/** `temporarily_unavailable: Error(s): 50000 - …`: the OAuth error MSAL puts first in a server error's message. */
const OAUTH_ERROR_PREFIX = /^([a-z_]+): Error\(s\):/;

/**
 * Entra's own word that a token request failed on its side and may work when tried again: the OAuth errors
 * `temporarily_unavailable` and `server_error`, AADSTS50000 (an error issuing the token) and AADSTS90033
 * (a transient error).
 */
const TRANSIENT_OAUTH_ERRORS = new Set(['temporarily_unavailable', 'server_error']);
const TRANSIENT_AADSTS = [50000, 90033];

const NETWORK_HINT =
  /ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|socket hang up|network|certificate|self[- ]signed|UNABLE_TO_VERIFY/i;

/**
 * Turns whatever @azure/identity threw into a DefenderError an administrator can act on. Entra's AADSTS
 * codes are read from `errorResponse.errorCodes` (AuthenticationError) or from the message text (MSAL's
 * ServerError, which @azure/identity rewraps keeping only the message). The client secret (as given and
 * URL-encoded), tokens and quoted secret fields are scrubbed from every text we keep, and the original error
 * is not attached as `cause`.
 */
export function mapAuthError(
  error: unknown,
  app: AppIdentity,
  endpoints?: Pick<DefenderEndpoints, 'cloud' | 'scope' | 'scopeOverridden'>,
): DefenderError {
  if (error instanceof DefenderError) return error;
  const failure = readFailure(error);
  // The secret as sent (in a form body, URL-encoded) too, and, as in the API's answers, any token or quoted
  // secret field Entra's text may echo.
  const unsecret = scrubSecret(
    scrubSecret(failure.description, app.clientSecret),
    encodeURIComponent(app.clientSecret),
  );
  const scrubbed = redactText((unsecret.split(/\r?\n/)[0] ?? '').trim()).slice(0, 300);
  const details: Record<string, unknown> = {
    azureTenantId: app.azureTenantId,
    clientId: app.clientId,
    aadsts: failure.aadsts,
    ...(failure.error ? { error: failure.error } : {}),
    ...(failure.status ? { status: failure.status } : {}),
    ...(failure.correlationId ? { correlationId: failure.correlationId } : {}),
    ...(failure.traceId ? { traceId: failure.traceId } : {}),
    entraMessage: scrubbed,
  };
  const has = (code: number): boolean => failure.aadsts.includes(code);
  const app_ = `app ${app.clientId} in tenant ${app.azureTenantId}`;
  if (has(7000215)) {
    return new DefenderError(
      DefenderErrorCode.INVALID_SECRET,
      `Entra ID rejected the client secret of ${app_} (AADSTS7000215). Paste the secret's Value, not its ID ` +
        `(Entra ID → App registrations → Certificates & secrets), or create a new secret.`,
      { details },
    );
  }
  if (has(7000222)) {
    return new DefenderError(
      DefenderErrorCode.SECRET_EXPIRED,
      `The client secret of ${app_} has expired (AADSTS7000222). Create a new secret under Certificates & secrets and register its Value.`,
      { details },
    );
  }
  if (has(700016)) {
    return new DefenderError(
      DefenderErrorCode.UNKNOWN_CLIENT,
      `No application with client id ${app.clientId} exists in tenant ${app.azureTenantId} (AADSTS700016). ` +
        `Check the Application (client) ID and that the app is registered in this tenant.`,
      { details },
    );
  }
  if (has(90002) || has(900023) || failure.error === 'invalid_tenant') {
    return new DefenderError(
      DefenderErrorCode.UNKNOWN_TENANT,
      `Entra ID does not know tenant ${app.azureTenantId} (AADSTS90002). Check the Directory (tenant) ID and the tenant's cloud.`,
      { details },
    );
  }
  if (has(500011)) return notProvisioned(app, endpoints, details);
  if (has(65001) || has(501051)) {
    return new DefenderError(
      DefenderErrorCode.CONSENT_MISSING,
      `Admin consent is missing for ${app_}. Grant admin consent to the WindowsDefenderATP application permissions.`,
      { details },
    );
  }
  const transient =
    (failure.status !== undefined && (failure.status >= 500 || failure.status === 429)) ||
    (failure.error !== undefined && TRANSIENT_OAUTH_ERRORS.has(failure.error)) ||
    TRANSIENT_AADSTS.some(has) ||
    failure.networkCode !== undefined ||
    (failure.aadsts.length === 0 && NETWORK_HINT.test(failure.description));
  if (transient) {
    return new DefenderError(
      DefenderErrorCode.UNAVAILABLE,
      `Entra ID could not be reached for tenant ${app.azureTenantId}: ${scrubbed}`,
      { canRetry: true, details },
    );
  }
  const codeText = failure.aadsts.length ? ` (AADSTS${failure.aadsts.join(', AADSTS')})` : '';
  return new DefenderError(
    DefenderErrorCode.AUTH_FAILED,
    `Sign-in failed for ${app_}${codeText}: ${scrubbed}`,
    { details },
  );
}

/**
 * AADSTS500011: Entra has no resource for the scope asked. In the commercial cloud, whose scope is documented,
 * the tenant lacks Defender for Endpoint. In a US Government cloud, whose scope Microsoft does not document,
 * or with a scope an operator set, the scope itself may be wrong: the message names it, the cloud and the
 * variable that corrects it.
 */
function notProvisioned(
  app: AppIdentity,
  endpoints: Pick<DefenderEndpoints, 'cloud' | 'scope' | 'scopeOverridden'> | undefined,
  details: Record<string, unknown>,
): DefenderError {
  const absent =
    `Microsoft Defender for Endpoint is not present in tenant ${app.azureTenantId} (AADSTS500011: the ` +
    `WindowsDefenderATP service principal was not found`;
  if (!endpoints)
    return new DefenderError(
      DefenderErrorCode.NOT_PROVISIONED,
      `${absent}). Make sure the tenant has Defender for Endpoint and its cloud is right.`,
      { details },
    );
  const { cloud, scope, scopeOverridden } = endpoints;
  const withScope = { ...details, cloud, scope };
  if (cloud === 'commercial' && !scopeOverridden)
    return new DefenderError(
      DefenderErrorCode.NOT_PROVISIONED,
      `${absent} for scope ${scope}, cloud ${cloud}). Make sure the tenant has Defender for Endpoint and its cloud is right.`,
      { details: withScope },
    );
  const variable = scopeVariable(cloud);
  const scopeHint = scopeOverridden
    ? `the scope set by the operator (${variable}, or URS_DEFENDER_SCOPE in the CLI) is not the one the ` +
      "tenant's WindowsDefenderATP app accepts"
    : `Microsoft does not document the ${cloud} scope, and this default may be wrong: set ${variable} to the ` +
      "one the tenant's WindowsDefenderATP app accepts";
  return new DefenderError(
    DefenderErrorCode.NOT_PROVISIONED,
    `Entra ID found no resource for scope ${scope} in tenant ${app.azureTenantId}, cloud ${cloud} (AADSTS500011). ` +
      `Either the tenant has no Defender for Endpoint, its cloud is not ${cloud}, or ${scopeHint}.`,
    { details: withScope },
  );
}

import type { Agent } from 'node:https';
import {
  ClientSecretCredential,
  type AccessToken,
  type ClientSecretCredentialOptions,
} from '@azure/identity';
import axios from 'axios';
import { type Logger, redactText } from '@urs/logging';
import type { DefenderEndpoints } from './endpoints';
import { mapAuthError } from './auth-errors';
import { agentThroughProxy } from './proxy';
import { DefenderError, DefenderErrorCode, scrubSecret } from './errors';

/** How long before expiry a token stops being reused, in milliseconds (MSAL renews 5 minutes before). */
const TOKEN_RENEWAL_MARGIN_MS = 300_000;

/**
 * How long one shared token request may take, in milliseconds, before the calls waiting for it fail
 * UNAVAILABLE (retryable); it follows no single caller's signal, so it needs a bound of its own.
 */
const TOKEN_REQUEST_TIMEOUT_MS = 60_000;

/**
 * A token due for renewal that Entra fails to renew (a passing outage) is still used while it has more than
 * this left, in milliseconds: the API accepts it until it expires, with a margin for clock skew and the call.
 */
const TOKEN_MIN_LIFETIME_MS = 60_000;

/** After such a failed renewal, how long before Entra is asked again, in milliseconds. */
const TOKEN_RENEWAL_RETRY_MS = 30_000;

/**
 * The longest wait a throttling Entra ID is taken at its word for, in milliseconds: a `Retry-After` beyond it
 * (a date far off, a typo of Entra's) would stop the tenant's calls for that long.
 */
const ENTRA_MAX_RETRY_AFTER_MS = 600_000;

/** A 429 of Entra's without a `Retry-After`: MSAL's own wait for it (its throttling cache), in milliseconds. */
const ENTRA_THROTTLE_WITHOUT_RETRY_AFTER_MS = 60_000;

/** A policy of the pipeline @azure/identity sends its Entra requests through. */
type EntraPolicy = NonNullable<ClientSecretCredentialOptions['additionalPolicies']>[number]['policy'];

/**
 * The wait Entra asks for in an answer, in milliseconds: a 429's `Retry-After` (seconds or an HTTP date; a
 * minute without one), or a 503's when it gives one; at most ENTRA_MAX_RETRY_AFTER_MS. Undefined otherwise.
 */
function entraRetryAfterMs(status: number, retryAfter: string | undefined): number | undefined {
  if (status !== 429 && status !== 503) return undefined;
  const seconds = Number(retryAfter);
  let ms =
    retryAfter === undefined || retryAfter.trim() === ''
      ? Number.NaN
      : Number.isFinite(seconds)
        ? seconds * 1000
        : Date.parse(retryAfter) - Date.now();
  if (Number.isNaN(ms)) {
    if (status !== 429) return undefined;
    ms = ENTRA_THROTTLE_WITHOUT_RETRY_AFTER_MS;
  }
  return Math.min(Math.max(0, Math.ceil(ms)), ENTRA_MAX_RETRY_AFTER_MS);
}

/**
 * Gives each request to Entra a time limit of `timeoutMs`, its retries included: @azure/identity does not pass
 * the caller's abort signal on to MSAL's requests, so a request Entra never answers would keep its socket open
 * after its caller gave up (`tokenRequestTimeoutMs`). Aborted, the pipeline closes the socket and does not
 * try again (a request's own `timeout` would be retried, with a socket of its own).
 */
function entraTimeLimit(timeoutMs: number): EntraPolicy {
  return {
    name: 'ursEntraTimeLimit',
    async sendRequest(request, next) {
      const limit = new AbortController();
      const outer = request.abortSignal;
      const stop = (): void => limit.abort();
      if (outer?.aborted) stop();
      outer?.addEventListener('abort', stop);
      const timer = setTimeout(stop, timeoutMs);
      request.abortSignal = limit.signal;
      try {
        return await next(request);
      } finally {
        clearTimeout(timer);
        outer?.removeEventListener('abort', stop);
      }
    },
  };
}

/**
 * Tells `onThrottled` the wait a throttling answer of Entra's asks for (MSAL's errors keep no `Retry-After`),
 * and takes its `Retry-After` off: the pipeline would otherwise sleep it out (up to the request's time limit,
 * the callers' wait with it) and ask again; the token source waits it out itself, asking nothing meanwhile.
 */
function entraThrottling(onThrottled: (waitMs: number) => void): EntraPolicy {
  return {
    name: 'ursEntraThrottling',
    async sendRequest(request, next) {
      const response = await next(request);
      const waitMs = entraRetryAfterMs(response.status, response.headers.get('retry-after'));
      if (waitMs !== undefined) {
        onThrottled(waitMs);
        response.headers.delete('retry-after');
      }
      return response;
    },
  };
}

/** The app registration of one tenant. The secret lives only in this object and in the credential. */
export interface DefenderCredentials {
  azureTenantId: string;
  clientId: string;
  clientSecret: string;
}

/** What a token grants, from its (unverified) JWT payload: enough to explain missing consent. */
export interface TokenClaims {
  /** Application roles (`roles` claim); empty when absent. */
  roles: string[];
  /** Audience, tenant and application ids, when present. */
  aud?: string;
  tid?: string;
  appid?: string;
}

export interface TokenSource {
  /**
   * A valid token; cached and renewed by MSAL (it renews 5 min before expiry). Concurrent calls share one
   * request to Entra. When a renewal fails with an outage (retryable) while the token has more than a minute
   * left, that token is returned (a warning logged) and Entra is asked again after `renewalRetryMs`.
   */
  getToken(signal?: AbortSignal): Promise<AccessToken>;
  /**
   * A token that did not come from any cache (after the API answered 401). `rejected` is the token the API
   * refused: when it has already been replaced (another call saw the same 401 first), the replacement is
   * returned without asking Entra again. Concurrent refreshes share one request to Entra.
   */
  refreshToken(signal?: AbortSignal, rejected?: string): Promise<AccessToken>;
}

export interface TokenSourceOptions {
  endpoints: DefenderEndpoints;
  credentials: DefenderCredentials;
  /** An https agent for the Entra calls (only needed to trust a private CA in-process; see tls.ts). */
  httpsAgent?: Agent;
  /** Where a renewal that failed while the token was still valid is reported. */
  logger?: Logger;
  /**
   * After a renewal failed while the token was still valid, how long the token is used before Entra is
   * asked again, in milliseconds. Default 30 seconds.
   */
  renewalRetryMs?: number;
  /**
   * How long one shared token request may take, in milliseconds, before the calls waiting for it fail
   * UNAVAILABLE (retryable). Default 60 seconds.
   */
  tokenRequestTimeoutMs?: number;
}

/** Whether `roles` grant `permission` (`Machine.Read.All`): itself, or its ReadWrite form, which includes it. */
export function grantsPermission(roles: readonly string[], permission: string): boolean {
  return roles.includes(permission) || roles.includes(permission.replace('.Read.', '.ReadWrite.'));
}

/**
 * Decodes the payload of a JWT without verifying it: the API verifies tokens; we only read the `roles`
 * claim to tell an administrator which permission lacks consent. Returns undefined for opaque tokens.
 */
export function decodeTokenClaims(token: string): TokenClaims | undefined {
  const part = token.split('.')[1];
  if (!part) return undefined;
  try {
    const payload = JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
    const roles = Array.isArray(payload.roles)
      ? payload.roles.filter((r): r is string => typeof r === 'string')
      : [];
    const claims: TokenClaims = { roles };
    if (typeof payload.aud === 'string') claims.aud = payload.aud;
    if (typeof payload.tid === 'string') claims.tid = payload.tid;
    if (typeof payload.appid === 'string') claims.appid = payload.appid;
    else if (typeof payload.azp === 'string') claims.appid = payload.azp;
    return claims;
  } catch {
    return undefined;
  }
}

/**
 * One `ClientSecretCredential` per tenant. MSAL caches the token in the credential's memory and renews it
 * transparently. @azure/identity offers no way to bypass that cache for client credentials, so a forced
 * refresh (after a 401, e.g. a token revoked before its expiry) replaces the credential with a new
 * instance, whose cache is empty.
 */
export function createTokenSource(options: TokenSourceOptions): TokenSource {
  const { endpoints, credentials } = options;
  const requestTimeoutMs = options.tokenRequestTimeoutMs ?? TOKEN_REQUEST_TIMEOUT_MS;
  /** The wait the answer to the token request under way asked for, when Entra throttled it. */
  let entraAskedMs: number | undefined;
  /** Until when (a `Date.now()`) Entra is not asked again, as a throttling answer of its asked. */
  let throttledUntil = 0;
  const makeCredential = (): ClientSecretCredential => {
    // Read with each credential, as axios reads the proxy with each request.
    const agent = agentThroughProxy(`${endpoints.authorityHost}/`, options.httpsAgent);
    return new ClientSecretCredential(
      credentials.azureTenantId,
      credentials.clientId,
      credentials.clientSecret,
      {
        authorityHost: endpoints.authorityHost,
        // Off only with an operator override: MSAL would otherwise ask login.microsoftonline.com whether the
        // host is a known authority, which fails for the simulator and offline.
        disableInstanceDiscovery: endpoints.overridden,
        // The Entra calls go through @azure/core-rest-pipeline, which takes a Node agent: that is how a
        // private CA is trusted in-process (NODE_EXTRA_CA_CERTS is only read at process start). Given an
        // agent, the pipeline no longer looks for a proxy, so the agent tunnels through the one the MDE calls
        // take, when there is one.
        ...(agent ? { agent } : {}),
        // The pipeline's own retries would hide an Entra outage behind minutes of waiting; ours decide.
        retryOptions: { maxRetries: 1 },
        additionalPolicies: [
          { policy: entraTimeLimit(requestTimeoutMs), position: 'perCall' },
          { policy: entraThrottling((waitMs) => (entraAskedMs = waitMs)), position: 'perRetry' },
        ],
      },
    );
  };
  let credential = makeCredential();

  /**
   * MSAL reports an unknown tenant and an unreachable authority alike ("endpoints_resolution_error": it
   * swallows the answer of the tenant's OpenID metadata request). Asking for that document ourselves tells
   * them apart: Entra answers 400 with AADSTS90002 for an unknown tenant; a network error is an outage; and
   * a document served now means MSAL's two tries met a passing failure, an outage too.
   */
  async function diagnoseAuthority(): Promise<unknown> {
    const url = `${endpoints.authorityHost}/${encodeURIComponent(credentials.azureTenantId)}/v2.0/.well-known/openid-configuration`;
    try {
      const response = await axios.get<unknown>(url, {
        timeout: 10_000,
        validateStatus: () => true,
        ...(options.httpsAgent ? { httpsAgent: options.httpsAgent } : {}),
      });
      const body = (
        typeof response.data === 'object' && response.data !== null ? response.data : {}
      ) as Record<string, unknown>;
      if (response.status >= 400) {
        return {
          name: 'AuthenticationError',
          statusCode: response.status,
          message:
            typeof body.error_description === 'string' ? body.error_description : `HTTP ${response.status}`,
          errorResponse: {
            error: body.error,
            errorDescription: body.error_description,
            errorCodes: body.error_codes,
          },
        };
      }
      return {
        name: 'AuthorityUnavailable',
        statusCode: 503,
        message: `the tenant's OpenID metadata could not be read, and is served again (HTTP ${response.status})`,
      };
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      return {
        name: 'NetworkError',
        code: typeof code === 'string' ? code : 'ENETWORK',
        message: `network error (${String(code)})`,
      };
    }
  }

  async function fetchToken(from: ClientSecretCredential, signal?: AbortSignal): Promise<AccessToken> {
    try {
      return await from.getToken(endpoints.scope, signal ? { abortSignal: signal } : {});
    } catch (error) {
      const name = (error as { name?: unknown }).name;
      if (name === 'CredentialUnavailableError')
        throw mapAuthError(await diagnoseAuthority(), credentials, endpoints);
      throw mapAuthError(error, credentials, endpoints);
    }
  }

  // MSAL's cache lookup costs CPU on every call; the token is reused here on MSAL's own terms (until its
  // refresh time, or 5 minutes before expiry), and MSAL is asked again after that.
  let current: AccessToken | undefined;
  const fresh = (token: AccessToken): boolean =>
    Date.now() < (token.refreshAfterTimestamp ?? token.expiresOnTimestamp - TOKEN_RENEWAL_MARGIN_MS);
  /** Whether a token due for renewal is still worth sending, should Entra not renew it now. */
  const usable = (token: AccessToken): boolean =>
    token.expiresOnTimestamp - Date.now() > TOKEN_MIN_LIFETIME_MS;
  // After a renewal failed while the token was still usable: until when it is used without asking again.
  let renewalRetryAt = 0;
  const renewalRetryMs = options.renewalRetryMs ?? TOKEN_RENEWAL_RETRY_MS;

  // The one request to Entra in flight, shared by every call that needs a token meanwhile: MSAL does not
  // merge concurrent requests, so the first calls of a cycle would otherwise each fetch a token.
  let flight: { promise: Promise<AccessToken>; refresh: boolean } | undefined;
  // Bumped by every request started: an older request that ends late must not replace a newer token.
  let generation = 0;
  // When a request through `credential` failed: once `renewalRetryMs` have passed since, the next request asks
  // a new credential. MSAL answers a request whose answer was a 5xx or a 429 (or carried a Retry-After)
  // itself, with that error and without asking Entra, for 60 seconds or the Retry-After (its throttling
  // cache, kept in the credential): the tenant would stay failed that long after Entra is back. Until the
  // wait is over the credential is kept, so retries meanwhile are answered by that cache, not sent to Entra
  // (each new credential also fetches the tenant's OpenID metadata).
  let failedAt: number | undefined;

  function start(refresh: boolean): Promise<AccessToken> {
    const mine = ++generation;
    const promise = (async () => {
      // Entra asked for a wait: nobody asks it again before it is over (a new credential would).
      const throttledForMs = throttledUntil - Date.now();
      if (throttledForMs > 0) throw entraThrottled(throttledForMs);
      // A refresh, or a request after a failed one, asks a new credential, whose caches are empty. The shared
      // request follows no single caller's signal (the others still wait for it), but it cannot hang them
      // forever: @azure/identity does not pass a client secret credential's abort signal on to MSAL's
      // requests, so the wait ends at the timeout; the request itself is closed at the same time limit
      // (entraTimeLimit).
      // Once Entra's wait is over, too: MSAL would answer a throttled credential from its cache for a minute.
      const stale = failedAt !== undefined && (Date.now() - failedAt >= renewalRetryMs || throttledUntil > 0);
      const from = refresh || stale ? makeCredential() : credential;
      const timeout = AbortSignal.timeout(requestTimeoutMs);
      const held = current;
      let token: AccessToken;
      entraAskedMs = undefined;
      try {
        token = await join(fetchToken(from, timeout), timeout);
      } catch (caught) {
        if (from === credential) failedAt ??= Date.now();
        const error = timeout.aborted ? noAnswer(requestTimeoutMs) : throttledBy(caught, entraAskedMs);
        // A renewal before expiry (MSAL's, from its refresh time or 5 minutes before expiry, waits for
        // Entra) that meets a passing outage: the token held is still accepted, so the calls keep it rather
        // than fail, and Entra is asked again after a short wait. Never after a 401: that token was refused.
        if (
          !refresh &&
          held !== undefined &&
          held === current &&
          mine === generation &&
          error instanceof DefenderError &&
          error.canRetry &&
          usable(held)
        ) {
          renewalRetryAt = Date.now() + Math.max(renewalRetryMs, error.retryAfterMs ?? 0);
          options.logger?.warn(
            'defender: Entra ID did not renew the token; the current one is kept meanwhile',
            {
              azureTenantId: credentials.azureTenantId,
              code: error.code,
              error: redactText(scrubSecret(error.message, credentials.clientSecret)),
              expiresInSeconds: Math.round((held.expiresOnTimestamp - Date.now()) / 1_000),
              retryInSeconds: Math.round(renewalRetryMs / 1_000),
            },
          );
          return held;
        }
        throw error;
      }
      if (mine === generation) {
        credential = from;
        failedAt = undefined;
        throttledUntil = 0;
        current = token;
        renewalRetryAt = 0;
      }
      return token;
    })();
    const entry = { promise, refresh };
    flight = entry;
    const settle = (): void => {
      if (flight === entry) flight = undefined;
    };
    promise.then(settle, settle);
    return promise;
  }

  /**
   * A failure of a request Entra answered asking for a wait (a 429, a 503 with `Retry-After`): THROTTLED with
   * that wait, and no request to Entra before it is over. Other failures as they are.
   */
  function throttledBy(error: unknown, askedMs: number | undefined): unknown {
    if (askedMs === undefined || !(error instanceof DefenderError) || !error.canRetry) return error;
    throttledUntil = Date.now() + askedMs;
    return entraThrottled(askedMs);
  }

  /**
   * Entra ID throttles the tenant's token requests for another `waitMs`: THROTTLED, tried again after it. Its
   * `tokenRequest` detail tells the API's throttling (which holds the tenant's endpoint back) from Entra's.
   */
  function entraThrottled(waitMs: number): DefenderError {
    return new DefenderError(
      DefenderErrorCode.THROTTLED,
      `Entra ID (${hostOf(endpoints.authorityHost)}) throttles the token requests of tenant ` +
        `${credentials.azureTenantId}: it asks to be asked again in ${Math.ceil(waitMs / 1000)} s`,
      {
        canRetry: true,
        retryAfterMs: waitMs,
        details: { azureTenantId: credentials.azureTenantId, tokenRequest: true },
      },
    );
  }

  /**
   * Entra ID did not answer within `waitedMs`, in words an administrator can act on (`/defender/test`'s
   * verdict): who did not answer, where, for which tenant, how long it was waited for. Never the secret.
   */
  function noAnswer(waitedMs: number): DefenderError {
    return new DefenderError(
      DefenderErrorCode.UNAVAILABLE,
      `Entra ID (${hostOf(endpoints.authorityHost)}) did not answer the token request for tenant ` +
        `${credentials.azureTenantId} within ${duration(waitedMs)}: it may be down, or not reachable from here`,
      { canRetry: true, details: { azureTenantId: credentials.azureTenantId } },
    );
  }

  /**
   * Why this caller stopped waiting for its token: at a deadline (a signal of `AbortSignal.timeout`, alone or
   * in `AbortSignal.any`: the access test's time limit) Entra did not answer within the wait; otherwise the
   * caller was stopped (a shutdown, a cycle given up).
   */
  function stopped(signal: AbortSignal, waitedMs: number): DefenderError {
    if (endedAtDeadline(signal) && waitedMs > 0) return noAnswer(waitedMs);
    return new DefenderError(
      DefenderErrorCode.UNAVAILABLE,
      'Stopped while waiting for a token from Entra ID',
      {
        canRetry: true,
        details: { azureTenantId: credentials.azureTenantId },
      },
    );
  }

  /** Waits for the shared request, or until this caller's signal aborts (the request goes on for the others). */
  function join(promise: Promise<AccessToken>, signal?: AbortSignal): Promise<AccessToken> {
    if (!signal) return promise;
    if (signal.aborted) return Promise.reject(stopped(signal, 0));
    const since = Date.now();
    return new Promise<AccessToken>((resolve, reject) => {
      const onAbort = (): void => reject(stopped(signal, Date.now() - since));
      signal.addEventListener('abort', onAbort, { once: true });
      promise.then(
        (token) => {
          signal.removeEventListener('abort', onAbort);
          resolve(token);
        },
        (error: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      );
    });
  }

  return {
    async getToken(signal) {
      if (current && fresh(current)) return current;
      // A renewal failed a moment ago while the token was still usable: it is used until Entra is asked again.
      if (current && Date.now() < renewalRetryAt && usable(current)) return current;
      return join(flight?.promise ?? start(false), signal);
    },
    async refreshToken(signal, rejected) {
      // A token the API refused is forgotten: never kept through a renewal that fails.
      if (rejected !== undefined && current?.token === rejected) current = undefined;
      for (;;) {
        // Another call saw the same 401 and its refresh already replaced the refused token.
        if (rejected !== undefined && current && current.token !== rejected && fresh(current)) return current;
        if (flight?.refresh) return join(flight.promise, signal);
        if (!flight) return join(start(true), signal);
        // A plain request started before the 401 may still hand back the refused token from MSAL's cache:
        // wait for it, then decide again.
        await join(flight.promise, signal).catch((error: unknown) => {
          if (signal?.aborted) throw error;
        });
        if (rejected === undefined) return join(flight?.refresh ? flight.promise : start(true), signal);
      }
    },
  };
}

/**
 * Whether an aborted signal ended at a deadline (`AbortSignal.timeout`, alone or in `AbortSignal.any`: the
 * access test's time limit) rather than by a stop. By name: the reason is a DOMException, of another realm
 * than this code's Error in a VM context.
 */
export function endedAtDeadline(signal: AbortSignal): boolean {
  return (signal.reason as { name?: unknown } | undefined)?.name === 'TimeoutError';
}

/** The host of an authority URL (`login.microsoftonline.com`), or the text as given when it is no URL. */
export function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/** A wait in words: whole seconds from one second on (`30 seconds`), milliseconds below. */
export function duration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  const seconds = Math.round(ms / 1_000);
  return `${seconds} second${seconds === 1 ? '' : 's'}`;
}

import type { AxiosResponse } from 'axios';
import { redactText } from '@urs/logging';
import {
  DefenderError,
  DefenderErrorCode,
  type DefenderErrorCodeValue,
  isDefenderError,
  scrubSecret,
} from './errors';
import type { CallOutcome } from './call-health';
import { DEFENDER_RESOURCE, isOtherApiAudience } from './endpoints';
import { type DefenderEndpointClass, LONGEST_QUOTA_WINDOW_MS } from './quota';
import { decodeTokenClaims, grantsPermission } from './token';

/*
 * What the Defender API's answers and failures mean: each becomes a result or a DefenderError in words an
 * administrator can act on, naming the tenant and the path, never the token.
 */

/** 200 with the parsed body, or MDE's own 404 with its error's code and message (`api`, may be ''). */
export type ApiResult = { status: 200; body: unknown } | { status: 404; api?: string };

/** Which call an answer or a failure belongs to. */
export interface CallOf {
  azureTenantId: string;
  /** The path called (no query: it may carry nothing secret, but it is not needed). */
  path: string;
}

/** A call answered with a failure: its status, and Microsoft's id of it when the answer gave one. */
type FailedCall = CallOf & { status: number; requestId?: string };

/**
 * `Retry-After` in seconds or as an HTTP date, in whole milliseconds; undefined when absent or unreadable.
 * At most Microsoft's longest quota window (an hour): no quota of the tenant holds longer, and the wait
 * becomes a block of the app's calls in Redis, kept by its Azure tenant id and client id (so re-registering
 * with the same app does not clear it). Unclamped, a date years away held the tenant back for years, and
 * `1e18` seconds made a block Redis refused as not an integer.
 */
export function parseRetryAfterMs(value: unknown, now: number = Date.now()): number | undefined {
  if (typeof value !== 'string' || value.trim() === '') return undefined;
  const seconds = Number(value);
  const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(value) - now;
  if (Number.isNaN(ms)) return undefined;
  return Math.min(Math.max(0, Math.ceil(ms)), LONGEST_QUOTA_WINDOW_MS);
}

const TRANSIENT_NETWORK = new Set([
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'ECONNREFUSED',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
]);

/** Network codes of a call that ran out of time (axios's own timeout, or the deadline of `withinDeadline`). */
export const TIMED_OUT = new Set(['ECONNABORTED', 'ETIMEDOUT']);

/**
 * Whether a call failed for running out of its own time (no answer, or not all of it, within the request
 * timeout; or, for a call whose only deadline is its call slot's end, a bulk export page, its answer still
 * arriving when the slot ended: `ranOutOfSlot`), not because its caller stopped it.
 */
export function timedOut(error: unknown): boolean {
  return (
    isDefenderError(error, DefenderErrorCode.UNAVAILABLE) &&
    error.canRetry &&
    (TIMED_OUT.has(String(error.details['networkCode'])) || error.details['ranOutOfSlot'] === true)
  );
}

/**
 * The `{"error":{"code","message","target"}}` of an MDE error body; '' for a part that is absent. `target` is
 * Microsoft's correlation id of the failure, the one its support asks for.
 */
interface MdeError {
  code: string;
  message: string;
  target: string;
}

function mdeErrorOf(body: string): MdeError {
  const text = (value: unknown): string => (typeof value === 'string' ? value : '');
  try {
    const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown; target?: unknown } };
    return {
      code: text(parsed.error?.code),
      message: text(parsed.error?.message),
      target: text(parsed.error?.target),
    };
  } catch {
    return { code: '', message: '', target: '' };
  }
}

/**
 * `code: message` of an MDE error body, fit to keep (see keepable): the message is the answer's text, which a
 * gateway in front of the API may have filled with the request's headers.
 */
function mdeErrorText({ code, message }: MdeError, token: string): string {
  return keepable([code, message].filter(Boolean).join(': '), token, 240);
}

/**
 * Text from an answer, fit to keep in an error and its log lines: on one line, the token sent and any quoted
 * secret field redacted (a proxy's page may echo the request's headers), then cut to `max` characters.
 */
function keepable(text: string, token: string, max: number): string {
  return redactText(scrubSecret(text.replace(/\s+/g, ' ').trim(), token)).slice(0, max);
}

/**
 * Microsoft's id of a failed call, to quote to its support: the error body's `target`, else the
 * `x-ms-request-id` or `request-id` header; '' when there is none.
 */
function requestIdOf(response: AxiosResponse<string>, api: MdeError, token: string): string {
  const headers = response.headers as Record<string, unknown>;
  const header = [headers['x-ms-request-id'], headers['request-id']].find((h) => typeof h === 'string');
  return keepable(api.target || (header as string | undefined) || '', token, 128);
}

/** The start of a body that is not MDE's JSON (a proxy's or a firewall's page) as text: its tags dropped. */
function pageText(body: string, token: string): string {
  const text = body.replace(/<!--[\s\S]*?-->|<(script|style)\b[\s\S]*?<\/\1\s*>|<[^>]*>/gi, ' ');
  return keepable(text, token, 300);
}

/**
 * `message` naming Microsoft's request id of the call (see requestIdOf), before its full stop if it has one;
 * as it is when there is none.
 */
export function withRequestId(message: string, requestId: unknown): string {
  if (typeof requestId !== 'string' || requestId === '') return message;
  const stop = message.endsWith('.') ? '.' : '';
  const text = message.slice(0, message.length - stop.length);
  // A message ending in brackets of its own takes the id inside them, not in a second pair.
  return text.endsWith(')')
    ? `${text.slice(0, -1)}; Microsoft request id ${requestId})${stop}`
    : `${text} (Microsoft request id ${requestId})${stop}`;
}

/**
 * Whether an answer of `status` came from something in front of the API, not from the API: a 403 or a 404
 * without Microsoft's error body (see notFoundInFront and forbidden), which MDE's own always carry.
 */
function inFront(status: number, api: MdeError): boolean {
  return (status === 403 || status === 404) && !api.code;
}

/**
 * An answer, for the tenant's health: 5xx and 408 are the API failing, a 429 is its quota, not its health. A
 * 403 or 404 a front end answered (`inFront`) is not the API's answer either: it counts as a 5xx does, so it
 * neither lifts a hold-back nor frees the tenant's calls, as a call that reached Microsoft would.
 */
export function outcomeOf({ status, data }: { status: number; data?: unknown }): CallOutcome {
  if (status === 429) return 'neither';
  if (status >= 500 || status === 408) return 'failed';
  // Only a 403's or a 404's body is read: a 200's may be a whole page of devices.
  if (status !== 403 && status !== 404) return 'answered';
  return inFront(status, mdeErrorOf(typeof data === 'string' ? data : '')) ? 'failed' : 'answered';
}

/**
 * A call that got no answer (a network code such as ECONNRESET; ECONNABORTED when it ran out of time):
 * `stopped` when its caller stopped it, which is never retried.
 */
export function unreachable(
  error: unknown,
  { azureTenantId, path }: CallOf,
  stopped: boolean,
  requestTimeoutMs: number,
): DefenderError {
  const code = (error as { code?: string }).code ?? 'ERROR';
  // The axios error holds the request config with the bearer token: keep only its code.
  return new DefenderError(
    DefenderErrorCode.UNAVAILABLE,
    TIMED_OUT.has(code) && !stopped
      ? `The Defender API did not answer tenant ${azureTenantId} on ${path} within ` +
          `${requestTimeoutMs / 1000} s (${code})`
      : `The Defender API could not be reached (${code}) for tenant ${azureTenantId} on ${path}`,
    {
      canRetry: !stopped && (TRANSIENT_NETWORK.has(code) || !/CERT|SIGNATURE|SELF_SIGNED|TLS/.test(code)),
      details: { azureTenantId, path, networkCode: code },
    },
  );
}

/** An answer that is not what the endpoint documents: retried, as a truncated body usually is passing. */
export function malformed({ azureTenantId, path }: CallOf, message: string): DefenderError {
  return new DefenderError(DefenderErrorCode.MALFORMED_RESPONSE, message, {
    canRetry: true,
    details: { azureTenantId, path },
  });
}

export function notJson(call: CallOf, error: Error): DefenderError {
  return malformed(
    call,
    `The Defender API returned a body that is not JSON on ${call.path} (${error.message})`,
  );
}

/**
 * An answer read whole: 200 with its parsed body, or MDE's 404; any other status throws the DefenderError it
 * means (`token`, the one sent, names the roles a 403 lacked).
 */
export function classify(
  response: AxiosResponse<string>,
  { azureTenantId, path }: CallOf,
  token: string,
  endpoint: DefenderEndpointClass,
): ApiResult {
  const status = response.status;
  const details = { azureTenantId, path, status };
  if (status >= 200 && status < 300) {
    try {
      return { status: 200, body: JSON.parse(response.data) as unknown };
    } catch {
      throw new DefenderError(
        DefenderErrorCode.MALFORMED_RESPONSE,
        `The Defender API returned a body that is not JSON on ${path}`,
        {
          canRetry: true,
          details,
        },
      );
    }
  }
  const api = mdeErrorOf(response.data ?? '');
  const apiText = mdeErrorText(api, token);
  const requestId = requestIdOf(response, api, token);
  /** The call's facts, with Microsoft's id of it when there is one. */
  const failed: FailedCall = requestId ? { ...details, requestId } : details;
  if (status === 404) {
    if (!inFront(status, api)) return { status: 404, api: apiText };
    return throwError(notFoundInFront(response.data ?? '', failed, token));
  }
  if (status === 429) {
    const retryAfter: unknown = response.headers['retry-after'];
    const retryAfterMs = parseRetryAfterMs(retryAfter);
    return throwError(
      new DefenderError(
        DefenderErrorCode.THROTTLED,
        `The Defender API throttled tenant ${azureTenantId} on ${path} (429)` +
          (retryAfterMs === undefined ? '' : `: it asks to wait ${Math.ceil(retryAfterMs / 1000)} s`),
        {
          canRetry: true,
          // The header as the API sent it too: the wait is capped at an hour (see parseRetryAfterMs).
          details: {
            ...failed,
            endpoint,
            retryAfterMs,
            ...(typeof retryAfter === 'string' ? { retryAfter: retryAfter.slice(0, 64) } : {}),
          },
          ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
        },
      ),
    );
  }
  if (status === 401) {
    return throwError(
      new DefenderError(
        DefenderErrorCode.UNAUTHORIZED,
        withRequestId(
          `The Defender API rejected a freshly issued token for tenant ${azureTenantId} (401). Check that the app belongs to this tenant and the tenant's cloud is right.`,
          requestId,
        ),
        { details: { ...failed, api: apiText } },
      ),
    );
  }
  if (status === 403) return throwError(forbidden(response.data ?? '', api, failed, token, endpoint));
  if (status >= 500 || status === 408) {
    return throwError(
      new DefenderError(
        DefenderErrorCode.UNAVAILABLE,
        withRequestId(
          `The Defender API answered ${status} for tenant ${azureTenantId} on ${path}`,
          requestId,
        ),
        {
          canRetry: true,
          details: { ...failed, api: apiText },
        },
      ),
    );
  }
  return throwError(
    new DefenderError(
      DefenderErrorCode.REQUEST_REJECTED,
      withRequestId(
        `The Defender API rejected ${path} for tenant ${azureTenantId} (${status}${apiText ? `: ${apiText}` : ''})`,
        requestId,
      ),
      {
        details: { ...failed, api: apiText },
      },
    ),
  );
}

/**
 * A 404 without Microsoft's error body (an HTML page, an empty body): not MDE's answer, which always carries
 * `{"error":{"code",…}}` (its "no machines" for an empty device list included), but a gateway or proxy in
 * front of it, or an API base address with a wrong path, that did not route the call. Taken for MDE's, a
 * device listing would read as an empty fleet and every device be tombstoned; it is tried again instead,
 * and its error gives the start of that answer's text.
 */
function notFoundInFront(body: string, call: FailedCall, token: string): DefenderError {
  return answeredInFront(
    404,
    'a proxy or gateway in front of it, or a wrong API base address, did not find the call; it is tried again ' +
      'rather than taken for a resource that does not exist',
    DefenderErrorCode.UNAVAILABLE,
    body,
    call,
    token,
  );
}

/**
 * An answer of `status` without Microsoft's error body, so not the API's own: `why` says what answered it
 * instead; the error gives the start of that answer's text (the token never, see pageText).
 */
function answeredInFront(
  status: number,
  why: string,
  code: DefenderErrorCodeValue,
  body: string,
  call: FailedCall,
  token: string,
): DefenderError {
  const { azureTenantId, path, requestId } = call;
  const text = pageText(body, token);
  return new DefenderError(
    code,
    withRequestId(
      `The Defender API answered ${status} for tenant ${azureTenantId} on ${path} without Microsoft's error body: ` +
        `${why} (${text ? `the answer begins: ${text}` : 'the answer was empty'})`,
      requestId,
    ),
    { canRetry: code === DefenderErrorCode.UNAVAILABLE, details: { ...call, body: text } },
  );
}

/**
 * A 403, by the code of Microsoft's error body (api/common-errors.md): `DisabledFeature` ("Tenant feature
 * isn't enabled") is a licence the tenant lacks, which no permission fixes; `DisallowedOperation` carries
 * Microsoft's reason; `Forbidden` (and another code) is a permission the token lacks. A 403 without a code
 * (an HTML page, an empty body) is not the API's: a proxy, firewall or gateway in front of it refused the
 * call, whatever the token carries, and its error gives the start of that answer's text.
 */
function forbidden(
  body: string,
  api: MdeError,
  call: FailedCall,
  token: string,
  endpoint: DefenderEndpointClass,
): DefenderError {
  const { azureTenantId, path, requestId } = call;
  if (inFront(403, api)) {
    return answeredInFront(
      403,
      'a proxy, firewall or gateway in front of it refused the call, not a missing permission',
      DefenderErrorCode.REQUEST_REJECTED,
      body,
      call,
      token,
    );
  }

  const apiText = mdeErrorText(api, token);
  const details = { ...call, api: apiText };
  const refused = `The Defender API refused ${path} for tenant ${azureTenantId} (403${apiText ? ` ${apiText}` : ''})`;
  if (api.code === 'DisabledFeature') {
    const licence =
      endpoint === 'machines'
        ? "the Defender for Endpoint feature this call needs is not enabled for the tenant: check the tenant's " +
          'Defender for Endpoint licence and its API access in the Microsoft Defender portal'
        : 'vulnerability data needs Microsoft Defender Vulnerability Management, which Defender for Endpoint ' +
          'Plan 1 does not include: the tenant needs Defender for Endpoint Plan 2 or the Defender Vulnerability ' +
          'Management add-on';
    return new DefenderError(
      DefenderErrorCode.FEATURE_DISABLED,
      withRequestId(`${refused}: ${licence}. Permissions and admin consent do not change this.`, requestId),
      { details },
    );
  }
  if (api.code === 'DisallowedOperation') {
    return new DefenderError(
      DefenderErrorCode.OPERATION_DISALLOWED,
      withRequestId(
        `${refused}: Microsoft does not allow this operation for the tenant, for the reason it gives; ` +
          'a permission or admin consent does not change it.',
        requestId,
      ),
      { details },
    );
  }
  const claims = decodeTokenClaims(token);
  const roles = claims?.roles ?? [];
  const needed = endpoint === 'machines' ? 'Machine.Read.All' : 'Vulnerability.Read.All';
  const audience = claims?.aud;
  if (audience !== undefined && isOtherApiAudience(audience)) {
    // A token of another API (a scope set to Microsoft Graph's, say): asking to grant permissions would not
    // help, the scope must name WindowsDefenderATP. An audience not known as another API's (WindowsDefenderATP's
    // app id, an operator's scope override) is read by its roles below.
    return new DefenderError(
      DefenderErrorCode.CONSENT_MISSING,
      withRequestId(
        `${refused}: the token was issued for ${audience}, not for WindowsDefenderATP (${DEFENDER_RESOURCE}): ` +
          'the token scope names another API; permissions and admin consent do not change this.',
        requestId,
      ),
      { details: { ...details, roles, needed, audience } },
    );
  }
  const held = roles.find((role) => grantsPermission([role], needed));
  if (held !== undefined) {
    // Asking to grant what the token carries would send the administrator round in circles.
    return new DefenderError(
      DefenderErrorCode.ACCESS_REFUSED,
      withRequestId(
        `${refused}, although the token carries ${held}, the permission this call needs: Microsoft refused it ` +
          'for the reason it gives, not for a missing permission. If admin consent was withdrawn after the token ' +
          "was issued, the next token (within the hour) shows it; otherwise check the app's API access in the " +
          'Microsoft Defender portal.',
        requestId,
      ),
      { details: { ...details, roles, needed } },
    );
  }
  return new DefenderError(
    DefenderErrorCode.CONSENT_MISSING,
    withRequestId(
      `${refused}: grant the WindowsDefenderATP application permission ${needed} and admin consent ` +
        `(the token carries: ${roles.length ? roles.join(', ') : 'no roles'}).`,
      requestId,
    ),
    { details: { ...details, roles, needed } },
  );
}

function throwError(error: DefenderError): never {
  throw error;
}

/** The `value` array of an OData answer; a body without one is a malformed (retryable) answer. */
export function odataValue(body: unknown, path: string, azureTenantId: string): unknown[] {
  const value = (body as { value?: unknown } | null)?.value;
  if (!Array.isArray(value)) {
    throw new DefenderError(
      DefenderErrorCode.MALFORMED_RESPONSE,
      `The Defender API answered ${path} without a "value" array`,
      {
        canRetry: true,
        details: { azureTenantId, path },
      },
    );
  }
  return value;
}

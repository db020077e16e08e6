import axios from 'axios';
import { UrsError } from '@urs/resilience';

/**
 * Stable codes of the Defender client's errors. Callers (the poller, the registrar's /test, the CLI)
 * branch on these; the messages are written for the administrator who has to fix the setup.
 */
export const DefenderErrorCode = {
  /** AADSTS7000215: the secret does not match (often the secret's ID was pasted instead of its Value). */
  INVALID_SECRET: 'DEFENDER_INVALID_SECRET',
  /** AADSTS7000222: the client secret has expired. */
  SECRET_EXPIRED: 'DEFENDER_SECRET_EXPIRED',
  /** AADSTS700016: no application with this client id in the tenant. */
  UNKNOWN_CLIENT: 'DEFENDER_UNKNOWN_CLIENT',
  /** AADSTS90002 (or the tenant's OpenID metadata cannot be found): no such Entra tenant. */
  UNKNOWN_TENANT: 'DEFENDER_UNKNOWN_TENANT',
  /** AADSTS500011: the WindowsDefenderATP service principal is not in the tenant. */
  NOT_PROVISIONED: 'DEFENDER_NOT_PROVISIONED',
  /** 403 `Forbidden` from the API (or another of its codes), or a token without the needed application roles. */
  CONSENT_MISSING: 'DEFENDER_CONSENT_MISSING',
  /**
   * 403 `Forbidden` (or another of the API's codes) although the token carries the permission the call needs:
   * not a permission to grant, but a refusal for Microsoft's reason (consent withdrawn since the token was
   * issued, an access setting of the tenant); an administrator must look into it.
   */
  ACCESS_REFUSED: 'DEFENDER_ACCESS_REFUSED',
  /**
   * 403 `DisabledFeature`: the tenant lacks the licence a call needs (vulnerability data without Defender
   * Vulnerability Management); no permission fixes it.
   */
  FEATURE_DISABLED: 'DEFENDER_FEATURE_DISABLED',
  /**
   * 403 `DisallowedOperation`: Microsoft does not allow the call for the tenant, for the reason it gives.
   * Every call of the tenant would meet it, and no retry or permission changes it: a setup error.
   */
  OPERATION_DISALLOWED: 'DEFENDER_OPERATION_DISALLOWED',
  /** Any other sign-in failure. */
  AUTH_FAILED: 'DEFENDER_AUTH_FAILED',
  /** The API rejected a freshly issued token (401 twice). */
  UNAUTHORIZED: 'DEFENDER_UNAUTHORIZED',
  /** 429 until the throttling budget ran out. */
  THROTTLED: 'DEFENDER_THROTTLED',
  /** 5xx, connection reset, timeout, TLS or DNS failure, after the retries. */
  UNAVAILABLE: 'DEFENDER_UNAVAILABLE',
  /** The body was not the JSON the endpoint documents. */
  MALFORMED_RESPONSE: 'DEFENDER_MALFORMED_RESPONSE',
  /**
   * A device's vulnerabilities were answered, but none of them could be read (each was skipped as invalid,
   * a CVSS score out of range, say): its list is unknown, not empty.
   */
  UNREADABLE_RECORDS: 'DEFENDER_UNREADABLE_RECORDS',
  /** 404 on a single resource (a device removed since it was listed). */
  NOT_FOUND: 'DEFENDER_NOT_FOUND',
  /**
   * Another 4xx: a request the API will never accept; also a 403 without MDE's error body (an HTML page, none),
   * which a proxy, firewall or gateway in front of the API answered, whatever the token's permissions.
   */
  REQUEST_REJECTED: 'DEFENDER_REQUEST_REJECTED',
  /** A tenant's cloud/region or an option is not valid. */
  INVALID_CONFIG: 'DEFENDER_INVALID_CONFIG',
} as const;

export type DefenderErrorCodeValue = (typeof DefenderErrorCode)[keyof typeof DefenderErrorCode];

export interface DefenderErrorOptions {
  canRetry?: boolean;
  cause?: unknown;
  details?: Record<string, unknown>;
  /** For THROTTLED: what the API asked us to wait (Retry-After), in milliseconds. */
  retryAfterMs?: number;
}

/**
 * The one error type of @urs/defender. Never carries a client secret or an access token: an axios error
 * (a cancel too) is never kept as its cause, as its request config and request hold the bearer token, and
 * Node prints an error's causes whole (an uncaught error, `console.log`).
 */
export class DefenderError extends UrsError {
  override readonly code: DefenderErrorCodeValue;
  /** For THROTTLED: the server-given wait, in milliseconds. */
  readonly retryAfterMs: number | undefined;

  constructor(code: DefenderErrorCodeValue, message: string, options: DefenderErrorOptions = {}) {
    const cause =
      axios.isAxiosError(options.cause) || axios.isCancel(options.cause) ? undefined : options.cause;
    super(code, message, { canRetry: options.canRetry, cause, details: options.details });
    this.code = code;
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** True when `error` is a DefenderError with the given code. */
export function isDefenderError(error: unknown, code?: DefenderErrorCodeValue): error is DefenderError {
  return error instanceof DefenderError && (code === undefined || error.code === code);
}

/**
 * Codes that mean no call of the tenant can succeed until an administrator fixes its setup (secret,
 * consent, app registration, tenant): retrying soon only hammers Entra ID.
 */
const SETUP_ERROR_CODES: ReadonlySet<string> = new Set<string>([
  DefenderErrorCode.INVALID_SECRET,
  DefenderErrorCode.SECRET_EXPIRED,
  DefenderErrorCode.UNKNOWN_CLIENT,
  DefenderErrorCode.UNKNOWN_TENANT,
  DefenderErrorCode.NOT_PROVISIONED,
  DefenderErrorCode.CONSENT_MISSING,
  DefenderErrorCode.ACCESS_REFUSED,
  DefenderErrorCode.FEATURE_DISABLED,
  DefenderErrorCode.OPERATION_DISALLOWED,
  DefenderErrorCode.AUTH_FAILED,
  DefenderErrorCode.UNAUTHORIZED,
  DefenderErrorCode.INVALID_CONFIG,
]);

/** Whether `code` is one of the setup errors an administrator must fix (see SETUP_ERROR_CODES). */
export function isSetupErrorCode(code: string): boolean {
  return SETUP_ERROR_CODES.has(code);
}

/**
 * Replaces every occurrence of `secret` in a text. Used on every text that came from outside
 * (Entra's error descriptions, library messages) before it goes into one of our errors.
 */
export function scrubSecret(text: string, secret: string | undefined): string {
  if (!secret || secret.length < 4) return text;
  return text.split(secret).join('[redacted]');
}

/**
 * The base of every error this project throws on purpose. Errors carry meaning as data: a stable `code`
 * that callers and operators branch on, a `canRetry` flag that the bus runner and the retry loops read,
 * and the underlying `cause`. Messages are written for the person who has to act on them and never
 * contain a secret.
 */
export interface UrsErrorOptions {
  /** Whether trying the same operation again may succeed. Default: false. */
  canRetry?: boolean;
  /**
   * Whether the failure is of a dependency the service needs for every message (Redis, Kafka), or of the
   * process itself (a secret key that does not open what the other replicas' keys open), rather than of
   * what was being done: the bus runner then holds the message until the dependency is back instead of
   * dead-lettering it (see `isInfrastructureFault`). Default: false; an error whose `cause` is such a
   * fault counts as one without it.
   */
  infrastructure?: boolean;
  cause?: unknown;
  /** Structured facts about the failure (safe to log: never secrets). */
  details?: Record<string, unknown>;
}

export class UrsError extends Error {
  readonly code: string;
  readonly canRetry: boolean;
  readonly infrastructure: boolean;
  readonly details: Record<string, unknown>;

  constructor(code: string, message: string, options: UrsErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.canRetry = options.canRetry ?? false;
    this.infrastructure = options.infrastructure ?? false;
    this.details = options.details ?? {};
    Object.setPrototypeOf(this, new.target.prototype);
  }

  toJSON(): {
    name: string;
    code: string;
    message: string;
    canRetry: boolean;
    details: Record<string, unknown>;
  } {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      canRetry: this.canRetry,
      details: this.details,
    };
  }
}

/** True for UrsError and for errors from another copy of this library (checked by shape, not class). */
export function isUrsError(error: unknown): error is UrsError {
  return (
    error instanceof UrsError ||
    (typeof error === 'object' &&
      error !== null &&
      typeof (error as { code?: unknown }).code === 'string' &&
      typeof (error as { canRetry?: unknown }).canRetry === 'boolean')
  );
}

/**
 * Whether an error may go away on retry. Our own errors say so themselves; anything else (a driver's
 * connection error, a timeout) is assumed transient, because poison input is always detected and wrapped
 * as a non-retryable UrsError before it reaches a retry loop.
 */
export function canRetry(error: unknown): boolean {
  return isUrsError(error) ? error.canRetry : true;
}

/** The stable code of an error, or `UNEXPECTED` for foreign errors. */
export function errorCode(error: unknown): string {
  return isUrsError(error) ? error.code : 'UNEXPECTED';
}

/** A one-line message for any thrown value. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

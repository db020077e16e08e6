import { canRetry, errorCode, errorMessage } from './errors';
import { retryDelayMs, retryPolicy, sleep, type RetryPolicy } from './retry';

/** What `retryThroughOutage` logs with (a @urs/logging Logger is one). */
export interface OutageLog {
  warn(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  debug(message: string, fields?: Record<string, unknown>): void;
}

export interface OutageRetryOptions {
  /** What is being waited for, in the log lines (`rebuilding the tenants from urs.tenants`). */
  what: string;
  log: OutageLog;
  /** Stops the wait: the promise then rejects with the last error (or the signal's reason). */
  signal: AbortSignal;
  /** Whether a failure may heal by waiting. Default `canRetry`; anything else is rethrown at once. */
  shouldRetry?: (error: unknown) => boolean;
  /** Default 0.25 s doubling up to 5 s apart, full jitter: back within 5 s of the dependency's return. */
  policy?: RetryPolicy;
  /** Told when the outage begins (the first failure) and when it ends (a success after failures). */
  onOutage?: (down: boolean) => void;
}

/** The waits between the tries of an outage: capped, so a dependency back after an hour is seen within 5 s. */
export const OUTAGE_RETRY: RetryPolicy = retryPolicy({
  maxAttempts: Infinity,
  initialDelayMs: 250,
  maxDelayMs: 5_000,
});

/** Resolves with `promise`, or rejects once `signal` aborts; a later rejection of `promise` is ignored. */
export function unlessAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  promise.catch(() => undefined);
  return new Promise<T>((resolve, reject) => {
    const abort = (): void => reject(signal.reason ?? new Error('aborted'));
    if (signal.aborted) return abort();
    signal.addEventListener('abort', abort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', abort));
  });
}

/**
 * Runs `operation` until it succeeds, for as long as its failures may heal by waiting (a broker away, Redis
 * restarting): tried again with capped backoff, one warning when the outage begins (each later failure at
 * debug: an outage of an hour must not fill the log) and one line when it ends. A failure waiting does not mend
 * is rethrown at once. A stop (`signal`) ends the wait at once, also while a try is under way (an operation
 * that does not take the signal, a KafkaJS connect retrying by itself for a minute, is left to fail alone).
 */
export async function retryThroughOutage<T>(
  operation: () => Promise<T>,
  options: OutageRetryOptions,
): Promise<T> {
  const shouldRetry = options.shouldRetry ?? canRetry;
  const policy = options.policy ?? OUTAGE_RETRY;
  let failures = 0;
  let since = 0;
  for (;;) {
    try {
      const result = await unlessAborted(operation(), options.signal);
      if (failures > 0) {
        options.log.info(`${options.what}: succeeded after an outage`, {
          attempts: failures + 1,
          downMs: Date.now() - since,
        });
        options.onOutage?.(false);
      }
      return result;
    } catch (error) {
      if (options.signal.aborted || !shouldRetry(error)) throw error;
      failures++;
      const fields = { attempt: failures, code: errorCode(error), reason: errorMessage(error) };
      if (failures === 1) {
        since = Date.now();
        options.log.warn(`${options.what} failed; retrying until it succeeds`, fields);
        options.onOutage?.(true);
      } else options.log.debug(`${options.what} failed again; retrying`, fields);
      await sleep(retryDelayMs(policy, failures), options.signal);
      // A stop during the wait (sleep resolves early) ends it here, not after one more try.
      if (options.signal.aborted) throw error;
    }
  }
}

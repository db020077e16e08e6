import { UrsError, canRetry } from './errors';

/**
 * How an operation is retried: exponential backoff with full jitter
 * (delay = random(0, min(maxDelayMs, initialDelayMs × multiplier^(attempt-1)))).
 */
export interface RetryPolicy {
  /** Attempts in total, the first included. `Infinity` retries until stopped. */
  readonly maxAttempts: number;
  /** Upper bound of the first retry's delay, in milliseconds. */
  readonly initialDelayMs: number;
  /** Cap of any single delay, in milliseconds. */
  readonly maxDelayMs: number;
  /** Growth of the delay cap per attempt. */
  readonly multiplier: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = Object.freeze({
  maxAttempts: 5,
  initialDelayMs: 200,
  maxDelayMs: 10_000,
  multiplier: 2,
});

export class RetryPolicyError extends UrsError {
  constructor(field: string, rule: string) {
    super('RETRY_POLICY_INVALID', `retry policy: ${field} ${rule}`);
  }
}

/** Builds a validated policy from defaults and overrides; throws RetryPolicyError naming the field. */
export function retryPolicy(overrides: Partial<RetryPolicy> = {}): RetryPolicy {
  const policy = { ...DEFAULT_RETRY_POLICY, ...overrides };
  if (
    !(policy.maxAttempts >= 1) ||
    (!Number.isInteger(policy.maxAttempts) && policy.maxAttempts !== Infinity)
  ) {
    throw new RetryPolicyError('maxAttempts', 'must be a whole number ≥ 1 or Infinity');
  }
  if (!Number.isFinite(policy.initialDelayMs) || policy.initialDelayMs < 0) {
    throw new RetryPolicyError('initialDelayMs', 'must be a finite number ≥ 0');
  }
  if (!Number.isFinite(policy.maxDelayMs) || policy.maxDelayMs < policy.initialDelayMs) {
    throw new RetryPolicyError('maxDelayMs', 'must be a finite number ≥ initialDelayMs');
  }
  if (!Number.isFinite(policy.multiplier) || policy.multiplier < 1) {
    throw new RetryPolicyError('multiplier', 'must be a finite number ≥ 1');
  }
  return Object.freeze(policy);
}

/**
 * The delay before retry number `attempt` (1 = the first retry), full jitter.
 * `random` returns a number in [0, 1); injected so tests are deterministic.
 */
export function retryDelayMs(
  policy: RetryPolicy,
  attempt: number,
  random: () => number = Math.random,
): number {
  const exponent = Math.max(0, attempt - 1);
  // The growth overflows to Infinity past ~1000 attempts (a message held through a long outage), and
  // 0 × Infinity is NaN: a policy without delay keeps none.
  const cap =
    policy.initialDelayMs === 0
      ? 0
      : Math.min(policy.maxDelayMs, policy.initialDelayMs * Math.pow(policy.multiplier, exponent));
  return Math.floor(random() * cap);
}

export interface RetryOptions {
  policy: RetryPolicy;
  /** Stops retrying early (e.g. on shutdown); the last error is rethrown. */
  signal?: AbortSignal;
  /** Decides whether an error is worth another attempt. Default: `canRetry`. */
  shouldRetry?: (error: unknown, attempt: number) => boolean;
  /** A server-given wait (e.g. Retry-After) that overrides the computed delay, in milliseconds. */
  delayHintMs?: (error: unknown) => number | undefined;
  onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
  random?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted || ms <= 0) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Runs `operation` until it succeeds, the policy gives up, or the error is not retryable. */
export async function withRetry<T>(
  operation: (attempt: number) => Promise<T>,
  options: RetryOptions,
): Promise<T> {
  const shouldRetry = options.shouldRetry ?? ((error: unknown) => canRetry(error));
  const wait = options.sleep ?? sleep;
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation(attempt);
    } catch (error) {
      if (attempt >= options.policy.maxAttempts || options.signal?.aborted || !shouldRetry(error, attempt)) {
        throw error;
      }
      const delayMs = options.delayHintMs?.(error) ?? retryDelayMs(options.policy, attempt, options.random);
      options.onRetry?.(error, attempt, delayMs);
      await wait(delayMs, options.signal);
      // Stopped during the wait, which then ended early: no attempt after the stop.
      if (options.signal?.aborted) throw error;
    }
  }
}

import { randomBytes } from 'node:crypto';

let counter = 0;

/**
 * A name no other test, worker or run uses: `<prefix>-<time>-<pid>-<n>-<random>`. Only characters
 * that Kafka topic names, group ids and Redis keys all accept.
 */
export function uniqueId(prefix: string): string {
  const safe = prefix.replace(/[^A-Za-z0-9._-]/g, '-');
  counter += 1;
  return `${safe}-${Date.now().toString(36)}-${process.pid}-${counter}-${randomBytes(3).toString('hex')}`;
}

export interface WaitForOptions {
  /** Give up after this long, in milliseconds. Default 10000. */
  timeoutMs?: number;
  /** Pause between two checks, in milliseconds. Default 50. */
  intervalMs?: number;
  /** Said in the error on timeout. */
  description?: string;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `predicate` until it returns a truthy value and returns that value. A predicate that throws
 * counts as "not yet"; on timeout the error carries the last thrown error as its cause.
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  options: WaitForOptions = {},
): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const intervalMs = options.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await predicate();
      if (value !== undefined && value !== null && value !== false) return value as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const what = options.description ?? 'condition';
      throw new Error(`waitFor: ${what} not met within ${timeoutMs} ms`, { cause: lastError });
    }
    await sleep(intervalMs);
  }
}

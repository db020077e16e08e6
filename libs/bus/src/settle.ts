import type { Admin, Kafka } from 'kafkajs';
import type { Logger } from '@urs/logging';
import { errorMessage, retryPolicy, sleep, withRetry, type RetryPolicy } from '@urs/resilience';
import { BusError } from './publisher';
import { isTransientKafkaError, type KafkaLikeError } from './transient';

/**
 * How long a Kafka call is retried while the cluster settles: exponential backoff with full jitter from
 * 100 ms, at most 2 s apart, until the deadline (`DEFAULT_SETTLE_TIMEOUT_MS`).
 */
export const SETTLE_RETRY: RetryPolicy = retryPolicy({
  maxAttempts: Infinity,
  initialDelayMs: 100,
  maxDelayMs: 2_000,
  multiplier: 2,
});

/** Retries logged at debug before they are logged as warnings. */
const QUIET_RETRIES = 2;

/** Give up on a Kafka call that keeps failing transiently after this long, in milliseconds. */
export const DEFAULT_SETTLE_TIMEOUT_MS = 30_000;

export interface SettleOptions {
  /** What is attempted, for the log and the final error, e.g. "offsets of urs.tenants". */
  operation: string;
  /** Warns on each retry with the reason. Default: silent. */
  logger?: Logger;
  /** Deadline of all attempts together, in milliseconds. Default `DEFAULT_SETTLE_TIMEOUT_MS` (30 s). */
  timeoutMs?: number;
  /** Default `SETTLE_RETRY`. */
  policy?: RetryPolicy;
  /** Stops retrying (e.g. on shutdown); the last error is thrown. */
  signal?: AbortSignal;
  /** Errors retried besides the transient ones (e.g. a topic another replica created meanwhile). */
  alsoRetry?: (error: unknown) => boolean;
  /** Test seams: the clock (ms), the wait, the jitter source. */
  now?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  random?: () => number;
}

/**
 * Runs a Kafka call again while it fails transiently (`isTransientKafkaError`), with backoff, for at most
 * `timeoutMs`. A call that still fails transiently at the deadline throws a retryable `BusError`
 * `KAFKA_NOT_SETTLED` naming the operation, with the last error as its cause; any other error is thrown
 * as it is, at once.
 */
export async function retryWhileSettling<T>(
  operation: (attempt: number) => Promise<T>,
  options: SettleOptions,
): Promise<T> {
  const now = options.now ?? Date.now;
  const wait = options.sleep ?? sleep;
  const timeoutMs = options.timeoutMs ?? DEFAULT_SETTLE_TIMEOUT_MS;
  const deadline = now() + timeoutMs;
  const retryable = (error: unknown): boolean =>
    isTransientKafkaError(error) || (options.alsoRetry?.(error) ?? false);
  let attempts = 0;
  try {
    return await withRetry(
      (attempt) => {
        attempts = attempt;
        return operation(attempt);
      },
      {
        policy: options.policy ?? SETTLE_RETRY,
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.random ? { random: options.random } : {}),
        shouldRetry: (error) => retryable(error) && now() < deadline,
        // The last wait ends at the deadline, so one more attempt is made right at it.
        sleep: (ms, signal) => wait(Math.max(0, Math.min(ms, deadline - now())), signal),
        onRetry: (error, attempt, delayMs) => {
          const fields = {
            operation: options.operation,
            attempt,
            delayMs,
            type: (error as KafkaLikeError | null)?.type,
            reason: errorMessage(error),
          };
          // A fresh topic takes a retry or two on nearly every first start: expected, so debug. Beyond
          // that the cluster is slow or unwell, which an operator should see.
          if (attempt <= QUIET_RETRIES) options.logger?.debug('kafka not settled yet; retrying', fields);
          else options.logger?.warn('kafka not settled yet; retrying', fields);
        },
      },
    );
  } catch (error) {
    if (!retryable(error) || options.signal?.aborted) throw error;
    throw new BusError(
      'KAFKA_NOT_SETTLED',
      `${options.operation}: Kafka still answered "${errorMessage(error)}" after ${attempts} attempts in ${timeoutMs} ms`,
      {
        canRetry: true,
        // Kafka's own state, whatever the caller was doing: a consumer's message is held, not dead-lettered.
        infrastructure: true,
        cause: error,
        details: { operation: options.operation, attempts, timeoutMs },
      },
    );
  }
}

/** One partition's offsets: `low` is the first offset still held, `high` the next one to be written. */
export type PartitionOffsetRange = Awaited<ReturnType<Admin['fetchTopicOffsets']>>[number];

export interface TopicOffsetsOptions {
  logger?: Logger;
  /** Default `DEFAULT_SETTLE_TIMEOUT_MS` (30 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * The low and high offsets of every partition of `topic`, retried while the topic settles (see
 * `retryWhileSettling`). Each attempt uses an admin client of its own, so it starts from fresh
 * metadata: a leader that moved is found again (KafkaJS would otherwise keep its cached metadata for
 * up to `metadataMaxAge`, 5 minutes). That client does not retry its requests by itself, so the
 * deadline holds (KafkaJS's own backoff on an unknown topic alone can outlast it); only its connect
 * follows the Kafka client's `retry`, so with the broker unreachable the last attempt can end later.
 */
export async function topicOffsets(
  kafka: Kafka,
  topic: string,
  options: TopicOffsetsOptions = {},
): Promise<PartitionOffsetRange[]> {
  return retryWhileSettling(
    async () => {
      const admin = kafka.admin({ retry: { retries: 0 } });
      try {
        await admin.connect();
        return await admin.fetchTopicOffsets(topic);
      } finally {
        // Also after a failed connect (its sockets are closed either way); a failed disconnect must not
        // turn offsets already read into a failure.
        await admin.disconnect().catch(() => undefined);
      }
    },
    { ...options, operation: `offsets of ${topic}` },
  );
}

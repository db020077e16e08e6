import type { Admin, Kafka } from 'kafkajs';
import type { Logger } from '@urs/logging';
import { errorMessage, isUrsError, retryPolicy, sleep, withRetry, type RetryPolicy } from '@urs/resilience';
import { BusError } from './publisher';

/**
 * Broker answers about a topic or partition that go away on their own. On KRaft, CreateTopics returns
 * before the broker's metadata cache has the topic (Metadata answers UNKNOWN_TOPIC_OR_PARTITION), and
 * the metadata names a partition's leader before that broker has taken the leadership up (ListOffsets
 * answers NOT_LEADER_FOR_PARTITION, Kafka's NOT_LEADER_OR_FOLLOWER). A leader election after a broker
 * restart looks the same. KafkaJS retries some of these itself but gives up at once on others (its
 * admin `fetchTopicOffsets` bails on a NOT_LEADER, `createTopics` on an UNKNOWN_TOPIC_OR_PARTITION while
 * waiting for leaders).
 */
const TRANSIENT_TYPES: ReadonlySet<string> = new Set([
  'UNKNOWN_TOPIC_OR_PARTITION',
  'LEADER_NOT_AVAILABLE',
  'NOT_LEADER_FOR_PARTITION',
  'NOT_LEADER_OR_FOLLOWER',
  'REPLICA_NOT_AVAILABLE',
  'NOT_CONTROLLER',
]);

/** KafkaJS wrappers whose own `retriable` says nothing: the error they wrap decides. */
const WRAPPERS: ReadonlySet<string> = new Set(['KafkaJSNonRetriableError', 'KafkaJSNumberOfRetriesExceeded']);

/** Causes followed at most this deep (a cause chain is short; a cycle must not loop). */
const MAX_CAUSE_DEPTH = 5;

interface KafkaLikeError {
  name?: unknown;
  type?: unknown;
  retriable?: unknown;
  cause?: unknown;
  errors?: unknown;
}

/**
 * Whether a Kafka call that failed with `error` may succeed if made again shortly: a leader or a topic
 * the broker does not know yet (see TRANSIENT_TYPES), or anything KafkaJS marks `retriable` (a lost
 * connection, a request timeout, metadata not loaded yet). An aggregate is transient when all its
 * errors are; a KafkaJS wrapper (non-retriable, retries exhausted) is judged by the error it wraps.
 * Errors that are not from Kafka (a TypeError, a bad argument) are not: retrying a bug helps nobody.
 */
export function isTransientKafkaError(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > MAX_CAUSE_DEPTH) return false;
  if (isUrsError(error)) return error.canRetry;
  const e = error as KafkaLikeError;
  if (e.name === 'KafkaJSAggregateError' && Array.isArray(e.errors)) {
    return e.errors.length > 0 && e.errors.every((inner) => isTransientKafkaError(inner, depth + 1));
  }
  if (typeof e.type === 'string' && TRANSIENT_TYPES.has(e.type)) return true;
  if (typeof e.name === 'string' && WRAPPERS.has(e.name)) return isTransientKafkaError(e.cause, depth + 1);
  return typeof e.name === 'string' && e.name.startsWith('KafkaJS') && e.retriable === true;
}

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

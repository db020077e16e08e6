import { isUrsError } from '@urs/resilience';

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

/**
 * KafkaJS errors it throws as not retriable that heal on the next try: a lock timed out behind a broker being
 * connected (KafkaJS waits up to 12 s) or the cluster's metadata being refreshed, which KafkaJS itself takes
 * for stale metadata (its cluster refreshes the metadata when finding a broker fails so).
 */
const TRANSIENT_NAMES: ReadonlySet<string> = new Set(['KafkaJSLockTimeout']);

/** KafkaJS wrappers whose own `retriable` says nothing: the error they wrap decides. */
const WRAPPERS: ReadonlySet<string> = new Set(['KafkaJSNonRetriableError', 'KafkaJSNumberOfRetriesExceeded']);

/** Causes followed at most this deep (a cause chain is short; a cycle must not loop). */
const MAX_CAUSE_DEPTH = 5;

export interface KafkaLikeError {
  name?: unknown;
  type?: unknown;
  retriable?: unknown;
  cause?: unknown;
  errors?: unknown;
}

/**
 * Whether a Kafka call that failed with `error` may succeed if made again shortly: a leader or a topic
 * the broker does not know yet (see TRANSIENT_TYPES), a lock timed out (TRANSIENT_NAMES), or anything
 * KafkaJS marks `retriable` (a lost connection, a request timeout, metadata not loaded yet). An aggregate is transient when all its
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
  if (typeof e.name === 'string' && TRANSIENT_NAMES.has(e.name)) return true;
  if (typeof e.name === 'string' && WRAPPERS.has(e.name)) return isTransientKafkaError(e.cause, depth + 1);
  return typeof e.name === 'string' && e.name.startsWith('KafkaJS') && e.retriable === true;
}

/**
 * Kafka's refusals for want of an ACL: the principal may not use the topic, the group, the cluster or the
 * transactional id. Neither the request nor what it carries is at fault, and waiting alone does not mend them:
 * an operator granting the operation does.
 */
export const KAFKA_AUTHORIZATION_TYPES: ReadonlySet<string> = new Set([
  'TOPIC_AUTHORIZATION_FAILED',
  'GROUP_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
  'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
  'DELEGATION_TOKEN_AUTHORIZATION_FAILED',
]);

/**
 * Whether `error` is Kafka refusing a request for want of an ACL (KAFKA_AUTHORIZATION_TYPES), as it is or as
 * the cause (or one of the errors) of what wraps it: KafkaJS's wrappers, an error of ours.
 */
export function isKafkaAuthorizationRefusal(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > MAX_CAUSE_DEPTH) return false;
  const e = error as KafkaLikeError;
  if (typeof e.type === 'string' && KAFKA_AUTHORIZATION_TYPES.has(e.type)) return true;
  const inner = [e.cause, ...(Array.isArray(e.errors) ? (e.errors as unknown[]) : [])];
  return inner.some((next) => next !== error && isKafkaAuthorizationRefusal(next, depth + 1));
}

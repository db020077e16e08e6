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

/**
 * Kafka's refusals of what a produce carried, for good: a record (or the records of one partition in one
 * request, a record batch) larger than the topic's `max.message.bytes` (MESSAGE_TOO_LARGE), a batch larger than
 * a log segment (RECORD_LIST_TOO_LARGE), a record the broker's validation refuses (INVALID_RECORD: a null key on
 * a compacted topic), a batch the broker cannot read (CORRUPT_MESSAGE). KafkaJS does not retry the first three,
 * and sent again they are refused again: neither the broker nor the topic is at fault, only what was sent.
 */
export const KAFKA_RECORD_REFUSAL_TYPES: ReadonlySet<string> = new Set([
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'INVALID_RECORD',
  // Retriable to KafkaJS (a checksum broken in transit heals when sent again), so the producer sends it again
  // first (its retries, or the publisher's retryForMs); refused still after those, it is the batch as encoded.
  'CORRUPT_MESSAGE',
]);

/** Kafka's refusals of a record for its size (see KAFKA_RECORD_REFUSAL_TYPES). */
const KAFKA_SIZE_REFUSAL_TYPES: ReadonlySet<string> = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE']);

/**
 * The type of Kafka's refusal of a record (KAFKA_RECORD_REFUSAL_TYPES) in `error`, as it is or as the cause
 * (or one of the errors) of what wraps it; undefined when there is none.
 */
export function kafkaRecordRefusalOf(error: unknown, depth = 0): string | undefined {
  if (typeof error !== 'object' || error === null || depth > MAX_CAUSE_DEPTH) return undefined;
  const e = error as KafkaLikeError;
  if (typeof e.type === 'string' && KAFKA_RECORD_REFUSAL_TYPES.has(e.type)) return e.type;
  const inner = [e.cause, ...(Array.isArray(e.errors) ? (e.errors as unknown[]) : [])];
  for (const next of inner) {
    const type = next === error ? undefined : kafkaRecordRefusalOf(next, depth + 1);
    if (type !== undefined) return type;
  }
  return undefined;
}

/** Whether `error` is Kafka refusing what a produce carried, for good (KAFKA_RECORD_REFUSAL_TYPES). */
export function isKafkaRecordRefusal(error: unknown): boolean {
  return kafkaRecordRefusalOf(error) !== undefined;
}

/** Whether `type` (kafkaRecordRefusalOf) refuses a record for its size. */
export function isSizeRefusal(type: string | undefined): boolean {
  return type !== undefined && KAFKA_SIZE_REFUSAL_TYPES.has(type);
}

/**
 * Whether `error` is Kafka refusing a record for its size (MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE), as it is
 * or wrapped (the publisher's RECORD_TOO_LARGE): a producer that can send the same content in smaller records
 * (a batch of devices in two) may do so.
 */
export function isKafkaRecordTooLarge(error: unknown): boolean {
  return isSizeRefusal(kafkaRecordRefusalOf(error));
}

import { isUrsError } from '@urs/resilience';
import { KAFKA_AUTHORIZATION_TYPES } from './transient';

/*
 * Why a crashed consumer is judged here rather than by KafkaJS's `restart` flag (KafkaJS 2.2.4,
 * src/consumer/index.js `onCrash`, src/cluster/index.js, src/cluster/brokerPool.js): KafkaJS restarts a
 * crashed consumer only when the root cause of its error is `retriable`, and many errors of a broker that
 * is away or coming back are not. When every broker it knows answers FindCoordinator with "coordinator not
 * available" (a broker shutting down, or loading its offsets after a restart) until the retries run out,
 * `findGroupCoordinatorMetadata` ends with a `KafkaJSGroupCoordinatorNotFound` ("Failed to find group
 * coordinator"), which extends `KafkaJSNonRetriableError`: the consumer crashes with restart false and
 * consumes nothing, for good. So do REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID or
 * BROKER_NOT_AVAILABLE met at a bad moment (Kafka's own table marks them non-retriable, meaning "not the
 * same request again", not "never"), and KafkaJS's lock and request timeouts. A consumer that rejoins its
 * group later gets past all of them: only what waiting cannot mend is for good.
 */

/**
 * Broker refusals that waiting does not mend: authentication and authorisation, a configuration the broker
 * refuses (group id, session timeout, protocol, versions), a group that is full or fenced this member.
 */
const FOR_GOOD_TYPES: ReadonlySet<string> = new Set([
  ...KAFKA_AUTHORIZATION_TYPES,
  'SASL_AUTHENTICATION_FAILED',
  'UNSUPPORTED_SASL_MECHANISM',
  'ILLEGAL_SASL_STATE',
  'INVALID_GROUP_ID',
  'INVALID_SESSION_TIMEOUT',
  'INCONSISTENT_GROUP_PROTOCOL',
  'INVALID_TOPIC_EXCEPTION',
  'INVALID_CONFIG',
  'INVALID_REQUEST',
  'INVALID_FETCH_SIZE',
  'UNSUPPORTED_VERSION',
  'UNSUPPORTED_FOR_MESSAGE_FORMAT',
  'UNSUPPORTED_COMPRESSION_TYPE',
  'GROUP_MAX_SIZE_REACHED',
  'FENCED_INSTANCE_ID',
]);

/** KafkaJS errors that say the client itself is misused or cannot go on (wrong arguments, a bad frame). */
const FOR_GOOD_NAMES: ReadonlySet<string> = new Set([
  'KafkaJSSASLAuthenticationError',
  'KafkaJSNotImplemented',
  'KafkaJSUnsupportedMagicByteInMessageSet',
  'KafkaJSInvalidVarIntError',
  'KafkaJSInvalidLongError',
  'KafkaJSUnsupportedMechanism',
  // Thrown as such (not a subclass) only for a bad argument: a group id, a topic, an offset.
  'KafkaJSNonRetriableError',
]);

/** KafkaJS's wrappers: the error they wrap decides (`cause`). */
const WRAPPERS: ReadonlySet<string> = new Set(['KafkaJSNonRetriableError', 'KafkaJSNumberOfRetriesExceeded']);

/** Node's socket errors of a host that is away, restarting or not resolvable yet. */
const NETWORK_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/** Causes followed at most this deep (a cause chain is short; a cycle must not loop). */
const MAX_CAUSE_DEPTH = 8;

interface ErrorLike {
  name?: unknown;
  type?: unknown;
  code?: unknown;
  cause?: unknown;
}

/**
 * Whether a consumer that crashed with `error` may consume again once restarted after a wait: true for
 * whatever a broker that is away, restarting or moving its group coordinator causes (a lost or refused
 * connection, a timeout, no coordinator, a rebalance, a leader or metadata not there yet, retries
 * exhausted on any of these), and for our own errors that say they may be retried. False for what waiting
 * cannot mend: a refused authorisation or authentication, a configuration or protocol the broker refuses
 * (FOR_GOOD_TYPES), a misused client, our own non-retryable errors, and errors that are not Kafka's nor
 * the network's (a TypeError in a handler's runner is a bug, not an outage).
 */
export function crashHeals(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > MAX_CAUSE_DEPTH) return false;
  if (isUrsError(error)) return error.canRetry;
  const e = error as ErrorLike;
  const name = typeof e.name === 'string' ? e.name : '';
  if (typeof e.type === 'string' && FOR_GOOD_TYPES.has(e.type)) return false;
  // A wrapper whose cause is itself (KafkaJS sets both) is judged by its own name below.
  if (WRAPPERS.has(name) && typeof e.cause === 'object' && e.cause !== null && e.cause !== error) {
    return crashHeals(e.cause, depth + 1);
  }
  if (FOR_GOOD_NAMES.has(name)) return false;
  if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return true;
  return name.startsWith('KafkaJS');
}

import { isUrsError } from './errors';

/**
 * Whose fault a failure is. The bus runner dead-letters a message only for its own fault: a message whose
 * handling fails because Redis or Kafka is away (or refusing writes) is not bad, and dead-lettering it would
 * lose work because the infrastructure was down. This module is the one place that tells the two apart.
 *
 * Errors are recognised by shape, not by class (as `isUrsError` does): this library depends on neither
 * ioredis nor KafkaJS, and a second copy of either would defeat `instanceof` anyway.
 */

/**
 * Redis error replies that speak for the server, whatever the command: out of memory (`maxmemory` reached
 * with `noeviction`), a replica or a read-only server, a dataset still loading, a failed RDB save refusing
 * writes (MISCONF), a script blocking the server, a master or cluster unavailable, too few replicas.
 */
const REDIS_SERVER_REPLIES: ReadonlySet<string> = new Set([
  'OOM',
  'READONLY',
  'LOADING',
  'MISCONF',
  'BUSY',
  'MASTERDOWN',
  'CLUSTERDOWN',
  'TRYAGAIN',
  'NOREPLICAS',
]);

/**
 * How Redis before 7 answers a script whose `redis.call` it refused (OOM, READONLY, MISCONF, NOREPLICAS;
 * scripting.c, 5.0 to 6.2): the refusal as Redis keeps it, a whole error reply with its '-', behind where the
 * script was, twice (`luaPushError`'s "@user_script: <line>: ", then the error handler's
 * "@user_script:<line>: "), inside an ERR of its own:
 * `ERR Error running script (call to f_<sha1>): @user_script:1: @user_script: 1: -OOM command not allowed …`.
 * Redis 7 answers with the refusal's code first (`OOM command not allowed … script: …`), like any command, and
 * the other refusals (LOADING, BUSY, MASTERDOWN, …) refuse the EVAL before it runs, as plain replies. An error
 * reply of the called command (WRONGTYPE, …) comes without the '-', and a Lua error has no code: both are the
 * script's own failures, and neither matches.
 */
const PRE_7_SCRIPT_REFUSAL =
  /^ERR Error running script \(call to f_[0-9a-f]{40}\): (?:@user_script:\d+: )?(?:@user_script: \d+: )?-([A-Z]+) /;

/** ioredis's text for a command made on, or pending when it ended on, a closed connection. */
const REDIS_CONNECTION_CLOSED = 'Connection is closed.';

/** Causes (and aggregated errors) followed at most this deep: a chain is short, and a cycle must not loop. */
const MAX_DEPTH = 5;

/**
 * Errors KafkaJS marks retriable that are about what was sent, not the broker: CORRUPT_MESSAGE answers a
 * record the broker cannot read (a bad checksum, an oversized record, a null key on a compacted topic), and
 * sent again it is refused again; held, it would stop its key or partition for good.
 */
const MESSAGE_KAFKA_ERRORS: ReadonlySet<string> = new Set(['CORRUPT_MESSAGE']);

interface ErrorShape {
  name?: unknown;
  type?: unknown;
  message?: unknown;
  retriable?: unknown;
  cause?: unknown;
  command?: unknown;
  errors?: unknown;
  previousErrors?: unknown;
}

/** The code of a Redis error reply: its first word, or the refusal's that stopped a script (Redis before 7). */
function redisReplyCode(message: string): string {
  return PRE_7_SCRIPT_REFUSAL.exec(message)?.[1] ?? (message.split(' ', 1)[0] as string);
}

/**
 * Whether `error` is Redis's READONLY reply (also as Redis before 7 wraps it when it stops a script): the
 * server the connection reached is a replica now. After a failover that keeps old connections open (the old
 * primary demoted), every write on them is refused while PING still answers; only a new connection reaches
 * the new primary (`createRedis` reconnects on it).
 */
export function isRedisReadOnlyReply(error: unknown): boolean {
  const e = error as ErrorShape | null;
  return (
    typeof e === 'object' &&
    e !== null &&
    e.name === 'ReplyError' &&
    typeof e.message === 'string' &&
    redisReplyCode(e.message) === 'READONLY'
  );
}

/** Redis answered for itself, or the connection to it failed, by ioredis's errors. */
function isRedisFault(e: ErrorShape): boolean {
  if (e.name === 'ReplyError' && typeof e.message === 'string') {
    return REDIS_SERVER_REPLIES.has(redisReplyCode(e.message));
  }
  if (e.name === 'MaxRetriesPerRequestError' || e.name === 'ClusterAllFailedError') return true;
  // redis-errors' AbortError, a command aborted as its connection closed. ioredis gives it the command; the
  // DOM's AbortError (an aborted fetch) has none, and is no Redis fault.
  if ((e.name === 'AbortError' || e.name === 'InterruptError') && typeof e.command === 'object') return true;
  return e.name === 'Error' && e.message === REDIS_CONNECTION_CLOSED;
}

/**
 * A KafkaJS error that KafkaJS itself marks retriable: a broker unreachable or gone (connection errors, no
 * broker or leader available, a request timed out), too few in-sync replicas. The ones it does not retry
 * (a message too large, a bad request, authorisation) are not: they are about what was sent, or are for good.
 * Its wrappers (retries exhausted, non-retriable) say nothing themselves: their cause is followed.
 */
function isKafkaFault(e: ErrorShape): boolean {
  return (
    typeof e.name === 'string' &&
    e.name.startsWith('KafkaJS') &&
    e.retriable === true &&
    !(typeof e.type === 'string' && MESSAGE_KAFKA_ERRORS.has(e.type))
  );
}

/**
 * Whether `error` is a fault of a dependency the service needs for every message (Redis, Kafka), rather
 * than of what was being handled: a `UrsError` marked `infrastructure`, a Redis server reply that speaks for
 * the server (OOM, READONLY, LOADING, …; also as Redis before 7 wraps it when it stops a script) or a lost
 * Redis connection, a KafkaJS error KafkaJS marks
 * retriable; or an error with such a fault as its `cause`, or among its `errors` (an AggregateError) or
 * `previousErrors` (ioredis's EXECABORT of a transaction whose commands were refused). Anything else,
 * network errors included, is the operation's own: a Defender call that cannot reach the tenant's API is
 * about that tenant, not about the service.
 */
export function isInfrastructureFault(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > MAX_DEPTH) return false;
  const e = error as ErrorShape;
  if (isUrsError(error) && (error as { infrastructure?: unknown }).infrastructure === true) return true;
  if (isRedisFault(e) || isKafkaFault(e)) return true;
  const inner = [
    e.cause,
    ...(Array.isArray(e.errors) ? (e.errors as unknown[]) : []),
    ...(Array.isArray(e.previousErrors) ? (e.previousErrors as unknown[]) : []),
  ];
  return inner.some((next) => isInfrastructureFault(next, depth + 1));
}

import Redis from 'ioredis';
import type { RedisConfig } from '@urs/config';
import { UrsError, isRedisReadOnlyReply } from '@urs/resilience';

/**
 * A Redis failure (connection lost, command refused). Retryable: Redis is fast state that comes back. An
 * infrastructure fault (see `isInfrastructureFault`): the bus runner holds the message it failed until
 * Redis is back, rather than dead-lettering it.
 */
export class StoreError extends UrsError {
  constructor(code: string, message: string, options: { canRetry?: boolean; cause?: unknown } = {}) {
    super(code, message, { canRetry: options.canRetry ?? true, infrastructure: true, cause: options.cause });
  }
}

export interface RedisClientOptions {
  /** Name shown by CLIENT LIST, for operators. */
  connectionName?: string;
  /**
   * For a short run that goes on without Redis when it does not answer (the CLI): the client connects only
   * when `connect()` is called, which fails once an attempt has taken `connectTimeoutMs` milliseconds, and a
   * command fails after one reconnect instead of waiting for Redis to come back. Unset (the services): the
   * client connects at once (ioredis's 10 s connect timeout) and commands wait for as long as Redis is away.
   */
  failFast?: { connectTimeoutMs: number };
}

/**
 * How long after a reconnect on READONLY another READONLY reply is failed instead of reconnecting again, ms:
 * an address that keeps leading to a replica (REDIS_URL naming one, or a failover endpoint slow to move)
 * would otherwise have every write sent again for ever, hanging while PING answers.
 */
const READONLY_RECONNECT_WINDOW_MS = 10_000;

/**
 * How long a client that disconnects waits for its socket to close before destroying it, ms (ioredis's
 * `disconnectTimeout`, 2000 by default). A healthy Redis closes its side within a round trip, and a socket
 * left half-open (Redis paused) is destroyed after it. ioredis keeps the socket of a dropped connection and
 * waits for a close that already happened: closing a client while Redis is away (closeRedis; the reconnect
 * on READONLY) leaves a timer that holds the process this long, 2 s after every outage without it.
 */
const DISCONNECT_TIMEOUT_MS = 200;

/**
 * An ioredis client. `disableClientInfo`: ioredis ≥5.8 sends CLIENT SETINFO, which Redis < 7.2
 * rejects. Commands queue while reconnecting (maxRetriesPerRequest null), so a Redis restart delays
 * work instead of failing it. A READONLY reply reconnects and sends the command again (ioredis's
 * `reconnectOnError` returning 2): after a failover that leaves the connection open on the demoted
 * primary, PING still answers and every write would be refused for good; a new connection reaches the
 * new primary. At most once per `READONLY_RECONNECT_WINDOW_MS` per client: a READONLY within it fails the
 * command (a Redis fault, so the message is held and `/readyz` turns 503 as for any Redis refusal), and a
 * later one reconnects again. Clients made from it with `duplicate()` (the shared call limiter's) inherit
 * this, each with a window of its own. The services and the CLI (with `failFast`) make their clients here.
 */
export function createRedis(config: Pick<RedisConfig, 'url'>, options: RedisClientOptions = {}): Redis {
  const { failFast } = options;
  return new Redis(config.url, {
    connectionName: options.connectionName,
    disableClientInfo: true,
    maxRetriesPerRequest: failFast ? 1 : null,
    enableReadyCheck: true,
    disconnectTimeout: DISCONNECT_TIMEOUT_MS,
    retryStrategy: (times) => Math.min(times * 200, 5_000),
    reconnectOnError: readOnlyReconnect(),
    ...(failFast ? { lazyConnect: true, connectTimeout: failFast.connectTimeoutMs } : {}),
  });
}

/**
 * ioredis calls `reconnectOnError` as a method of the client's own options (`this`), which `duplicate()`
 * copies: the last reconnect is kept per options object, so each client has its own window.
 */
function readOnlyReconnect(): (this: object | undefined, error: Error) => 2 | false {
  const lastReconnects = new WeakMap<object, number>();
  const shared = {};
  return function (this: object | undefined, error: Error) {
    if (!isRedisReadOnlyReply(error)) return false;
    const client = typeof this === 'object' && this !== null ? this : shared;
    const now = Date.now();
    const last = lastReconnects.get(client);
    if (last !== undefined && now - last < READONLY_RECONNECT_WINDOW_MS) return false;
    lastReconnects.set(client, now);
    return 2;
  };
}

/** Quits gracefully, or disconnects if Redis does not answer within `timeoutMs` (default 2000). */
export async function closeRedis(redis: Redis, timeoutMs = 2_000): Promise<void> {
  // A function, not the property: TypeScript would keep the status it narrowed here across the await.
  const ended = (): boolean => redis.status === 'end';
  if (ended()) return;
  await Promise.race([
    redis.quit().catch(() => undefined),
    new Promise((resolve) => setTimeout(resolve, timeoutMs).unref()),
  ]);
  // Answered, QUIT may have closed the connection already: a disconnect then would wait for a close that
  // came before it (see DISCONNECT_TIMEOUT_MS).
  if (!ended()) redis.disconnect();
}

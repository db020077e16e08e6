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
}

/**
 * An ioredis client. `disableClientInfo`: ioredis ≥5.8 sends CLIENT SETINFO, which Redis < 7.2
 * rejects. Commands queue while reconnecting (maxRetriesPerRequest null), so a Redis restart delays
 * work instead of failing it. A READONLY reply reconnects and sends the command again (ioredis's
 * `reconnectOnError` returning 2): after a failover that leaves the connection open on the demoted
 * primary, PING still answers and every write would be refused for good; a new connection reaches the
 * new primary. Clients made from it with `duplicate()` (the shared call limiter's) inherit this.
 */
export function createRedis(config: Pick<RedisConfig, 'url'>, options: RedisClientOptions = {}): Redis {
  return new Redis(config.url, {
    connectionName: options.connectionName,
    disableClientInfo: true,
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    retryStrategy: (times) => Math.min(times * 200, 5_000),
    reconnectOnError: (error) => (isRedisReadOnlyReply(error) ? 2 : false),
  });
}

/** Quits gracefully, or disconnects if Redis does not answer within `timeoutMs` (default 2000). */
export async function closeRedis(redis: Redis, timeoutMs = 2_000): Promise<void> {
  if (redis.status === 'end') return;
  await Promise.race([
    redis.quit().catch(() => undefined),
    new Promise((resolve) => setTimeout(resolve, timeoutMs).unref()),
  ]);
  redis.disconnect();
}

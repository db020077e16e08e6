import Bottleneck from 'bottleneck';
import type { Redis } from 'ioredis';
import type { Logger } from '@urs/logging';

/** The slots of MDE calls in flight. */
export interface CallLimiter {
  /** Runs `task` in a slot; the slot is released when it settles, or after the job expiration at the latest. */
  schedule<T>(task: () => Promise<T>): Promise<T>;
  /** Stops the limiter and releases its connections. Idempotent. */
  close(): Promise<void>;
}

export interface SharedLimiterOptions {
  /**
   * An ioredis client. The limiter duplicates it (two connections of its own: commands and pub/sub), so
   * closing the limiter never closes the caller's client.
   */
  redis: Redis;
  /** Prefix of the limiter's id; Bottleneck's keys are `b_<prefix>defender-api_*`. Tests use a unique one. */
  keyPrefix: string;
  /** Calls in flight across every process sharing the limiter. Default 10. */
  maxConcurrent?: number;
  /**
   * How long a job may hold a slot, in milliseconds, default 60000. A crashed process's slots come back only
   * through this expiration, so it is always set; keep it above the request timeout, so a slot is never
   * released while its call may still be in flight.
   */
  jobExpirationMs?: number;
  /** TTL of the limiter's Redis keys after the last use, in milliseconds. Default 3600000. */
  keyTtlMs?: number;
  logger: Logger;
}

function wrap(limiter: Bottleneck, jobExpirationMs: number, release: () => Promise<void>): CallLimiter {
  let closing: Promise<void> | undefined;
  return {
    schedule: (task) => limiter.schedule({ expiration: jobExpirationMs }, task),
    close() {
      closing ??= release();
      return closing;
    },
  };
}

/**
 * One Bottleneck limiter in Redis, shared by every process that uses the same id: `maxConcurrent` is
 * enforced through the shared `running` counter. Never `clearDatastore` (it would reset the counter of
 * the running cluster). The stored settings win over the code's, so `maxConcurrent` is written back once
 * the limiter is ready (updateSettings does not touch the running counter).
 */
export async function createSharedLimiter(options: SharedLimiterOptions): Promise<CallLimiter> {
  const maxConcurrent = options.maxConcurrent ?? 10;
  const jobExpirationMs = options.jobExpirationMs ?? 60_000;
  // Not lazy: Bottleneck duplicates this client again for pub/sub and waits for both to be ready.
  const client = options.redis.duplicate({ lazyConnect: false });
  const connection = new Bottleneck.IORedisConnection({ client });
  connection.on('error', (error: Error) =>
    options.logger.error('defender limiter: Redis connection error', { error: error.message }),
  );
  const limiter = new Bottleneck({
    id: `${options.keyPrefix}defender-api`,
    connection,
    maxConcurrent,
    timeout: options.keyTtlMs ?? 3_600_000,
    clearDatastore: false,
  });
  limiter.on('error', (error: Error) =>
    options.logger.error('defender limiter error', { error: error.message }),
  );
  await limiter.ready();
  await limiter.updateSettings({ maxConcurrent });
  return wrap(limiter, jobExpirationMs, async () => {
    await limiter.disconnect(false);
    await connection.disconnect(true);
  });
}

/** A limiter of this process only (the CLI without Redis, unit tests). */
export function createLocalLimiter(
  options: { maxConcurrent?: number; jobExpirationMs?: number } = {},
): CallLimiter {
  const limiter = new Bottleneck({ maxConcurrent: options.maxConcurrent ?? 10 });
  return wrap(limiter, options.jobExpirationMs ?? 60_000, async () => {
    await limiter.stop({ dropWaitingJobs: false });
  });
}

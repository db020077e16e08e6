import type { Logger } from '@urs/logging';
import type { Registry } from '@urs/telemetry';

/** The part of an ioredis client the watch uses (a fake one in the unit tests). */
export interface WatchedRedis {
  /** ioredis's connection state: 'ready' once connected and past its ready check. */
  readonly status: string;
  on(event: 'ready' | 'close' | 'end' | 'reconnecting', listener: () => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  off(event: 'ready' | 'close' | 'end' | 'reconnecting', listener: () => void): unknown;
  off(event: 'error', listener: (error: Error) => void): unknown;
  ping(): Promise<unknown>;
}

export interface RedisWatchOptions {
  logger: Logger;
  /** Where `urs_redis_up` (1 or 0) is registered. */
  metrics: Registry;
  /** How often a PING checks a connection ioredis says is ready, in milliseconds. Default 5000. */
  pingIntervalMs?: number;
  /**
   * How long a PING may go unanswered before Redis counts as down, in milliseconds. Default 2000. A
   * connection whose peer vanished without a reset (a host gone, a network partition) stays 'ready' in
   * ioredis until TCP gives up, minutes later; only an unanswered command shows it.
   */
  pingTimeoutMs?: number;
}

export interface RedisWatch {
  /** Redis answers: the client is 'ready' and its last PING was answered in time. Cheap: no round trip. */
  isUp(): boolean;
  /** Stops the PINGs and removes the listeners. Idempotent. */
  close(): void;
}

/**
 * Watches a service's Redis client for readiness, its metric and its log. The client queues commands while
 * Redis is away (maxRetriesPerRequest null) so work waits instead of failing; without this a replica whose
 * Redis is gone would stay ready and hold its partitions, its work stalled. It also is the client's 'error'
 * listener: without one ioredis prints multi-line text for each reconnect attempt. It logs one JSON line
 * when Redis goes down, the first connection error of each outage, and one line when Redis is back.
 */
export function watchRedis(redis: WatchedRedis, options: RedisWatchOptions): RedisWatch {
  const { logger } = options;
  const pingIntervalMs = options.pingIntervalMs ?? 5_000;
  const pingTimeoutMs = options.pingTimeoutMs ?? 2_000;
  let up = redis.status === 'ready';
  /** Why the last PING failed (not answered in time, or refused); undefined once one is answered. */
  let pingFailure: string | undefined;
  let pinging = false;
  let errorLogged = false;
  let closed = false;

  const update = (): void => {
    const now = redis.status === 'ready' && pingFailure === undefined;
    if (now === up) return;
    up = now;
    if (up) {
      errorLogged = false;
      logger.info('redis reachable', { redisStatus: redis.status });
    } else {
      logger.error('redis unreachable: not ready until it answers again', {
        redisStatus: redis.status,
        ...(pingFailure !== undefined ? { reason: pingFailure } : {}),
      });
    }
  };

  const onReady = (): void => {
    // A fresh connection: a PING left from the old one no longer says anything about it.
    pingFailure = undefined;
    update();
  };
  const onError = (error: Error): void => {
    // ioredis emits one per reconnect attempt (every 200 ms to 5 s): only the first of an outage is logged.
    if (errorLogged) return;
    errorLogged = true;
    logger.error('redis connection error', {
      redisStatus: redis.status,
      error: { name: error.name, code: (error as { code?: unknown }).code, message: error.message },
    });
  };

  const ping = (): void => {
    if (closed || pinging || redis.status !== 'ready') return;
    pinging = true;
    const late = setTimeout(() => {
      pingFailure = `PING not answered within ${pingTimeoutMs} ms`;
      update();
    }, pingTimeoutMs);
    late.unref();
    redis
      .ping()
      .then(
        () => {
          pingFailure = undefined;
        },
        (error: unknown) => {
          pingFailure = `PING failed: ${error instanceof Error ? error.message : String(error)}`;
        },
      )
      .finally(() => {
        clearTimeout(late);
        pinging = false;
        if (!closed) update();
      });
  };

  redis.on('ready', onReady);
  redis.on('close', update);
  redis.on('end', update);
  redis.on('reconnecting', update);
  redis.on('error', onError);
  const timer = setInterval(ping, pingIntervalMs);
  timer.unref();
  options.metrics.gauge('urs_redis_up', 'Whether Redis answers this service (1) or not (0).', () =>
    up ? 1 : 0,
  );

  return {
    isUp() {
      update();
      return up;
    },
    close() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      redis.off('ready', onReady);
      redis.off('close', update);
      redis.off('end', update);
      redis.off('reconnecting', update);
      // The error listener stays: ioredis still emits while it closes, and without one it prints text.
    },
  };
}

export interface RedisWaitOptions {
  logger: Logger;
  /** Ends the wait: it then resolves false. */
  signal: AbortSignal;
  /** How long Redis may take to answer before the first warning, in milliseconds. Default 5000. */
  firstWarningMs?: number;
  /** How often the warning is repeated while Redis does not answer, in milliseconds. Default 60000. */
  warnEveryMs?: number;
}

/**
 * Waits until the client is connected and ready: true then, false when `signal` aborted first. While it waits
 * it logs a warning naming Redis (REDIS_URL), the client's status and its last connection error, first after
 * `firstWarningMs`, then every `warnEveryMs`: a start that waits on Redis says so in its log, as the wait for
 * Kafka does, rather than leaving only the outage's first connection error (see watchRedis).
 */
export function untilRedisAnswers(redis: WatchedRedis, options: RedisWaitOptions): Promise<boolean> {
  const { logger, signal } = options;
  if (redis.status === 'ready') return Promise.resolve(true);
  if (signal.aborted) return Promise.resolve(false);
  const since = Date.now();
  let lastError: string | undefined;
  return new Promise<boolean>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const onError = (error: Error): void => {
      lastError = error.message;
    };
    const done = (answered: boolean): void => {
      clearTimeout(timer);
      redis.off('ready', onReady);
      redis.off('error', onError);
      signal.removeEventListener('abort', onAbort);
      resolve(answered);
    };
    const onReady = (): void => done(true);
    const onAbort = (): void => done(false);
    const warn = (): void => {
      logger.warn('waiting for Redis (REDIS_URL) to answer before the service starts', {
        waitedMs: Date.now() - since,
        redisStatus: redis.status,
        ...(lastError !== undefined ? { lastError } : {}),
      });
      timer = setTimeout(warn, options.warnEveryMs ?? 60_000);
    };
    redis.on('ready', onReady);
    redis.on('error', onError);
    signal.addEventListener('abort', onAbort, { once: true });
    timer = setTimeout(warn, options.firstWarningMs ?? 5_000);
  });
}

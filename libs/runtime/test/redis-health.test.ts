import { EventEmitter } from 'node:events';
import { watchRedis, type WatchedRedis } from '@urs/runtime';
import { untilRedisAnswers } from '../src/redis-health';
import { Registry } from '@urs/telemetry';
import { capturingLogger, type LogLine } from '@urs/testkit';

/** A client whose status and PING answers the test sets, emitting ioredis's events. */
class FakeRedis extends EventEmitter implements WatchedRedis {
  status = 'connecting';
  pings = 0;
  /** How the next PINGs end: answered, refused, or never (a peer that vanished). */
  answer: 'pong' | 'refuse' | 'hang' = 'pong';

  ping(): Promise<unknown> {
    this.pings += 1;
    if (this.answer === 'pong') return Promise.resolve('PONG');
    if (this.answer === 'refuse') return Promise.reject(new Error('LOADING Redis is loading'));
    return new Promise(() => undefined);
  }

  become(status: string): void {
    this.status = status;
    const event = { ready: 'ready', close: 'close', reconnecting: 'reconnecting', end: 'end' }[status];
    if (event) this.emit(event);
  }
}

function refused(): Error {
  return Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6395'), { code: 'ECONNREFUSED' });
}

function setUp(): {
  redis: FakeRedis;
  lines: LogLine[];
  metrics: Registry;
  watch: ReturnType<typeof watchRedis>;
} {
  const redis = new FakeRedis();
  const lines: LogLine[] = [];
  const metrics = new Registry({ processMetrics: false });
  const watch = watchRedis(redis, {
    logger: capturingLogger(lines),
    metrics,
    pingIntervalMs: 1_000,
    pingTimeoutMs: 500,
  });
  return { redis, lines, metrics, watch };
}

describe('watchRedis', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('watchRedis should say up only while the client is ready, and urs_redis_up should follow', () => {
    const { redis, metrics, watch } = setUp();
    expect(watch.isUp()).toBe(false);
    expect(metrics.expose()).toContain('urs_redis_up 0');
    redis.become('ready');
    expect(watch.isUp()).toBe(true);
    expect(metrics.expose()).toContain('urs_redis_up 1');
    redis.become('close');
    redis.become('reconnecting');
    expect(watch.isUp()).toBe(false);
    expect(metrics.expose()).toContain('urs_redis_up 0');
    redis.become('ready');
    expect(watch.isUp()).toBe(true);
    watch.close();
  });

  it('watchRedis should listen for errors and log one JSON-able line per outage, not one per reconnect attempt', () => {
    const { redis, lines, watch } = setUp();
    redis.become('ready');
    redis.emit('error', Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
    redis.become('close');
    for (let attempt = 0; attempt < 20; attempt++) {
      redis.become('reconnecting');
      redis.become('connecting');
      redis.emit('error', refused());
      redis.become('close');
    }
    redis.become('ready');
    redis.become('close');
    redis.emit('error', refused());
    redis.emit('error', refused());
    watch.close();
    // Each once: connected, the first error of the outage, down, back up; then the second outage.
    expect(lines.map((line) => `${line.level} ${line.message}`)).toEqual([
      'info redis reachable',
      'error redis connection error',
      'error redis unreachable: not ready until it answers again',
      'info redis reachable',
      'error redis unreachable: not ready until it answers again',
      'error redis connection error',
    ]);
    expect(lines[1]).toMatchObject({ error: { code: 'ECONNRESET', message: 'read ECONNRESET' } });
    expect(lines[5]).toMatchObject({ error: { code: 'ECONNREFUSED', name: 'Error' } });
    expect(() => JSON.stringify(lines)).not.toThrow();
  });

  it('watchRedis should say down when a PING goes unanswered on a connection that still looks ready, and up once one is answered', async () => {
    const { redis, lines, watch } = setUp();
    redis.become('ready');
    redis.answer = 'hang';
    await jest.advanceTimersByTimeAsync(1_000);
    expect(redis.pings).toBe(1);
    expect(watch.isUp()).toBe(true);
    await jest.advanceTimersByTimeAsync(500);
    expect(watch.isUp()).toBe(false);
    expect(lines.at(-1)).toMatchObject({ level: 'error', reason: 'PING not answered within 500 ms' });
    // No PING piles up behind the one left unanswered.
    await jest.advanceTimersByTimeAsync(5_000);
    expect(redis.pings).toBe(1);
    // A new connection replaces the old one.
    redis.answer = 'pong';
    redis.become('close');
    redis.become('ready');
    expect(watch.isUp()).toBe(true);
    watch.close();
  });

  it('watchRedis should say down when Redis refuses PING, and up once it answers again', async () => {
    const { redis, watch } = setUp();
    redis.become('ready');
    redis.answer = 'refuse';
    await jest.advanceTimersByTimeAsync(1_000);
    expect(watch.isUp()).toBe(false);
    redis.answer = 'pong';
    await jest.advanceTimersByTimeAsync(1_000);
    expect(watch.isUp()).toBe(true);
    watch.close();
  });

  it('watchRedis should stop its PINGs and keep its error listener once closed', async () => {
    const { redis, watch } = setUp();
    redis.become('ready');
    watch.close();
    watch.close();
    await jest.advanceTimersByTimeAsync(10_000);
    expect(redis.pings).toBe(0);
    expect(redis.listenerCount('error')).toBe(1);
    expect(redis.listenerCount('ready')).toBe(0);
  });
});

describe('untilRedisAnswers', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('untilRedisAnswers should warn naming Redis after 5 s and then once a minute, and resolve true once the client is ready', async () => {
    const redis = new FakeRedis();
    const lines: LogLine[] = [];
    const waiting = untilRedisAnswers(redis, {
      logger: capturingLogger(lines),
      signal: new AbortController().signal,
    });
    redis.emit('error', refused());
    await jest.advanceTimersByTimeAsync(4_000);
    expect(lines).toEqual([]);
    await jest.advanceTimersByTimeAsync(1_000);
    expect(lines).toEqual([
      expect.objectContaining({
        level: 'warn',
        message: 'waiting for Redis (REDIS_URL) to answer before the service starts',
        waitedMs: 5_000,
        redisStatus: 'connecting',
        lastError: 'connect ECONNREFUSED 127.0.0.1:6395',
      }),
    ]);
    // Not one line per reconnect attempt: the next a minute later.
    await jest.advanceTimersByTimeAsync(59_000);
    expect(lines).toHaveLength(1);
    await jest.advanceTimersByTimeAsync(1_000);
    expect(lines).toHaveLength(2);
    redis.become('ready');
    await expect(waiting).resolves.toBe(true);
    await jest.advanceTimersByTimeAsync(120_000);
    expect(lines).toHaveLength(2);
    expect(redis.listenerCount('ready')).toBe(0);
    expect(redis.listenerCount('error')).toBe(0);
  });

  it('untilRedisAnswers should resolve true at once when the client is ready, and false once the stop comes', async () => {
    const ready = new FakeRedis();
    ready.status = 'ready';
    await expect(
      untilRedisAnswers(ready, { logger: capturingLogger([]), signal: new AbortController().signal }),
    ).resolves.toBe(true);
    const away = new FakeRedis();
    const stop = new AbortController();
    const waiting = untilRedisAnswers(away, { logger: capturingLogger([]), signal: stop.signal });
    stop.abort();
    await expect(waiting).resolves.toBe(false);
    expect(away.listenerCount('ready')).toBe(0);
  });
});

import { EventEmitter } from 'node:events';
import { capturingLogger, type LogLine } from '@urs/testkit';
import { logConnectionErrors, recogniseBottleneckErrorsOnRedis7 } from '../src/limiter';

type Callback = (error: Error | null, replies?: unknown) => void;

/** A stand-in for Bottleneck's connection whose script call fails with `message`. */
function connectionFailingWith(message: string): {
  connection: { __scriptArgs__: (name: string, id: string, args: unknown[], cb: Callback) => unknown[] };
  run: () => { error: Error | null; replies: unknown };
} {
  const connection = {
    __scriptArgs__: (_name: string, _id: string, args: unknown[], cb: Callback): unknown[] => [...args, cb],
  };
  return {
    connection,
    run: () => {
      let seen: { error: Error | null; replies: unknown } = { error: null, replies: undefined };
      const arr = connection.__scriptArgs__('submit', 'id', ['a'], (error, replies) => {
        seen = { error, replies };
      });
      expect(arr[0]).toBe('a');
      (arr[arr.length - 1] as Callback)(new Error(message));
      return seen;
    },
  };
}

describe('recogniseBottleneckErrorsOnRedis7', () => {
  it.each([
    ['ERR SETTINGS_KEY_NOT_FOUND', 'SETTINGS_KEY_NOT_FOUND'],
    ['ERR UNKNOWN_CLIENT', 'UNKNOWN_CLIENT'],
    ['ERR OVERWEIGHT:11:10', 'OVERWEIGHT:11:10'],
    ['SETTINGS_KEY_NOT_FOUND', 'SETTINGS_KEY_NOT_FOUND'],
    ['ERR SETTINGS_KEY_NOT_FOUND_ELSEWHERE', 'ERR SETTINGS_KEY_NOT_FOUND_ELSEWHERE'],
    [
      'ERR Error running script (call to f_x): @user_script:1: boom',
      'ERR Error running script (call to f_x): @user_script:1: boom',
    ],
  ])('should turn the script error %j into %j for Bottleneck', (message, expected) => {
    const { connection, run } = connectionFailingWith(message);
    expect(recogniseBottleneckErrorsOnRedis7(connection, capturingLogger([]))).toBe(true);
    expect(run().error?.message).toBe(expected);
  });

  it('should keep the error object and pass replies through', () => {
    const { connection } = connectionFailingWith('');
    recogniseBottleneckErrorsOnRedis7(connection, capturingLogger([]));
    const error = new Error('ERR UNKNOWN_CLIENT');
    let seen: Error | null = null;
    let replies: unknown;
    const arr = connection.__scriptArgs__('free', 'id', [], (e, r) => {
      seen = e;
      replies = r;
    });
    (arr[arr.length - 1] as Callback)(error);
    expect(seen).toBe(error);
    (arr[arr.length - 1] as Callback)(null, [1, 2]);
    expect(seen).toBeNull();
    expect(replies).toEqual([1, 2]);
  });

  it('should warn and leave the connection alone when it has no __scriptArgs__ hook', () => {
    const lines: LogLine[] = [];
    const connection = {};
    expect(recogniseBottleneckErrorsOnRedis7(connection, capturingLogger(lines))).toBe(false);
    expect(connection).toEqual({});
    expect(lines).toEqual([
      expect.objectContaining({
        level: 'warn',
        message: expect.stringMatching(/^defender limiter: .*__scriptArgs__/),
      }),
    ]);
  });
});

/** A stand-in for Bottleneck's connection: its two clients, whose errors it passes on. */
function connectionOfTwoClients() {
  const connection = Object.assign(new EventEmitter(), {
    client: Object.assign(new EventEmitter(), { status: 'ready' }),
    subscriber: Object.assign(new EventEmitter(), { status: 'ready' }),
  });
  for (const redis of [connection.client, connection.subscriber])
    redis.on('error', (error: Error) => connection.emit('error', error));
  const refused = (): Error =>
    Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
  return {
    connection,
    /** Redis goes away: each client fails `attempts` reconnect attempts. */
    away(attempts: number) {
      for (const redis of [connection.client, connection.subscriber]) {
        redis.status = 'reconnecting';
        for (let i = 0; i < attempts; i++) redis.emit('error', refused());
      }
    },
    /** Redis is back: the clients connect again, one after the other. */
    back() {
      for (const redis of [connection.client, connection.subscriber]) {
        redis.status = 'ready';
        redis.emit('ready');
      }
    },
  };
}

describe('logConnectionErrors', () => {
  it('should log the first connection error of each outage only, not one per client and reconnect attempt', () => {
    const lines: LogLine[] = [];
    const { connection, away, back } = connectionOfTwoClients();
    logConnectionErrors(connection, capturingLogger(lines));
    away(50);
    expect(lines).toEqual([
      {
        level: 'error',
        message: 'defender limiter: Redis connection error',
        error: { name: 'Error', code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:6379' },
      },
    ]);
    back();
    away(3);
    expect(lines).toHaveLength(2);
  });

  it('should not end the outage while one of its clients is still away', () => {
    const lines: LogLine[] = [];
    const { connection, away } = connectionOfTwoClients();
    logConnectionErrors(connection, capturingLogger(lines));
    away(2);
    connection.client.status = 'ready';
    connection.client.emit('ready');
    connection.subscriber.emit('error', new Error('connect ECONNREFUSED 127.0.0.1:6379'));
    expect(lines).toHaveLength(1);
  });
});

import { capturingLogger, type LogLine } from '@urs/testkit';
import { recogniseBottleneckErrorsOnRedis7 } from '../src/limiter';

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

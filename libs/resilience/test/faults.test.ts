import Redis, { ReplyError } from 'ioredis';
import { MaxRetriesPerRequestError } from 'ioredis/built/errors';
import { KafkaJSConnectionError, KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError } from 'kafkajs';
import { UrsError, isInfrastructureFault, isRedisReadOnlyReply } from '@urs/resilience';

/** What ioredis rejects a command with once its client is closed. */
async function connectionClosedError(): Promise<unknown> {
  const redis = new Redis({ lazyConnect: true });
  redis.disconnect();
  return redis.get('k').then(
    () => undefined,
    (error: unknown) => error,
  );
}

const kafkaAway = (): KafkaJSNumberOfRetriesExceeded =>
  new KafkaJSNumberOfRetriesExceeded(
    new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:9092'),
    { retryCount: 8, retryTime: 5_000 },
  );

describe('isInfrastructureFault', () => {
  it.each([
    'OOM command not allowed when used memory > maxmemory.',
    "READONLY You can't write against a read only replica.",
    'LOADING Redis is loading the dataset in memory',
    'MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk.',
    'BUSY Redis is busy running a script.',
  ])('should recognise the Redis reply %s', (reply) => {
    expect(isInfrastructureFault(new ReplyError(reply))).toBe(true);
  });

  it('should not take a Redis reply about the command for the server', () => {
    expect(
      isInfrastructureFault(
        new ReplyError('WRONGTYPE Operation against a key holding the wrong kind of value'),
      ),
    ).toBe(false);
    expect(isInfrastructureFault(new ReplyError('ERR Error running script'))).toBe(false);
  });

  // Redis 5 and 6 wrap a refusal that stopped a script in an ERR (scripting.c `luaPushError`, its error handler
  // and `evalGenericCommand`); 6.x trims the refusal's CRLF, 5.0 turns it and the format's newline into spaces.
  const script = 'ERR Error running script (call to f_8ea1e266485534d17ddba5af05c1b61273c30467)';
  it.each([
    `${script}: @user_script:1: @user_script: 1: -OOM command not allowed when used memory > 'maxmemory'.`,
    `${script}: @user_script:12: @user_script: 12: -OOM command not allowed when used memory > 'maxmemory'.   `,
    `${script}: @user_script:3: @user_script: 3: -READONLY You can't write against a read only replica.`,
    `${script}: @user_script:1: @user_script: 1: -MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk. Commands that may modify the data set are disabled, because this instance is configured to report errors during writes if RDB snapshotting fails (stop-writes-on-bgsave-error option). Please check the Redis logs for details about the RDB error.`,
    `${script}: @user_script:1: @user_script: 1: -MISCONF Errors writing to the AOF file: No space left on device`,
    `${script}: @user_script:2: @user_script: 2: -NOREPLICAS Not enough good replicas to write.`,
  ])('should recognise the refusal in a script Redis before 7 stopped: %s', (reply) => {
    expect(isInfrastructureFault(new ReplyError(reply))).toBe(true);
  });

  it("should not take a script's own failure on Redis before 7 for the server", () => {
    for (const reply of [
      // The called command's own error reply, raised by redis.call.
      `${script}: @user_script:1: WRONGTYPE Operation against a key holding the wrong kind of value`,
      // A Lua runtime error.
      `${script}: @user_script:4: user_script:4: attempt to compare nil with number`,
      // A refusal's text in an error the script raised itself, not a refusal.
      `${script}: @user_script:1: user_script:1: -OOM from the script's own error call`,
    ]) {
      expect(isInfrastructureFault(new ReplyError(reply))).toBe(false);
    }
  });

  it('should recognise a lost Redis connection', async () => {
    expect(isInfrastructureFault(await connectionClosedError())).toBe(true);
    expect(isInfrastructureFault(new MaxRetriesPerRequestError(1))).toBe(true);
  });

  it('should recognise a transaction refused for a refused command', () => {
    const aborted = Object.assign(
      new ReplyError('EXECABORT Transaction discarded because of previous errors.'),
      {
        previousErrors: [new ReplyError('OOM command not allowed when used memory > maxmemory.')],
      },
    );
    expect(isInfrastructureFault(aborted)).toBe(true);
  });

  it('should recognise a produce that failed because the broker is away, by the error its retries ended with', () => {
    expect(isInfrastructureFault(kafkaAway())).toBe(true);
  });

  it('should not take a Kafka refusal of what was sent for a fault of Kafka', () => {
    const tooLarge = new KafkaJSProtocolError({
      type: 'MESSAGE_TOO_LARGE',
      code: 10,
      retriable: false,
      message: 'The request included a message larger than the max message size the server will accept',
    } as unknown as Error);
    expect(isInfrastructureFault(tooLarge)).toBe(false);
    // Retriable to KafkaJS, but a record the broker cannot read is refused again however often it is sent.
    const corrupt = new KafkaJSProtocolError({
      type: 'CORRUPT_MESSAGE',
      code: 2,
      retriable: true,
      message: 'This message has failed its CRC checksum, exceeds the valid size, or is otherwise corrupt',
    } as unknown as Error);
    expect(
      isInfrastructureFault(new KafkaJSNumberOfRetriesExceeded(corrupt, { retryCount: 5, retryTime: 1_000 })),
    ).toBe(false);
  });

  it('should recognise a fault wrapped as the cause of our own error, or marked on it', () => {
    const wrapped = new UrsError('REBUILD_FAILED', 'Redis could not be rebuilt', {
      canRetry: true,
      cause: new UrsError('STEP', 'step', { cause: kafkaAway() }),
    });
    expect(isInfrastructureFault(wrapped)).toBe(true);
    expect(isInfrastructureFault(new UrsError('STORE', 'store', { infrastructure: true }))).toBe(true);
  });

  it("should count anything else as the operation's own, network errors and aborted calls included", () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 20.1.2.3:443'), { code: 'ECONNREFUSED' });
    const defender = new UrsError('DEFENDER_UNREACHABLE', 'the API did not answer', {
      canRetry: true,
      cause: refused,
    });
    expect(isInfrastructureFault(defender)).toBe(false);
    expect(isInfrastructureFault(new DOMException('This operation was aborted', 'AbortError'))).toBe(false);
    expect(isInfrastructureFault(new UrsError('TENANT_BUSY', 'busy', { canRetry: true }))).toBe(false);
    expect(isInfrastructureFault('OOM')).toBe(false);
    expect(isInfrastructureFault(undefined)).toBe(false);
  });

  it('should end on a cycle of causes', () => {
    const a = new Error('a');
    const b = new Error('b', { cause: a });
    (a as { cause?: unknown }).cause = b;
    expect(isInfrastructureFault(a)).toBe(false);
  });
});

describe('isRedisReadOnlyReply', () => {
  const script = 'ERR Error running script (call to f_8ea1e266485534d17ddba5af05c1b61273c30467)';

  it('should recognise READONLY, plain or as Redis before 7 wraps it in a stopped script', () => {
    expect(
      isRedisReadOnlyReply(new ReplyError("READONLY You can't write against a read only replica.")),
    ).toBe(true);
    expect(
      isRedisReadOnlyReply(
        new ReplyError(
          `${script}: @user_script:3: @user_script: 3: -READONLY You can't write against a read only replica.`,
        ),
      ),
    ).toBe(true);
  });

  it('should not take any other refusal, or a non-reply error, for READONLY', () => {
    expect(
      isRedisReadOnlyReply(new ReplyError('OOM command not allowed when used memory > maxmemory.')),
    ).toBe(false);
    expect(isRedisReadOnlyReply(new ReplyError('ERR READONLY in a key name'))).toBe(false);
    expect(isRedisReadOnlyReply(new Error("READONLY You can't write against a read only replica."))).toBe(
      false,
    );
    expect(isRedisReadOnlyReply(undefined)).toBe(false);
  });
});

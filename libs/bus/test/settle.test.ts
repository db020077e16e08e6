import {
  KafkaJSConnectionError,
  KafkaJSLockTimeout,
  KafkaJSNonRetriableError,
  KafkaJSNumberOfRetriesExceeded,
} from 'kafkajs';
import { UrsError } from '@urs/resilience';
import { capturingLogger, type LogLine } from '@urs/testkit';
import { BusError } from '../src/publisher';
import { retryWhileSettling } from '../src/settle';
import { isTransientKafkaError } from '../src/transient';

/** The errors KafkaJS builds from a broker's error code (kafkajs/src/protocol/error.js). */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { createErrorFromCode } = require('kafkajs/src/protocol/error') as {
  createErrorFromCode: (code: number) => Error & { type: string; retriable: boolean };
};

const UNKNOWN_TOPIC_OR_PARTITION = 3;
const LEADER_NOT_AVAILABLE = 5;
const NOT_LEADER_FOR_PARTITION = 6;
const TOPIC_ALREADY_EXISTS = 36;
const TOPIC_AUTHORIZATION_FAILED = 29;

/** KafkaJS's aggregate (createTopics reports per-topic errors this way); not in its typings. */
function aggregate(errors: unknown[]): Error {
  return Object.assign(new Error('Topic creation errors'), { name: 'KafkaJSAggregateError', errors });
}

describe('isTransientKafkaError', () => {
  it('should retry the answers of a topic that is still settling', () => {
    for (const code of [UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_FOR_PARTITION]) {
      expect(isTransientKafkaError(createErrorFromCode(code))).toBe(true);
    }
    // Kafka's newer name of NOT_LEADER_FOR_PARTITION, as another client copy might report it.
    expect(isTransientKafkaError({ name: 'KafkaJSProtocolError', type: 'NOT_LEADER_OR_FOLLOWER' })).toBe(
      true,
    );
  });

  it('should retry what KafkaJS marks retriable, such as a lost connection', () => {
    expect(isTransientKafkaError(new KafkaJSConnectionError('Connection error: ECONNREFUSED'))).toBe(true);
  });

  it('should retry a lock timed out behind a broker being connected or metadata being refreshed', () => {
    // KafkaJS throws it as not retriable, yet takes it for stale metadata and refreshes (cluster findBroker).
    // Its typings take no message, KafkaJS's own lock passes one (kafkajs/src/utils/lock.js).
    const LockTimeout = KafkaJSLockTimeout as unknown as new (message: string) => Error;
    const locked = new LockTimeout('Timeout while acquiring lock (1 waiting locks)');
    expect(isTransientKafkaError(locked)).toBe(true);
    expect(
      isTransientKafkaError(Object.assign(new KafkaJSNonRetriableError(locked), { cause: locked })),
    ).toBe(true);
  });

  it('should judge a KafkaJS wrapper by the error it wraps', () => {
    const notLeader = createErrorFromCode(NOT_LEADER_FOR_PARTITION);
    expect(
      isTransientKafkaError(Object.assign(new KafkaJSNonRetriableError(notLeader), { cause: notLeader })),
    ).toBe(true);
    const exhausted = new KafkaJSNumberOfRetriesExceeded(createErrorFromCode(UNKNOWN_TOPIC_OR_PARTITION), {
      retryCount: 8,
      retryTime: 1000,
    });
    expect(isTransientKafkaError(exhausted)).toBe(true);
    const denied = createErrorFromCode(TOPIC_AUTHORIZATION_FAILED);
    expect(
      isTransientKafkaError(Object.assign(new KafkaJSNonRetriableError(denied), { cause: denied })),
    ).toBe(false);
  });

  it('should retry an aggregate only when every error in it is transient', () => {
    const notLeader = createErrorFromCode(NOT_LEADER_FOR_PARTITION);
    expect(isTransientKafkaError(aggregate([notLeader, createErrorFromCode(LEADER_NOT_AVAILABLE)]))).toBe(
      true,
    );
    expect(isTransientKafkaError(aggregate([notLeader, createErrorFromCode(TOPIC_ALREADY_EXISTS)]))).toBe(
      false,
    );
    expect(isTransientKafkaError(aggregate([]))).toBe(false);
  });

  it('should not retry refusals, bugs or errors that say they are final', () => {
    expect(isTransientKafkaError(createErrorFromCode(TOPIC_AUTHORIZATION_FAILED))).toBe(false);
    expect(isTransientKafkaError(createErrorFromCode(TOPIC_ALREADY_EXISTS))).toBe(false);
    expect(isTransientKafkaError(new KafkaJSNonRetriableError('Invalid topic undefined'))).toBe(false);
    expect(isTransientKafkaError(new TypeError('cannot read properties of undefined'))).toBe(false);
    expect(isTransientKafkaError(new Error('anything else'))).toBe(false);
    expect(isTransientKafkaError('NOT_LEADER_FOR_PARTITION')).toBe(false);
    expect(isTransientKafkaError(null)).toBe(false);
    expect(isTransientKafkaError(new UrsError('X', 'x', { canRetry: false }))).toBe(false);
    expect(isTransientKafkaError(new UrsError('X', 'x', { canRetry: true }))).toBe(true);
  });

  it('should stop following a cause chain that loops', () => {
    const looped: { name: string; cause?: unknown } = { name: 'KafkaJSNonRetriableError' };
    looped.cause = looped;
    expect(isTransientKafkaError(looped)).toBe(false);
  });
});

/** A clock that only moves when the retry loop sleeps, so deadlines are exact and tests instant. */
function fakeTime() {
  let nowMs = 0;
  const waits: number[] = [];
  return {
    now: () => nowMs,
    sleep: async (ms: number) => {
      waits.push(ms);
      nowMs += ms;
    },
    waits,
  };
}

describe('retryWhileSettling', () => {
  it('should retry a NOT_LEADER until the leader answers', async () => {
    const time = fakeTime();
    let calls = 0;
    const result = await retryWhileSettling(
      async () => {
        calls++;
        if (calls < 4) throw createErrorFromCode(NOT_LEADER_FOR_PARTITION);
        return 'offsets';
      },
      { operation: 'offsets of t', now: time.now, sleep: time.sleep, random: () => 0.5 },
    );
    expect(result).toBe('offsets');
    expect(calls).toBe(4);
    // Full jitter at 0.5 of a cap that starts at 100 ms and doubles.
    expect(time.waits).toEqual([50, 100, 200]);
  });

  it('should give up at the deadline with a retryable KAFKA_NOT_SETTLED naming the operation', async () => {
    const time = fakeTime();
    let calls = 0;
    const failure = retryWhileSettling(
      async () => {
        calls++;
        throw createErrorFromCode(NOT_LEADER_FOR_PARTITION);
      },
      {
        operation: 'offsets of urs.tenants',
        timeoutMs: 5_000,
        now: time.now,
        sleep: time.sleep,
        random: () => 1,
      },
    );
    await expect(failure).rejects.toBeInstanceOf(BusError);
    const error = (await failure.catch((e: unknown) => e)) as BusError;
    expect(error.code).toBe('KAFKA_NOT_SETTLED');
    expect(error.canRetry).toBe(true);
    expect(error.message).toContain('offsets of urs.tenants');
    expect(error.message).toContain('not the leader');
    expect((error.cause as { type: string }).type).toBe('NOT_LEADER_FOR_PARTITION');
    // Never waits past the deadline; the last attempt is made right at it.
    expect(time.now()).toBe(5_000);
    expect(time.waits.reduce((sum, ms) => sum + ms, 0)).toBe(5_000);
    expect(calls).toBe(time.waits.length + 1);
  });

  it('should throw other errors at once, as they are', async () => {
    const time = fakeTime();
    const denied = createErrorFromCode(TOPIC_AUTHORIZATION_FAILED);
    let calls = 0;
    await expect(
      retryWhileSettling(
        async () => {
          calls++;
          throw denied;
        },
        { operation: 'offsets of t', now: time.now, sleep: time.sleep },
      ),
    ).rejects.toBe(denied);
    expect(calls).toBe(1);
  });

  it('should retry what alsoRetry accepts', async () => {
    const time = fakeTime();
    let calls = 0;
    await retryWhileSettling(
      async () => {
        if (++calls === 1) throw createErrorFromCode(TOPIC_ALREADY_EXISTS);
      },
      {
        operation: 'creating topics',
        alsoRetry: (error) => (error as { type?: string }).type === 'TOPIC_ALREADY_EXISTS',
        now: time.now,
        sleep: time.sleep,
      },
    );
    expect(calls).toBe(2);
  });

  it('should stop on the signal and throw the last error itself', async () => {
    const time = fakeTime();
    const stop = new AbortController();
    const notLeader = createErrorFromCode(NOT_LEADER_FOR_PARTITION);
    let calls = 0;
    await expect(
      retryWhileSettling(
        async () => {
          if (++calls === 2) stop.abort();
          throw notLeader;
        },
        { operation: 'offsets of t', signal: stop.signal, now: time.now, sleep: time.sleep },
      ),
    ).rejects.toBe(notLeader);
    expect(calls).toBe(2);
  });

  it('should log each retry with the reason, as a warning from the third on', async () => {
    const time = fakeTime();
    const lines: LogLine[] = [];
    const logger = capturingLogger(lines);
    let calls = 0;
    await retryWhileSettling(
      async () => {
        if (++calls <= 3) throw createErrorFromCode(LEADER_NOT_AVAILABLE);
      },
      { operation: 'offsets of t', logger, now: time.now, sleep: time.sleep },
    );
    expect(lines.map((line) => line.level)).toEqual(['debug', 'debug', 'warn']);
    expect(lines[2]).toEqual(
      expect.objectContaining({ operation: 'offsets of t', attempt: 3, type: 'LEADER_NOT_AVAILABLE' }),
    );
  });
});

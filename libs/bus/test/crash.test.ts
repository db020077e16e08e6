import {
  KafkaJSConnectionError,
  KafkaJSError,
  KafkaJSGroupCoordinatorNotFound,
  KafkaJSNonRetriableError,
  KafkaJSNumberOfRetriesExceeded,
  KafkaJSProtocolError,
  KafkaJSRequestTimeoutError,
} from 'kafkajs';
import { crashHeals } from '@urs/bus';
import { UrsError } from '@urs/resilience';

// KafkaJS's own protocol errors, by Kafka error code, as its broker connection raises them.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { createErrorFromCode } = require('kafkajs/src/protocol/error') as {
  createErrorFromCode(code: number): Error & { type: string; retriable: boolean };
};
const protocolError = (code: number): Error => new KafkaJSProtocolError(createErrorFromCode(code));

/** As KafkaJS's retrier hands on an error it gave up on (a `cause` chain to the root). */
const exhausted = (error: Error): Error =>
  new KafkaJSNumberOfRetriesExceeded(error, { retryCount: 5, retryTime: 4_800 });
const bailed = (error: Error): Error =>
  new (KafkaJSNonRetriableError as unknown as new (e: Error, options: { cause: Error }) => Error)(error, {
    cause: error,
  });

describe('crashHeals', () => {
  it.each([
    [
      'no group coordinator (KafkaJS: non-retriable)',
      new (KafkaJSGroupCoordinatorNotFound as unknown as new (message: string) => Error)(
        'Failed to find group coordinator',
      ),
    ],
    ['a refused connection', new KafkaJSConnectionError('Connection error', { code: 'ECONNREFUSED' })],
    [
      'retries exhausted on a refused connection',
      exhausted(new KafkaJSConnectionError('x', { code: 'ECONNREFUSED' })),
    ],
    ['a request timeout, bailed on', bailed(new KafkaJSRequestTimeoutError('Request requestTimeout'))],
    ['a coordinator loading', protocolError(14)],
    ['a rebalance', protocolError(27)],
    ['an unknown member', protocolError(25)],
    ['a broker not available', protocolError(8)],
    ['a rejoin KafkaJS wrapped', new KafkaJSError(protocolError(22))],
    ['a socket reset', Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })],
    ['our retryable error', new UrsError('REDIS_DOWN', 'Redis is away', { canRetry: true })],
  ])('should be true for %s', (_, error) => {
    expect(crashHeals(error)).toBe(true);
  });

  it.each([
    ['a topic authorisation refused', protocolError(29)],
    ['a group authorisation refused, bailed on', bailed(protocolError(30))],
    ['an authentication failed, retries exhausted', exhausted(protocolError(58))],
    ['a session timeout the broker refuses', protocolError(26)],
    ['an invalid group id', protocolError(24)],
    ['a misused client', new KafkaJSNonRetriableError('Consumer groupId must be a non-empty string.')],
    ['our non-retryable error', new UrsError('RUNNER_OPTION_INVALID', 'bad option')],
    ['a bug', new TypeError("Cannot read properties of undefined (reading 'offset')")],
    ['a thrown string', 'nope'],
  ])('should be false for %s', (_, error) => {
    expect(crashHeals(error)).toBe(false);
  });
});

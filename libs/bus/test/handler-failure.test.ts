import { KafkaJSConnectionError, KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError } from 'kafkajs';
import { ContractError } from '@urs/contracts';
import { UrsError } from '@urs/resilience';
import { topicNotAuthorised } from '@urs/testkit';
import { handlerFailureOf, isHandledAgain } from '../src/handler-failure';

describe('handlerFailureOf', () => {
  /** What a produce rejects with when the broker is away, after KafkaJS's own retries. */
  const brokerAway = (): Error =>
    new KafkaJSNumberOfRetriesExceeded(new KafkaJSConnectionError('Connection error: ECONNREFUSED'), {
      retryCount: 8,
      retryTime: 5_000,
    });

  it('should tell a dependency, a missing ACL, a retryable and a final failure apart', () => {
    expect(handlerFailureOf(brokerAway())).toBe('dependency');
    // Wrapped in an error of ours that says nothing of retrying, a fault of Kafka is still one.
    expect(handlerFailureOf(new UrsError('SEND_FAILED', 'not sent', { cause: brokerAway() }))).toBe(
      'dependency',
    );
    expect(handlerFailureOf(topicNotAuthorised())).toBe('not-authorized');
    expect(handlerFailureOf(new UrsError('BUSY', 'try later', { canRetry: true }))).toBe('retryable');
    expect(handlerFailureOf(new Error('a driver error'))).toBe('retryable');
    expect(handlerFailureOf(new ContractError('urs/enriched-batch', [{ field: 'devices', rule: 'x' }]))).toBe(
      'final',
    );
  });

  /** What a produce rejects with when the broker refuses a record as larger than the topic takes. */
  const tooLarge = (type = 'MESSAGE_TOO_LARGE', code = 10): Error =>
    new KafkaJSProtocolError(
      Object.assign(new Error('The request included a message larger than the max message size'), {
        type,
        code,
        retriable: false,
      }),
    );

  it("should take Kafka refusing a record as too large as the message's own failure for good, however wrapped", () => {
    expect(handlerFailureOf(tooLarge())).toBe('final');
    expect(handlerFailureOf(tooLarge('RECORD_LIST_TOO_LARGE', 18))).toBe('final');
    expect(
      handlerFailureOf(new UrsError('SEND_FAILED', 'not sent', { canRetry: true, cause: tooLarge() })),
    ).toBe('final');
    expect(isHandledAgain(tooLarge())).toBe(false);
  });

  it("should take Kafka refusing a record as corrupt, after the producer's resends, as the message's own failure for good", () => {
    // KafkaJS marks it retriable (a checksum broken in transit heals when sent again), so the producer has sent it
    // again already before a handler sees it: refused at each resend, it is what was sent.
    const corrupt = new KafkaJSProtocolError(
      Object.assign(
        new Error(
          'This message has failed its CRC checksum, exceeds the valid size, or is otherwise corrupt',
        ),
        {
          type: 'CORRUPT_MESSAGE',
          code: 2,
          retriable: true,
        },
      ),
    );
    expect(
      handlerFailureOf(new KafkaJSNumberOfRetriesExceeded(corrupt, { retryCount: 5, retryTime: 1_000 })),
    ).toBe('final');
    expect(isHandledAgain(corrupt)).toBe(false);
  });

  it('should say a message is handled again unless it is dead-lettered at once', () => {
    expect(isHandledAgain(brokerAway())).toBe(true);
    expect(isHandledAgain(topicNotAuthorised())).toBe(true);
    expect(isHandledAgain(new UrsError('BUSY', 'try later', { canRetry: true }))).toBe(true);
    expect(isHandledAgain(new UrsError('BAD', 'for good', { canRetry: false }))).toBe(false);
  });
});

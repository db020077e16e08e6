import { canRetry, isInfrastructureFault } from '@urs/resilience';
import { isKafkaAuthorizationRefusal, isKafkaRecordRefusal } from './transient';

/**
 * What the consumer runner makes of a handler's failure:
 * - `dependency`: a dependency every message needs (Redis, Kafka) failed it (`isInfrastructureFault`): the
 *   message is held and handled again until the dependency is back, never dead-lettered for it;
 * - `not-authorized`: Kafka refused the handler a request for want of an ACL (`isKafkaAuthorizationRefusal`):
 *   every message would be refused alike, so it is held too, until an operator grants it;
 * - `retryable`: the message's own failure, which may go away (`canRetry`): handled again, up to the retry
 *   policy's attempts, then dead-lettered;
 * - `final`: the message's own failure, for good: dead-lettered at once. Kafka refusing a record the handler
 *   produced for what it holds (`isKafkaRecordRefusal`: larger than the topic takes, invalid, corrupt after the
 *   producer's resends) is one, however it is wrapped, even in an error that says it may be retried: sent
 *   again, the same record is refused again.
 */
export type HandlerFailure = 'dependency' | 'not-authorized' | 'retryable' | 'final';

/** How the consumer runner takes a handler's failure (see HandlerFailure). */
export function handlerFailureOf(error: unknown): HandlerFailure {
  // A fault of Redis or Kafka first: one wrapped in an error that says nothing of retrying (a UrsError's
  // default) is still no fault of the message.
  if (isInfrastructureFault(error)) return 'dependency';
  if (isKafkaAuthorizationRefusal(error)) return 'not-authorized';
  if (isKafkaRecordRefusal(error)) return 'final';
  return canRetry(error) ? 'retryable' : 'final';
}

/**
 * Whether the consumer runner handles a message again after its handler failed with `error`, rather than
 * dead-lettering it at once: what a handler keeps for its next try is worth keeping only then.
 */
export function isHandledAgain(error: unknown): boolean {
  return handlerFailureOf(error) !== 'final';
}

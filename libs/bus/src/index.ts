export { createKafka } from './kafka';
export { topicSpecs, bootstrapTopics } from './topics';
export type { TopicSpec } from './topics';
export { createPublisher, BusError } from './publisher';
export type { Publisher, OutboundMessage } from './publisher';
export { createConsumerRunner, PoisonMessageError, DEFAULT_RUNNER_RETRY } from './runner';
export type {
  ConsumerRunner,
  ConsumerRunnerOptions,
  InboundMessage,
  MessageHandler,
  TopicSubscription,
  RunnerState,
} from './runner';
export { redactPayload, toDeadLetter } from './dead-letter';

export { createKafka, PUBLISHER_RETRY_MS, type CreateKafkaOptions } from './kafka';
export { connectAdminThroughSeeds, seedClients, seedsFrom } from './seeds';
export { topicSpecs, bootstrapTopics } from './topics';
export type { StageTopics, TopicAccess, TopicName } from './topics';
export type { TopicSpec, BootstrapOptions } from './topics';
export {
  KAFKA_RECORD_REFUSAL_TYPES,
  isKafkaAuthorizationRefusal,
  isKafkaRecordRefusal,
  isKafkaRecordTooLarge,
  isTransientKafkaError,
} from './transient';
export { handlerFailureOf, isHandledAgain, type HandlerFailure } from './handler-failure';
export { retryWhileSettling, topicOffsets, SETTLE_RETRY, DEFAULT_SETTLE_TIMEOUT_MS } from './settle';
export type { SettleOptions, TopicOffsetsOptions, PartitionOffsetRange } from './settle';
export {
  createPublisher,
  BusError,
  MAX_SEND_BYTES,
  recordBytes,
  sizedGroups,
  surelyTakenRecordBytes,
} from './publisher';
export { topicMaxMessageBytes } from './topic-limit';
export type { Publisher, OutboundMessage, PublisherOptions } from './publisher';
export { createConsumerRunner, PoisonMessageError, DEFAULT_RUNNER_RESTART } from './runner';
export { DEFAULT_RUNNER_RETRY } from './runner-options';
export { crashHeals } from './crash';
export { deleteOwnGroup } from './groups';
export {
  createCatchUp,
  lastOffsets,
  readToEndSubscription,
  readTopicUpTo,
  readWhenDeadLettered,
  stopWaitingAfter,
  type CatchUp,
} from './read-to-end';
export { settledWithin } from './drain';
export type {
  ConsumerRunner,
  DeadLetteringMessage,
  InboundMessage,
  MessageHandler,
  TopicSubscription,
  RunnerState,
} from './runner';
export type { ConsumerRunnerOptions, Ordering } from './runner-options';
export { notJsonReason, redactPayload, toDeadLetter, withheldPayload } from './dead-letter';
export type { PayloadRedactor } from './dead-letter';
export type { DeadLetterClaim, DeadLetterLedger, DeadLetterSource } from './dead-letter-once';
export { JavaCompatiblePartitioner, murmur2 } from './partitioner';
export { crc32c, useFastCrc32c } from './crc32c';
export {
  batchItemJson,
  deviceBatchMessage,
  jsonBatchBytes,
  jsonWithHead,
  parseJsonBytes,
} from './json-bytes';
export { applyKafkaJsFixes } from './kafkajs-fixes';
export {
  referenceLargeParts,
  type KafkaJsEncoder,
  type KafkaJsEncoderClass,
  type KafkaJsLongClass,
} from './kafkajs-encoder';
export { createRecordBatchEncoder, describeRecord, useFastRecordBatches } from './kafkajs-records';

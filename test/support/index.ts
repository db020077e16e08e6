// Shared helpers of the integration and e2e suites (`import { … } from '@urs/testkit'`).
// Every name they hand out is unique per call, so parallel jest workers and parallel test runs never
// share a topic, a consumer group or a Redis key.
export { uniqueId, waitFor, type WaitForOptions } from './wait';
export { serviceEnv, testInfra, type TestInfra } from './infra';
export {
  createTestKafka,
  createUniqueTopics,
  deleteTopics,
  readDeadLetters,
  topicNotAuthorised,
  type TopicSpec,
} from './kafka';
export { createTestRedis, deleteKeysMatching, testRedisPerTest, type TestRedis } from './redis';
export { startRedis, stopRedis } from './own-redis';
export { startRedisFailover, type RedisFailover } from './failover';
export { freePort, watchedPort, type WatchedPort } from './ports';
export {
  markPublishedRebuilt,
  scoreBatchOf,
  scoredDevice,
  sealedTenantRecord,
  storeHistoryWithoutReasons,
  storedSecretsOf,
  tenantRecord,
  type EntraApp,
  type TenantRecordOptions,
} from './records';
export { inboundMessage } from './messages';
export { capturingLogger, type LogLine } from './logs';
export { RUN_TS, runMain, type MainRun } from './processes';
export { startPrivateKafka, type PrivateKafka } from './private-kafka';

export {
  ConfigError,
  readString,
  readOptionalString,
  readInt,
  readBool,
  readList,
  readEnum,
  readUrl,
} from './env';
export type { Env, IntRule } from './env';
export { readPemFile } from './files';
export {
  kafkaConfig,
  redisConfig,
  topicsConfig,
  topicLayout,
  secretKeyConfig,
  defenderOverrides,
  defenderSettings,
  consumerSettings,
  serviceConfig,
  DEFAULT_METRICS_PORTS,
} from './infra';
export type {
  KafkaConfig,
  RedisConfig,
  Topics,
  TopicLayout,
  SecretKeyConfig,
  DefenderOverrides,
  DefenderSettings,
  ConsumerSettings,
  ServiceConfig,
  LogLevelName,
} from './infra';

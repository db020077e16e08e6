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
export { topicsConfig, topicLayout } from './topics';
export type { Topics, TopicLayout } from './topics';
export {
  kafkaConfig,
  redisConfig,
  secretKeyConfig,
  defenderOverrides,
  readDefenderScope,
  defenderSettings,
  consumerSettings,
  serviceConfig,
  DEFAULT_METRICS_PORTS,
} from './infra';
export type {
  KafkaConfig,
  RedisConfig,
  SecretKeyConfig,
  DefenderOverrides,
  DefenderSettings,
  ConsumerSettings,
  ServiceConfig,
  LogLevelName,
} from './infra';

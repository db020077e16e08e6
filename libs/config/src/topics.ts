import { ConfigError, type Env, readInt, readOptionalString, readString } from './env';

export interface Topics {
  registration: string;
  tenants: string;
  deviceBatches: string;
  devicesEnriched: string;
  deviceScores: string;
  dlq: string;
  vmsRiskScores: string;
  vmsRiskSummary: string;
}

const TOPIC_DEFAULTS: { [K in keyof Topics]: [variable: string, name: string] } = {
  registration: ['URS_TOPIC_REGISTRATION', 'urs.registration'],
  tenants: ['URS_TOPIC_TENANTS', 'urs.tenants'],
  deviceBatches: ['URS_TOPIC_DEVICE_BATCHES', 'urs.device-batches'],
  devicesEnriched: ['URS_TOPIC_DEVICES_ENRICHED', 'urs.devices-enriched'],
  deviceScores: ['URS_TOPIC_DEVICE_SCORES', 'urs.device-scores'],
  dlq: ['URS_TOPIC_DLQ', 'urs.dlq'],
  vmsRiskScores: ['URS_TOPIC_VMS_RISK_SCORES', 'vms.risk-scores'],
  vmsRiskSummary: ['URS_TOPIC_VMS_RISK_SUMMARY', 'vms.risk-summary'],
};

/** Kafka's rule for a topic name (its `Topic.validate`), in the words of the error that refuses one. */
const TOPIC_NAME_RULE = '1–249 ASCII letters, digits, dots, underscores or dashes, not "." or ".."';

/**
 * Whether Kafka accepts `name` as a topic's. Checked at start: a name it refuses otherwise fails only once the
 * broker answers the topic's creation, with its own text naming no variable.
 */
function isKafkaTopicName(name: string): boolean {
  return /^[a-zA-Z0-9._-]{1,249}$/.test(name) && name !== '.' && name !== '..';
}

/**
 * Topic names: each overridable by its own variable (`URS_TOPIC_TENANTS`, …); `URS_TOPIC_PREFIX`
 * (default empty) is put before the defaults, so a test or a staging deployment gets its own set.
 */
export function topicsConfig(env: Env): Topics {
  const prefix = readString(env, 'URS_TOPIC_PREFIX', '');
  const topics = {} as Topics;
  for (const key of Object.keys(TOPIC_DEFAULTS) as (keyof Topics)[]) {
    const [variable, name] = TOPIC_DEFAULTS[key];
    const own = readOptionalString(env, variable);
    const topic = own ?? `${prefix}${name}`;
    if (!isKafkaTopicName(topic)) {
      // The variable to fix: the topic's own when it was named, else the prefix that was put before a default.
      if (own !== undefined)
        throw new ConfigError(
          variable,
          `must be a topic name Kafka accepts: ${TOPIC_NAME_RULE} (got "${topic}")`,
        );
      throw new ConfigError(
        'URS_TOPIC_PREFIX',
        `must make topic names Kafka accepts: ${TOPIC_NAME_RULE} (got "${topic}")`,
      );
    }
    topics[key] = topic;
  }
  return topics;
}

/** How the topics a service creates are laid out (topics that exist are left as they are). */
export interface TopicLayout {
  /** Partitions of the pipeline topics. Env `URS_TOPIC_PARTITIONS`, default 6. */
  partitions: number;
  /**
   * Replicas of each. Env `URS_TOPIC_REPLICATION_FACTOR`, default -1: the broker's own
   * `default.replication.factor`, so a production cluster's rule applies and a single local broker still works.
   */
  replicationFactor: number;
}

export function topicLayout(env: Env): TopicLayout {
  const replicationFactor = readInt(env, 'URS_TOPIC_REPLICATION_FACTOR', { fallback: -1, min: -1, max: 32 });
  if (replicationFactor === 0)
    throw new ConfigError(
      'URS_TOPIC_REPLICATION_FACTOR',
      "must be -1 (the broker's default) or 1–32 (got 0)",
    );
  return {
    partitions: readInt(env, 'URS_TOPIC_PARTITIONS', { fallback: 6, min: 1, max: 1000 }),
    replicationFactor,
  };
}

import { readInt, readString, type Env } from '@urs/config';

export interface ScorerConfig {
  /** Consumer group of `urs.devices-enriched`. Env `URS_CONSUMER_GROUP`, default `{URS_TOPIC_PREFIX}urs.scorer`. */
  groupId: string;
  /**
   * How long the group waits for a silent member before its partitions move, ms. Env
   * `URS_CONSUMER_SESSION_TIMEOUT_MS`, default 30000 (the broker's minimum is usually 6000).
   */
  sessionTimeoutMs: number;
  /** Partitions handled at once (tenants of different partitions never queue behind each other). Env `URS_PARTITIONS_CONCURRENCY`, default 6. */
  partitionsConcurrency: number;
  /**
   * Consumer group reading `urs.tenants` from the beginning: one per process, so every replica holds
   * every profile. Env `URS_PROFILES_GROUP`, default `{groupId}.profiles.{URS_INSTANCE_ID or pid}`.
   */
  profilesGroupId: string;
}

export function scorerConfig(env: Env): ScorerConfig {
  const topicPrefix = readString(env, 'URS_TOPIC_PREFIX', '');
  const groupId = readString(env, 'URS_CONSUMER_GROUP', `${topicPrefix}urs.scorer`);
  const instance = readString(env, 'URS_INSTANCE_ID', `${process.pid}-${Date.now().toString(36)}`);
  return {
    groupId,
    sessionTimeoutMs: readInt(env, 'URS_CONSUMER_SESSION_TIMEOUT_MS', { fallback: 30_000, min: 1_000 }),
    partitionsConcurrency: readInt(env, 'URS_PARTITIONS_CONCURRENCY', { fallback: 6, min: 1, max: 100 }),
    profilesGroupId: readString(env, 'URS_PROFILES_GROUP', `${groupId}.profiles.${instance}`),
  };
}

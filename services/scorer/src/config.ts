import { consumerSettings, readString, type ConsumerSettings, type Env } from '@urs/config';

/**
 * The scorer's own settings, and how its group takes in `urs.devices-enriched` (`consumerSettings`: group
 * `{URS_TOPIC_PREFIX}urs.scorer`, 6 partitions at once by default, so tenants of different partitions
 * never queue behind each other).
 */
export interface ScorerConfig extends ConsumerSettings {
  /**
   * Consumer group reading `urs.tenants` from the beginning: one per process, so every replica holds
   * every profile. Env `URS_PROFILES_GROUP`, default `{groupId}.profiles.{URS_INSTANCE_ID or pid}`.
   */
  profilesGroupId: string;
}

export function scorerConfig(env: Env): ScorerConfig {
  const consumer = consumerSettings(env, 'scorer', 6);
  const instance = readString(env, 'URS_INSTANCE_ID', `${process.pid}-${Date.now().toString(36)}`);
  return {
    ...consumer,
    profilesGroupId: readString(env, 'URS_PROFILES_GROUP', `${consumer.groupId}.profiles.${instance}`),
  };
}

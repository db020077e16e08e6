import { randomBytes } from 'node:crypto';
import { consumerSettings, readInt, readString, type ConsumerSettings, type Env } from '@urs/config';

/**
 * The scorer's own settings, and how its group takes in `urs.devices-enriched` (`consumerSettings`: group
 * `{URS_TOPIC_PREFIX}urs.scorer`, 6 partitions at once by default, so tenants of different partitions
 * never queue behind each other).
 */
export interface ScorerConfig extends ConsumerSettings {
  /**
   * Consumer group reading `urs.tenants` from the beginning: one per process, so every replica holds
   * every profile. `{URS_PROFILES_GROUP}.{URS_INSTANCE_ID}-{random}`; `URS_PROFILES_GROUP` defaults to
   * `{groupId}.profiles`, `URS_INSTANCE_ID` to `scorer-{pid}`. The random part is always appended: two
   * replicas given the same instance id (one env for every container, whose pid is often 1) or the same
   * `URS_PROFILES_GROUP` would otherwise join one group and split the profiles between them, each then
   * scoring the tenants it was not assigned with a stale profile or none.
   */
  profilesGroupId: string;
  /**
   * Longest wait at start for `urs.tenants` to be read to the end it had then, in ms, after which the profiles
   * read so far are used (a record whose dead letter cannot be written holds the reader; the batches held for
   * a profile not read yet are then scored). Env `URS_SCORER_CATCHUP_TIMEOUT_MS`, default 30000, as the poller's
   * `URS_POLL_CATCHUP_TIMEOUT_MS`.
   */
  catchUpTimeoutMs: number;
}

/** `suffix`: the part that makes this process's profiles group its own; random unless a test fixes it. */
export function scorerConfig(env: Env, suffix: string = randomBytes(4).toString('hex')): ScorerConfig {
  const consumer = consumerSettings(env, 'scorer', 6);
  const instance = readString(env, 'URS_INSTANCE_ID', `scorer-${process.pid}`);
  const profilesGroup = readString(env, 'URS_PROFILES_GROUP', `${consumer.groupId}.profiles`);
  return {
    ...consumer,
    profilesGroupId: `${profilesGroup}.${instance}-${suffix}`,
    catchUpTimeoutMs: readInt(env, 'URS_SCORER_CATCHUP_TIMEOUT_MS', { fallback: 30_000, min: 0 }),
  };
}

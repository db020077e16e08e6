import { readInt, readString, type Env } from '@urs/config';

export interface PublisherConfig {
  /** Consumer group of `urs.device-scores`. Env `URS_CONSUMER_GROUP`, default `{URS_TOPIC_PREFIX}urs.publisher`. */
  groupId: string;
  /**
   * How long the group waits for a silent member before its partitions move, ms. Env
   * `URS_CONSUMER_SESSION_TIMEOUT_MS`, default 30000 (the broker's minimum is usually 6000).
   */
  sessionTimeoutMs: number;
  /** Partitions handled at once (tenants of different partitions never queue behind each other). Env `URS_PARTITIONS_CONCURRENCY`, default 6. */
  partitionsConcurrency: number;
  /** Every Nth completed cycle of a tenant publishes every device, changed or not. Env `URS_SNAPSHOT_EVERY_CYCLES`, default 24. */
  snapshotEveryCycles: number;
  /** A device absent from this many consecutive completed cycles is tombstoned. Env `URS_TOMBSTONE_AFTER_CYCLES`, default 3. */
  tombstoneAfterCycles: number;
  /** How often cycles past their deadline are looked for, ms. Env `URS_DEADLINE_SWEEP_MS`, default 2000. */
  deadlineSweepMs: number;
}

export function publisherConfig(env: Env): PublisherConfig {
  const topicPrefix = readString(env, 'URS_TOPIC_PREFIX', '');
  return {
    groupId: readString(env, 'URS_CONSUMER_GROUP', `${topicPrefix}urs.publisher`),
    sessionTimeoutMs: readInt(env, 'URS_CONSUMER_SESSION_TIMEOUT_MS', { fallback: 30_000, min: 1_000 }),
    partitionsConcurrency: readInt(env, 'URS_PARTITIONS_CONCURRENCY', { fallback: 6, min: 1, max: 100 }),
    snapshotEveryCycles: readInt(env, 'URS_SNAPSHOT_EVERY_CYCLES', { fallback: 24, min: 1 }),
    tombstoneAfterCycles: readInt(env, 'URS_TOMBSTONE_AFTER_CYCLES', { fallback: 3, min: 1 }),
    deadlineSweepMs: readInt(env, 'URS_DEADLINE_SWEEP_MS', { fallback: 2_000, min: 100 }),
  };
}

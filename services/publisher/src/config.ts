import { ConfigError, consumerSettings, readInt, type ConsumerSettings, type Env } from '@urs/config';

/**
 * The publisher's own settings, and how its group takes in `urs.device-scores` and `urs.tenants` (`consumerSettings`: group
 * `{URS_TOPIC_PREFIX}urs.publisher`, 6 partitions at once by default, so tenants of different partitions
 * never queue behind each other).
 */
export interface PublisherConfig extends ConsumerSettings {
  /** Every Nth completed cycle of a tenant publishes every device, changed or not. Env `URS_SNAPSHOT_EVERY_CYCLES`, default 24. */
  snapshotEveryCycles: number;
  /** A device absent from this many consecutive completed cycles is tombstoned. Env `URS_TOMBSTONE_AFTER_CYCLES`, default 3. */
  tombstoneAfterCycles: number;
  /**
   * A completed cycle that would tombstone at least `tombstoneHoldMinDevices` and more than this share of a
   * tenant's devices at once (percent) tombstones only those absent for `tombstoneHoldCycles`: a listing that
   * lost most of a fleet (an empty answer, a changed app scope) does not take it from VMS. Env
   * `URS_TOMBSTONE_MAX_SHARE_PERCENT`, default 50; 100 turns the brake off.
   */
  tombstoneMaxSharePercent: number;
  /** The fewest devices the brake holds (a small fleet's retired devices go as usual). Env `URS_TOMBSTONE_HOLD_MIN_DEVICES`, default 10. */
  tombstoneHoldMinDevices: number;
  /**
   * Completed cycles a held device stays absent before its tombstone is sent anyway. Env
   * `URS_TOMBSTONE_HOLD_CYCLES`, default 24; more than `tombstoneAfterCycles`.
   */
  tombstoneHoldCycles: number;
  /** How often cycles past their deadline are looked for, ms. Env `URS_DEADLINE_SWEEP_MS`, default 2000. */
  deadlineSweepMs: number;
  /**
   * How often the publisher checks that Redis still holds its record of what VMS holds (a wiped Redis is
   * refilled from `vms.risk-scores`), ms. Env `URS_REBUILD_CHECK_MS`, default 5000.
   */
  rebuildCheckMs: number;
  /**
   * How long one read of `vms.risk-scores` to its end may take before it is given up and tried again, ms.
   * Env `URS_REBUILD_READ_TIMEOUT_MS`, default 600000.
   */
  rebuildReadTimeoutMs: number;
}

export function publisherConfig(env: Env): PublisherConfig {
  const tombstoneAfterCycles = readInt(env, 'URS_TOMBSTONE_AFTER_CYCLES', { fallback: 3, min: 1 });
  const tombstoneHoldCycles = readInt(env, 'URS_TOMBSTONE_HOLD_CYCLES', { fallback: 24, min: 1 });
  // As many as URS_TOMBSTONE_AFTER_CYCLES would hold nothing: the brake would be off without saying so.
  if (tombstoneHoldCycles <= tombstoneAfterCycles)
    throw new ConfigError(
      'URS_TOMBSTONE_HOLD_CYCLES',
      `must be more than URS_TOMBSTONE_AFTER_CYCLES (${tombstoneAfterCycles}; got ${tombstoneHoldCycles}); URS_TOMBSTONE_MAX_SHARE_PERCENT=100 turns the hold off`,
    );
  return {
    ...consumerSettings(env, 'publisher', 6),
    snapshotEveryCycles: readInt(env, 'URS_SNAPSHOT_EVERY_CYCLES', { fallback: 24, min: 1 }),
    tombstoneAfterCycles,
    tombstoneMaxSharePercent: readInt(env, 'URS_TOMBSTONE_MAX_SHARE_PERCENT', {
      fallback: 50,
      min: 1,
      max: 100,
    }),
    tombstoneHoldMinDevices: readInt(env, 'URS_TOMBSTONE_HOLD_MIN_DEVICES', { fallback: 10, min: 1 }),
    tombstoneHoldCycles,
    deadlineSweepMs: readInt(env, 'URS_DEADLINE_SWEEP_MS', { fallback: 2_000, min: 100 }),
    rebuildCheckMs: readInt(env, 'URS_REBUILD_CHECK_MS', { fallback: 5_000, min: 100 }),
    rebuildReadTimeoutMs: readInt(env, 'URS_REBUILD_READ_TIMEOUT_MS', { fallback: 600_000, min: 1_000 }),
  };
}

import type { default as Redis } from 'ioredis';
import { UrsError } from '@urs/resilience';
import { OWNED_LUA, releaseOwnedKey, renewOwnedKey, TAKE_UNLESS_HELD } from './owned-key';
import { DELETED_BEFORE_LUA } from './tenant-deletion';
import { TOMBSTONE_MARKER_TTL_MS } from './tombstoned-devices';

/** What the last record of a device on `vms.risk-scores` says: held by VMS (`live`), or a tombstone. */
export interface VmsKeyState {
  deviceId: string;
  live: boolean;
  /** When that record was written (its timestamp, epoch ms); absent when not known. */
  at?: number;
}

/**
 * The rebuild of the publisher's record of what VMS holds (see `createPublishedRebuild`): the devices whose
 * last record on `vms.risk-scores` is not a tombstone, read back into the seen zset after Redis lost them.
 */
export interface PublishedRebuild {
  /** Whether the record was rebuilt from `vms.risk-scores` since Redis last came up without it. */
  isRebuilt(): Promise<boolean>;
  /**
   * Takes the right to rebuild for `ttlMs` for one rebuild, `token` (new for each): one rebuild at a time.
   * The token that has it takes it again. Refused once the marker is set: a replica that found it missing
   * just before another's rebuild set it does not read the topic a second time.
   */
  takeRebuild(token: string, ttlMs: number): Promise<boolean>;
  /** Holds it `ttlMs` longer; false when it lapsed (or another rebuild has it). */
  renewRebuild(token: string, ttlMs: number): Promise<boolean>;
  /** Gives it back (a rebuild that failed or stopped), if `token` still has it. */
  releaseRebuild(token: string): Promise<void>;
  /**
   * Writes what a stretch of the topic says of the tenant's devices, in the topic's order: a device whose
   * record VMS holds and the publisher does not know is added as seen in no cycle (`RESTORED_SEEN_AT`), so
   * the tenant's next completed cycles tombstone it unless they list it; a device whose later record is a
   * tombstone is taken out again, if this rebuild added it. A device the publisher knows keeps what it has
   * (a batch published since the wipe). A device whose last record is a tombstone written within
   * `TOMBSTONE_MARKER_TTL_MS`, and that the publisher does not know, gets its tombstone marker back
   * (`tombstonedKeyOf`), at the tombstone's time: a batch of an older cycle coming late or again does not
   * bring it back to VMS (the marker Redis lost held the tombstoning cycle's start, a little earlier: a cycle
   * started between the two is taken for an older one, and lists the device again one cycle later). Nothing
   * for a tenant deleted and not registered again (the
   * deletion's marker, `DELETED_BEFORE_LUA`): its devices must not come back. Returns the devices added, less
   * those taken out again; null for a deleted tenant. Writes only while `token` has the right to rebuild:
   * rejects with `REBUILD_LOST`, nothing written, once it lapsed (Redis wiped again, another rebuild took
   * over), so a rebuild that lost it never writes beside the next.
   */
  restore(token: string, tenantId: string, devices: VmsKeyState[]): Promise<number | null>;
  /** Sets the rebuild's marker and gives the right back; false, nothing set, when `token` lost it meanwhile. */
  markRebuilt(token: string, at: Date): Promise<boolean>;
}

/** The cycle start a restored device counts as last seen in: before any cycle, so absent from every one. */
export const RESTORED_SEEN_AT = 0;

// KEYS[1] seen zset, KEYS[2] deletion marker, KEYS[3] the tenant's record, KEYS[4] rebuild lock, KEYS[5]
// tombstoned zset; ARGV: the rebuild's token, the oldest tombstone time a marker is kept for (epoch ms), then
// deviceId, '1' (live) or '0' (a tombstone), the record's time ('' when not known), … Returns the devices
// added less those taken out, -1 for a deleted tenant, -2 when the token no longer holds the lock.
const RESTORE = `${DELETED_BEFORE_LUA}${OWNED_LUA}
if not owned(KEYS[4], ARGV[1]) then return -2 end
if deletedBefore(KEYS[2], KEYS[3]) == math.huge then return -1 end
local added = 0
local oldest = tonumber(ARGV[2])
local marked = false
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  if ARGV[i + 1] == '1' then
    added = added + redis.call('ZADD', KEYS[1], 'NX', '${RESTORED_SEEN_AT}', id)
  else
    if redis.call('ZSCORE', KEYS[1], id) == '${RESTORED_SEEN_AT}' then
      added = added - redis.call('ZREM', KEYS[1], id)
    end
    local at = tonumber(ARGV[i + 2])
    if at and at >= oldest and not redis.call('ZSCORE', KEYS[1], id) then
      redis.call('ZADD', KEYS[5], 'GT', at, id)
      marked = true
    end
  end
end
if marked then redis.call('PEXPIRE', KEYS[5], ${TOMBSTONE_MARKER_TTL_MS}) end
return added`;

// KEYS[1] rebuild lock, KEYS[2] marker; ARGV: token, ttl ms.
const TAKE_UNLESS_REBUILT = `
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end${TAKE_UNLESS_HELD}`;

// KEYS[1] rebuild lock, KEYS[2] marker; ARGV: token, time.
const MARK_REBUILT = `${OWNED_LUA}
if not owned(KEYS[1], ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1`;

/** Devices written per call of RESTORE. */
const RESTORE_SLICE = 1_000;

/** The keys a rebuild reads and writes (`createPublishedStore`). */
export interface RebuildKeys {
  /** The marker: set once the rebuild is done (string, the time). */
  rebuilt: string;
  /** The right to rebuild (string, the token of the rebuild that has it; PX). */
  lock: string;
  /** Devices by the start of the newest cycle they were in (zset). */
  seen: (tenantId: string) => string;
  /** The deletion marker (hash, see `createTenantDeletions`). */
  deleted: (tenantId: string) => string;
  /** The tenant's record in the tenant store (read only: its revision). */
  record: (tenantId: string) => string;
  /** Devices tombstoned by a completed cycle, by that cycle's start (zset, see `tombstonedKeyOf`). */
  tombstoned: (tenantId: string) => string;
}

/**
 * The published store's calls of a rebuild from `vms.risk-scores`, on its keys `keys`; `now` (epoch ms)
 * dates the tombstone markers that are restored (default `Date.now`).
 */
export function createPublishedRebuild(
  redis: Redis,
  keys: RebuildKeys,
  now: () => number = Date.now,
): PublishedRebuild {
  return {
    async isRebuilt() {
      return (await redis.exists(keys.rebuilt)) === 1;
    },
    async takeRebuild(token, ttlMs) {
      return (await redis.eval(TAKE_UNLESS_REBUILT, 2, keys.lock, keys.rebuilt, token, String(ttlMs))) === 1;
    },
    renewRebuild(token, ttlMs) {
      return renewOwnedKey(redis, keys.lock, token, ttlMs);
    },
    async releaseRebuild(token) {
      await releaseOwnedKey(redis, keys.lock, token);
    },
    async restore(token, tenantId, devices) {
      let added = 0;
      // A marker older than its TTL would have expired by now.
      const oldest = String(now() - TOMBSTONE_MARKER_TTL_MS);
      for (let first = 0; first < devices.length; first += RESTORE_SLICE) {
        const slice = devices.slice(first, first + RESTORE_SLICE);
        const result = Number(
          await redis.eval(
            RESTORE,
            5,
            keys.seen(tenantId),
            keys.deleted(tenantId),
            keys.record(tenantId),
            keys.lock,
            keys.tombstoned(tenantId),
            token,
            oldest,
            ...slice.flatMap((device) => [
              device.deviceId,
              device.live ? '1' : '0',
              device.at === undefined ? '' : String(device.at),
            ]),
          ),
        );
        if (result === -2)
          throw new UrsError(
            'REBUILD_LOST',
            'the right to rebuild lapsed: nothing more restored by this rebuild',
            {
              canRetry: true,
            },
          );
        if (result < 0) return null;
        added += result;
      }
      return added;
    },
    async markRebuilt(token, at) {
      return (await redis.eval(MARK_REBUILT, 2, keys.lock, keys.rebuilt, token, at.toISOString())) === 1;
    },
  };
}

import type { ChainableCommander, default as Redis } from 'ioredis';
import { OWNED_LUA } from './owned-key';
import { scoreStamp } from './scores';
import { isTombstonedSince, TOMBSTONED_SINCE_LUA, tombstonedKeyOf } from './tombstoned-devices';

/*
 * What the publisher last published of each device, and the cycle it was last seen in: written by
 * `PublishedStore.commit` (or in the cycle store's transaction, `commitIn`), read by `PublishedStore.changed`
 * and `get`.
 */

/** What was last published of one device, and when it was last seen in a cycle. */
export interface PublishedDevice {
  score: number;
  band: string;
  /** The digest of the published record (see `DeviceScoreRef.digest`); '' when not kept. */
  digest: string;
  /** Start (epoch ms) of the cycle whose score was published; half a millisecond later for a correction. */
  publishedCycleAt: number;
  /** Start (epoch ms) of the newest cycle the device was scored in. */
  seenCycleAt: number;
}

export interface DeviceScoreRef {
  deviceId: string;
  score: number;
  band: string;
  /**
   * A digest of what the device's record says besides its score and band (the identity VMS enforces on,
   * the explanation): a device whose digest changed is published again with the same score. Without `|`.
   */
  digest?: string;
}

export interface PublishOptions {
  /**
   * The scores are a correction of their cycle (a bulk cycle's devices scored again with its own export):
   * newer than the cycle's first scores, older than the next cycle's. A first batch of the cycle
   * delivered again after its correction then never publishes the score the correction replaced.
   */
  correction?: boolean;
}

// KEYS[1] published hash, KEYS[2] seen zset (deviceId by the start of the newest cycle it was in), KEYS[3]
// tombstoned zset (see tombstonedKeyOf: a device tombstoned by the batch's cycle or a newer one is left out);
// ARGV[1] cycle ms, ARGV[2] the scores' stamp (the cycle ms, half a millisecond later for a correction);
// then per device: id, score, band, digest. Owned (`commitScript(true)`): KEYS[4] the tenant's lease, ARGV[1]
// its holder, the other ARGV one place later; nothing written, 0 answered, once the lease is not the holder's.
// Values are "score|band|publishedCycleAt|seenCycleAt|digest" (band labels and digests contain no "|");
// publishedCycleAt is the stamp, so it may end in ".5". Values written before the digest was kept have
// four fields.
// Devices are read and written with one call per kind per slice of 200 (not one per device): the calls,
// not the bytes, are what a batch of 500 costs Redis.
const commitScript = (owned: boolean): string => `${TOMBSTONED_SINCE_LUA}${owned ? OWNED_LUA : ''}
${owned ? 'if not owned(KEYS[4], ARGV[1]) then return 0 end' : ''}
local o = ${owned ? 1 : 0}
local cycle = ARGV[o + 1]
local at = tonumber(cycle)
local stamp = tonumber(ARGV[o + 2])
local n = (#ARGV - o - 2) / 4
local slice = 200
local function ms(value)
  if value == math.floor(value) then return string.format('%d', value) end
  return string.format('%.1f', value)
end
for first = 1, n, slice do
  local last = math.min(n, first + slice - 1)
  local ids, seen = {}, {}
  for i = first, last do ids[#ids + 1] = ARGV[o + 3 + (i - 1) * 4] end
  local gone = tombstonedSince(KEYS[3], ids, stamp)
  local current = redis.call('HMGET', KEYS[1], unpack(ids))
  local values = {}
  for i = first, last do
    local base = o + 3 + (i - 1) * 4
    local id, score, band, digest = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
    local stored = current[i - first + 1]
    if not gone[i - first + 1] then
      local value
      if not stored then
        value = score .. '|' .. band .. '|' .. ms(stamp) .. '|' .. cycle .. '|' .. digest
      else
        local s, b, p, was, d = string.match(stored, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|?([^|]*)$')
        p = tonumber(p)
        was = tonumber(was)
        if was < at then was = at end
        if p <= stamp then s = score; b = band; p = stamp; d = digest end
        value = s .. '|' .. b .. '|' .. ms(p) .. '|' .. ms(was) .. '|' .. d
      end
      seen[#seen + 1] = cycle
      seen[#seen + 1] = id
      values[#values + 1] = id
      values[#values + 1] = value
    end
  end
  if #values > 0 then
    redis.call('ZADD', KEYS[2], 'GT', unpack(seen))
    redis.call('HSET', KEYS[1], unpack(values))
  end
end
return 1`;
const COMMIT = commitScript(false);
const COMMIT_IF_OWNED = commitScript(true);

/**
 * `PublishedStore.commit` added to a transaction, so the cycle store records a batch (`CycleStore.recordBatch`)
 * in the same step as its devices' published scores: a publisher stopped between the two would leave the
 * devices committed and the batch not, and the redelivery, finding nothing changed, would count none of the
 * records the first delivery produced in the cycle's summary. With `owner`, written only while that key holds
 * that token (the tenant's lease the batch holds; see OWNED_LUA).
 */
export function commitIn(
  transaction: ChainableCommander,
  prefix: string,
  tenantId: string,
  cycleAt: number,
  devices: DeviceScoreRef[],
  options: PublishOptions = {},
  owner?: { key: string; token: string },
): ChainableCommander {
  if (devices.length === 0) return transaction;
  const keysAndArgs = commitArgs(prefix, tenantId, cycleAt, devices, options);
  if (owner === undefined) return transaction.eval(COMMIT, 3, ...keysAndArgs);
  const [keys, args] = [keysAndArgs.slice(0, 3), keysAndArgs.slice(3)];
  return transaction.eval(COMMIT_IF_OWNED, 4, ...keys, owner.key, owner.token, ...args);
}

/** `PublishedStore.commit`: `commitIn` on its own. */
export async function commitOn(
  redis: Redis,
  prefix: string,
  tenantId: string,
  cycleAt: number,
  devices: DeviceScoreRef[],
  options: PublishOptions = {},
): Promise<void> {
  if (devices.length === 0) return;
  await redis.eval(COMMIT, 3, ...commitArgs(prefix, tenantId, cycleAt, devices, options));
}

/** COMMIT's keys and arguments. */
function commitArgs(
  prefix: string,
  tenantId: string,
  cycleAt: number,
  devices: DeviceScoreRef[],
  options: PublishOptions,
): string[] {
  return [
    publishedKeyOf(prefix, tenantId),
    seenKeyOf(prefix, tenantId),
    tombstonedKeyOf(prefix, tenantId),
    String(cycleAt),
    String(scoreStamp(cycleAt, options.correction)),
    ...devices.flatMap((device) => [device.deviceId, String(device.score), device.band, device.digest ?? '']),
  ];
}

export const publishedKeyOf = (prefix: string, tenantId: string): string => `${prefix}published:${tenantId}`;
export const seenKeyOf = (prefix: string, tenantId: string): string => `${prefix}published-seen:${tenantId}`;

export function decode(value: string | null | undefined): PublishedDevice | null {
  if (!value) return null;
  const [score, band, publishedCycleAt, seenCycleAt, digest] = value.split('|');
  return {
    score: Number(score),
    band: band ?? '',
    digest: digest ?? '',
    publishedCycleAt: Number(publishedCycleAt),
    seenCycleAt: Number(seenCycleAt),
  };
}

/**
 * The devices to publish (see `PublishedStore.changed`), given what was last published of each and when
 * each was tombstoned (`tombstonedAt`, see `tombstonedKeyOf`): never one tombstoned by the batch's cycle or
 * a newer one.
 */
export function stillToPublish(
  devices: DeviceScoreRef[],
  current: (string | null)[],
  tombstonedAt: (string | null)[],
  stamp: number,
): DeviceScoreRef[] {
  return devices.filter((device, index) => {
    if (isTombstonedSince(tombstonedAt[index], stamp)) return false;
    const last = decode(current[index]);
    if (last === null) return true;
    if (last.publishedCycleAt > stamp) return false;
    return last.score !== device.score || last.band !== device.band || last.digest !== (device.digest ?? '');
  });
}

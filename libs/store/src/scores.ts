import type Redis from 'ioredis';
import type { RedisConfig } from '@urs/config';
import type { Band, MissingReason, ScoredDevice } from '@urs/contracts';
import { REMOVE_DEVICES, REMOVE_TENANT } from './score-removal';
import { TENANT_GONE_LUA, tenantDeletionKey } from './tenant-deletion';
import { tenantRecordKey, tenantsRebuiltKey } from './tenants';
import { TOMBSTONED_SINCE_LUA, tombstonedKeyOf } from './tombstoned-devices';

/** A device's score as stored: the scored device and the cycle it belongs to. */
export interface StoredScore {
  tenantId: string;
  cycleId: string;
  /** The cycle's start: what orders two scores of the same device. */
  cycleStartedAt: string;
  collectedAt: string;
  scoredAt: string;
  device: ScoredDevice;
  /**
   * On a score stored by a correction (see `saveScores`): how the score it replaced counted in the cycle,
   * so that the same correction handled again can still say so.
   */
  replaced?: ReplacedScore;
}

/** How a device counted in its cycle's summary before a correction scored it again. */
export interface ReplacedScore {
  band: Band;
  incomplete: boolean;
}

/** One past score of a device: small, as every device keeps several. */
export interface ScoreHistoryEntry {
  cycleId: string;
  cycleStartedAt: string;
  scoredAt: string;
  score: number;
  band: Band;
  criticalScore: number;
  operationalScore: number;
  missing: string[];
  /**
   * Why each signal of `missing` is missing, as the score says it (`ScoredDevice.missingReasons`): absent
   * when nothing is missing, and from entries stored before history entries kept it (or of an older scorer).
   */
  missingReasons?: Record<string, MissingReason>;
}

/** A history entry as its cycle's hash holds it: the cycle's id and start are the hash's. */
type StoredHistoryEntry = Omit<ScoreHistoryEntry, 'cycleId' | 'cycleStartedAt'>;

export interface SaveScoresResult {
  /** Devices whose score was written (newer than the stored one). */
  written: number;
  /**
   * Devices left alone because the stored score is of the same or a newer cycle, or the device was
   * tombstoned since (redelivery, late message).
   */
  skipped: string[];
  /**
   * The stored scores of the skipped devices whose score is of the batch's own stamp (its cycle, a
   * correction's half millisecond included): the batch came again, and what the store holds is what the
   * cycle scored them, though the batch was scored again since (by a scorer holding a newer profile).
   * Present only when there are any; read in the same Redis step.
   */
  alreadyStored?: StoredScore[];
  /**
   * Set when nothing was stored because the batch is of a deleted tenant (see
   * ScoreStoreOptions.onlyRegisteredTenants).
   */
  tenantDeleted?: true;
  /**
   * Set when nothing was stored because the tenant's record is missing while the tenant store is not rebuilt
   * (`tenantsRebuiltKey`: Redis lost its data and the registrar has not written the records back yet): the
   * tenant may well be registered, and the batch must wait for the records, not be taken for a deleted
   * tenant's (see ScoreStoreOptions.onlyRegisteredTenants).
   */
  tenantsNotRebuilt?: true;
}

export interface ListScoresOptions {
  band?: Band;
  /** Most results returned. Default 1000. */
  limit?: number;
  /** Results skipped first (device ids are sorted). Default 0. */
  offset?: number;
}

export interface ScoreStore {
  /**
   * Stores each device's score unless the stored one is of the same or a newer cycle (compared by
   * `cycleStartedAt`), or the publisher tombstoned the device at the completion of this cycle or a newer
   * one (`tombstonedKeyOf`: its score was removed then, and a late batch would store it again), and adds it
   * to its cycle's history. Idempotent: saving the same batch again changes nothing, and answers the
   * scores stored the first time (`alreadyStored`). `deviceJson`, when the caller has it, is each device's
   * `JSON.stringify` (in the order of `devices`), as text or UTF-8 bytes: the stored record is built around
   * it instead of serialising the device again. A `correction` (devices of the cycle scored again with its
   * own bulk export, see the scorer) is newer than the cycle's first scores and older than the next cycle's,
   * and keeps with each score what it replaced (`replaced`, in the order of `devices`).
   */
  saveScores(
    tenantId: string,
    cycle: {
      cycleId: string;
      cycleStartedAt: string;
      collectedAt: string;
      scoredAt: string;
      correction?: boolean;
    },
    devices: ScoredDevice[],
    deviceJson?: readonly (string | Buffer)[],
    replaced?: readonly (ReplacedScore | undefined)[],
  ): Promise<SaveScoresResult>;
  getDeviceScore(tenantId: string, deviceId: string): Promise<StoredScore | null>;
  /** Latest scores of these devices; devices without one are left out. */
  getDeviceScores(tenantId: string, deviceIds: string[]): Promise<StoredScore[]>;
  /** Latest scores of a tenant's devices, sorted by device id, optionally of one band. */
  listDeviceScores(
    tenantId: string,
    options?: ListScoresOptions,
  ): Promise<{ total: number; items: StoredScore[] }>;
  /** The device's scores in the tenant's last cycles (at most the history length), newest first. */
  history(tenantId: string, deviceId: string): Promise<ScoreHistoryEntry[]>;
  /**
   * Forgets devices (gone for good): their score, band and history. With `tombstonedAt`, the start (epoch
   * ms) of the completed cycle that tombstoned them, only what is of that cycle or an older one: a newer
   * cycle that listed a device again may have stored its score before the older cycle completed, and its
   * score and history entries stay (the save refuses the others by the same rule, see `tombstonedKeyOf`).
   */
  remove(tenantId: string, deviceIds: string[], tombstonedAt?: number): Promise<void>;
  /**
   * Forgets what a deleted tenant left, once the publisher has recorded its deletion (its marker, see
   * `tenantDeletionKey`): every score, band and history of its devices, published or not, and its cycles;
   * once it is registered again, only those of cycles that started before the marker's cut, the one the
   * save refuses batches by (`DELETED_BEFORE_LUA`). Read and removed in one Redis step with the checks of
   * `deletion`. Resolves false when a newer record kept the scores from the deletion on.
   */
  removeTenant(tenantId: string, deletion?: TenantScoresRemoval): Promise<boolean>;
}

/** Which of a deleted tenant's scores `removeTenant` removes. */
export interface TenantScoresRemoval {
  /**
   * The deletion's revision, for a marker that does not keep one: a record of the tenant with a newer one
   * is a registration after the deletion the marker may not know of yet, and only the cycles that started
   * before the marker's `deletedAt` go (nothing without a marker).
   */
  deletedRevision?: number;
  /**
   * Epoch ms: only the scores and cycles that started before it go, whatever the marker and the record
   * say (a deletion the tenant was registered again after, its time).
   */
  startedBefore?: number;
}

export interface ScoreStoreOptions {
  /** Scores kept per device in its history. Default 10. */
  historyLength?: number;
  /** A cycle's history (and the list of cycles) expires this long after its last write, in milliseconds. Default 30 days. */
  historyTtlMs?: number;
  /**
   * Store no score of a deleted tenant (`tenantDeleted`): its record gone from the tenant store, or its
   * cycle one the publisher's deletion marker says is of a deleted tenant. Checked in the same Redis step
   * as the write: the publisher removes a deleted tenant's scores once, and a batch still on its way
   * stored after that would stay for ever. The marker closes the window the record leaves open (the
   * registrar removes it just after the tombstone goes out). A record missing while the registrar's
   * `tenants-rebuilt` marker is missing too (Redis wiped, not rebuilt yet) is no deletion: nothing is stored
   * and the answer says so (`tenantsNotRebuilt`), for the caller to try again. Default false; the deployment's store
   * (`scoreStoreFor`) sets it.
   */
  onlyRegisteredTenants?: boolean;
}

// KEYS[1] scores hash (deviceId → json), KEYS[2] stamps hash (deviceId → cycle start ms),
// KEYS[3] bands hash (deviceId → band), KEYS[4] the tenant's history cycles (sorted set: cycle id by start
// ms), KEYS[5] this cycle's history hash (deviceId → entry json), KEYS[6] the tenant's tombstoned devices
// (zset, see tombstonedKeyOf: a device tombstoned by this cycle or a newer one is skipped).
// With onlyRegisteredTenants, KEYS[7] the tenant's record hash, KEYS[8] its deletion marker and KEYS[9] the
// registrar's rebuild marker: the script writes nothing, and answers a third element, `tenantGone`'s answer
// when not 0 (1: the cycle is of a deleted tenant; 2: the record is missing and the records are not rebuilt).
// ARGV[1] stamp, ARGV[2] history length, ARGV[3] history ttl ms, ARGV[4] cycle id, then per device: id,
// band, json, history entry json. The stamp compare and the writes happen in one script, so two writers of
// different cycles never interleave; an equal stamp is a redelivery and is skipped, and the script answers
// the stored records of those devices (fourth element; the third is 0), read with one more call per slice
// that has any: a batch seen for the first time pays nothing for it. The hashes are read and written with
// one call each per slice of devices (not one per device): the calls, not the bytes, are what a batch of
// 500 costs Redis (a history list per device took three calls per device, half the script's time). Only
// the last `history length` cycles keep a history hash: the script answers the skipped devices and the
// cycles it dropped from the set, whose hashes the caller deletes. A late batch of a cycle older than those
// writes no history.
const SAVE_IF_NEWER = `${TENANT_GONE_LUA}${TOMBSTONED_SINCE_LUA}
local stamp = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local n = (#ARGV - 4) / 4
if #KEYS > 6 then
  local gone = tenantGone(KEYS[8], KEYS[7], KEYS[9], stamp)
  if gone > 0 then return {{}, {}, gone} end
end
redis.call('ZADD', KEYS[4], stamp, ARGV[4])
local recent = redis.call('ZREVRANK', KEYS[4], ARGV[4]) < keep
local dropped = {}
if redis.call('ZCARD', KEYS[4]) > keep then
  dropped = redis.call('ZRANGE', KEYS[4], 0, -(keep + 1))
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(keep + 1))
end
redis.call('PEXPIRE', KEYS[4], ARGV[3])
local skipped, stored = {}, {}
local slice = 200
for first = 1, n, slice do
  local last = math.min(n, first + slice - 1)
  local ids = {}
  for i = first, last do ids[#ids + 1] = ARGV[4 + (i - 1) * 4 + 1] end
  local current = redis.call('HMGET', KEYS[2], unpack(ids))
  local gone = tombstonedSince(KEYS[6], ids, stamp)
  local scores, stamps, bands, history, again = {}, {}, {}, {}, {}
  for i = first, last do
    local at = 4 + (i - 1) * 4
    local id = ARGV[at + 1]
    local was = tonumber(current[i - first + 1] or '-1')
    if gone[i - first + 1] or was >= stamp then
      table.insert(skipped, id)
      if was == stamp and not gone[i - first + 1] then again[#again + 1] = id end
    else
      scores[#scores + 1] = id
      scores[#scores + 1] = ARGV[at + 3]
      stamps[#stamps + 1] = id
      stamps[#stamps + 1] = ARGV[1]
      bands[#bands + 1] = id
      bands[#bands + 1] = ARGV[at + 2]
      history[#history + 1] = id
      history[#history + 1] = ARGV[at + 4]
    end
  end
  if #scores > 0 then
    redis.call('HSET', KEYS[1], unpack(scores))
    redis.call('HSET', KEYS[2], unpack(stamps))
    redis.call('HSET', KEYS[3], unpack(bands))
    if recent then
      redis.call('HSET', KEYS[5], unpack(history))
      redis.call('PEXPIRE', KEYS[5], ARGV[3])
    end
  end
  if #again > 0 then
    for _, json in ipairs(redis.call('HMGET', KEYS[1], unpack(again))) do
      if json then stored[#stored + 1] = json end
    end
  end
end
return {skipped, dropped, 0, stored}`;

const CLOSE_BRACE = Buffer.from('}');

/**
 * What orders two scores of a device: their cycle's start (epoch ms), half a millisecond later for a
 * correction of that cycle (cycles start whole milliseconds apart, so it falls between them). The score
 * store and the published store order by it alike.
 */
export function scoreStamp(cycleAt: number, correction: boolean | undefined): number {
  return cycleAt + (correction ? 0.5 : 0);
}

/**
 * A tenant's score stamps hash (deviceId → `scoreStamp` of its stored score): every device the score store holds
 * a score of. The publisher's deletion of the tenant reads it (see TenantDeletions.markDeleted).
 */
export function scoreStampsKey(prefix: string, tenantId: string): string {
  return `${prefix}score-stamps:${tenantId}`;
}

/**
 * Latest score per device and a short history, under `{prefix}scores:{tenantId}` (hash of JSON),
 * `{prefix}score-stamps:{tenantId}`, `{prefix}score-bands:{tenantId}`, and for the history the tenant's
 * last cycles `{prefix}score-cycles:{tenantId}` (sorted set by start) with one hash per cycle
 * `{prefix}score-cycle-history:{tenantId}:{cycleId}` (deviceId → compact entry: a full explanation per
 * past cycle would cost ~1.5 KB × history length per device). A device's history is its entries in the
 * tenant's last `historyLength` cycles, newest first. An entry leaves out what its cycle's hash and the
 * sorted set already say (the cycle's id and start), about half of each entry: a 100,000-device cycle's
 * hash took 32.4 MB of Redis with them, 22.7 MB without.
 */
export function createScoreStore(redis: Redis, prefix: string, options: ScoreStoreOptions = {}): ScoreStore {
  const historyLength = options.historyLength ?? 10;
  const historyTtlMs = options.historyTtlMs ?? 30 * 24 * 60 * 60 * 1000;
  const onlyRegistered = options.onlyRegisteredTenants ?? false;
  const scoresKey = (tenantId: string): string => `${prefix}scores:${tenantId}`;
  const stampsKey = (tenantId: string): string => scoreStampsKey(prefix, tenantId);
  const bandsKey = (tenantId: string): string => `${prefix}score-bands:${tenantId}`;
  const cyclesKey = (tenantId: string): string => `${prefix}score-cycles:${tenantId}`;
  const cycleHistoryKey = (tenantId: string, cycleId: string): string =>
    `${prefix}score-cycle-history:${tenantId}:${cycleId}`;
  const parse = (json: string | null): StoredScore | null =>
    json === null ? null : (JSON.parse(json) as StoredScore);

  return {
    async saveScores(tenantId, cycle, devices, deviceJson, replaced) {
      if (devices.length === 0) return { written: 0, skipped: [] };
      const { correction, ...storedCycle } = cycle;
      const stamp = scoreStamp(Date.parse(cycle.cycleStartedAt), correction);
      const keys = [
        scoresKey(tenantId),
        stampsKey(tenantId),
        bandsKey(tenantId),
        cyclesKey(tenantId),
        cycleHistoryKey(tenantId, cycle.cycleId),
        tombstonedKeyOf(prefix, tenantId),
        ...(onlyRegistered
          ? [
              tenantRecordKey(prefix, tenantId),
              tenantDeletionKey(prefix, tenantId),
              tenantsRebuiltKey(prefix),
            ]
          : []),
      ];
      const args: (string | Buffer)[] = [
        String(stamp),
        String(historyLength),
        String(historyTtlMs),
        cycle.cycleId,
      ];
      // A StoredScore's JSON is the same for every device up to its device: `{"tenantId":…,"device":`.
      // The stored records go as bytes: with a Buffer argument ioredis writes the command into one buffer
      // sized for it, instead of joining ~1 MB of text into one string (a large V8 object on fresh pages,
      // then encoded again), which took most of the scorer's time in this call.
      const head = Buffer.from(`${JSON.stringify({ tenantId, ...storedCycle }).slice(0, -1)},"device":`);
      for (const [index, device] of devices.entries()) {
        const entry: StoredHistoryEntry = {
          scoredAt: cycle.scoredAt,
          score: device.score,
          band: device.band,
          criticalScore: device.criticalScore,
          operationalScore: device.operationalScore,
          missing: device.missing,
          // Only a device missing a signal has reasons, most have none: nothing is written for them.
          ...(device.missingReasons !== undefined ? { missingReasons: device.missingReasons } : {}),
        };
        const json = deviceJson?.[index] ?? JSON.stringify(device);
        const before = replaced?.[index];
        const stored = Buffer.concat([
          head,
          typeof json === 'string' ? Buffer.from(json) : json,
          before ? Buffer.from(`,"replaced":${JSON.stringify(before)}}`) : CLOSE_BRACE,
        ]);
        args.push(device.deviceId, device.band, stored, JSON.stringify(entry));
      }
      const [skipped, dropped, deleted, again] = (await redis.eval(
        SAVE_IF_NEWER,
        keys.length,
        ...keys,
        ...args,
      )) as [string[], string[], number, string[]?];
      if (deleted === 1) return { written: 0, skipped: [], tenantDeleted: true };
      if (deleted === 2) return { written: 0, skipped: [], tenantsNotRebuilt: true };
      if (dropped.length > 0) await redis.unlink(...dropped.map((id) => cycleHistoryKey(tenantId, id)));
      const written = devices.length - skipped.length;
      if (!again?.length) return { written, skipped };
      return { written, skipped, alreadyStored: again.map((json) => JSON.parse(json) as StoredScore) };
    },
    async getDeviceScore(tenantId, deviceId) {
      return parse(await redis.hget(scoresKey(tenantId), deviceId));
    },
    async getDeviceScores(tenantId, deviceIds) {
      const items: StoredScore[] = [];
      // Slices keep each HMGET small for large fleets.
      for (let start = 0; start < deviceIds.length; start += 1000) {
        const values = await redis.hmget(scoresKey(tenantId), ...deviceIds.slice(start, start + 1000));
        for (const value of values) {
          const item = parse(value);
          if (item) items.push(item);
        }
      }
      return items;
    },
    async listDeviceScores(tenantId, listOptions = {}) {
      const limit = listOptions.limit ?? 1000;
      const offset = listOptions.offset ?? 0;
      const bands = await redis.hgetall(bandsKey(tenantId));
      const ids = Object.keys(bands)
        .filter((id) => listOptions.band === undefined || bands[id] === listOptions.band)
        .sort();
      const page = ids.slice(offset, offset + limit);
      if (page.length === 0) return { total: ids.length, items: [] };
      const values = await redis.hmget(scoresKey(tenantId), ...page);
      const items = values.map(parse).filter((item): item is StoredScore => item !== null);
      return { total: ids.length, items };
    },
    async history(tenantId, deviceId) {
      // Cycle id, start (ms; a correction's stamp is half a millisecond later), …
      const cycles = await redis.zrevrange(cyclesKey(tenantId), 0, historyLength - 1, 'WITHSCORES');
      if (cycles.length === 0) return [];
      const reads = redis.pipeline();
      for (let i = 0; i < cycles.length; i += 2)
        reads.hget(cycleHistoryKey(tenantId, cycles[i] as string), deviceId);
      const entries: ScoreHistoryEntry[] = [];
      for (const [index, [error, json]] of ((await reads.exec()) ?? []).entries()) {
        if (error) throw error;
        if (typeof json !== 'string') continue;
        const cycleId = cycles[index * 2] as string;
        const cycleStartedAt = new Date(Math.floor(Number(cycles[index * 2 + 1]))).toISOString();
        // Entries stored before they were made compact carry the cycle's id and start themselves.
        entries.push({ cycleId, cycleStartedAt, ...(JSON.parse(json) as StoredHistoryEntry) });
      }
      return entries;
    },
    async remove(tenantId, deviceIds, tombstonedAt) {
      if (deviceIds.length === 0) return;
      const cycles = await redis.zrange(cyclesKey(tenantId), 0, -1);
      const keys = [
        scoresKey(tenantId),
        stampsKey(tenantId),
        bandsKey(tenantId),
        cyclesKey(tenantId),
        ...cycles.map((cycleId) => cycleHistoryKey(tenantId, cycleId)),
      ];
      await redis.eval(
        REMOVE_DEVICES,
        keys.length,
        ...keys,
        tombstonedAt === undefined ? '' : String(tombstonedAt),
        String(cycles.length),
        ...cycles,
        ...deviceIds,
      );
    },
    async removeTenant(tenantId, deletion = {}) {
      const cycles = await redis.zrange(cyclesKey(tenantId), 0, -1);
      const keys = [
        scoresKey(tenantId),
        stampsKey(tenantId),
        bandsKey(tenantId),
        cyclesKey(tenantId),
        tenantRecordKey(prefix, tenantId),
        tenantDeletionKey(prefix, tenantId),
        ...cycles.map((cycleId) => cycleHistoryKey(tenantId, cycleId)),
      ];
      const removed = await redis.eval(
        REMOVE_TENANT,
        keys.length,
        ...keys,
        String(deletion.deletedRevision ?? 0),
        deletion.startedBefore === undefined ? '' : String(deletion.startedBefore),
        ...cycles,
      );
      return removed === 1;
    },
  };
}

/**
 * The deployment's score store, as every service that keeps or reads scores opens it: under the key prefix,
 * with `URS_SCORE_HISTORY_CYCLES` cycles of history, so what the scorer keeps and what the registrar's API
 * answers agree, and no score stored for a deleted tenant (`onlyRegisteredTenants`).
 */
export function scoreStoreFor(
  redis: Redis,
  config: Pick<RedisConfig, 'keyPrefix' | 'scoreHistoryCycles'>,
): ScoreStore {
  return createScoreStore(redis, config.keyPrefix, {
    historyLength: config.scoreHistoryCycles,
    onlyRegisteredTenants: true,
  });
}

import type { ChainableCommander, default as Redis } from 'ioredis';
import { releaseOwnedKey, renewOwnedKey, takeOwnedKey, takeOwnedKeyIn } from './owned-key';
import { scoreStamp } from './scores';

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

/**
 * One publisher replica's hold on a tenant: while it lasts, no other replica records a batch of the tenant
 * or sends one of its sweep's summaries. A replica's own work on the tenant is ordered by its queue; the
 * lease orders it against the other replicas' (their deadline sweeps, a batch handled twice across a
 * rebalance).
 */
export interface TenantLease {
  tenantId: string;
  /** The replica's id: a replica that holds the lease already takes it again. */
  holder: string;
  /** How long the lease lasts unless renewed or given back, in milliseconds. */
  ttlMs: number;
}

export interface PublishedStore {
  /**
   * Which of these devices (scored in the cycle that started at `cycleAt`, epoch ms) must be published:
   * never published, or a score, band or digest other than the last published one. A device whose last
   * published score is of a newer cycle is never returned (a late or redelivered batch). Read once the
   * tenant's lease is taken (`takeTenantLease`), in the same round trip: the batch holds it until
   * `CycleStore.recordBatch` gives it back. Null, nothing read or taken, while another replica holds it;
   * 'deleted', the lease given back, when the cycle is of a deleted tenant (`ofDeletedTenant`).
   * Call `commit` once the records are on the topic.
   */
  changed(
    lease: TenantLease,
    cycleAt: number,
    devices: DeviceScoreRef[],
    options?: PublishOptions,
  ): Promise<DeviceScoreRef[] | 'deleted' | null>;
  /** Records the devices as seen in the cycle and, unless a newer one is recorded, their published score. */
  commit(
    tenantId: string,
    cycleAt: number,
    devices: DeviceScoreRef[],
    options?: PublishOptions,
  ): Promise<void>;
  /**
   * Counts a completed cycle once (a repeated call answers the same sequence) and lists the devices
   * not seen in any of the last `absentCycles` completed cycles: the ones to tombstone. `tombstones` is how
   * many the first call listed, kept with the sequence: a repeat (the summary's send failed after the
   * tombstones went out and their devices were forgotten) lists none again, and still counts them.
   */
  completeCycle(
    tenantId: string,
    cycleId: string,
    cycleAt: number,
    absentCycles: number,
  ): Promise<{ sequence: number; gone: string[]; tombstones: number }>;
  /** Devices seen in the cycle that started at `cycleAt`. */
  seenIn(tenantId: string, cycleAt: number): Promise<string[]>;
  /** Forgets devices (after their tombstone was published). */
  forget(tenantId: string, deviceIds: string[]): Promise<void>;
  /**
   * Records that the tenant was deleted at `deletedAt` (epoch ms) and lists its devices to tombstone: every
   * device published and not tombstoned yet. From then on the tenant's cycles are of a deleted tenant
   * (`ofDeletedTenant`) until it is registered again (`registeredAgain`). A deletion older than a
   * registration already recorded (delivered again, or read again from the topic's beginning) lists only
   * the devices last seen in a cycle that started before that registration.
   */
  markDeleted(tenantId: string, deletedAt: number): Promise<string[]>;
  /**
   * Forgets what is left of a deleted tenant once its devices' tombstones are out (`forget`): its completed
   * cycles that started before the cutoff `markDeleted` used, and their numbering once none is left.
   */
  forgetDeleted(tenantId: string): Promise<void>;
  /**
   * A record of the tenant at `registeredAt` (epoch ms): if it was deleted before, its cycles that start
   * from then on are its own again. Nothing to do for a tenant never deleted.
   */
  registeredAgain(tenantId: string, registeredAt: number): Promise<void>;
  /**
   * Whether the cycle that started at `cycleAt` (epoch ms) is of a deleted tenant: the tenant was deleted
   * and not registered again before the cycle started. Its batches and summary are not published.
   */
  ofDeletedTenant(tenantId: string, cycleAt: number): Promise<boolean>;
  get(tenantId: string, deviceId: string): Promise<PublishedDevice | null>;
  /**
   * Takes the right to send a cycle's summary for `ttlMs`. True for one caller at a time; false once the
   * summary was sent. The cycle owes its summary from its claim (`CycleStore.claimPublication`) on.
   */
  lockSummary(tenantId: string, cycleId: string, ttlMs: number): Promise<boolean>;
  /** Holds the summary lock `ttlMs` longer (a snapshot of a large fleet outlasts it); false when it lapsed. */
  renewSummaryLock(tenantId: string, cycleId: string, ttlMs: number): Promise<boolean>;
  /** Gives the summary lock back after a failed send, so a retry need not wait for it to lapse. */
  unlockSummary(tenantId: string, cycleId: string): Promise<void>;
  /** The summary is on the topic: the cycle owes nothing any more. */
  summarySent(tenantId: string, cycleId: string): Promise<void>;
  /** Takes the tenant's lease for `lease.ttlMs`; false while another replica holds it. */
  takeTenantLease(lease: TenantLease): Promise<boolean>;
  /** Holds the tenant's lease `lease.ttlMs` longer; false when it lapsed. */
  renewTenantLease(lease: TenantLease): Promise<boolean>;
  /** Gives the tenant's lease back, if this holder still has it. */
  releaseTenantLease(lease: TenantLease): Promise<void>;
  /** Cycles whose summary was claimed at or before `before` (epoch ms) but never sent (a crash, a failed send). */
  summariesOwed(
    before: number,
  ): Promise<{ tenantId: string; cycleId: string; status: 'complete' | 'partial' }[]>;
}

// KEYS[1] published hash, KEYS[2] seen zset (deviceId by the start of the newest cycle it was in);
// ARGV[1] cycle ms, ARGV[2] the scores' stamp (the cycle ms, half a millisecond later for a correction);
// then per device: id, score, band, digest.
// Values are "score|band|publishedCycleAt|seenCycleAt|digest" (band labels and digests contain no "|");
// publishedCycleAt is the stamp, so it may end in ".5". Values written before the digest was kept have
// four fields.
// Devices are read and written with one call per kind per slice of 200 (not one per device): the calls,
// not the bytes, are what a batch of 500 costs Redis.
const COMMIT = `
local at = tonumber(ARGV[1])
local stamp = tonumber(ARGV[2])
local n = (#ARGV - 2) / 4
local slice = 200
local function ms(value)
  if value == math.floor(value) then return string.format('%d', value) end
  return string.format('%.1f', value)
end
for first = 1, n, slice do
  local last = math.min(n, first + slice - 1)
  local ids, seen = {}, {}
  for i = first, last do
    local id = ARGV[3 + (i - 1) * 4]
    ids[#ids + 1] = id
    seen[#seen + 1] = ARGV[1]
    seen[#seen + 1] = id
  end
  redis.call('ZADD', KEYS[2], 'GT', unpack(seen))
  local current = redis.call('HMGET', KEYS[1], unpack(ids))
  local values = {}
  for i = first, last do
    local base = 3 + (i - 1) * 4
    local id, score, band, digest = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
    local value
    local stored = current[i - first + 1]
    if not stored then
      value = score .. '|' .. band .. '|' .. ms(stamp) .. '|' .. ARGV[1] .. '|' .. digest
    else
      local s, b, p, was, d = string.match(stored, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|?([^|]*)$')
      p = tonumber(p)
      was = tonumber(was)
      if was < at then was = at end
      if p <= stamp then s = score; b = band; p = stamp; d = digest end
      value = s .. '|' .. b .. '|' .. ms(p) .. '|' .. ms(was) .. '|' .. d
    end
    values[#values + 1] = id
    values[#values + 1] = value
  end
  redis.call('HSET', KEYS[1], unpack(values))
end
return 1`;

// KEYS[1] sequence hash (cycleId → `n:tombstones`, or `n` as written before the count was kept), KEYS[2]
// counter, KEYS[3] completed zset (cycleId by start ms), KEYS[4] seen zset. ARGV: cycleId, cycle ms,
// absentCycles. Returns {sequence, tombstones, gone ids...}: a range of the seen zset, so a large fleet costs
// only its absent devices.
const COMPLETE = `
local stored = redis.call('HGET', KEYS[1], ARGV[1])
local sequence, counted
if stored then
  sequence, counted = string.match(stored, '^(%d+):?(%d*)$')
else
  sequence = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
end
local n = tonumber(ARGV[3])
local gone = {}
local oldest = redis.call('ZREVRANGE', KEYS[3], n - 1, n - 1, 'WITHSCORES')
if #oldest == 2 then gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. oldest[2]) end
if not counted or counted == '' then
  counted = #gone
  redis.call('HSET', KEYS[1], ARGV[1], sequence .. ':' .. counted)
end
local result = {tonumber(sequence), tonumber(counted)}
for i = 1, #gone do table.insert(result, gone[i]) end
-- Only the last cycles matter for absence; keep a few more for diagnosis. A cycle let go of takes its
-- sequence number with it (the hash would grow by one field per cycle, for ever).
local old = redis.call('ZRANGE', KEYS[3], 0, -(n + 11))
if #old > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(n + 11))
  redis.call('HDEL', KEYS[1], unpack(old))
end
return result`;

// KEYS[1] sent marker, KEYS[2] lock; ARGV ttl ms.
const LOCK_SUMMARY = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 0 end
return 1`;

/**
 * The zset of cycles whose summary was claimed and not yet sent, by the time of the claim. The cycle
 * store's claim lists a cycle in it (see `owedSummary`), `summarySent` takes it out.
 */
export const summariesOwedKey = (prefix: string): string => `${prefix}summaries-owed`;

/** A cycle's member in the owed zset: what the sweep needs to send its summary. */
export const owedSummary = (tenantId: string, cycleId: string, status: 'complete' | 'partial'): string =>
  JSON.stringify([tenantId, cycleId, status]);

/** A tenant's lease (`TenantLease`); the cycle store's `recordBatch` gives it back. */
export const tenantLeaseKey = (prefix: string, tenantId: string): string =>
  `${prefix}publish-lease:${tenantId}`;

/**
 * `PublishedStore.commit` added to a transaction, so the cycle store records a batch (`CycleStore.recordBatch`)
 * in the same step as its devices' published scores: a publisher stopped between the two would leave the
 * devices committed and the batch not, and the redelivery, finding nothing changed, would count none of the
 * records the first delivery produced in the cycle's summary.
 */
export function commitIn(
  transaction: ChainableCommander,
  prefix: string,
  tenantId: string,
  cycleAt: number,
  devices: DeviceScoreRef[],
  options: PublishOptions = {},
): ChainableCommander {
  if (devices.length === 0) return transaction;
  return transaction.eval(COMMIT, 2, ...commitArgs(prefix, tenantId, cycleAt, devices, options));
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
    String(cycleAt),
    String(scoreStamp(cycleAt, options.correction)),
    ...devices.flatMap((device) => [device.deviceId, String(device.score), device.band, device.digest ?? '']),
  ];
}

const publishedKeyOf = (prefix: string, tenantId: string): string => `${prefix}published:${tenantId}`;
const seenKeyOf = (prefix: string, tenantId: string): string => `${prefix}published-seen:${tenantId}`;

/** Markers of sent summaries outlive any redelivery of their cycle's batches. */
const SUMMARY_MARKER_TTL_MS = 2 * 24 * 60 * 60 * 1000;

/**
 * A deleted tenant's marker outlives its cycles (the cycle store keeps them a day past their deadline) and
 * any redelivery of their batches, as a sent summary's marker does.
 */
const DELETION_MARKER_TTL_MS = SUMMARY_MARKER_TTL_MS;

// KEYS[1] deletion marker hash, KEYS[2] seen zset; ARGV: deletion ms, marker ttl ms. Returns the devices to
// tombstone. The marker keeps the newest deletion, and the cutoff: the start before which a device's last
// cycle must be to be tombstoned ('inf' unless a registration newer than this deletion was recorded).
const MARK_DELETED = `
local at = tonumber(ARGV[1])
local deleted = tonumber(redis.call('HGET', KEYS[1], 'deletedAt') or '-1')
local registeredAt = redis.call('HGET', KEYS[1], 'registeredAt') or '-1'
local cutoff = '+inf'
if tonumber(registeredAt) > at then
  cutoff = '(' .. registeredAt
elseif at > deleted then
  redis.call('HSET', KEYS[1], 'deletedAt', ARGV[1])
  redis.call('HDEL', KEYS[1], 'registeredAt')
end
redis.call('HSET', KEYS[1], 'cutoff', cutoff)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)`;

// KEYS[1] deletion marker hash, KEYS[2] sequence hash, KEYS[3] counter, KEYS[4] completed zset.
const FORGET_DELETED = `
local cutoff = redis.call('HGET', KEYS[1], 'cutoff') or '+inf'
local cycles = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', cutoff)
for first = 1, #cycles, 200 do
  redis.call('HDEL', KEYS[2], unpack(cycles, first, math.min(#cycles, first + 199)))
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', cutoff)
if redis.call('ZCARD', KEYS[4]) == 0 then redis.call('DEL', KEYS[2], KEYS[3]) end
return 0`;

// KEYS[1] deletion marker hash; ARGV: registration ms, marker ttl ms. Keeps the first registration after the
// deletion: a later record of the tenant (a setting changed, a secret re-sealed) must not move it, or the
// batches of the cycle running then would count as a deleted tenant's.
const REGISTERED_AGAIN = `
local deleted = redis.call('HGET', KEYS[1], 'deletedAt')
if not deleted or tonumber(ARGV[1]) <= tonumber(deleted) then return 0 end
local registered = redis.call('HGET', KEYS[1], 'registeredAt')
if not registered or tonumber(ARGV[1]) < tonumber(registered) then
  redis.call('HSET', KEYS[1], 'registeredAt', ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`;

/** Whether a deletion marker's `[deletedAt, registeredAt]` says the cycle started at `cycleAt` is of a deleted tenant. */
function deletedFor(marker: (string | null)[], cycleAt: number): boolean {
  const [deletedAt, registeredAt] = marker;
  if (deletedAt === null || deletedAt === undefined) return false;
  return registeredAt === null || registeredAt === undefined || cycleAt < Number(registeredAt);
}

function decode(value: string | null | undefined): PublishedDevice | null {
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

/** The devices to publish (see `PublishedStore.changed`), given what was last published of each. */
function stillToPublish(
  devices: DeviceScoreRef[],
  current: (string | null)[],
  stamp: number,
): DeviceScoreRef[] {
  return devices.filter((device, index) => {
    const last = decode(current[index]);
    if (last === null) return true;
    if (last.publishedCycleAt > stamp) return false;
    return last.score !== device.score || last.band !== device.band || last.digest !== (device.digest ?? '');
  });
}

/**
 * The publisher's memory of what VMS holds: `{prefix}published:{tenantId}` (deviceId → last published
 * score, band, cycle, and the cycle it was last seen in), `{prefix}published-seen:{tenantId}` (zset of
 * devices by the start of the newest cycle they were in), `{prefix}published-cycles:{tenantId}` (zset of
 * completed cycles by start) with `{prefix}published-seq:{tenantId}` / `…-counter:{tenantId}` numbering them (and counting each one's tombstones),
 * the tenant's lease `{prefix}publish-lease:{tenantId}` (string, PX), and once the tenant was deleted
 * `{prefix}published-deleted:{tenantId}` (hash: `deletedAt`, `registeredAt` once registered again, and the
 * `cutoff` of its tombstones; PX).
 */
export function createPublishedStore(redis: Redis, prefix: string): PublishedStore {
  const publishedKey = (tenantId: string): string => publishedKeyOf(prefix, tenantId);
  const seenKey = (tenantId: string): string => seenKeyOf(prefix, tenantId);
  const cyclesKey = (tenantId: string): string => `${prefix}published-cycles:${tenantId}`;
  const sequenceKey = (tenantId: string): string => `${prefix}published-seq:${tenantId}`;
  const counterKey = (tenantId: string): string => `${prefix}published-counter:${tenantId}`;
  const deletedKey = (tenantId: string): string => `${prefix}published-deleted:${tenantId}`;
  const sentKey = (tenantId: string, cycleId: string): string =>
    `${prefix}summary-sent:${tenantId}:${cycleId}`;
  const summaryLockKey = (tenantId: string, cycleId: string): string =>
    `${prefix}summary-lock:${tenantId}:${cycleId}`;
  const owedKey = summariesOwedKey(prefix);
  return {
    async changed(lease, cycleAt, devices, options = {}) {
      // One transaction: the read comes after the take, never before a sweep (or a tenant's deletion) that
      // held the lease is done.
      const transaction = takeOwnedKeyIn(
        redis.multi(),
        tenantLeaseKey(prefix, lease.tenantId),
        lease.holder,
        lease.ttlMs,
      ).hmget(deletedKey(lease.tenantId), 'deletedAt', 'registeredAt');
      if (devices.length > 0)
        transaction.hmget(publishedKey(lease.tenantId), ...devices.map((device) => device.deviceId));
      const results = (await transaction.exec()) ?? [];
      for (const [error] of results) if (error) throw error;
      if (results[0]?.[1] !== 1) return null;
      if (deletedFor((results[1]?.[1] ?? []) as (string | null)[], cycleAt)) {
        await releaseOwnedKey(redis, tenantLeaseKey(prefix, lease.tenantId), lease.holder);
        return 'deleted';
      }
      const current = (results[2]?.[1] ?? []) as (string | null)[];
      return stillToPublish(devices, current, scoreStamp(cycleAt, options.correction));
    },
    async commit(tenantId, cycleAt, devices, options = {}) {
      if (devices.length === 0) return;
      await redis.eval(COMMIT, 2, ...commitArgs(prefix, tenantId, cycleAt, devices, options));
    },
    async completeCycle(tenantId, cycleId, cycleAt, absentCycles) {
      const result = (await redis.eval(
        COMPLETE,
        4,
        sequenceKey(tenantId),
        counterKey(tenantId),
        cyclesKey(tenantId),
        seenKey(tenantId),
        cycleId,
        String(cycleAt),
        String(Math.max(1, absentCycles)),
      )) as [number, number, ...string[]];
      const [sequence, tombstones, ...gone] = result;
      return { sequence: Number(sequence), gone, tombstones: Number(tombstones) };
    },
    async seenIn(tenantId, cycleAt) {
      return (await redis.zrangebyscore(seenKey(tenantId), cycleAt, cycleAt)).sort();
    },
    async forget(tenantId, deviceIds) {
      if (deviceIds.length === 0) return;
      await redis
        .multi()
        .hdel(publishedKey(tenantId), ...deviceIds)
        .zrem(seenKey(tenantId), ...deviceIds)
        .exec();
    },
    async markDeleted(tenantId, deletedAt) {
      return (await redis.eval(
        MARK_DELETED,
        2,
        deletedKey(tenantId),
        seenKey(tenantId),
        String(deletedAt),
        String(DELETION_MARKER_TTL_MS),
      )) as string[];
    },
    async forgetDeleted(tenantId) {
      await redis.eval(
        FORGET_DELETED,
        4,
        deletedKey(tenantId),
        sequenceKey(tenantId),
        counterKey(tenantId),
        cyclesKey(tenantId),
      );
    },
    async registeredAgain(tenantId, registeredAt) {
      await redis.eval(
        REGISTERED_AGAIN,
        1,
        deletedKey(tenantId),
        String(registeredAt),
        String(DELETION_MARKER_TTL_MS),
      );
    },
    async ofDeletedTenant(tenantId, cycleAt) {
      return deletedFor(await redis.hmget(deletedKey(tenantId), 'deletedAt', 'registeredAt'), cycleAt);
    },
    async get(tenantId, deviceId) {
      return decode(await redis.hget(publishedKey(tenantId), deviceId));
    },
    async lockSummary(tenantId, cycleId, ttlMs) {
      const locked = await redis.eval(
        LOCK_SUMMARY,
        2,
        sentKey(tenantId, cycleId),
        summaryLockKey(tenantId, cycleId),
        String(ttlMs),
      );
      return locked === 1;
    },
    async renewSummaryLock(tenantId, cycleId, ttlMs) {
      return (await redis.pexpire(summaryLockKey(tenantId, cycleId), ttlMs)) === 1;
    },
    async unlockSummary(tenantId, cycleId) {
      await redis.del(summaryLockKey(tenantId, cycleId));
    },
    takeTenantLease(lease) {
      return takeOwnedKey(redis, tenantLeaseKey(prefix, lease.tenantId), lease.holder, lease.ttlMs);
    },
    renewTenantLease(lease) {
      return renewOwnedKey(redis, tenantLeaseKey(prefix, lease.tenantId), lease.holder, lease.ttlMs);
    },
    async releaseTenantLease(lease) {
      await releaseOwnedKey(redis, tenantLeaseKey(prefix, lease.tenantId), lease.holder);
    },
    async summarySent(tenantId, cycleId) {
      const results = await redis
        .multi()
        .set(sentKey(tenantId, cycleId), '1', 'PX', SUMMARY_MARKER_TTL_MS)
        .del(summaryLockKey(tenantId, cycleId))
        .zrange(owedKey, 0, -1)
        .exec();
      const members = (results?.[2]?.[1] as string[] | undefined) ?? [];
      const mine = members.filter((member) => {
        const [t, c] = JSON.parse(member) as [string, string];
        return t === tenantId && c === cycleId;
      });
      if (mine.length > 0) await redis.zrem(owedKey, ...mine);
    },
    async summariesOwed(before) {
      const members = await redis.zrangebyscore(owedKey, '-inf', before);
      return members.map((member) => {
        const [tenantId, cycleId, status] = JSON.parse(member) as [string, string, 'complete' | 'partial'];
        return { tenantId, cycleId, status };
      });
    },
  };
}

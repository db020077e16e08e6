import type Redis from 'ioredis';
import { UrsError } from '@urs/resilience';
import {
  OWNED_LUA,
  releaseOwnedKey,
  releaseOwnedKeyIn,
  renewOwnedKey,
  takeOwnedKey,
  takeOwnedKeyIn,
} from './owned-key';
import {
  createTenantDeletions,
  OF_DELETED_TENANT,
  ofDeletedTenantAnswer,
  ofDeletedTenantKeys,
  type DeletionKeys,
  type TenantDeletions,
} from './published-deletion';
import { createPublishedRebuild, type PublishedRebuild } from './published-rebuild';
import {
  commitOn,
  decode,
  publishedKeyOf,
  seenKeyOf,
  stillToPublish,
  type DeviceScoreRef,
  type PublishedDevice,
  type PublishOptions,
} from './published-devices';
import { mergedDevicesKey } from './merged-devices';
import { replies } from './replies';
import { scoreStamp, scoreStampsKey } from './scores';
import { tenantDeletionKey } from './tenant-deletion';
import { TOMBSTONE_MARKER_TTL_MS, tombstonedKeyOf } from './tombstoned-devices';
import { tenantRecordKey, tenantsRebuiltKey } from './tenants';

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

/** The code of a `TenantLeaseLostError`. */
export const TENANT_LEASE_LOST = 'TENANT_LEASE_LOST';

/**
 * A tenant's lease (`TenantLease`) was not the holder's any more when its work went to write: it lapsed (its
 * renewals failed, or Redis did not answer them for its length), and another replica may hold it and have
 * written the tenant since. Nothing of that step was written. Retryable: the work, handled again, takes the
 * lease again and reads what it needs anew. `cause`: why the renewals did not hold it, when known (a Redis
 * fault: the work is then held, as on any fault of Redis, rather than tried a counted number of times).
 */
export class TenantLeaseLostError extends UrsError {
  constructor(tenantId: string, cause?: unknown) {
    super(TENANT_LEASE_LOST, `the publish lease of tenant ${tenantId} lapsed before its work was done`, {
      canRetry: true,
      ...(cause === undefined ? {} : { cause }),
    });
  }
}

export interface PublishedStore extends TenantDeletions, PublishedRebuild {
  /**
   * Which of these devices (scored in the cycle that started at `cycleAt`, epoch ms) must be published:
   * never published, or a score, band or digest other than the last published one. A device whose last
   * published score is of a newer cycle, or that this cycle's completion or a newer one's tombstoned (see
   * `forget`), is never returned (a late or redelivered batch). Read once the tenant's lease is taken
   * (`takeTenantLease`), in the same round trip: the batch holds it until
   * `CycleStore.recordBatch` gives it back. Null, nothing read or taken, while another replica holds it;
   * 'deleted', the lease given back, when the cycle is of a deleted tenant (`ofDeletedTenant`, which says
   * when it rejects with TENANTS_NOT_REBUILT, the lease given back too). Call `commit` once the records are on
   * the topic.
   */
  changed(
    lease: TenantLease,
    cycleAt: number,
    devices: DeviceScoreRef[],
    options?: PublishOptions,
  ): Promise<DeviceScoreRef[] | 'deleted' | null>;
  /**
   * Records the devices as seen in the cycle and, unless a newer one is recorded, their published score;
   * not a device tombstoned by this cycle's completion or a newer one's (see `forget`).
   */
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
   * With `hold`, when those devices are at least `hold.minDevices` and more than `hold.maxSharePercent` of
   * the devices known (`knownDevices`: a listing that lost most of the fleet, as an empty answer of
   * Microsoft's would), only those absent from the last `hold.cycles` completed cycles are listed; `held`
   * counts the others. Decided at the first call, as the counts are (`first` says which call it was). A
   * repeat lists nothing once the
   * tombstones were sent (`markCycleSent`; a first call that listed none sent them at once): the devices the
   * cycles after it lack are theirs to tombstone, under their own hold. One before that lists the devices
   * absent as the first call did, under the same hold test. `snapshotSent`: the cycle's snapshot was sent.
   * The devices the cycle's listing saw merged into another one (`CycleStore.mergedDevices`) are listed too,
   * those known and not seen in this cycle or a newer one: gone for good, they wait neither for `absentCycles`
   * nor for the hold, which neither weighs nor holds them.
   */
  completeCycle(
    tenantId: string,
    cycleId: string,
    cycleAt: number,
    absentCycles: number,
    hold?: TombstoneHold,
  ): Promise<CompletedCycle>;
  /**
   * Keeps with a completed cycle's counts (`completeCycle`) that its tombstones or its snapshot went out: a
   * summary sent again (its first send failed) sends them no more. Nothing for a cycle not completed, or
   * one let go of.
   */
  markCycleSent(tenantId: string, cycleId: string, part: 'tombstones' | 'snapshot'): Promise<void>;
  /**
   * Devices seen in the cycle that started at `cycleAt` or in a later one: a device keeps only its newest
   * cycle, so one a later cycle has recorded already (its summary may come after that cycle's batches) is
   * counted here too, and a device of that later cycle alone is live all the same. A cycle's snapshot is
   * every device it names.
   */
  seenSince(tenantId: string, cycleAt: number): Promise<string[]>;
  /**
   * Forgets devices (after their tombstone was published). With `tombstonedAt`, the start (epoch ms) of the
   * completed cycle that tombstoned them: a batch of that cycle or an older one coming late or again then
   * neither publishes nor records them (`changed`, `commit`), nor does the score store store them
   * (`tombstonedKeyOf`), for `TOMBSTONE_MARKER_TTL_MS` of cycles. A deleted tenant's devices need none: its
   * deletion's marker covers its cycles.
   */
  forget(tenantId: string, deviceIds: string[], tombstonedAt?: number): Promise<void>;
  get(tenantId: string, deviceId: string): Promise<PublishedDevice | null>;
  /**
   * Takes the right to send a cycle's summary for `ttlMs`, for the holder of `token` (new for each send).
   * True for one caller at a time; false once the summary was sent, and then the cycle owes it no more
   * (`summariesOwed` lists it no longer). The cycle owes its summary from its claim
   * (`CycleStore.claimPublication`) on.
   */
  lockSummary(tenantId: string, cycleId: string, token: string, ttlMs: number): Promise<boolean>;
  /**
   * Holds the summary lock `ttlMs` longer (a snapshot of a large fleet outlasts it) while it holds `token`;
   * false, nothing extended, when it lapsed (another sender may hold it now) or the summary was sent: the
   * sender stops before it sends anything more.
   */
  renewSummaryLock(tenantId: string, cycleId: string, token: string, ttlMs: number): Promise<boolean>;
  /**
   * Gives the summary lock back after a failed send, so a retry need not wait for it to lapse; only while
   * it holds `token` (a lock another sender took after this one's lapsed stays).
   */
  unlockSummary(tenantId: string, cycleId: string, token: string): Promise<void>;
  /**
   * The summary is on the topic: the cycle owes nothing any more (its marker and owing it, written at once),
   * and the lock is given back if it holds `token`.
   */
  summarySent(tenantId: string, cycleId: string, token?: string): Promise<void>;
  /** The cycle owes its summary no more, unsent: nothing could tell what it was (its state has expired). */
  dropOwedSummary(tenantId: string, cycleId: string): Promise<void>;
  /** Takes the tenant's lease for `lease.ttlMs`; false while another replica holds it. */
  takeTenantLease(lease: TenantLease): Promise<boolean>;
  /** Holds the tenant's lease `lease.ttlMs` longer; false when it lapsed. */
  renewTenantLease(lease: TenantLease): Promise<boolean>;
  /** Gives the tenant's lease back, if this holder still has it. */
  releaseTenantLease(lease: TenantLease): Promise<void>;
  /**
   * Cycles whose summary was claimed at or before `before` (epoch ms), or deferred to then
   * (`deferOwedSummary`), but never sent (a crash, a failed send).
   */
  summariesOwed(
    before: number,
  ): Promise<{ tenantId: string; cycleId: string; status: 'complete' | 'partial' }[]>;
  /**
   * An owed summary's send failed again: listed by `summariesOwed` from `fromMs` plus a delay that starts at
   * `backoff.firstMs` and doubles at each failure up to `backoff.maxMs`; resolves that delay. A summary sent
   * (or no longer owed) meanwhile stays so, and resolves 0.
   */
  deferOwedSummary(
    tenantId: string,
    cycleId: string,
    status: 'complete' | 'partial',
    fromMs: number,
    backoff: { firstMs: number; maxMs: number },
  ): Promise<number>;
}

export interface PublishedStoreOptions {
  /**
   * A tenant whose record is gone from the tenant store, once the registrar has rebuilt it since Redis last
   * came up empty, is a deleted one (`ofDeletedTenant`, `changed`), as the score store's save has it
   * (`ScoreStoreOptions.onlyRegisteredTenants`): a wipe takes the deletion's marker with it, and the batches of
   * the tenant's cycles still queued would bring its devices back to VMS. A record missing while the records
   * are not rebuilt holds them (TENANTS_NOT_REBUILT). Default false (only the deletion's marker counts); the
   * publisher's deployment sets it.
   */
  onlyRegisteredTenants?: boolean;
}

/** What `PublishedStore.completeCycle` answers. */
export interface CompletedCycle {
  /**
   * This call decided the cycle's counts (its first): a repeat answers the same `tombstones` and `held`, which
   * a caller counting them must count only once.
   */
  first: boolean;
  sequence: number;
  gone: string[];
  tombstones: number;
  held: number;
  knownDevices: number;
  snapshotSent: boolean;
}

/**
 * A brake on tombstones (`PublishedStore.completeCycle`): a cycle that would tombstone at least `minDevices`
 * of a tenant's devices, and more than `maxSharePercent` of them, at once tombstones only those absent for
 * `cycles` completed cycles.
 */
export interface TombstoneHold {
  maxSharePercent: number;
  minDevices: number;
  cycles: number;
}

/** No brake: every device absent long enough is tombstoned. */
const NO_HOLD: TombstoneHold = { maxSharePercent: 100, minDevices: 1, cycles: 1 };

/** A completed cycle's parts sent, as flags kept with its counts (`PublishedStore.markCycleSent`). */
const SENT_FLAGS = { tombstones: 1, snapshot: 2 } as const;

// KEYS[1] sequence hash (cycleId → `n:tombstones:held:sent`, the flags of SENT_FLAGS; `n:tombstones:held`,
// `n:tombstones` or `n` as written before), KEYS[2] counter, KEYS[3] completed zset (cycleId by start ms),
// KEYS[4] seen zset. ARGV: cycleId, cycle ms, absentCycles, the largest share of the devices known tombstoned
// at once (percent), the fewest devices held, the cycles a device is held for beyond them. The hold is
// decided at the cycle's first call and kept with its counts, so a repeat (a summary sent again) holds what
// the first held; a repeat before the tombstones were sent lists the absent devices under the same test (the
// cycles since may lack most of the fleet), one after them nothing. A first call that lists none has sent
// them. Returns {sequence, tombstones, held, devices known, sent flags, 1 when this call decided the counts
// (0 on a repeat), gone ids...}: ranges of the seen zset, so a large fleet costs only its absent devices.
// KEYS[5] the cycle's merged devices (`mergedDevicesKey`): those VMS holds and no batch of this cycle or a newer
// one saw are gone with the absent ones, whatever the hold, and neither weighed by it nor counted as held.
const COMPLETE = `
local stored = redis.call('HGET', KEYS[1], ARGV[1])
local sequence, counted, held, sent
if stored then
  sequence, counted, held, sent = string.match(stored, '^(%d+):?(%d*):?(%d*):?(%d*)$')
else
  sequence = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
end
sent = tonumber(sent) or 0
local n = tonumber(ARGV[3])
local hold = tonumber(ARGV[6])
local merged, isMerged = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  local seen = redis.call('ZSCORE', KEYS[4], id)
  if seen and tonumber(seen) < tonumber(ARGV[2]) then
    table.insert(merged, id)
    isMerged[id] = true
  end
end
local function absentFrom(cycles)
  local oldest = redis.call('ZREVRANGE', KEYS[3], cycles - 1, cycles - 1, 'WITHSCORES')
  if #oldest < 2 then return {} end
  local absent = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. oldest[2])
  if #merged == 0 then return absent end
  local kept = {}
  for _, id in ipairs(absent) do
    if not isMerged[id] then table.insert(kept, id) end
  end
  return kept
end
local function withMerged(gone)
  for _, id in ipairs(merged) do table.insert(gone, id) end
  return gone
end
local known = redis.call('ZCARD', KEYS[4])
local function braked()
  local gone = absentFrom(n)
  if #gone >= tonumber(ARGV[5]) and #gone * 100 > tonumber(ARGV[4]) * known then
    local released = absentFrom(hold)
    return released, #gone - #released
  end
  return gone, 0
end
local gone
local first = 0
if counted == nil or counted == '' then
  first = 1
  gone, held = braked()
  gone = withMerged(gone)
  counted = #gone
  if counted == 0 then sent = sent + ${SENT_FLAGS.tombstones} end
  redis.call('HSET', KEYS[1], ARGV[1], sequence .. ':' .. counted .. ':' .. held .. ':' .. sent)
elseif sent % 2 == ${SENT_FLAGS.tombstones} then
  gone = {}
elseif held ~= nil and held ~= '' and tonumber(held) > 0 then
  gone = withMerged(absentFrom(hold))
else
  gone = withMerged((braked()))
end
local result = {tonumber(sequence), tonumber(counted), tonumber(held) or 0, known, sent, first}
for i = 1, #gone do table.insert(result, gone[i]) end
-- Only the last cycles matter for absence; keep a few more for diagnosis. A cycle let go of takes its
-- sequence number with it (the hash would grow by one field per cycle, for ever).
local keep = math.max(n, hold) + 10
local old = redis.call('ZRANGE', KEYS[3], 0, -(keep + 1))
if #old > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(keep + 1))
  redis.call('HDEL', KEYS[1], unpack(old))
end
return result`;

// KEYS[1] sequence hash; ARGV cycleId, the flag (SENT_FLAGS) to set in its counts (see COMPLETE).
const MARK_SENT = `
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then return 0 end
local sequence, counted, held, sent = string.match(stored, '^(%d+):?(%d*):?(%d*):?(%d*)$')
if not sequence or counted == '' then return 0 end
sent = tonumber(sent) or 0
local flag = tonumber(ARGV[2])
if math.floor(sent / flag) % 2 == 0 then sent = sent + flag end
redis.call('HSET', KEYS[1], ARGV[1], sequence .. ':' .. counted .. ':' .. (held ~= '' and held or '0') .. ':' .. sent)
return 1`;

// KEYS[1] sent marker, KEYS[2] lock, KEYS[3] owed zset, KEYS[4] owed failures hash; ARGV token, ttl ms, the
// cycle's owed members. A sent summary still listed as owed is taken out of the list.
const LOCK_SUMMARY = `
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('ZREM', KEYS[3], ARGV[3], ARGV[4])
  redis.call('HDEL', KEYS[4], ARGV[3], ARGV[4])
  return 0
end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
return 1`;

// KEYS[1] sent marker, KEYS[2] lock; ARGV token, ttl ms. Held only while the lock holds the token and the
// summary is not sent (by a sender whose own lock had lapsed).
const RENEW_SUMMARY_LOCK = `${OWNED_LUA}
if redis.call('EXISTS', KEYS[1]) == 1 or not owned(KEYS[2], ARGV[1]) then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1`;

/**
 * The zset of cycles whose summary was claimed and not yet sent, by the time of the claim (moved later at
 * each failed send of the sweep, see `deferOwedSummary`; `{prefix}summaries-owed-failures` counts them). The
 * cycle store's claim lists a cycle in it (see `owedSummary`), `summarySent` takes it out.
 */
export const summariesOwedKey = (prefix: string): string => `${prefix}summaries-owed`;

// KEYS[1] owed zset, KEYS[2] owed failures hash (member → failed sends); ARGV the member, from (epoch ms), the
// first delay and the largest (ms). Returns the delay, 0 when the member is owed no more.
const DEFER_OWED = `
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local failures = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local delay = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ math.min(failures - 1, 40))
redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[2]) + delay, ARGV[1])
return delay`;

/** A cycle's member in the owed zset: what the sweep needs to send its summary. */
export const owedSummary = (tenantId: string, cycleId: string, status: 'complete' | 'partial'): string =>
  JSON.stringify([tenantId, cycleId, status]);

/** Every member a cycle may have in the owed zset: one per status it may have been claimed with. */
const owedSummaries = (tenantId: string, cycleId: string): [string, string] => [
  owedSummary(tenantId, cycleId, 'complete'),
  owedSummary(tenantId, cycleId, 'partial'),
];

/** A tenant's lease (`TenantLease`); the cycle store's `recordBatch` gives it back. */
export const tenantLeaseKey = (prefix: string, tenantId: string): string =>
  `${prefix}publish-lease:${tenantId}`;

/** Markers of sent summaries outlive any redelivery of their cycle's batches. */
const SUMMARY_MARKER_TTL_MS = 2 * 24 * 60 * 60 * 1000;

/**
 * A deleted tenant's marker outlives its cycles (the cycle store keeps them a day past their deadline) and
 * any redelivery of their batches, as a sent summary's marker does.
 */
const DELETION_MARKER_TTL_MS = SUMMARY_MARKER_TTL_MS;

/**
 * The publisher's memory of what VMS holds: `{prefix}published:{tenantId}` (deviceId → last published
 * score, band, cycle, and the cycle it was last seen in), `{prefix}published-seen:{tenantId}` (zset of
 * devices by the start of the newest cycle they were in), `{prefix}published-cycles:{tenantId}` (zset of
 * completed cycles by start) with `{prefix}published-seq:{tenantId}` / `…-counter:{tenantId}` numbering them (and counting each one's tombstones),
 * the tenant's lease `{prefix}publish-lease:{tenantId}` (string, PX), and once the tenant was deleted
 * `{prefix}published-deleted:{tenantId}` (hash: `deletedAt`, `registeredAt` once registered again, the
 * deletion's `revision`, and the `cutoff` of its tombstones; PX), the devices tombstoned by the tenant's
 * last cycles `{prefix}published-tombstoned:{tenantId}` (zset, PX, see `forget`).
 * `{prefix}published-rebuilt` (string, the time) says the record was rebuilt from `vms.risk-scores` since
 * Redis last came up without it, and `{prefix}published-rebuild-lock` (string, PX) is held by the replica
 * rebuilding it (`PublishedRebuild`).
 */
export function createPublishedStore(
  redis: Redis,
  prefix: string,
  options: PublishedStoreOptions = {},
): PublishedStore {
  const publishedKey = (tenantId: string): string => publishedKeyOf(prefix, tenantId);
  const seenKey = (tenantId: string): string => seenKeyOf(prefix, tenantId);
  const cyclesKey = (tenantId: string): string => `${prefix}published-cycles:${tenantId}`;
  const sequenceKey = (tenantId: string): string => `${prefix}published-seq:${tenantId}`;
  const counterKey = (tenantId: string): string => `${prefix}published-counter:${tenantId}`;
  const deletedKey = (tenantId: string): string => tenantDeletionKey(prefix, tenantId);
  const tombstonedKey = (tenantId: string): string => tombstonedKeyOf(prefix, tenantId);
  const recordKey = (tenantId: string): string => tenantRecordKey(prefix, tenantId);
  const sentKey = (tenantId: string, cycleId: string): string =>
    `${prefix}summary-sent:${tenantId}:${cycleId}`;
  const summaryLockKey = (tenantId: string, cycleId: string): string =>
    `${prefix}summary-lock:${tenantId}:${cycleId}`;
  const owedKey = summariesOwedKey(prefix);
  // How many times each owed summary's send failed (`deferOwedSummary`): fields go with their owed entry.
  const owedFailuresKey = `${prefix}summaries-owed-failures`;
  const rebuiltKey = `${prefix}published-rebuilt`;
  const deletionKeys: DeletionKeys = {
    rebuilt: rebuiltKey,
    deleted: deletedKey,
    record: recordKey,
    seen: seenKey,
    scored: (tenantId) => scoreStampsKey(prefix, tenantId),
    cycles: cyclesKey,
    sequence: sequenceKey,
    counter: counterKey,
    ...(options.onlyRegisteredTenants ? { tenantsRebuilt: tenantsRebuiltKey(prefix) } : {}),
  };
  const deletions = createTenantDeletions(redis, deletionKeys, DELETION_MARKER_TTL_MS);
  const rebuild = createPublishedRebuild(redis, {
    rebuilt: rebuiltKey,
    lock: `${prefix}published-rebuild-lock`,
    seen: seenKey,
    deleted: deletedKey,
    record: recordKey,
    tombstoned: tombstonedKey,
  });
  return {
    ...deletions,
    ...rebuild,
    async changed(lease, cycleAt, devices, options = {}) {
      // One transaction: the read comes after the take, never before a sweep (or a tenant's deletion) that
      // held the lease is done.
      const of = ofDeletedTenantKeys(deletionKeys, lease.tenantId);
      const transaction = takeOwnedKeyIn(
        redis.multi(),
        tenantLeaseKey(prefix, lease.tenantId),
        lease.holder,
        lease.ttlMs,
      ).eval(OF_DELETED_TENANT, of.length, ...of, String(cycleAt));
      if (devices.length > 0) {
        const ids = devices.map((device) => device.deviceId);
        transaction
          .hmget(publishedKey(lease.tenantId), ...ids)
          .zmscore(tombstonedKey(lease.tenantId), ...ids);
      }
      const results = await replies(transaction);
      if (results[0] !== 1) return null;
      if (results[1] !== 0) {
        await releaseOwnedKey(redis, tenantLeaseKey(prefix, lease.tenantId), lease.holder);
        // TENANTS_NOT_REBUILT thrown, the lease given back, while the tenant records are not rebuilt.
        ofDeletedTenantAnswer(results[1], lease.tenantId);
        return 'deleted';
      }
      const current = (results[2] ?? []) as (string | null)[];
      const tombstonedAt = (results[3] ?? []) as (string | null)[];
      return stillToPublish(devices, current, tombstonedAt, scoreStamp(cycleAt, options.correction));
    },
    commit(tenantId, cycleAt, devices, options) {
      return commitOn(redis, prefix, tenantId, cycleAt, devices, options);
    },
    async completeCycle(tenantId, cycleId, cycleAt, absentCycles, hold = NO_HOLD) {
      const result = (await redis.eval(
        COMPLETE,
        5,
        sequenceKey(tenantId),
        counterKey(tenantId),
        cyclesKey(tenantId),
        seenKey(tenantId),
        mergedDevicesKey(prefix, tenantId, cycleId),
        cycleId,
        String(cycleAt),
        String(Math.max(1, absentCycles)),
        String(hold.maxSharePercent),
        String(Math.max(1, hold.minDevices)),
        String(Math.max(1, absentCycles, hold.cycles)),
      )) as [number, number, number, number, number, number, ...string[]];
      const [sequence, tombstones, held, known, sent, first, ...gone] = result;
      return {
        first: Number(first) === 1,
        sequence: Number(sequence),
        gone,
        tombstones: Number(tombstones),
        held: Number(held),
        knownDevices: Number(known),
        snapshotSent: Math.floor(Number(sent) / SENT_FLAGS.snapshot) % 2 === 1,
      };
    },
    async markCycleSent(tenantId, cycleId, part) {
      await redis.eval(MARK_SENT, 1, sequenceKey(tenantId), cycleId, String(SENT_FLAGS[part]));
    },
    async seenSince(tenantId, cycleAt) {
      return (await redis.zrangebyscore(seenKey(tenantId), cycleAt, '+inf')).sort();
    },
    async forget(tenantId, deviceIds, tombstonedAt) {
      if (deviceIds.length === 0) return;
      const forgetting = redis
        .multi()
        .hdel(publishedKey(tenantId), ...deviceIds)
        .zrem(seenKey(tenantId), ...deviceIds);
      if (tombstonedAt !== undefined) {
        const key = tombstonedKey(tenantId);
        // Markers of cycles more than the TTL older than this one go: the zset stays bounded while the tenant
        // lives, and goes with the TTL once it no longer completes cycles.
        forgetting
          .zadd(key, 'GT', ...deviceIds.flatMap((id) => [tombstonedAt, id]))
          .zremrangebyscore(key, '-inf', `(${tombstonedAt - TOMBSTONE_MARKER_TTL_MS}`)
          .pexpire(key, TOMBSTONE_MARKER_TTL_MS);
      }
      await replies(forgetting);
    },
    async get(tenantId, deviceId) {
      return decode(await redis.hget(publishedKey(tenantId), deviceId));
    },
    async lockSummary(tenantId, cycleId, token, ttlMs) {
      const locked = await redis.eval(
        LOCK_SUMMARY,
        4,
        sentKey(tenantId, cycleId),
        summaryLockKey(tenantId, cycleId),
        owedKey,
        owedFailuresKey,
        token,
        String(ttlMs),
        ...owedSummaries(tenantId, cycleId),
      );
      return locked === 1;
    },
    async renewSummaryLock(tenantId, cycleId, token, ttlMs) {
      const held = await redis.eval(
        RENEW_SUMMARY_LOCK,
        2,
        sentKey(tenantId, cycleId),
        summaryLockKey(tenantId, cycleId),
        token,
        String(ttlMs),
      );
      return held === 1;
    },
    async unlockSummary(tenantId, cycleId, token) {
      await releaseOwnedKey(redis, summaryLockKey(tenantId, cycleId), token);
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
    async summarySent(tenantId, cycleId, token) {
      // One transaction: a marker written without its owed entry taken out would leave the sweep a cycle to
      // send again once the marker expires.
      const sending = redis
        .multi()
        .set(sentKey(tenantId, cycleId), '1', 'PX', SUMMARY_MARKER_TTL_MS)
        .zrem(owedKey, ...owedSummaries(tenantId, cycleId))
        .hdel(owedFailuresKey, ...owedSummaries(tenantId, cycleId));
      if (token !== undefined) releaseOwnedKeyIn(sending, summaryLockKey(tenantId, cycleId), token);
      await replies(sending);
    },
    async dropOwedSummary(tenantId, cycleId) {
      await replies(
        redis
          .multi()
          .zrem(owedKey, ...owedSummaries(tenantId, cycleId))
          .hdel(owedFailuresKey, ...owedSummaries(tenantId, cycleId)),
      );
    },
    async summariesOwed(before) {
      const members = await redis.zrangebyscore(owedKey, '-inf', before);
      return members.map((member) => {
        const [tenantId, cycleId, status] = JSON.parse(member) as [string, string, 'complete' | 'partial'];
        return { tenantId, cycleId, status };
      });
    },
    async deferOwedSummary(tenantId, cycleId, status, fromMs, backoff) {
      const delay = await redis.eval(
        DEFER_OWED,
        2,
        owedKey,
        owedFailuresKey,
        owedSummary(tenantId, cycleId, status),
        String(fromMs),
        String(backoff.firstMs),
        String(backoff.maxMs),
      );
      return Number(delay);
    },
  };
}

import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { releaseOwnedKey, renewOwnedKey } from './owned-key';
import { tenantsRebuiltKey } from './tenants';

/**
 * The registrar's own bookkeeping: tenant revisions, Director's last generation, the generation in force
 * when a tenant was deleted, the rebuild marker.
 */
export interface RegistrarStateStore {
  /**
   * The next revision of a tenant's record: max(Redis server time in µs, last revision + 1, `floor` + 1),
   * assigned atomically. Every registrar replica gets a distinct, increasing number (one clock: Redis's),
   * and after a Redis wipe new revisions still exceed the old ones (they were time-based too), so a write
   * made before the rebuild finished is not shadowed by an older record. Microseconds, not milliseconds:
   * a revision handed out just before a wipe and one just after can fall in the same millisecond. (µs since
   * 1970 stay below 2^53, so the numbers are exact in JSON and in Lua.)
   */
  nextRevision(tenantId: string, floor?: number): Promise<number>;
  /**
   * `nextRevision`, with Redis's time when it was assigned (milliseconds): a record's `updatedAt`. Every
   * replica's writes then carry one clock, Redis's, the one `pushStarted` reads too, so whether a write came
   * before or after a push began does not hang on the clocks of the replicas that made them.
   */
  nextRevisionStamp(tenantId: string, floor?: number): Promise<RevisionStamp>;
  /** Raises the tenant's revision counter to at least `revision` (rebuild from urs.tenants). */
  observeRevision(tenantId: string, revision: number): Promise<void>;
  /** The last Director generation applied, or -1. */
  lastGeneration(): Promise<number>;
  /** Records `generation` as applied unless a higher one already is. */
  observeGeneration(generation: number): Promise<void>;
  /**
   * Records that an administrator deleted the tenant while Director's `generation` was in force (raised,
   * never lowered; forgotten 30 days after the last call, see `DELETION_TTL_MS`): that generation delivered
   * again must not register it again.
   */
  observeDeletion(tenantId: string, generation: number): Promise<void>;
  /** The Director generation in force when the tenant was last deleted, or -1. */
  deletionGeneration(tenantId: string): Promise<number>;
  /**
   * When Director's push of `generation` was first handled: records Redis's time now unless a time is
   * recorded already (forgotten 30 days after it was recorded, see `PUSH_STARTED_TTL_MS`), and returns the
   * time recorded. A push handled again keeps what an administrator wrote over REST since then: records whose
   * `updatedAt` (`nextRevisionStamp`, Redis's clock too) is at or after it.
   */
  pushStarted(generation: number): Promise<Date>;
  /**
   * The newest Director generation whose push began to be handled (`pushStarted`, raised, never lowered), or
   * -1: a push under way, or one applied. A tenant deleted once a push began records that push's generation
   * (`observeDeletion`), so the push reaching it afterwards, or handled again, does not register it again.
   */
  generationStarted(): Promise<number>;
  /**
   * Takes the tenant's write lock for `ttlMs` unless another writer holds it: a token to give it back
   * with, or null. Every registrar replica writes a tenant's record under it (a Director push and a REST
   * call of the same tenant read, compare and write one after the other).
   */
  lockTenant(tenantId: string, ttlMs: number): Promise<string | null>;
  /**
   * Extends the lock `token` holds by `ttlMs` from now (a write outlasting the lock's length keeps it); false
   * when the lock lapsed or another writer holds it.
   */
  renewTenantLock(tenantId: string, token: string, ttlMs: number): Promise<boolean>;
  /** Gives the lock back, if `token` still holds it. */
  unlockTenant(tenantId: string, token: string): Promise<void>;
  /** Whether Redis was filled from urs.tenants since it last came up empty. */
  isRebuilt(): Promise<boolean>;
  markRebuilt(at: Date): Promise<void>;
}

/** A revision and Redis's time when it was assigned (`RegistrarStateStore.nextRevisionStamp`). */
export interface RevisionStamp {
  revision: number;
  at: Date;
}

// KEYS[1] revision counter; ARGV: floor, counter ttl ms. Returns the revision and Redis's time in ms.
const NEXT_REVISION = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
local nextRevision = math.max(now, current + 1, floor + 1)
redis.call('SET', KEYS[1], string.format('%.0f', nextRevision), 'PX', ARGV[2])
return {string.format('%.0f', nextRevision), string.format('%.0f', math.floor(now / 1000))}`;

// KEYS[1] counter; ARGV: value, and a ttl ms if it has one. Sets the counter to max(counter, value); a ttl
// counts from this call, the value raised or not.
const RAISE = `
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
  if ARGV[2] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) else redis.call('SET', KEYS[1], ARGV[1]) end
elseif ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1`;

/**
 * A tenant's revision counter lasts this long after its last revision. Revisions follow Redis's clock, and a
 * tenant's record is the floor of its next one: the counter only orders revisions within one clock tick, or
 * a clock set back, so a tenant deleted this long ago needs it no more.
 */
const REVISION_TTL_MS = 30 * 24 * 60 * 60 * 1000;

/**
 * A deleted tenant's generation (`observeDeletion`) lasts this long after its last deletion. It matters only
 * while that generation may be handled again: a push redelivered after a restart before its offset was
 * committed (offsets are committed every second), or held through an outage of Redis or Kafka, or delivered
 * again after the registrar's group lost its committed offsets (Kafka drops them 7 days after the group has
 * no member, by default `offsets.retention.minutes`). Thirty days is well past all of these; a newer
 * generation applied meanwhile makes it moot anyway (older generations are ignored). Kept for good, every
 * tenant ever deleted left a key behind.
 */
const DELETION_TTL_MS = 30 * 24 * 60 * 60 * 1000;

/**
 * A Lua function `isoTime(seconds, microseconds)`: an instant of Redis's TIME as `Date.prototype.toISOString`
 * writes it (`2026-03-01T10:00:00.000Z`, milliseconds truncated). Redis's Lua has no `os.date`, so the day is
 * turned into a date by integer arithmetic (days since 1970 to a proleptic Gregorian year, month and day, in
 * 400-year eras of 146,097 days whose years begin on 1 March). Exported for its tests only.
 */
export const ISO_TIME_LUA = `
local function isoTime(seconds, microseconds)
  local secs = tonumber(seconds)
  local days = math.floor(secs / 86400)
  local inDay = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local dayOfEra = z - era * 146097
  local yearOfEra = math.floor((dayOfEra - math.floor(dayOfEra / 1460) + math.floor(dayOfEra / 36524)
    - math.floor(dayOfEra / 146096)) / 365)
  local dayOfYear = dayOfEra - (365 * yearOfEra + math.floor(yearOfEra / 4) - math.floor(yearOfEra / 100))
  local monthFromMarch = math.floor((5 * dayOfYear + 2) / 153)
  local day = dayOfYear - math.floor((153 * monthFromMarch + 2) / 5) + 1
  local month = monthFromMarch < 10 and monthFromMarch + 3 or monthFromMarch - 9
  local year = yearOfEra + era * 400
  if month <= 2 then year = year + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, day, math.floor(inDay / 3600),
    math.floor(inDay % 3600 / 60), inDay % 60, math.floor(tonumber(microseconds) / 1000))
end`;

// KEYS[1] marker, KEYS[2] generation started; ARGV: ttl ms, generation. Raises the generation started to the
// push's, and sets the marker to Redis's time unless it is set; returns its value. The time is written as an ISO
// time: a registrar of an earlier version, mid rolling upgrade, reads the marker with `new Date(value)`, to
// which milliseconds as digits are an invalid date.
const PUSH_STARTED = `${ISO_TIME_LUA}
local started = tonumber(redis.call('GET', KEYS[2]) or '-1')
if tonumber(ARGV[2]) > started then redis.call('SET', KEYS[2], ARGV[2]) end
local t = redis.call('TIME')
local now = isoTime(t[1], t[2])
if redis.call('SET', KEYS[1], now, 'NX', 'PX', ARGV[1]) then return now end
return redis.call('GET', KEYS[1])`;

/**
 * A push-start marker's time: an ISO time (Redis's clock, or the clock of an earlier registrar that set it),
 * or milliseconds since 1970 of Redis's clock, as markers of one earlier version hold.
 */
function markerTime(value: string): Date {
  return /^\d+$/.test(value) ? new Date(Number(value)) : new Date(value);
}

/**
 * When a push was first handled (`pushStarted`) lasts this long: as a deleted tenant's generation
 * (`DELETION_TTL_MS`), it matters only while that generation may be handled again.
 */
const PUSH_STARTED_TTL_MS = DELETION_TTL_MS;

/**
 * Keys: `{prefix}tenant-revision:{id}` (PX: `REVISION_TTL_MS` from its last revision),
 * `{prefix}tenant-write-lock:{id}`, `{prefix}tenant-deleted:{id}` (PX: `DELETION_TTL_MS` from the tenant's
 * last deletion: while the generation it names is Director's last, it stops that generation delivered again
 * from registering the tenant again),
 * `{prefix}director-push-started:{generation}` (Redis's time, as an ISO time, when the push was first handled; PX:
 * `PUSH_STARTED_TTL_MS` from then),
 * `{prefix}director-generation`, `{prefix}director-generation-started`, `{prefix}tenants-rebuilt`.
 */
export function createRegistrarStateStore(redis: Redis, prefix: string): RegistrarStateStore {
  const revisionKey = (tenantId: string): string => `${prefix}tenant-revision:${tenantId}`;
  const lockKey = (tenantId: string): string => `${prefix}tenant-write-lock:${tenantId}`;
  const deletedKey = (tenantId: string): string => `${prefix}tenant-deleted:${tenantId}`;
  const generationKey = `${prefix}director-generation`;
  const generationStartedKey = `${prefix}director-generation-started`;
  const pushStartedKey = (generation: number): string => `${prefix}director-push-started:${generation}`;
  const rebuiltKey = tenantsRebuiltKey(prefix);
  async function nextRevisionStamp(tenantId: string, floor = 0): Promise<RevisionStamp> {
    const [revision, at] = (await redis.eval(
      NEXT_REVISION,
      1,
      revisionKey(tenantId),
      String(floor),
      String(REVISION_TTL_MS),
    )) as [string, string];
    return { revision: Number(revision), at: new Date(Number(at)) };
  }
  return {
    async nextRevision(tenantId, floor = 0) {
      return (await nextRevisionStamp(tenantId, floor)).revision;
    },
    nextRevisionStamp,
    async observeRevision(tenantId, revision) {
      await redis.eval(RAISE, 1, revisionKey(tenantId), String(revision), String(REVISION_TTL_MS));
    },
    async lastGeneration() {
      const value = await redis.get(generationKey);
      return value === null ? -1 : Number(value);
    },
    async observeGeneration(generation) {
      await redis.eval(RAISE, 1, generationKey, String(generation));
    },
    async observeDeletion(tenantId, generation) {
      await redis.eval(RAISE, 1, deletedKey(tenantId), String(generation), String(DELETION_TTL_MS));
    },
    async deletionGeneration(tenantId) {
      const value = await redis.get(deletedKey(tenantId));
      return value === null ? -1 : Number(value);
    },
    async pushStarted(generation) {
      const recorded = await redis.eval(
        PUSH_STARTED,
        2,
        pushStartedKey(generation),
        generationStartedKey,
        String(PUSH_STARTED_TTL_MS),
        String(generation),
      );
      return markerTime(String(recorded));
    },
    async generationStarted() {
      const value = await redis.get(generationStartedKey);
      return value === null ? -1 : Number(value);
    },
    async lockTenant(tenantId, ttlMs) {
      const token = randomUUID();
      return (await redis.set(lockKey(tenantId), token, 'PX', ttlMs, 'NX')) === 'OK' ? token : null;
    },
    async renewTenantLock(tenantId, token, ttlMs) {
      return renewOwnedKey(redis, lockKey(tenantId), token, ttlMs);
    },
    async unlockTenant(tenantId, token) {
      await releaseOwnedKey(redis, lockKey(tenantId), token);
    },
    async isRebuilt() {
      return (await redis.exists(rebuiltKey)) === 1;
    },
    async markRebuilt(at) {
      await redis.set(rebuiltKey, at.toISOString());
    },
  };
}

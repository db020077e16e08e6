import type Redis from 'ioredis';
import type { TenantRecord } from '@urs/contracts';
import { StoreError } from './client';
import { replies } from './replies';

/**
 * A registration of the tenant that was refused (a Director push's entry that broke the contract): the
 * tenant's record, if it has one, stays as it was and is polled with its old settings. Names fields and
 * rules, never a value.
 */
export interface RegistrationRefusal {
  /** `REGISTRATION_INVALID`. */
  code: string;
  /** `registration refused: defender.clientSecret must be …`, every violation in one line. */
  message: string;
  violations: { field: string; rule: string }[];
  at: string;
  source: 'director' | 'rest';
  /** Director's generation whose entry was refused. */
  generation?: number;
}

/** What operators and admins see of a tenant's polling (REST GET, `urs` tools). Never a secret. */
export interface TenantStatus {
  /**
   * `active`, `disabled`, `error` (the last cycle failed), or `registration-rejected`: the tenant has no
   * record, its only registration was refused (`registrationError` says why).
   */
  state?: 'active' | 'disabled' | 'error' | 'registration-rejected';
  lastCycleId?: string;
  lastCycleStartedAt?: string;
  lastCycleEndedAt?: string;
  deviceCount?: number;
  nextPollAt?: string;
  vulnerabilityMode?: 'per-device' | 'bulk';
  /** Why bulk mode was chosen, or other notes an admin should read. */
  note?: string;
  lastErrorCode?: string | null;
  lastErrorMessage?: string | null;
  lastErrorAt?: string | null;
  /** The cycle the last error is of, when a cycle's work raised it (the poller's or the vuln-fetcher's). */
  lastErrorCycleId?: string | null;
  /**
   * The last registration of the tenant that was refused, until one is accepted (or the registration in
   * force comes again): the polling's writes (`cycleListed`, a cycle's or the vuln-fetcher's error) leave it,
   * so a refused update of a polled tenant (a rotated secret refused, the old one still polling) stays in
   * sight while `state` and `lastError*` say how its polling goes.
   */
  registrationError?: RegistrationRefusal | null;
  updatedAt?: string;
}

export interface TenantStore {
  /**
   * Stores the record unless a record with the same or a higher revision is already there, or the tenant was
   * removed at that revision or a later one (`remove` with a revision). Resolves true when written. A
   * redelivered or older record never overwrites a newer one, nor brings back a tenant deleted after it.
   */
  put(record: TenantRecord): Promise<boolean>;
  get(tenantId: string): Promise<TenantRecord | null>;
  /** The records of many tenants at once (pipelined, 1000 to a round trip), by tenant id; none for a tenant with none. */
  getMany(tenantIds: readonly string[]): Promise<Map<string, TenantRecord>>;
  /**
   * The tenant's record, read at once with whether the store was filled from `urs.tenants` since Redis last
   * came up empty (`rebuilt`, the registrar's marker `tenantsRebuiltKey`). A record missing while the store
   * is not rebuilt says nothing of the tenant: Redis lost its data (it keeps nothing on disk) and the
   * registrar has not written the records back yet.
   */
  lookup(tenantId: string): Promise<TenantLookup>;
  /** Every stored tenant id. */
  ids(): Promise<string[]>;
  /**
   * Removes the record (and its status) unless a newer revision than `revision` exists. With a revision (a
   * deletion's, as on `urs.tenants`), remembers it for `TENANT_REMOVED_TTL_MS`: `put` refuses a record at or
   * below it. A record missing from Redis cannot otherwise be told from one deleted after it: a record of the
   * tenant read from `urs.tenants` before the deletion, or sent before it and stored late, would come back.
   */
  remove(tenantId: string, revision?: number): Promise<boolean>;
  /**
   * Merges fields into the tenant's status. `null` clears a field. A `state` other than
   * `registration-rejected` takes the tenant off `refusedIds`.
   */
  updateStatus(
    tenantId: string,
    status: Partial<{ [K in keyof TenantStatus]: TenantStatus[K] | null }>,
  ): Promise<void>;
  /**
   * The polling's own writes (a cycle's start, its failure): merges fields as `updateStatus` does, only while
   * the tenant's record is there and enabled, read and written at once in Redis. A tenant disabled or deleted
   * while its cycle ends keeps the status the registrar wrote (it stores the record before it writes the
   * status), and a deleted tenant's status is not created again. Resolves false when nothing was written.
   */
  updatePollingStatus(
    tenantId: string,
    status: Partial<{
      [K in Exclude<keyof TenantStatus, 'registrationError'>]: TenantStatus[K] | null;
    }>,
  ): Promise<boolean>;
  getStatus(tenantId: string): Promise<TenantStatus>;
  /**
   * Puts a refused registration in the tenant's status (`registrationError`); `rejected` (the tenant has no
   * record) makes its state `registration-rejected` and lists it in `refusedIds`. Read and written at once:
   * resolves false when the status held a refusal of the same source and generation already (the same push
   * handled again), true when the refusal is new.
   */
  recordRefusal(
    tenantId: string,
    refusal: RegistrationRefusal,
    options: { rejected: boolean },
  ): Promise<boolean>;
  /**
   * The tenants `recordRefusal` made `registration-rejected` (no record), until `updateStatus` gives them
   * another state or `remove` removes them; in id order. A full push's diff finds them here: they have no
   * record, so `ids` does not list them. A tenant can be registered or deleted right after it is listed:
   * read its record and status under its write lock.
   */
  refusedIds(): Promise<string[]>;
  /**
   * A cycle listed in full: merges `status` (`null` clears a field), and the tenant is `active` with its last error cleared,
   * unless that error is of this same cycle (the vuln-fetcher's calls failed while the listing went on:
   * a bulk export refused for missing consent). Read and written at once, whichever comes first. A refused
   * registration (`registrationError`) stays: the cycle polled with the settings in force, not the refused ones.
   * Only while the tenant's record is there and enabled, as `updatePollingStatus`: resolves false, and nothing
   * is written, for a tenant disabled or deleted meanwhile.
   */
  cycleListed(
    tenantId: string,
    cycleId: string,
    status: Partial<{
      [K in Exclude<keyof TenantStatus, 'state' | `lastError${string}` | 'registrationError'>]:
        TenantStatus[K] | null;
    }>,
  ): Promise<boolean>;
  /** Whether the store holds any tenant at all (an empty store after a Redis wipe triggers a rebuild). */
  isEmpty(): Promise<boolean>;
}

/** A tenant's record and whether the tenant store is whole (see TenantStore.lookup). */
export interface TenantLookup {
  record: TenantRecord | null;
  rebuilt: boolean;
}

// KEYS[1] record hash, KEYS[2] index set, KEYS[3] the tenant's removal marker; ARGV: tenantId, revision, json.
const PUT_IF_NEWER = `
local current = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
if current >= tonumber(ARGV[2]) then return 0 end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'revision', ARGV[2], 'record', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 1`;

// Writes the field/value pairs of ARGV from `first` on to the status hash KEYS[1] (a JSON null clears the field).
const writeStatusFields = (first: number): string => `
for i = ${first}, #ARGV, 2 do
  if ARGV[i + 1] == 'null' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
`;

// Ends the script, writing nothing, unless the record in KEYS[2] is there and enabled. The registrar stores a
// disabled record before it writes the status `disabled` (and deletes both at once): a polling write that
// comes after the record changed leaves its status alone, one that came before is overwritten by it. The
// poll schedule's `begin` makes the same check, and answers why it refused.
export const IF_ENABLED = `
local json = redis.call('HGET', KEYS[2], 'record')
if not json then return 0 end
local ok, record = pcall(cjson.decode, json)
if not ok or type(record) ~= 'table' or record.enabled ~= true then return 0 end
`;

// KEYS[1] status hash, KEYS[2] record hash, KEYS[3] refused index set; ARGV: tenantId, '1' when the state is
// set (to other than registration-rejected), then field/value pairs (a JSON null clears the field).
const UPDATE_POLLING_STATUS = `${IF_ENABLED}${writeStatusFields(3)}
if ARGV[2] == '1' then redis.call('SREM', KEYS[3], ARGV[1]) end
return 1`;

// KEYS[1] status hash, KEYS[2] record hash; ARGV: the cycle id (as JSON, as every status field is stored),
// then field/value pairs (a JSON null clears the field).
const CYCLE_LISTED = `${IF_ENABLED}${writeStatusFields(2)}
if redis.call('HGET', KEYS[1], 'lastErrorCycleId') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'state', '"error"')
else
  redis.call('HSET', KEYS[1], 'state', '"active"')
  redis.call('HDEL', KEYS[1], 'lastErrorCode', 'lastErrorMessage', 'lastErrorAt', 'lastErrorCycleId')
end
return 1`;

// KEYS[1] record hash, KEYS[2] index set, KEYS[3] status hash, KEYS[4] refused index set, KEYS[5] the tenant's
// removal marker; ARGV: tenantId, revision (0 = any, and no marker), the marker's ttl ms. The marker is raised
// to the revision, never lowered; its ttl counts from this call.
const REMOVE_IF_NOT_NEWER = `
local current = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
local revision = tonumber(ARGV[2])
if revision > 0 and current > revision then return 0 end
if revision > 0 then
  if revision > tonumber(redis.call('GET', KEYS[5]) or '0') then
    redis.call('SET', KEYS[5], ARGV[2], 'PX', ARGV[3])
  else
    redis.call('PEXPIRE', KEYS[5], ARGV[3])
  end
end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
return 1`;

// KEYS[1] status hash, KEYS[2] refused index set; ARGV: tenantId, the refusal (JSON), its source, its
// generation ('' for none), '1' when the tenant has no record, the time (JSON). The refusal stored before is
// the same one when its source and generation are: a push handled again refuses the same entry again.
const RECORD_REFUSAL = `
local seen = 0
local before = redis.call('HGET', KEYS[1], 'registrationError')
if before and ARGV[4] ~= '' then
  local ok, refusal = pcall(cjson.decode, before)
  if ok and type(refusal) == 'table' and refusal.source == ARGV[3] and type(refusal.generation) == 'number'
      and refusal.generation == tonumber(ARGV[4]) then seen = 1 end
end
redis.call('HSET', KEYS[1], 'registrationError', ARGV[2], 'updatedAt', ARGV[6])
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'state', '"registration-rejected"')
  redis.call('SADD', KEYS[2], ARGV[1])
end
return 1 - seen`;

/** The tenant's record hash; the score store stores no score of a tenant whose record is gone. */
export function tenantRecordKey(prefix: string, tenantId: string): string {
  return `${prefix}tenant:${tenantId}`;
}

/**
 * The registrar's marker that the tenant store was filled from `urs.tenants` since Redis last came up empty
 * (see RegistrarStateStore.isRebuilt). Without it a missing record is no sign of a deletion.
 */
export function tenantsRebuiltKey(prefix: string): string {
  return `${prefix}tenants-rebuilt`;
}

/** The code of `tenantsNotRebuilt`. */
export const TENANTS_NOT_REBUILT = 'TENANTS_NOT_REBUILT';

/**
 * The failure of a step that needs a tenant's record Redis does not have while the tenant store is not
 * rebuilt (TenantStore.lookup): Redis lost its data and the registrar has not written the records back, so
 * the tenant may well be registered, and nothing tells whether it was deleted. An infrastructure fault
 * (retryable): the bus holds the message and tries it again until the rebuild is done.
 */
export function tenantsNotRebuilt(tenantId: string): StoreError {
  return new StoreError(
    TENANTS_NOT_REBUILT,
    `no record of tenant ${tenantId} in Redis, and the registrar has not rebuilt the tenants from ` +
      'urs.tenants since Redis lost its data: held until it has',
  );
}

/**
 * How long a tenant's removal marker (`TenantStore.remove` with a revision) lasts after its last removal: as
 * the deletion's generation (`DELETION_TTL_MS` of the registrar's state), well past the time a record older
 * than the deletion may still be written back (a catch-up's read of `urs.tenants`, a write retried after Redis
 * failed). A registration after the deletion gets a newer revision (Redis's clock, and the tenant's revision
 * counter above the deletion's), so the marker never refuses it.
 */
export const TENANT_REMOVED_TTL_MS = 30 * 24 * 60 * 60 * 1000;

/** The tenant's removal marker: the revision of its last deletion (see `TenantStore.remove`). */
export function tenantRemovedKey(prefix: string, tenantId: string): string {
  return `${prefix}tenant-removed:${tenantId}`;
}

/** The tenant's status hash; the cycle store reads its device count when a cycle begins. */
export function tenantStatusKey(prefix: string, tenantId: string): string {
  return `${prefix}tenant-status:${tenantId}`;
}

/**
 * A status change as the scripts take it: field/value pairs, each value as JSON (a JSON null clears the
 * field), `updatedAt` now.
 */
function statusFields(status: Record<string, unknown>): string[] {
  return Object.entries({ ...status, updatedAt: new Date().toISOString() })
    .filter(([, value]) => value !== undefined)
    .flatMap(([field, value]) => [field, JSON.stringify(value)]);
}

/**
 * Tenant records (as on `urs.tenants`: the secret stays sealed) and their status, under
 * `{prefix}tenant:{id}`, `{prefix}tenant-status:{id}`, the index `{prefix}tenants`, the index of the
 * tenants with no record whose registration was refused, `{prefix}refused-tenants`, and the revision of a
 * tenant's last deletion, `{prefix}tenant-removed:{id}` (PX `TENANT_REMOVED_TTL_MS`).
 */
export function createTenantStore(redis: Redis, prefix: string): TenantStore {
  const recordKey = (tenantId: string): string => tenantRecordKey(prefix, tenantId);
  const statusKey = (tenantId: string): string => tenantStatusKey(prefix, tenantId);
  const indexKey = `${prefix}tenants`;
  const refusedKey = `${prefix}refused-tenants`;
  return {
    async put(record) {
      const written = await redis.eval(
        PUT_IF_NEWER,
        3,
        recordKey(record.tenantId),
        indexKey,
        tenantRemovedKey(prefix, record.tenantId),
        record.tenantId,
        String(record.revision),
        JSON.stringify(record),
      );
      return written === 1;
    },
    async get(tenantId) {
      const json = await redis.hget(recordKey(tenantId), 'record');
      return json === null ? null : (JSON.parse(json) as TenantRecord);
    },
    async getMany(tenantIds) {
      const records = new Map<string, TenantRecord>();
      for (let start = 0; start < tenantIds.length; start += 1000) {
        const slice = tenantIds.slice(start, start + 1000);
        const reads = redis.pipeline();
        for (const tenantId of slice) reads.hget(recordKey(tenantId), 'record');
        for (const [index, json] of (await replies(reads)).entries())
          if (typeof json === 'string') records.set(slice[index] as string, JSON.parse(json) as TenantRecord);
      }
      return records;
    },
    async lookup(tenantId) {
      // One transaction: a wipe, or the rebuild's end, between two reads would pass a wiped record for a deletion.
      const [json, marker] = await replies(
        redis.multi().hget(recordKey(tenantId), 'record').exists(tenantsRebuiltKey(prefix)),
      );
      return {
        record: typeof json === 'string' ? (JSON.parse(json) as TenantRecord) : null,
        rebuilt: marker === 1,
      };
    },
    async ids() {
      return (await redis.smembers(indexKey)).sort();
    },
    async remove(tenantId, revision = 0) {
      const removed = await redis.eval(
        REMOVE_IF_NOT_NEWER,
        5,
        recordKey(tenantId),
        indexKey,
        statusKey(tenantId),
        refusedKey,
        tenantRemovedKey(prefix, tenantId),
        tenantId,
        String(revision),
        String(TENANT_REMOVED_TTL_MS),
      );
      return removed === 1;
    },
    async updateStatus(tenantId, status) {
      const set: string[] = [];
      const clear: string[] = [];
      for (const [field, value] of Object.entries(status)) {
        if (value === undefined) continue;
        if (value === null) clear.push(field);
        else set.push(field, JSON.stringify(value));
      }
      set.push('updatedAt', JSON.stringify(new Date().toISOString()));
      const pipeline = redis.multi().hset(statusKey(tenantId), ...set);
      if (clear.length > 0) pipeline.hdel(statusKey(tenantId), ...clear);
      if (status.state !== undefined && status.state !== 'registration-rejected')
        pipeline.srem(refusedKey, tenantId);
      await pipeline.exec();
    },
    async updatePollingStatus(tenantId, status) {
      const fields = statusFields(status);
      const setsState =
        status.state !== undefined && status.state !== null && status.state !== 'registration-rejected';
      const written = await redis.eval(
        UPDATE_POLLING_STATUS,
        3,
        statusKey(tenantId),
        recordKey(tenantId),
        refusedKey,
        tenantId,
        setsState ? '1' : '0',
        ...fields,
      );
      return written === 1;
    },
    async getStatus(tenantId) {
      const fields = await redis.hgetall(statusKey(tenantId));
      const status: Record<string, unknown> = {};
      for (const [field, json] of Object.entries(fields)) status[field] = JSON.parse(json) as unknown;
      return status as TenantStatus;
    },
    async recordRefusal(tenantId, refusal, options) {
      const recorded = await redis.eval(
        RECORD_REFUSAL,
        2,
        statusKey(tenantId),
        refusedKey,
        tenantId,
        JSON.stringify(refusal),
        refusal.source,
        refusal.generation === undefined ? '' : String(refusal.generation),
        options.rejected ? '1' : '0',
        JSON.stringify(new Date().toISOString()),
      );
      return recorded === 1;
    },
    async refusedIds() {
      return (await redis.smembers(refusedKey)).sort();
    },
    async cycleListed(tenantId, cycleId, status) {
      const fields = statusFields(status);
      const written = await redis.eval(
        CYCLE_LISTED,
        2,
        statusKey(tenantId),
        recordKey(tenantId),
        JSON.stringify(cycleId),
        ...fields,
      );
      return written === 1;
    },
    async isEmpty() {
      return (await redis.scard(indexKey)) === 0;
    },
  };
}

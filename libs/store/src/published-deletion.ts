import type { default as Redis } from 'ioredis';
import { UrsError } from '@urs/resilience';
import { DELETED_BEFORE_LUA, TENANT_GONE_LUA } from './tenant-deletion';
import { tenantsNotRebuilt } from './tenants';

/** A tenant's deletion as the published store records it (see `createTenantDeletions`). */
export interface TenantDeletions {
  /**
   * Records that the tenant was deleted at `deletedAt` (epoch ms), with the deletion's `revision` (its
   * tombstone's), and lists its devices to tombstone: every device published and not tombstoned yet, and
   * every device the score store holds a score of from before the deletion's cut (`scoreStampsKey`; the
   * scores `ScoreStore.removeTenant` removes, not those of a registration landing meanwhile). The scorer
   * stores a score before the publisher can produce its record, so a record produced and never recorded as
   * published (the publisher stopped between the send and `CycleStore.recordBatch`, or a send failed part
   * way, and the batch comes again as a deleted tenant's) is listed too; read in the same Redis step as the
   * marker is written, after which the score store stores no score of the tenant's cycles. From then on the
   * tenant's cycles are of a deleted tenant (`ofDeletedTenant`) until it is registered again: a record of it
   * newer than `revision` in the tenant store, or `registeredAgain`. A deletion older than a registration
   * already recorded (delivered again, or read again from the topic's beginning) lists only the devices last
   * seen, or scored, in a cycle that started before that registration. Rejects with `REBUILD_NEEDED` (an
   * infrastructure fault: the deletion is held and tried again), nothing written, while the record of what
   * VMS holds is not whole (`PublishedRebuild.isRebuilt`): Redis wiped since the caller made sure of it would
   * list nothing, and the deletion's marker would then keep the rebuild from restoring the tenant's devices,
   * leaving them in VMS for good.
   */
  markDeleted(tenantId: string, deletedAt: number, revision?: number): Promise<string[]>;
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
   * Whether the cycle that started at `cycleAt` (epoch ms) is of a deleted tenant, by the rule the score store
   * stores scores by (`TENANT_GONE_LUA`): the tenant was deleted and not registered again before the cycle
   * started (`DELETED_BEFORE_LUA`), or, with `onlyRegisteredTenants`, its record is gone from the rebuilt
   * tenant store (Redis wiped since the deletion took its marker). Its batches and summary are not published.
   * With `onlyRegisteredTenants`, rejects with TENANTS_NOT_REBUILT (retryable, an infrastructure fault) while the
   * record is missing and the registrar has not rebuilt the records (`tenantsNotRebuilt`).
   */
  ofDeletedTenant(tenantId: string, cycleAt: number): Promise<boolean>;
}

// KEYS[1] deletion marker hash, KEYS[2] seen zset, KEYS[3] the rebuild's marker, KEYS[4] the score store's
// stamps hash, KEYS[5] the tenant's record hash; ARGV: deletion ms, marker ttl ms, deletion revision (empty:
// none). Returns the devices to tombstone, or -1 (nothing written) when the record of what VMS holds is not
// whole. The marker keeps the newest deletion with its revision, and the cutoff: the start before which a
// device's last cycle must be to be tombstoned ('inf' unless a registration newer than this deletion was
// recorded). A device with a stored score is listed when the score's stamp is before the marker's cut
// (`deletedBefore`), the one the score store removes the tenant's scores by (`REMOVE_TENANT`): a registration
// landing meanwhile keeps its cycles' devices.
const MARK_DELETED = `${DELETED_BEFORE_LUA}
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local at = tonumber(ARGV[1])
local deleted = tonumber(redis.call('HGET', KEYS[1], 'deletedAt') or '-1')
local registeredAt = redis.call('HGET', KEYS[1], 'registeredAt') or '-1'
local cutoff = '+inf'
if tonumber(registeredAt) > at then
  cutoff = '(' .. registeredAt
elseif at > deleted then
  redis.call('HSET', KEYS[1], 'deletedAt', ARGV[1])
  redis.call('HDEL', KEYS[1], 'registeredAt', 'revision')
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'revision', ARGV[3]) end
end
redis.call('HSET', KEYS[1], 'cutoff', cutoff)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local devices = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
local listed = {}
for i = 1, #devices do listed[devices[i]] = true end
local scored = redis.call('HGETALL', KEYS[4])
local before = deletedBefore(KEYS[1], KEYS[5])
for i = 1, #scored, 2 do
  if not listed[scored[i]] and tonumber(scored[i + 1]) < before then devices[#devices + 1] = scored[i] end
end
return devices`;

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

/**
 * KEYS[1] deletion marker hash, KEYS[2] the tenant's record hash, KEYS[3] (with `onlyRegisteredTenants`) the
 * registrar's rebuild marker; ARGV[1] a cycle's start (epoch ms). `tenantGone`'s answer (`ofDeletedTenant`).
 */
export const OF_DELETED_TENANT = `${TENANT_GONE_LUA}
return tenantGone(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]))`;

/**
 * `OF_DELETED_TENANT`'s keys for the tenant: with `tenantsRebuilt` (`onlyRegisteredTenants`), a record gone
 * counts too.
 */
export function ofDeletedTenantKeys(keys: DeletionKeys, tenantId: string): string[] {
  return [
    keys.deleted(tenantId),
    keys.record(tenantId),
    ...(keys.tenantsRebuilt === undefined ? [] : [keys.tenantsRebuilt]),
  ];
}

/** `OF_DELETED_TENANT`'s answer: whether the cycle is of a deleted tenant; TENANTS_NOT_REBUILT thrown for 2. */
export function ofDeletedTenantAnswer(answer: unknown, tenantId: string): boolean {
  if (answer === 2) throw tenantsNotRebuilt(tenantId);
  return answer === 1;
}

/** The keys of a tenant's publisher state its deletion reads, writes or forgets (`createPublishedStore`). */
export interface DeletionKeys {
  /** The deletion marker (hash: `deletedAt`, `registeredAt`, `revision`, `cutoff`; PX). */
  deleted: (tenantId: string) => string;
  /** The tenant's record in the tenant store (read only: its revision). */
  record: (tenantId: string) => string;
  /** Devices by the start of the newest cycle they were in (zset). */
  seen: (tenantId: string) => string;
  /** The score store's stamps hash (read only, see `scoreStampsKey`). */
  scored: (tenantId: string) => string;
  /** Completed cycles by start (zset). */
  cycles: (tenantId: string) => string;
  /** Completed cycles' sequence numbers (hash). */
  sequence: (tenantId: string) => string;
  /** The completed cycles' counter. */
  counter: (tenantId: string) => string;
  /** The rebuild's marker (see `RebuildKeys.rebuilt`). */
  rebuilt: string;
  /**
   * The registrar's marker that the tenant records are whole (`tenantsRebuiltKey`), read only, with
   * `onlyRegisteredTenants`: a tenant whose record is gone is then a deleted one (`OF_DELETED_TENANT`).
   */
  tenantsRebuilt?: string;
}

/**
 * The published store's calls on a tenant's deletion, on its keys `keys`. `markerTtlMs`: how long a deletion
 * marker lasts, in milliseconds (the published store's DELETION_MARKER_TTL_MS says why).
 */
export function createTenantDeletions(
  redis: Redis,
  keys: DeletionKeys,
  markerTtlMs: number,
): TenantDeletions {
  return {
    async markDeleted(tenantId, deletedAt, revision) {
      const devices = (await redis.eval(
        MARK_DELETED,
        5,
        keys.deleted(tenantId),
        keys.seen(tenantId),
        keys.rebuilt,
        keys.scored(tenantId),
        keys.record(tenantId),
        String(deletedAt),
        String(markerTtlMs),
        revision === undefined ? '' : String(revision),
      )) as string[] | number;
      if (typeof devices === 'number')
        throw new UrsError(
          'REBUILD_NEEDED',
          'the published devices are not rebuilt from vms.risk-scores (Redis lost them): the deletion waits for it',
          { canRetry: true, infrastructure: true },
        );
      return devices;
    },
    async forgetDeleted(tenantId) {
      await redis.eval(
        FORGET_DELETED,
        4,
        keys.deleted(tenantId),
        keys.sequence(tenantId),
        keys.counter(tenantId),
        keys.cycles(tenantId),
      );
    },
    async registeredAgain(tenantId, registeredAt) {
      await redis.eval(
        REGISTERED_AGAIN,
        1,
        keys.deleted(tenantId),
        String(registeredAt),
        String(markerTtlMs),
      );
    },
    async ofDeletedTenant(tenantId, cycleAt) {
      const of = ofDeletedTenantKeys(keys, tenantId);
      const answer = await redis.eval(OF_DELETED_TENANT, of.length, ...of, String(cycleAt));
      return ofDeletedTenantAnswer(answer, tenantId);
    },
  };
}

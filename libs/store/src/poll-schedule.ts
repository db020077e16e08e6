import type Redis from 'ioredis';
import type { CycleStore } from './cycles';
import { releaseOwnedKey, renewOwnedKey } from './owned-key';
import { pollLeaseKey, type PollLease } from './poll-lease';
import { tenantRecordKey, tenantsRebuiltKey } from './tenants';

export type { PollLease } from './poll-lease';

/** Where a tenant's polling stands, shared by every poller replica. Times are epoch milliseconds. */
export interface PollSchedule {
  /** When the last cycle started (the next one is due one poll interval later). */
  lastStartedAt?: number;
  /** Not before this time (a backoff after an authentication failure or throttling). */
  notBefore?: number;
  /** Consecutive failed cycles of one kind (drives the backoff). */
  failures: number;
  /**
   * The kind of failure `failures` counts (the poller's `setup`, `throttled`, `transient`): a failure of another
   * kind starts a new streak. Absent in a schedule an older poller wrote.
   */
  failedKind?: string;
  /** The tenant record's revision the last failed cycle ran with (new settings are tried at once). */
  failedRevision?: number;
  /** Set while a cycle runs; still set when its lease expired means the holder died mid-cycle. */
  runningCycleId?: string;
  /**
   * After a transient failure, or throttling (when the quota frees): tried again at this time, when that comes
   * before the next interval.
   */
  retryAt?: number;
  /**
   * The listing of the running cycle whose every batch went out and whose totals the cycle store did not record
   * (`keepListing`): the next holder of the lease records it before ending the cycle, whichever replica it is.
   */
  unrecordedListing?: UnrecordedListing;
}

/** A cycle's totals as the cycle store records them once its listing ended (`CycleStore.listed`). */
export type ListedTotals = Parameters<CycleStore['listed']>[2];

/** A running cycle's listing the cycle store did not record: its cycle and totals. */
export interface UnrecordedListing {
  cycleId: string;
  totals: ListedTotals;
}

/**
 * Why `begin` wrote nothing: the lease was lost, or the tenant's record in Redis is not there (`record-missing`:
 * deleted, or not stored by the registrar yet, which writes Kafka first) or not enabled (`record-disabled`,
 * with the revision stored when it has one: older than the poller's, the registrar has not stored the newer
 * record yet).
 */
export type CycleBeginRefusal =
  { reason: 'lease-lost' | 'record-missing' } | { reason: 'record-disabled'; storedRevision?: number };

export interface PollScheduleStore {
  /** Takes the tenant's lease for `leaseMs` unless someone holds it; null when taken. */
  acquire(tenantId: string, holderId: string, leaseMs: number): Promise<PollLease | null>;
  /** Extends the lease; false when it was lost (expired and maybe taken by another holder). */
  renew(lease: PollLease, leaseMs: number): Promise<boolean>;
  /** Gives the lease back (only if still held: compare-and-delete). */
  release(lease: PollLease): Promise<boolean>;
  get(tenantId: string): Promise<PollSchedule>;
  /** The schedules of many tenants at once (pipelined, 1000 to a round trip), by tenant id. */
  getMany(tenantIds: readonly string[]): Promise<Map<string, PollSchedule>>;
  /**
   * Records a cycle's start, fenced: false (and nothing written) when the lease was lost, or when the tenant's
   * record in Redis is gone or disabled. A poller that has not read the tenant's deletion (or disabling) yet
   * must not begin a cycle of it: its schedule, cleared by the registrar, would be written again with a cycle
   * marked running that never ends, and stay without expiry. True when begun, else why not.
   */
  begin(lease: PollLease, cycleId: string, startedAt: number): Promise<true | CycleBeginRefusal>;
  /**
   * Records a cycle's end, fenced: clears the running cycle, sets the failure count, the backoff
   * (`notBefore` null clears it) and the early retry (`retryAt`, cleared when left out or null). A schedule
   * cleared since the cycle began (`clear`) is left cleared.
   */
  end(
    lease: PollLease,
    outcome: {
      failures: number;
      notBefore: number | null;
      retryAt?: number | null;
      failedRevision?: number;
      /** Cleared when left out. */
      failedKind?: string;
    },
  ): Promise<boolean>;
  /**
   * Keeps, fenced, the listing of the running cycle `cycleId` whose every batch went out and whose totals the cycle
   * store did not record (`PollSchedule.unrecordedListing`, cleared by the cycle's `end` and the next `begin`):
   * false (nothing written) when the lease was lost or the schedule cleared since the cycle began.
   */
  keepListing(lease: PollLease, cycleId: string, totals: ListedTotals): Promise<boolean>;
  /** Forgets a deleted tenant's schedule (a re-registration then polls at once). */
  clear(tenantId: string): Promise<void>;
  /**
   * Before a new revision `toRevision` of the tenant's record that leaves its settings as `fromRevision` had
   * them (its secret re-sealed with another key): a failure of `fromRevision` becomes one of `toRevision`,
   * so the pollers neither try the tenant at once nor restart its failure streak for it. False (nothing
   * written) while a poller holds the tenant's lease: a cycle under way would end writing `fromRevision`
   * back; the caller tries again later.
   */
  carryFailure(tenantId: string, fromRevision: number, toRevision: number): Promise<boolean>;
  /**
   * When the registrar last wrote the tenants back from `urs.tenants` after Redis came up empty (its marker
   * `tenantsRebuiltKey`), epoch ms; undefined until it has. Redis keeps nothing on disk: the schedules are
   * lost with the records, so a tenant with no schedule and an older record was polled before that, and
   * Redis lost when.
   */
  tenantsRebuiltAt(): Promise<number | undefined>;
}

// KEYS[1] lease, KEYS[2] fence counter; ARGV: holder id, lease ms, fence counter ttl ms.
const ACQUIRE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local fence = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local token = fence .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token`;

// KEYS[1] lease, KEYS[2] the tenant's record hash, KEYS[3] schedule hash; ARGV: token, started at, cycle id.
// Begins only while the record is there and enabled (as `IF_ENABLED`), and answers why not: 'lease-lost',
// 'record-missing' (absent or unreadable), or 'record-disabled' with the stored revision ('' when none).
const BEGIN = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lease-lost' end
local json = redis.call('HGET', KEYS[2], 'record')
if not json then return 'record-missing' end
local ok, record = pcall(cjson.decode, json)
if not ok or type(record) ~= 'table' then return 'record-missing' end
if record.enabled ~= true then
  local revision = tonumber(record.revision)
  return { 'record-disabled', revision and tostring(revision) or '' }
end
redis.call('HSET', KEYS[3], 'lastStartedAt', ARGV[2], 'runningCycleId', ARGV[3])
redis.call('HDEL', KEYS[3], 'unrecordedListing')
return 1`;

// KEYS[1] lease, KEYS[2] schedule hash; ARGV: token, '1' to write only a schedule that exists (else '0'), then
// field/value pairs to set, '--', fields to delete.
const FENCED_WRITE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then return 1 end
local i = 3
while ARGV[i] ~= '--' do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for j = i + 1, #ARGV do redis.call('HDEL', KEYS[2], ARGV[j]) end
return 1`;

// KEYS[1] lease, KEYS[2] schedule hash; ARGV: from revision, to revision. A failure of `from` or of a revision
// after it (one carried before, whose record Kafka then refused) is carried.
const CARRY_FAILURE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local failed = tonumber(redis.call('HGET', KEYS[2], 'failedRevision') or '')
if failed and failed >= tonumber(ARGV[1]) and failed < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[2], 'failedRevision', ARGV[2])
end
return 1`;

/**
 * A tenant's fencing counter lasts this long after its last lease: far beyond any lease, so no holder of
 * a token it gave is still at work when it restarts, and a deleted tenant's goes.
 */
const FENCE_TTL_MS = 30 * 24 * 60 * 60 * 1000;

/** A schedule from its hash's fields (none: a tenant never polled). */
function parseSchedule(fields: Record<string, string>): PollSchedule {
  const schedule: PollSchedule = { failures: Number(fields['failures'] ?? 0) };
  if (fields['lastStartedAt'] !== undefined) schedule.lastStartedAt = Number(fields['lastStartedAt']);
  if (fields['notBefore'] !== undefined) schedule.notBefore = Number(fields['notBefore']);
  if (fields['runningCycleId'] !== undefined) schedule.runningCycleId = fields['runningCycleId'];
  if (fields['failedRevision'] !== undefined) schedule.failedRevision = Number(fields['failedRevision']);
  if (fields['retryAt'] !== undefined) schedule.retryAt = Number(fields['retryAt']);
  if (fields['failedKind'] !== undefined) schedule.failedKind = fields['failedKind'];
  const listing = parseListing(fields['unrecordedListing']);
  if (listing !== undefined) schedule.unrecordedListing = listing;
  return schedule;
}

/** A kept listing from its JSON; none when absent or unreadable (the cycle is then taken over as abandoned). */
function parseListing(json: string | undefined): UnrecordedListing | undefined {
  if (json === undefined) return undefined;
  try {
    const listing = JSON.parse(json) as Partial<UnrecordedListing> | null;
    return typeof listing?.cycleId === 'string' &&
      typeof listing.totals === 'object' &&
      listing.totals !== null
      ? { cycleId: listing.cycleId, totals: listing.totals }
      : undefined;
  } catch {
    return undefined;
  }
}

/** `begin`'s answer from its script's reply. */
function beginAnswer(reply: unknown): true | CycleBeginRefusal {
  if (reply === 1) return true;
  if (reply === 'lease-lost' || reply === 'record-missing') return { reason: reply };
  const [, stored] = Array.isArray(reply) ? (reply as unknown[]) : [];
  const storedRevision = Number(stored);
  return typeof stored === 'string' && stored !== '' && Number.isFinite(storedRevision)
    ? { reason: 'record-disabled', storedRevision }
    : { reason: 'record-disabled' };
}

/**
 * Per-tenant poll leases and schedules: `{prefix}poll-lease:{tenantId}` (string, PX), `{prefix}poll-fence:{tenantId}`
 * (counter, PX: `FENCE_TTL_MS` from the last lease) and `{prefix}poll-schedule:{tenantId}` (hash). Every write of the schedule is fenced by the lease.
 */
export function createPollScheduleStore(redis: Redis, prefix: string): PollScheduleStore {
  const leaseKey = (tenantId: string): string => pollLeaseKey(prefix, tenantId);
  const fenceKey = (tenantId: string): string => `${prefix}poll-fence:${tenantId}`;
  const scheduleKey = (tenantId: string): string => `${prefix}poll-schedule:${tenantId}`;

  /** Writes the schedule under the lease; with `existing`, only a schedule there is (see `end`). */
  async function fencedWrite(
    lease: PollLease,
    set: Record<string, string>,
    del: string[],
    existing = false,
  ): Promise<boolean> {
    const args = [lease.token, existing ? '1' : '0', ...Object.entries(set).flat(), '--', ...del];
    const written = await redis.eval(
      FENCED_WRITE,
      2,
      leaseKey(lease.tenantId),
      scheduleKey(lease.tenantId),
      ...args,
    );
    return written === 1;
  }

  return {
    async acquire(tenantId, holderId, leaseMs) {
      const token = await redis.eval(
        ACQUIRE,
        2,
        leaseKey(tenantId),
        fenceKey(tenantId),
        holderId,
        String(leaseMs),
        String(FENCE_TTL_MS),
      );
      return typeof token === 'string' ? { tenantId, token } : null;
    },
    renew(lease, leaseMs) {
      return renewOwnedKey(redis, leaseKey(lease.tenantId), lease.token, leaseMs);
    },
    release(lease) {
      return releaseOwnedKey(redis, leaseKey(lease.tenantId), lease.token);
    },
    async get(tenantId) {
      return parseSchedule(await redis.hgetall(scheduleKey(tenantId)));
    },
    async getMany(tenantIds) {
      const schedules = new Map<string, PollSchedule>();
      for (let start = 0; start < tenantIds.length; start += 1000) {
        const slice = tenantIds.slice(start, start + 1000);
        const reads = redis.pipeline();
        for (const tenantId of slice) reads.hgetall(scheduleKey(tenantId));
        for (const [index, [error, fields]] of ((await reads.exec()) ?? []).entries()) {
          if (error) throw error;
          schedules.set(slice[index] as string, parseSchedule(fields as Record<string, string>));
        }
      }
      return schedules;
    },
    async begin(lease, cycleId, startedAt) {
      const begun = await redis.eval(
        BEGIN,
        3,
        leaseKey(lease.tenantId),
        tenantRecordKey(prefix, lease.tenantId),
        scheduleKey(lease.tenantId),
        lease.token,
        String(startedAt),
        cycleId,
      );
      return beginAnswer(begun);
    },
    end(lease, outcome) {
      const set: Record<string, string> = { failures: String(outcome.failures) };
      const del = ['runningCycleId', 'unrecordedListing'];
      if (outcome.notBefore === null) del.push('notBefore');
      else set['notBefore'] = String(outcome.notBefore);
      if (outcome.failedRevision === undefined) del.push('failedRevision');
      else set['failedRevision'] = String(outcome.failedRevision);
      if (outcome.retryAt === undefined || outcome.retryAt === null) del.push('retryAt');
      else set['retryAt'] = String(outcome.retryAt);
      if (outcome.failedKind === undefined) del.push('failedKind');
      else set['failedKind'] = outcome.failedKind;
      // Its `begin` wrote the schedule: gone since, the registrar cleared it (the tenant disabled or deleted
      // during the cycle), and writing the end back would leave a deleted tenant's schedule for ever and
      // a disabled one's backoff to its re-enabling.
      return fencedWrite(lease, set, del, true);
    },
    keepListing(lease, cycleId, totals) {
      const listing: UnrecordedListing = { cycleId, totals };
      return fencedWrite(lease, { unrecordedListing: JSON.stringify(listing) }, [], true);
    },
    async clear(tenantId) {
      await redis.del(scheduleKey(tenantId));
    },
    async carryFailure(tenantId, fromRevision, toRevision) {
      const carried = await redis.eval(
        CARRY_FAILURE,
        2,
        leaseKey(tenantId),
        scheduleKey(tenantId),
        String(fromRevision),
        String(toRevision),
      );
      return carried === 1;
    },
    async tenantsRebuiltAt() {
      const at = Date.parse((await redis.get(tenantsRebuiltKey(prefix))) ?? '');
      return Number.isFinite(at) ? at : undefined;
    },
  };
}

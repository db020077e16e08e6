/**
 * A deleted tenant's marker, `{prefix}published-deleted:{tenantId}` (hash: `deletedAt`, and `registeredAt`
 * once registered again, both epoch ms, and the deletion's `revision` when its tombstone carried one),
 * written by the publisher when it reads the tenant's tombstone (see PublishedStore.markDeleted), before it
 * tombstones its devices and removes their scores. The score store reads it too: a score of a cycle it says
 * is of a deleted tenant, stored after that removal, would stay for ever.
 */
export function tenantDeletionKey(prefix: string, tenantId: string): string {
  return `${prefix}published-deleted:${tenantId}`;
}

/**
 * Lua: `deletedBefore(markerKey, recordKey, revision)`, the one rule by which every script that reads a
 * tenant's deletion marker (the score store's save and removal, the publisher's `ofDeletedTenant` and
 * `changed`) tells a deleted tenant's cycle from a cycle of the tenant registered again. Answers the cut (a
 * cycle that started before it, epoch ms, is the deleted tenant's; `math.huge`: every cycle is), or nil
 * without a marker; and, second, whether the tenant's record (`recordKey`, the tenant store's hash) is newer
 * than the deletion.
 *
 * Registered again, the tenant's cycles from its deletion on are its own. The record says so first: the
 * registrar writes it before the registration goes on `urs.tenants`, and the poller starts the tenant's
 * first cycle within a second of reading it, while the marker's `registeredAt` comes only once the
 * publisher reads that registration, queued behind the deletion's tombstones or after a restart: batches
 * refused meanwhile would be lost for good. A record is newer when its revision is above the deletion's
 * (the marker's `revision`, else the caller's `revision`; the registrar's revisions of a tenant only grow).
 * The cut is then the deletion's time, not `registeredAt`: both are Kafka timestamps of the registrar's
 * clock, and a cycle's start is the poller's, minutes after the deletion but maybe less than a clock's skew
 * after the registration. A marker without a revision (a tombstone without one) falls back on
 * `registeredAt`.
 */
export const DELETED_BEFORE_LUA = `
local function deletedBefore(markerKey, recordKey, revision)
  local marker = redis.call('HMGET', markerKey, 'deletedAt', 'registeredAt', 'revision')
  local deletion = tonumber(marker[3] or revision or '0') or 0
  local newer = deletion > 0 and tonumber(redis.call('HGET', recordKey, 'revision') or '0') > deletion
  if not marker[1] then return nil, newer end
  if newer then return tonumber(marker[1]), true end
  if marker[2] then return tonumber(marker[2]), false end
  return math.huge, false
end
`;

/**
 * Lua: `tenantGone(markerKey, recordKey, rebuiltKey, stamp)`, the one rule by which the score store's save
 * refuses a batch and the publisher drops a batch or a summary (`ofDeletedTenant`, `changed`): whether the
 * cycle that started at `stamp` (epoch ms) is of a deleted tenant. 1 when the deletion marker says so
 * (`deletedBefore`), or, given `rebuiltKey` (the registrar's `tenantsRebuiltKey`), when the tenant's record is
 * gone from records rebuilt since Redis last came up empty (a wipe took the marker with it); 2 when the record
 * is missing and the records are not rebuilt (Redis wiped: a deletion is not told from a record not written
 * back yet, and the caller waits); 0 otherwise. Without `rebuiltKey` only the marker counts.
 */
export const TENANT_GONE_LUA = `${DELETED_BEFORE_LUA}
local function tenantGone(markerKey, recordKey, rebuiltKey, stamp)
  local cut = deletedBefore(markerKey, recordKey)
  if cut and stamp < cut then return 1 end
  if rebuiltKey and redis.call('EXISTS', recordKey) == 0 then
    if redis.call('EXISTS', rebuiltKey) == 1 then return 1 end
    return 2
  end
  return 0
end
`;

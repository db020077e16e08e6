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

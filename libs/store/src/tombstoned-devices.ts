/**
 * Devices tombstoned by a completed cycle, `{prefix}published-tombstoned:{tenantId}` (zset: deviceId by the
 * start, epoch ms, of the cycle whose completion tombstoned it), written by `PublishedStore.forget` as the
 * publisher forgets them. A batch of that cycle or an older one still on its way (late, or delivered again)
 * would otherwise find the device unknown and bring it back: published after its tombstone by the publisher,
 * stored again by the scorer. The publisher's `changed` and `commit` and the score store's save skip it.
 * Only the cycles of the last `TOMBSTONE_MARKER_TTL_MS` keep theirs: the zset stays as small as the devices
 * tombstoned in that time.
 */
export const tombstonedKeyOf = (prefix: string, tenantId: string): string =>
  `${prefix}published-tombstoned:${tenantId}`;

/**
 * Markers outlive the cycles before them (the cycle store keeps a cycle a day past its deadline) and any
 * redelivery of their batches, as a sent summary's and a deleted tenant's do.
 */
export const TOMBSTONE_MARKER_TTL_MS = 2 * 24 * 60 * 60 * 1000;

/**
 * Lua: `tombstonedSince(key, ids, stamp)`, which of `ids` (a table) were tombstoned by a cycle that started at
 * `stamp` (a batch's, see `scoreStamp`) or later: a table of booleans in their order. The rule the
 * publisher's `commit` and the score store's save skip devices by (`isTombstonedSince` in TypeScript).
 */
export const TOMBSTONED_SINCE_LUA = `
local function tombstonedSince(key, ids, stamp)
  local at = redis.call('ZMSCORE', key, unpack(ids))
  local gone = {}
  for i = 1, #ids do gone[i] = at[i] and tonumber(at[i]) >= stamp or false end
  return gone
end
`;

/** Whether a device whose marker is `tombstonedAt` (ZMSCORE's answer, null without one) must be skipped. */
export const isTombstonedSince = (tombstonedAt: string | null | undefined, stamp: number): boolean =>
  tombstonedAt !== null && tombstonedAt !== undefined && Number(tombstonedAt) >= stamp;

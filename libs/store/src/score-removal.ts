import { DELETED_BEFORE_LUA } from './tenant-deletion';

/**
 * The score store's removal of a deleted tenant (ScoreStore.removeTenant), in one script so that a
 * registration of the tenant again cannot fall between what it checks and what it removes.
 *
 * KEYS[1] scores hash, KEYS[2] stamps hash, KEYS[3] bands hash, KEYS[4] the tenant's history cycles (sorted
 * set by start), KEYS[5] the tenant's record hash, KEYS[6] its deletion marker, then the history hash of
 * each cycle the caller read from KEYS[4]. ARGV[1] the deletion's revision (0: any), ARGV[2] the caller's
 * own cut (epoch ms; empty: the marker's), then those cycles' ids in the same order.
 *
 * The cut is the marker's (`deletedBefore`), by the same rule the save script refuses a batch by, so that
 * what one keeps the other does not remove: not registered again (or no marker), every score of the tenant
 * is the deleted tenant's, and the score store writes none meanwhile, so everything goes; registered again,
 * the scores and cycles stamped before the cut go, and a device with a newer score has no history entry of
 * an older cycle to keep apart from its own. A record newer than the deletion (answer 0) is a registration
 * whose first cycle's scores may be stored already; without a marker, nothing says which scores are the
 * deleted tenant's and nothing goes. The caller's own cut stands for all that. A cycle added between the
 * caller's read and this script is one the save script let through, hence newer than the cut: it stays.
 * UNLINK frees the hashes (100,000 fields for a large tenant) off Redis's main thread; a partial removal
 * reads the stamps hash whole, as a registration again is rare.
 */
export const REMOVE_TENANT = `${DELETED_BEFORE_LUA}
local cut = math.huge
local answer = 1
if ARGV[2] ~= '' then
  cut = tonumber(ARGV[2])
else
  local at, newer = deletedBefore(KEYS[6], KEYS[5], ARGV[1])
  if newer then
    if not at then return 0 end
    answer = 0
  end
  cut = at or math.huge
end
if cut == math.huge then
  redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3])
  for i = 7, #KEYS do
    redis.call('UNLINK', KEYS[i])
    redis.call('ZREM', KEYS[4], ARGV[i - 4])
  end
  return 1
end
local stamps = redis.call('HGETALL', KEYS[2])
local gone = {}
for i = 1, #stamps, 2 do
  if tonumber(stamps[i + 1]) < cut then gone[#gone + 1] = stamps[i] end
end
for first = 1, #gone, 200 do
  local last = math.min(#gone, first + 199)
  redis.call('HDEL', KEYS[1], unpack(gone, first, last))
  redis.call('HDEL', KEYS[2], unpack(gone, first, last))
  redis.call('HDEL', KEYS[3], unpack(gone, first, last))
end
for i = 7, #KEYS do
  local at = redis.call('ZSCORE', KEYS[4], ARGV[i - 4])
  if at and tonumber(at) < cut then
    redis.call('UNLINK', KEYS[i])
    redis.call('ZREM', KEYS[4], ARGV[i - 4])
  end
end
return answer`;

/**
 * The score store's removal of devices (ScoreStore.remove), in one script with the save's stamp compare, so
 * that a score the scorer stores meanwhile is either removed whole or kept whole.
 *
 * KEYS[1] scores hash, KEYS[2] stamps hash, KEYS[3] bands hash, KEYS[4] the tenant's history cycles (sorted
 * set by start), then the history hash of each cycle the caller read from KEYS[4]. ARGV[1] the cut (the
 * start, epoch ms, of the cycle that tombstoned the devices; empty: none, everything goes), ARGV[2] how many
 * cycles, then those cycles' ids in the order of their hashes, then the devices' ids.
 *
 * A score stamped after the cut (`scoreStamp`: a newer cycle listed the device again, its batch stored before
 * the older cycle's completion tombstoned it) stays, and so do the device's history entries of cycles after
 * the cut: the rule the save skips a tombstoned device by (`tombstonedSince`), the other way round. A cycle
 * added between the caller's read and this script is one the save let through, hence newer than the cut.
 */
export const REMOVE_DEVICES = `
local cut = math.huge
if ARGV[1] ~= '' then cut = tonumber(ARGV[1]) end
local cycles = tonumber(ARGV[2])
local first = 3 + cycles
local slice = 200
for from = first, #ARGV, slice do
  local to = math.min(#ARGV, from + slice - 1)
  local ids = {unpack(ARGV, from, to)}
  local stamps = redis.call('HMGET', KEYS[2], unpack(ids))
  local gone = {}
  for i = 1, #ids do
    if stamps[i] and tonumber(stamps[i]) <= cut then gone[#gone + 1] = ids[i] end
  end
  if #gone > 0 then
    redis.call('HDEL', KEYS[1], unpack(gone))
    redis.call('HDEL', KEYS[2], unpack(gone))
    redis.call('HDEL', KEYS[3], unpack(gone))
  end
  for i = 1, cycles do
    local at = redis.call('ZSCORE', KEYS[4], ARGV[2 + i])
    if at and tonumber(at) <= cut then redis.call('HDEL', KEYS[4 + i], unpack(ids)) end
  end
end
return 1`;

// The cycle store's Lua scripts (see cycles.ts): each does its reads and writes of a cycle in one step.

import { OWNED_LUA } from './owned-key';

// KEYS[1] cycle hash, KEYS[2] open zset, KEYS[3] owed zset; ARGV: member, status, retention ms (for a
// hash the claim creates), owed member, now ms.
export const CLAIM = `
if redis.call('HSETNX', KEYS[1], 'published', ARGV[2]) == 0 then return 0 end
-- A cycle whose hash had expired (a very late batch, a sweep long after): the claim made a new one, which
-- expires as the cycle's keys do, not never.
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
redis.call('ZREM', KEYS[2], ARGV[1])
-- Out of the open cycles and into the owed summaries at once: nothing else would send it.
redis.call('ZADD', KEYS[3], 'NX', ARGV[5], ARGV[4])
return 1`;

// KEYS[1] cycle hash, KEYS[2] open zset, KEYS[3] the tenant's status hash; ARGV: member, tenantId, cycleId,
// startedAt, deadlineAt, deadline ms, expire-at ms. The status's deviceCount is a JSON number.
export const BEGIN = `
redis.call('HSET', KEYS[1], 'tenantId', ARGV[2], 'cycleId', ARGV[3], 'startedAt', ARGV[4], 'deadlineAt', ARGV[5])
local known = redis.call('HGET', KEYS[3], 'deviceCount')
if known and tonumber(known) then redis.call('HSET', KEYS[1], 'lastKnownDevices', known) end
redis.call('PEXPIREAT', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
return 1`;

// KEYS[1] cycle hash, KEYS[2] batches hash, KEYS[3] open zset, KEYS[4] lost hash; ARGV: member, batches,
// devices (each '' when not known), code, at, now ms, close-at ms. Never brings a close later than the
// deadline or the close an earlier abandonment gave. The close it brings forward first is kept
// (`closeBefore`), for a late `listed`. A batch recorded lost counts as in: it will never be.
export const ABANDON = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'totalBatches') == 1 or redis.call('HEXISTS', KEYS[1], 'published') == 1 then
  return 0
end
local known = ARGV[2] ~= ''
if redis.call('HEXISTS', KEYS[1], 'abandonedCode') == 1 and
    (not known or redis.call('HEXISTS', KEYS[1], 'abandonedBatches') == 1) then
  return 0
end
redis.call('HSET', KEYS[1], 'abandonedCode', ARGV[4], 'abandonedAt', ARGV[5])
if known then redis.call('HSET', KEYS[1], 'abandonedBatches', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'abandonedDevices', ARGV[3]) end
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not deadline then return 1 end
local closeAt = tonumber(ARGV[7])
if known and redis.call('HLEN', KEYS[2]) + redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[2]) then
  closeAt = tonumber(ARGV[6])
end
if closeAt < tonumber(deadline) then
  redis.call('HSETNX', KEYS[1], 'closeBefore', deadline)
  redis.call('ZADD', KEYS[3], 'XX', closeAt, ARGV[1])
end
return 1`;

// KEYS[1] cycle hash, KEYS[2] batches hash, KEYS[3] open zset, KEYS[4] lost hash; ARGV: member, devices ('' when
// not known), code, at. Only on a begun cycle not listed, not published, with no batch recorded (scored or
// lost) and no emitted batches recorded yet. Recorded as abandoned after no batch, out of the open cycles:
// no close, no summary. A batch of it that comes after all (a send that failed only in its answer) finds the
// abandonment and completes it as the publisher completes any abandoned cycle; dead-lettered, LOST closes it.
export const WITHDRAW = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, field in ipairs({ 'totalBatches', 'published', 'abandonedBatches' }) do
  if redis.call('HEXISTS', KEYS[1], field) == 1 then return 0 end
end
if redis.call('HLEN', KEYS[2]) + redis.call('HLEN', KEYS[4]) > 0 then return 0 end
redis.call('HSET', KEYS[1], 'abandonedCode', ARGV[3], 'abandonedAt', ARGV[4], 'abandonedBatches', '0')
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'abandonedDevices', ARGV[2]) end
redis.call('ZREM', KEYS[3], ARGV[1])
return 1`;

// KEYS[1] cycle hash, KEYS[2] batches hash, KEYS[3] open zset, KEYS[4] lost hash; ARGV: member, now ms,
// then the totals' field/value pairs. A cycle abandoned and not yet published gets the close its
// abandonment brought forward back (ZADD XX: only while still open). A cycle whose batches are all recorded
// (scored or lost) already (before the listing was recorded: the publisher, told of no total by them,
// completed nothing) closes now. A cycle Redis does not hold (never begun, or lost with a wiped Redis) is
// left unwritten: its totals alone would make a hash no sweep closes and no claim gives an expiry.
export const LISTED = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('HDEL', KEYS[1], 'pendingListing')
if redis.call('HEXISTS', KEYS[1], 'published') == 1 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'abandonedCode') == 1 then
  redis.call('HDEL', KEYS[1], 'abandonedCode', 'abandonedAt', 'abandonedBatches', 'abandonedDevices')
  local before = redis.call('HGET', KEYS[1], 'closeBefore')
  if before then
    redis.call('HDEL', KEYS[1], 'closeBefore')
    redis.call('ZADD', KEYS[3], 'XX', before, ARGV[1])
  end
end
local total = tonumber(redis.call('HGET', KEYS[1], 'totalBatches')) +
  tonumber(redis.call('HGET', KEYS[1], 'correctionBatches') or '0')
if redis.call('HLEN', KEYS[2]) + redis.call('HLEN', KEYS[4]) >= total then
  redis.call('ZADD', KEYS[3], 'XX', 'LT', ARGV[2], ARGV[1])
end
return 1`;

// KEYS[1] cycle hash, KEYS[2] batches hash, KEYS[3] lost hash, KEYS[4] open zset; ARGV: member, batch
// index, devices ('' when not known), now ms, retention ms (of the lost hash, as of the batches hash). Only
// on a cycle begun and not published, for a batch not scored (recordBatch takes a scored batch out of the
// lost hash in the same step: a batch is never both) and within the cycle's batches when they are known.
// Once every batch is scored or lost (of an abandoned cycle: every batch it emitted), the close is now. A
// cycle abandoned after no batch (withdrawn: out of the open cycles) whose first send failed only in its
// answer did emit its first batch: lost, it is put back among the open cycles to close now, as its batch
// scored completes it (else it stayed without a summary, never closed).
export const LOST = `
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'published') == 1 then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
local total = tonumber(redis.call('HGET', KEYS[1], 'totalBatches') or '')
local afterNoBatch = false
if total then
  total = total + tonumber(redis.call('HGET', KEYS[1], 'correctionBatches') or '0')
else
  total = tonumber(redis.call('HGET', KEYS[1], 'abandonedBatches') or '')
  if total == 0 then
    total = 1
    afterNoBatch = true
  end
end
if total and tonumber(ARGV[2]) >= total then return 0 end
if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('PEXPIRE', KEYS[3], ARGV[5])
if afterNoBatch then
  redis.call('ZADD', KEYS[4], 'LT', ARGV[4], ARGV[1])
elseif total and redis.call('HLEN', KEYS[2]) + redis.call('HLEN', KEYS[3]) >= total then
  redis.call('ZADD', KEYS[4], 'XX', 'LT', ARGV[4], ARGV[1])
end
return 1`;

// KEYS[1] enriched set, KEYS[2] lost hash; ARGV[1] the first index not counted. Batches before it enriched or
// recorded lost, each once.
export const ENRICHED_OR_LOST = `
local before = tonumber(ARGV[1])
local counted = {}
local count = 0
for _, index in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if tonumber(index) < before then counted[index] = true; count = count + 1 end
end
for _, index in ipairs(redis.call('HKEYS', KEYS[2])) do
  if tonumber(index) < before and not counted[index] then count = count + 1 end
end
return count`;

// KEYS[1] cycle hash, KEYS[2] open zset, KEYS[3] merged devices set; ARGV: member, close-at ms, retention ms.
// The cycle's hash, and its merged devices once recorded, outlive the later close by the retention, as they
// outlived the deadline.
export const HOLD_OPEN = `
if redis.call('HEXISTS', KEYS[1], 'abandonedCode') == 1 then return 0 end
local close = redis.call('ZSCORE', KEYS[2], ARGV[1])
local closeAt = tonumber(ARGV[2])
if not close or tonumber(close) >= closeAt then return 0 end
redis.call('ZADD', KEYS[2], 'XX', closeAt, ARGV[1])
redis.call('PEXPIREAT', KEYS[1], closeAt + tonumber(ARGV[3]))
redis.call('PEXPIREAT', KEYS[3], closeAt + tonumber(ARGV[3]))
return 1`;

// KEYS[1] cycle hash, KEYS[2] merged devices set; ARGV the device ids. Only on a begun cycle (0, nothing
// written, otherwise): the set takes the hash's expiry, never none. Added a thousand at a time (Lua unpacks
// only so many at once).
export const MERGED_DEVICES = `
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
for i = 1, #ARGV, 1000 do
  redis.call('SADD', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('PEXPIRE', KEYS[2], ttl)
return 1`;

// KEYS[1] cycle hash, KEYS[2] the tenant's poll lease; ARGV: the totals' JSON, the lease's token. Only while the
// lease holds the token (0 otherwise), and on a cycle the poller began and has not listed (1, nothing written,
// otherwise).
export const LISTING_PENDING = `${OWNED_LUA}
if not owned(KEYS[2], ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'listedAt') == 1 then return 1 end
redis.call('HSET', KEYS[1], 'pendingListing', ARGV[1])
return 1`;

// KEYS[1] cycle hash; ARGV batches. Only on a cycle the poller began: never a hash without its expiry. Never
// lowers the count (a try of the last batch may have sent more correction batches than the next one makes);
// 0 writes nothing. Returns the cycle's count, the batches given when the cycle was not begun.
export const ADD_CORRECTIONS = `
local batches = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return batches end
local counted = tonumber(redis.call('HGET', KEYS[1], 'correctionBatches') or '0')
if batches <= counted then return counted end
redis.call('HSET', KEYS[1], 'correctionBatches', ARGV[1])
return batches`;

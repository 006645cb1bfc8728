--[[ redeem: use an entry, spend value or use a service, once per scan id.
KEYS[1] ID hash              ts:{bN}:id:<idHash>
KEYS[2] scan record          ts:{bN}:scan:<scanner>:<scan>
KEYS[3] redemption records   ts:{bN}:red (stream)
ARGV[1] now (ms)
ARGV[2] venue            ARGV[3] gate ('' if none)
ARGV[4] item ('' if none) ARGV[5] amount (micro-units, goods only)   ARGV[6] quantity
ARGV[7] direction: 'in' or 'out'
ARGV[8] scanner (token name)   ARGV[9] scan id   ARGV[10] ID hash (for the record)
ARGV[11] TTL (s) of the scan record, which answers retries
Returns { 'ok', kind, action, amount, left, recordId, duplicate(0|1), reversed since(0|1) },
        { 'no', reason, detail... } (nothing changed, nothing stored), or { 'no', 'scan_conflict' }.
A retry of a scan returns the first answer; the same scan id with other terms is a conflict.
]]
-- @include "num"
-- @include "redeem_check"
local now = tonumber(ARGV[1])
local prev = redis.call('HMGET', KEYS[2], 'id', 'item', 'qty', 'dir', 'kind', 'action', 'amount', 'left', 'rec', 'st')
if prev[1] then
  if prev[1] ~= KEYS[1] or prev[2] ~= ARGV[4] or prev[3] ~= ARGV[6] or prev[4] ~= ARGV[7] then return { 'no', 'scan_conflict' } end
  return { 'ok', prev[5], prev[6], tonumber(prev[7]), tonumber(prev[8]), prev[9], 1, prev[10] == 'reversed' and 1 or 0 }
end

local r, f = redeem_check(KEYS[1], now, ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7])
if r[1] ~= 'ok' then return r end
local kind, action, amount, left = r[2], r[3], r[4], r[5]
local before = left + amount

local upd = { 'bal', int(left) }
if kind == 'entry' then
  upd[#upd + 1] = 'inside'
  upd[#upd + 1] = action == 'exit' and '0' or '1'
end
if (tonumber(f[11]) or 0) == 0 and action ~= 'exit' then
  for _, v in ipairs({ 'first', int(now), 'fven', ARGV[2], 'fgate', ARGV[3] }) do upd[#upd + 1] = v end
  -- Stored value and services count their validity from first use.
  local expd = tonumber(f[16]) or 0
  if expd > 0 and (tonumber(f[4]) or 0) == 0 then
    upd[#upd + 1] = 'exp'
    upd[#upd + 1] = int(now + expd * 86400000)
  end
end
redis.call('HSET', KEYS[1], unpack(upd))

local rec = redis.call('XADD', KEYS[3], '*', 'type', 'redeem', 'scan', ARGV[9], 'scanner', ARGV[8],
  'id', ARGV[10], 'kind', kind, 'action', action, 'venue', ARGV[2], 'gate', ARGV[3], 'item', ARGV[4],
  'qty', ARGV[6], 'amount', int(amount), 'before', int(before), 'after', int(left), 'time', int(now))
redis.call('HSET', KEYS[2], 'id', KEYS[1], 'item', ARGV[4], 'qty', ARGV[6], 'dir', ARGV[7], 'kind', kind,
  'action', action, 'amount', int(amount), 'left', int(left), 'rec', rec, 'venue', ARGV[2], 'gate', ARGV[3],
  'idh', ARGV[10], 'time', int(now), 'st', 'ok')
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[11]))
return { 'ok', kind, action, amount, left, rec, 0, 0 }

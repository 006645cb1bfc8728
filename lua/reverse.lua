--[[ reverse: undo one earlier redemption by its scan id, once (goods not handed over, a gate misread).
KEYS[1] scan record          ts:{bN}:scan:<scanner>:<scan>
KEYS[2] ID hash              ts:{bN}:id:<idHash>
KEYS[3] redemption records   ts:{bN}:red (stream)
ARGV[1] now (ms)
ARGV[2] who reverses (token name)
ARGV[3] reason
Returns { 'ok', kind, amount given back, value left, recordId, duplicate(0|1) } or { 'no', reason }:
unknown_scan (never redeemed, or a refusal), scan_conflict (the scan belongs to another ID).
A second reverse of the same scan returns the first answer and gives nothing back again.
]]
-- @include "num"
local s = redis.call('HMGET', KEYS[1], 'id', 'st', 'kind', 'action', 'amount', 'venue', 'gate', 'item', 'qty', 'idh',
  'revrec', 'revleft')
if not s[1] then return { 'no', 'unknown_scan' } end
if s[1] ~= KEYS[2] then return { 'no', 'scan_conflict' } end
local amount = tonumber(s[5])
if s[2] == 'reversed' then return { 'ok', s[3], amount, tonumber(s[12]), s[11], 1 } end

local now = tonumber(ARGV[1])
local bal = tonumber(redis.call('HGET', KEYS[2], 'bal')) or 0
local left = bal + amount
local upd = { 'bal', int(left) }
-- Undoing a way in leaves the holder outside; undoing an exit puts them back inside
-- (so nobody else comes in on the ticket as a re-entry).
if s[3] == 'entry' then
  upd[#upd + 1] = 'inside'
  upd[#upd + 1] = s[4] == 'exit' and '1' or '0'
end
redis.call('HSET', KEYS[2], unpack(upd))
local scan = string.match(KEYS[1], 'scan:[^:]+:(.+)$')
local rec = redis.call('XADD', KEYS[3], '*', 'type', 'reverse', 'scan', scan, 'scanner', ARGV[2],
  'id', s[10], 'kind', s[3], 'action', s[4], 'venue', s[6], 'gate', s[7], 'item', s[8], 'qty', s[9],
  'amount', int(-amount), 'before', int(bal), 'after', int(left), 'time', int(now), 'reason', ARGV[3])
redis.call('HSET', KEYS[1], 'st', 'reversed', 'revrec', rec, 'revleft', int(left), 'revtime', int(now))
return { 'ok', s[3], amount, left, rec, 0 }

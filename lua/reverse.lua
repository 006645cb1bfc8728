--[[ reverse: undo one earlier redemption by its scan id, once (goods not handed over, a gate misread).
KEYS[1] scan record          ts:{bN}:scan:<scanner>:<scan>  (string, includes/scan_record.lua)
KEYS[2] ID hash              ts:{bN}:id:<idHash>
KEYS[3] redemption records   ts:{bN}:red (stream, includes/red_record.lua)
ARGV[1] now (ms)
ARGV[2] who reverses (token name)
ARGV[3] reason
Returns { 'ok', kind, amount given back, value left, recordId, duplicate(0|1) } or { 'no', reason }:
unknown_scan (never redeemed, or a refusal), scan_conflict (the scan belongs to another ID).
A second reverse of the same scan returns the first answer and gives nothing back again.
]]
-- @include "num"
-- @include "scan_record"
-- @include "red_record"
local s = scan_read(KEYS[1])
if not s then return { 'no', 'unknown_scan' } end
if s.id ~= KEYS[2] then return { 'no', 'scan_conflict' } end
local amount = tonumber(s.amount)
if s.st == 'reversed' then return { 'ok', s.kind, amount, tonumber(s.revleft), s.revrec, 1 } end

local now = tonumber(ARGV[1])
local bal = tonumber(redis.call('HGET', KEYS[2], 'bal')) or 0
local left = bal + amount
local upd = { 'bal', int(left) }
-- Undoing a way in leaves the holder outside; undoing an exit puts them back inside
-- (so nobody else comes in on the ticket as a re-entry).
if s.kind == 'entry' then
  upd[#upd + 1] = 'inside'
  upd[#upd + 1] = s.action == 'exit' and '1' or '0'
end
redis.call('HSET', KEYS[2], unpack(upd))
local scan = string.match(KEYS[1], 'scan:[^:]+:(.+)$')
local rec = redis.call('XADD', KEYS[3], '*', RED_FIELD, red_pack('reverse', scan, ARGV[2], s.idh, s.kind, s.action,
  s.venue, s.gate, s.item, s.qty, int(-amount), int(bal), int(left), int(now), ARGV[3]))
redis.call('SET', KEYS[1], scan_pack(s.id, s.item, s.qty, s.dir, s.kind, s.action, s.amount, s.left, s.rec, s.venue, s.gate,
  s.idh, s.time, 'reversed', rec, int(left), int(now)), 'KEEPTTL')
return { 'ok', s.kind, amount, left, rec, 0 }

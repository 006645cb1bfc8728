--[[ reverse: undo one earlier redemption by its scan id, once (goods not handed over, a gate misread).
KEYS[1]        ID hash              ts:{bN}:id:<idHash>
KEYS[2]        redemption records   ts:{bN}:red (stream, includes/red_record.lua)
KEYS[3..2+m]   scan records per window   ts:{bN}:scans:<window> (hash, includes/scan_record.lua)
KEYS[3+m]      the scan's record as earlier versions kept it   ts:{bN}:scan:<scanner>:<scan> (if given)
ARGV[1] now (ms)   ARGV[2] who reverses (token name)   ARGV[3] reason
ARGV[4] the scan key '<scanner>:<scan id>'   ARGV[5] m
ARGV[6..8] (a void made offline only) when it was made by the scanner's clock (ms), and the earliest and
        latest time it may say: kept as the record's `at`, never before the redemption it undoes (its `at`,
        or when it was recorded)
Returns { 'ok', kind, amount given back, value left, recordId, duplicate(0|1) } or { 'no', reason }:
unknown_scan (never redeemed, or a refusal), scan_conflict (the scan belongs to another ID),
bad_scan_time (ARGV[6] outside ARGV[7..8]; checked after the lookup, so a repeat answers the first answer).
A second reverse of the same scan returns the first answer and gives nothing back again.
]]
-- @include "num"
-- @include "id_fields"
-- @include "scan_record"
-- @include "red_record"
-- @include "moves"
local field, m = ARGV[4], tonumber(ARGV[5])
local places = { unpack(KEYS, 3, 2 + m) }
local s, where = scan_find(places, field, KEYS[3 + m])
if not s then return { 'no', 'unknown_scan' } end
if s.id ~= KEYS[1] then return { 'no', 'scan_conflict' } end
local amount = tonumber(s.amount)
if s.st == 'reversed' then return { 'ok', s.kind, amount, tonumber(s.revleft), s.revrec, 1 } end

local at = ARGV[6]
if at then
  local t = tonumber(at)
  if t < tonumber(ARGV[7]) or t > tonumber(ARGV[8]) then return { 'no', 'bad_scan_time' } end
  -- A void is never made before its sale (a device clock behind the gateway's, or behind the sale's
  -- own device): it is then recorded at the redemption's time.
  local made = tonumber(s.time) or 0
  local e = redis.call('XRANGE', KEYS[2], s.rec, s.rec)[1]
  if e and e[2][3] == RED_AT then made = tonumber(e[2][4]) end
  if t < made then at = int(made) end
end
local now = tonumber(ARGV[1])
local bal = tonumber(redis.call('HGET', KEYS[1], 'bal')) or 0
local left = bal + amount
local upd = { 'bal', int(left) }
-- A ticket's count of who is out (and may come back) becomes what it would be had the reversed
-- scan never been made: the movements after it are replayed from the count before it
-- (includes/moves.lua). Reversing one no longer kept moves nobody. Movements an earlier version
-- kept uncounted leave the holder where the latest one standing put them, with no count (all
-- who came in may come back); with none standing, or none kept, the reversed scan says.
if s.kind == 'entry' then
  -- Entries forfeited at expiry (`xamt`, lua/expire.lua) were never used.
  local f = id_fields(KEYS[1], { 'mvs', 'face', 'reent', 'xamt' })
  local inside, out, used = nil, nil, (tonumber(f[2]) or 0) - left - (tonumber(f[4]) or 0)
  if not f[1] then
    inside = s.action == 'exit' and '1' or '0'
  else
    local rest, found
    rest, found, out, inside = moves_undo(f[1], s.rec, used, f[3] == '1')
    if found then
      upd[#upd + 1], upd[#upd + 2] = 'mvs', rest
      if not out and not inside and rest == '' then inside = s.action == 'exit' and '1' or '0' end
    end
  end
  if out then
    -- Nobody let in (a reversed first entry) is nobody inside, as an exit of all leaves them.
    upd[#upd + 1], upd[#upd + 2] = 'inside', (out > 0 or used == 0) and '0' or '1'
    if out > 0 then upd[#upd + 1], upd[#upd + 2] = 'outq', int(out)
    else redis.call('HDEL', KEYS[1], 'outq') end
  elseif inside then
    upd[#upd + 1], upd[#upd + 2] = 'inside', inside
    -- Moved in or out with no count kept: how many are out is no longer counted (all who came in may).
    redis.call('HDEL', KEYS[1], 'outq')
  end
end
redis.call('HSET', KEYS[1], unpack(upd))
local scan = string.match(field, '^[^:]+:(.+)$')
local packed = red_pack('reverse', scan, ARGV[2], s.idh, s.kind, s.action, s.venue, s.gate, s.item, s.qty,
  int(-amount), int(bal), int(left), int(now), ARGV[3])
-- As a redemption's: a void's time is a second field, only when it was made offline.
local rec
if at then rec = redis.call('XADD', KEYS[2], '*', RED_FIELD, packed, RED_AT, at)
else rec = redis.call('XADD', KEYS[2], '*', RED_FIELD, packed) end
local state = scan_pack(s.id, s.item, s.qty, s.dir, s.kind, s.action, s.amount, s.left, s.rec, s.venue, s.gate, s.idh,
  s.time, 'reversed', rec, int(left), int(now))
if where == KEYS[3 + m] then redis.call('SET', where, state, 'KEEPTTL')
else redis.call('HSET', where, field, state) end
return { 'ok', s.kind, amount, left, rec, 0 }

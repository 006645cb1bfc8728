--[[ call_start: admit a call on a talk ID and open its session.
KEYS[1] ID hash            ts:{bN}:id:<idHash>
KEYS[2] call session hash  ts:{bN}:call:<switch>:<call>
KEYS[3] live calls zset    ts:{bN}:live
ARGV[1] now (ms)
ARGV[2] dialled destination (digits)
ARGV[3] switch name
ARGV[4] call id (as the switch sent it)
ARGV[5] ID hash (for the call record)
ARGV[6] ring grace (ms): an unanswered call counts as stale this much later than an answered one
ARGV[7] ANI hash when the switch started the call by caller number (the gateway found the ID by
        it), else '': the ID must still list that number, or the call is refused unknown_ani
ARGV[8..] triples: rate plan name, rate (micro-units/s), connection fee (micro-units):
          the destination's rate in every plan that has one; the ID's plan picks.
Returns {'ok', maxSec, balance, rate, fee, duplicate(0|1)} or {'err', reason}.
A repeated start of a live call returns the first answer and changes nothing.
]]
-- @include "num"
-- @include "rate_of"
local now = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[2], 'st', 'idh', 'dest', 'maxs', 'bal0', 'rate', 'fee')
if s[1] then
  if s[2] ~= ARGV[5] or s[3] ~= ARGV[2] then return { 'err', 'call_conflict' } end
  if s[1] ~= 'live' then return { 'err', 'call_ended' } end
  return { 'ok', tonumber(s[4]), tonumber(s[5]), tonumber(s[6]), tonumber(s[7]), 1 }
end
-- Caller-number login: a number moved or removed since the gateway read its index bills nobody.
if ARGV[7] ~= '' and redis.call('HEXISTS', KEYS[1], 'ani:' .. ARGV[7]) == 0 then return { 'err', 'unknown_ani' } end

local f = redis.call('HMGET', KEYS[1], 'st', 'kind', 'bal', 'plan', 'maxc', 'act', 'exp', 'expd', 'thr')
local st = f[1]
if not st then return { 'err', 'unknown_id' } end
if st == 'blocked' or st == 'exhausted' or st == 'expired' then return { 'err', st } end
if st ~= 'sold' then return { 'err', 'not_active' } end
if f[2] ~= 'talk' then return { 'err', 'wrong_kind' } end
local exp = tonumber(f[7]) or 0
if exp > 0 and now >= exp then
  redis.call('HSET', KEYS[1], 'st', 'expired')
  return { 'err', 'expired' }
end
local bal = tonumber(f[3])
if bal <= 0 then return { 'err', 'exhausted' } end

local rate, fee = rate_of(f[4], 8)
if not rate then return { 'err', 'no_rate' } end
if (tonumber(f[6]) or 0) >= (tonumber(f[5]) or 1) then return { 'err', 'concurrent_limit' } end

local maxs = math.floor((bal - fee) / rate)
if maxs <= 0 then return { 'err', 'insufficient_balance' } end

-- Thresholds already behind us at admission are not announced: maxSec says it all.
local thr = {}
for t in string.gmatch(f[9] or '', '%d+') do
  if tonumber(t) < maxs then thr[#thr + 1] = t end
end

-- What every tick reads comes first: a small hash is a list that HMGET walks (includes/charge.lua).
redis.call('HSET', KEYS[2],
  'st', 'live', 'id', KEYS[1], 'billed', '0', 'rate', int(rate), 'seen', int(now), 'thr', table.concat(thr, ','),
  'cut', '', 'ans', '', 'fee', int(fee), 'short', '0', 'start', int(now),
  'sw', ARGV[3], 'call', ARGV[4], 'idh', ARGV[5], 'dest', ARGV[2], 'maxs', int(maxs), 'bal0', int(bal))
redis.call('HINCRBY', KEYS[1], 'act', 1)
-- Expiry counts from first use.
local expd = tonumber(f[8]) or 0
if exp == 0 and expd > 0 then
  redis.call('HSET', KEYS[1], 'exp', int(now + expd * 86400000), 'first', int(now))
end
-- Until its first tick a call may ring: the reaper gives it the ring grace on top.
redis.call('ZADD', KEYS[3], int(now + tonumber(ARGV[6])), KEYS[2])
return { 'ok', maxs, bal, rate, fee, 0 }

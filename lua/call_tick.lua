--[[ call_tick: bill one or more live calls of one bucket up to the seconds the switch reports.
KEYS[1]      live calls zset   ts:{bN}:live
KEYS[2i]     call session hash ts:{bN}:call:<switch>:<call>   (i = 1..n)
KEYS[2i+1]   its ID hash       ts:{bN}:id:<idHash>
ARGV[1]      now (ms)
ARGV[1+i]    seconds since answer for call i (monotonic; a repeat or a step back changes nothing)
Returns one entry per call: {code, balance, secLeft, {fired thresholds}, cut-off reason or '', new cut-off (0|1)}
  code: 'ok' (billed), 'dup' (nothing new to bill), 'unknown_call', 'call_ended', 'call_conflict'.
  For call_ended the reason field holds the stop cause ('stale' when the reaper closed it).
]]
-- @include "num"
-- @include "charge"
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #ARGV - 1 do
  local skey, ikey = KEYS[2 * i], KEYS[2 * i + 1]
  local sec = tonumber(ARGV[1 + i])
  local s = redis.call('HMGET', skey, 'st', 'id', 'billed')
  if not s[1] then
    out[i] = { 'unknown_call', 0, 0, {}, '', 0 }
  elseif s[2] ~= ikey then
    out[i] = { 'call_conflict', 0, 0, {}, '', 0 }
  elseif s[1] ~= 'live' then
    out[i] = { 'call_ended', 0, 0, {}, redis.call('HGET', skey, 'cause') or '', 0 }
  else
    local code = 'dup'
    if sec > tonumber(s[3]) then code = 'ok' end
    local bal, left, alerts, cut, fresh = charge(skey, ikey, sec, now)
    -- A block (fraud, refund) takes effect on the next tick of a live call.
    if cut == '' and redis.call('HGET', ikey, 'st') == 'blocked' then
      cut = 'blocked'
      fresh = 1
      redis.call('HSET', skey, 'cut', cut)
    end
    redis.call('ZADD', KEYS[1], int(now), skey)
    out[i] = { code, bal, left, alerts, cut, fresh }
  end
end
return out

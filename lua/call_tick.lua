--[[ call_tick: bill one or more live calls of one bucket up to the seconds the switch reports.
KEYS[1]      live calls zset   ts:{bN}:live
KEYS[2i]     call session hash ts:{bN}:call:<switch>:<call>   (i = 1..n)
KEYS[2i+1]   its ID hash       ts:{bN}:id:<idHash>
ARGV[1]      now (ms)
ARGV[2]      how often (ms) a call's place in the live set is refreshed; the reaper allows for it
ARGV[2+i]    seconds since answer for call i (monotonic; a repeat or a step back changes nothing)
Returns one flat array, six entries per call (flat: no Lua table per call to convert):
  code, balance, secLeft, fired thresholds ('300,60' or ''), cut-off reason or '', new cut-off (0|1)
  code: 'ok' (billed), 'dup' (nothing new to bill), 'unknown_call', 'call_ended', 'call_conflict'.
  For call_ended the reason field holds the stop cause ('stale' when the reaper closed it).
]]
-- @include "num"
-- @include "charge"
local now, refresh = tonumber(ARGV[1]), tonumber(ARGV[2])
local out, o = {}, 0
local function put(code, bal, left, alerts, cut, fresh)
  out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5], out[o + 6] = code, bal, left, alerts, cut, fresh
  o = o + 6
end
for i = 1, #ARGV - 2 do
  local skey, ikey = KEYS[2 * i], KEYS[2 * i + 1]
  local sec = tonumber(ARGV[2 + i])
  local s = read_session(skey)
  if not s.st then
    put('unknown_call', 0, 0, '', '', 0)
  elseif s.id ~= ikey then
    put('call_conflict', 0, 0, '', '', 0)
  elseif s.st ~= 'live' then
    put('call_ended', 0, 0, '', redis.call('HGET', skey, 'cause') or '', 0)
  else
    local code = 'dup'
    if sec > tonumber(s.billed) then code = 'ok' end
    local upd = {}
    local bal, left, alerts, cut, fresh = charge(s, skey, ikey, sec, now, upd)
    -- The reaper goes by the live set's score; refreshing it on every tick would double the writes.
    -- The first billed tick always refreshes it: it ends the ring grace given at start.
    if now - (tonumber(s.seen) or 0) >= refresh or tonumber(s.billed) == 0 then
      redis.call('ZADD', KEYS[1], int(now), skey)
      upd[#upd + 1] = 'seen'
      upd[#upd + 1] = int(now)
    end
    if #upd > 0 then redis.call('HSET', skey, unpack(upd)) end
    put(code, bal, left, alerts, cut, fresh)
  end
end
return out

--[[ call_tick: bill one or more live calls of one bucket up to the seconds the switch reports.
KEYS[1]      live calls zset   ts:{bN}:live
KEYS[2i]     call session hash ts:{bN}:call:<switch>:<call>   (i = 1..n)
KEYS[2i+1]   its ID hash       ts:{bN}:id:<idHash>
KEYS[2n+2]   balance events    ts:{bN}:ev (stream): thresholds fired and exhaustion, for the webhooks
ARGV[1]      now (ms)
ARGV[2]      how often (ms) a call's place in the live set is refreshed; the reaper allows for it
ARGV[2+i]    seconds since answer for call i (monotonic; a repeat or a step back changes nothing)
Returns one flat array of integers but for the rare extras (no Lua table or string per tick
to convert, in Redis or in the gateway):
  three entries per call i: code, balance, secLeft
    code: 0 ok (billed), 1 dup (nothing new to bill), 2 unknown_call, 3 call_ended, 4 call_conflict,
          5 failed in the script (the reason field holds the error; the other calls went on)
  then, for the calls that have any, in order, four entries:
    i, fired thresholds ('300,60' or ''), cut-off reason or '', new cut-off (0|1)
    For call_ended the reason holds the stop cause ('stale' when the reaper closed it).
]]
-- @include "num"
-- @include "charge"
local now, refresh = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = #ARGV - 2
local evkey = KEYS[2 * n + 2]
local out, extra = {}, {}
local function put(i, code, bal, left, alerts, cut, fresh)
  out[3 * i - 2], out[3 * i - 1], out[3 * i] = code, bal, left
  if alerts ~= '' or cut ~= '' then
    local e = #extra
    extra[e + 1], extra[e + 2], extra[e + 3], extra[e + 4] = i, alerts, cut, fresh
  end
end
local function bill(i)
  local skey, ikey = KEYS[2 * i], KEYS[2 * i + 1]
  local sec = tonumber(ARGV[2 + i])
  local s = read_session(skey)
  if not s.st then
    put(i, 2, 0, 0, '', '', 0)
  elseif s.id ~= ikey then
    put(i, 4, 0, 0, '', '', 0)
  elseif s.st ~= 'live' then
    put(i, 3, 0, 0, '', redis.call('HGET', skey, 'cause') or '', 0)
  else
    local code = 1
    if sec > tonumber(s.billed) then code = 0 end
    local upd = {}
    local bal, left, alerts, cut, fresh = charge(s, skey, ikey, sec, now, upd, evkey)
    -- The reaper goes by the live set's score; refreshing it on every tick would double the writes.
    -- The first billed tick always refreshes it: it ends the ring grace given at start.
    if now - (tonumber(s.seen) or 0) >= refresh or tonumber(s.billed) == 0 then
      redis.call('ZADD', KEYS[1], int(now), skey)
      upd[#upd + 1] = 'seen'
      upd[#upd + 1] = int(now)
    end
    if #upd > 0 then redis.call('HSET', skey, unpack(upd)) end
    put(i, code, bal, left, alerts, cut, fresh)
  end
end

for i = 1, n do
  -- One call's failure (a damaged session or ID hash) is that call's alone, not its bucket's.
  local ok, err = pcall(bill, i)
  if not ok then put(i, 5, 0, 0, '', tostring(type(err) == 'table' and err.err or err), 0) end
end
for j = 1, #extra do out[3 * n + j] = extra[j] end
return out

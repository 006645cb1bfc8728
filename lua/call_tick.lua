--[[ call_tick: bill one or more live calls of one bucket up to the seconds the switch reports.
KEYS[1]      live calls zset   ts:{bN}:live
KEYS[2i]     call session hash ts:{bN}:call:<switch>:<call>   (i = 1..n)
KEYS[2i+1]   its ID hash       ts:{bN}:id:<idHash>
KEYS[2n+2]   balance events    ts:{bN}:ev (stream): thresholds fired and exhaustion, for the webhooks
ARGV[1]      now (ms)
ARGV[2]      one digit per call, '0' to '3': 1 to refresh its place in the live set (the gateway
             asks once its refresh interval has passed for the call; the reaper allows for the
             interval), plus 2 when its answer is heard (a tick with a ref, an update) and the
             gateway does not know the call's final action yet; a call with no digit: '0'
ARGV[2+i]    seconds since answer for call i (monotonic; a repeat or a step back changes nothing)
A quota-mode `update` is billed here too: the same seconds, the same rules.
Returns one flat array of integers but for the rare extras (no Lua table or string per tick
to convert, in Redis or in the gateway), packed (src/redis/scripts.ts):
  four entries per call i: code, balance, secLeft, grant
    code: 0 ok (billed), 1 dup (nothing new to bill), 2 unknown_call, 3 call_ended, 4 call_conflict,
          5 failed in the script (the reason field holds the error; the other calls went on);
          plus 8 when the call's grant is final (ok and dup only)
    secLeft: seconds the call could still last on its grant and all that is free;
    grant: how far (seconds since answer) its reservation carries it
  then, for the calls that have any (every quota-mode call), in order, six entries:
    i, fired thresholds ('300,60' or ''), cut-off reason or '', new cut-off (0|1),
    final action ('terminate', 'redirect:<number>') once the grant is final, in the answer
    whose grant became final, with an exhausted cut-off, in every quota-mode answer and in
    every answer heard (ARGV[2]), else '',
    quota validity (s; 0 for a call in tick mode)
    For call_ended the reason holds the stop cause ('stale' when the reaper closed it), or
    '!stopped' when a stop under another token name closed it while it was live; for those two,
    new cut-off is 1 at the first tick or update that finds the call closed (session field `told`).
]]
-- @reply msgpack
-- @include "num"
-- @include "charge"
-- @include "clock"
local now = tonumber(ARGV[1])
local flags = ARGV[2]
local redis_now = redis_clock()
local n = #ARGV - 2
local evkey = KEYS[2 * n + 2]
local out, extra = {}, {}
local function put(i, code, bal, left, gnt, alerts, cut, fresh, final, val)
  out[4 * i - 3], out[4 * i - 2], out[4 * i - 1], out[4 * i] = code, bal, left, gnt
  if alerts ~= '' or cut ~= '' or final ~= '' or val > 0 then
    local e = #extra
    extra[e + 1], extra[e + 2], extra[e + 3], extra[e + 4], extra[e + 5], extra[e + 6] =
      i, alerts, cut, fresh, final, val
  end
end
local function bill(i)
  local skey, ikey = KEYS[2 * i], KEYS[2 * i + 1]
  local sec = tonumber(ARGV[2 + i])
  local s = read_session(skey)
  if not s[S_ST] then
    put(i, 2, 0, 0, 0, '', '', 0, '', 0)
  elseif s[S_ID] ~= ikey then
    put(i, 4, 0, 0, 0, '', '', 0, '', 0)
  elseif s[S_ST] ~= 'live' then
    -- '!stopped' (no stop cause has a '!'): a stop under another token name closed it live.
    local m = redis.call('HMGET', skey, 'cause', 'stopby')
    local why = m[2] and '!stopped' or m[1] or ''
    -- Closed under its switch, which talks on: the first tick to find it so is told to hang up as a
    -- new cut-off, its repeats are not (`told`), so the cut-off is counted once per call.
    local fresh = 0
    if why == '!stopped' or why == 'stale' then fresh = redis.call('HSETNX', skey, 'told', '1') end
    put(i, 3, 0, 0, 0, '', why, fresh, '', 0)
  else
    local used = tonumber(s[S_USED])
    local terms = terms_of(s[S_TRM])
    local val = terms.val
    -- The reaper goes by the live set's score. Refreshing it on every tick would double the
    -- writes: the gateway asks for it once its refresh interval has passed since it last
    -- asked (ARGV[2]), and always for a call's first report to it (a tick of 0 at answer
    -- included), which ends the ring grace given at start. A quota-mode call's score is its
    -- next report's deadline: the validity time from now. Both by Redis' clock, as the reaper judges.
    local f = (string.byte(flags, i) or 48) - 48
    local refresh, heard = f % 2 == 1, f >= 2
    local idf, bal, left, gnt = charge_steady(s, terms.t, terms.gs, ikey, sec, used)
    local code = 0
    if sec <= used then code = 1 end
    if bal and not refresh and val == 0 and not (heard and s[S_FIN] == '1') then
      -- Most ticks: `used` is all the session learns, and the answer has no extras.
      if code == 0 then redis.call('HSET', skey, 'used', int(sec)) end
      if s[S_FIN] == '1' then code = code + 8 end
      out[4 * i - 3], out[4 * i - 2], out[4 * i - 1], out[4 * i] = code, bal, left, gnt
      return
    end
    local upd = {}
    local alerts, cut, fresh, final, finNow = '', '', 0, 0, 0
    if bal then
      if code == 0 then upd[1], upd[2] = 'used', int(sec) end
      if s[S_FIN] == '1' then final = 1 end
    else
      bal, left, alerts, cut, fresh, gnt, final, finNow = charge(s, skey, ikey, sec, now, upd, evkey, idf)
    end
    if refresh or val > 0 then redis.call('ZADD', KEYS[1], int(redis_now() + val * 1000), skey) end
    if #upd > 0 then redis.call('HSET', skey, unpack(upd)) end
    -- The final action goes with the answer that made the grant final, with an
    -- exhausted cut-off, with every quota-mode answer and with every answer heard: a grant
    -- made final by a tick without ref is told at the next answer. Not with every tick.
    -- A blocked ID's call is ended, never redirected.
    local fa = ''
    if final == 1 and (finNow == 1 or val > 0 or heard or cut == 'exhausted') then
      fa = cut == 'blocked' and 'terminate' or redis.call('HGET', skey, 'fa')
    end
    put(i, code + 8 * final, bal, left, gnt, alerts, cut, fresh, fa, val)
  end
end

-- One call's failure (a damaged session or ID hash) is that call's alone, not its bucket's:
-- the calls after it are billed by another protected run. One pcall per script, not per call.
local at = 0
local function bill_from(first)
  for i = first, n do
    at = i
    bill(i)
  end
end
local from = 1
while from <= n do
  local ok, err = pcall(bill_from, from)
  if ok then break end
  put(at, 5, 0, 0, 0, '', tostring(type(err) == 'table' and err.err or err), 0, '', 0)
  from = at + 1
end
for j = 1, #extra do out[4 * n + j] = extra[j] end
return out

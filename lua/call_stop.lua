--[[ call_stop: bill the last seconds of calls of one bucket, close them and write their call detail records.
KEYS[1]      live calls zset    ts:{bN}:live
KEYS[2]      call records       ts:{bN}:cdr (stream)
KEYS[3]      balance events     ts:{bN}:ev (stream): thresholds fired and exhaustion, for the webhooks
KEYS[1+3i]   call session hash  ts:{bN}:call:<switch>:<call>   (i = 1..n)
KEYS[2+3i]   its ID hash        ts:{bN}:id:<idHash>
KEYS[3+3i]   the call by ID     ts:{bN}:ic:<idHash>:<call> (call_start): kept as long as the session
ARGV[1]      now (ms)
ARGV[2]      TTL (s) of a closed session, which answers repeated stops
ARGV[3i]     call i's final seconds since answer: its duration. What ticks charged beyond it (one
             that raced the hang-up) is given back (includes/close.lua)
ARGV[3i+1]   call i's stop cause
ARGV[3i+2]   the destination the stop names ('' if none): another than the session's is call_conflict
Returns one answer per call, in order: {'ok', billedSec, cost, balance, recordId, duplicate(0|1),
short (the new record's: what the call was charged and could not pay; 0 for a repeat)},
{'err', reason}, or {'failed', error} when the script failed on that call (the others went on).
A stop that comes after the reaper closed the call (its switch could not reach
Tessera: an outage it rode out under its failure policy) bills the seconds the
reaper could not know of, or gives back what the reaper billed beyond its
seconds (includes/late.lua).
]]
-- @reply msgpack
-- @include "num"
-- @include "charge"
-- @include "close"
-- @include "late"
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])

local function stop(skey, ikey, ickey, sec, cause, dest)
  local s = read_session(skey)
  if not s[S_ST] then return { 'err', 'unknown_call' } end
  if s[S_ID] ~= ikey then return { 'err', 'call_conflict' } end
  if dest ~= '' and redis.call('HGET', skey, 'dest') ~= dest then return { 'err', 'call_conflict' } end
  if s[S_ST] == 'closed' then return late_stop(s, skey, ikey, KEYS[2], now, sec, KEYS[3]) end
  return stop_live(s, skey, ikey, KEYS[1], KEYS[2], now, sec, cause, ttl, KEYS[3], ickey)
end

local out = {}
for i = 1, (#KEYS - 3) / 3 do
  -- One call's failure (a damaged hash) is that call's alone, not its batch's.
  local ok, r = pcall(stop, KEYS[1 + 3 * i], KEYS[2 + 3 * i], KEYS[3 + 3 * i], tonumber(ARGV[3 * i]), ARGV[3 * i + 1],
    ARGV[3 * i + 2])
  if ok then out[i] = r else out[i] = { 'failed', tostring(type(r) == 'table' and r.err or r) } end
end
return out

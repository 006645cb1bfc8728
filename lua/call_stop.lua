--[[ call_stop: bill the last seconds of a call, close it and write its call detail record.
KEYS[1] call session hash  ts:{bN}:call:<switch>:<call>
KEYS[2] ID hash            ts:{bN}:id:<idHash>
KEYS[3] live calls zset    ts:{bN}:live
KEYS[4] call records       ts:{bN}:cdr (stream)
KEYS[5] balance events     ts:{bN}:ev (stream): thresholds fired and exhaustion, for the webhooks
ARGV[1] now (ms)
ARGV[2] final seconds since answer: the call's duration. What ticks charged beyond it (one that raced
        the hang-up) is given back (includes/close.lua)
ARGV[3] stop cause
ARGV[4] TTL (s) of the closed session, which answers repeated stops
Returns {'ok', billedSec, cost, balance, recordId, duplicate(0|1)} or {'err', reason}.
A stop that comes after the reaper closed the call (its switch could not reach
Tessera: an outage it rode out under its failure policy) bills the seconds the
reaper could not know of (includes/late.lua).
]]
-- @include "num"
-- @include "charge"
-- @include "close"
-- @include "late"
local s = read_session(KEYS[1])
if not s.st then return { 'err', 'unknown_call' } end
if s.id ~= KEYS[2] then return { 'err', 'call_conflict' } end
local now = tonumber(ARGV[1])
if s.st == 'closed' then return late_stop(s, KEYS[1], KEYS[2], KEYS[4], now, tonumber(ARGV[2]), KEYS[5]) end
return stop_live(s, KEYS[1], KEYS[2], KEYS[3], KEYS[4], now, tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), KEYS[5])

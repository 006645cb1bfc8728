--[[ call_stop: bill the last seconds of a call, close it and write its call detail record.
KEYS[1] call session hash  ts:{bN}:call:<switch>:<call>
KEYS[2] ID hash            ts:{bN}:id:<idHash>
KEYS[3] live calls zset    ts:{bN}:live
KEYS[4] call records       ts:{bN}:cdr (stream)
ARGV[1] now (ms)
ARGV[2] final seconds since answer
ARGV[3] stop cause
ARGV[4] TTL (s) of the closed session, which answers repeated stops
Returns {'ok', billedSec, cost, balance, recordId, duplicate(0|1)} or {'err', reason}.
]]
-- @include "num"
-- @include "charge"
-- @include "close"
local s = redis.call('HMGET', KEYS[1], 'st', 'id', 'billed', 'cost', 'bal1', 'rec')
if not s[1] then return { 'err', 'unknown_call' } end
if s[2] ~= KEYS[2] then return { 'err', 'call_conflict' } end
if s[1] == 'closed' then return { 'ok', tonumber(s[3]), tonumber(s[4]), tonumber(s[5]), s[6], 1 } end
local now = tonumber(ARGV[1])
charge(KEYS[1], KEYS[2], tonumber(ARGV[2]), now)
return close(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now, ARGV[3], tonumber(ARGV[4]))

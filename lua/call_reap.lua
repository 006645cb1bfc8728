--[[ call_reap: close a call the switch has gone quiet on, billed up to its last tick.
KEYS[1] call session hash  ts:{bN}:call:<switch>:<call>
KEYS[2] ID hash            ts:{bN}:id:<idHash>
KEYS[3] live calls zset    ts:{bN}:live
KEYS[4] call records       ts:{bN}:cdr (stream)
KEYS[5] balance events     ts:{bN}:ev (stream): exhaustion by the disconnect charge, for the webhooks
KEYS[6] the call by ID     ts:{bN}:ic:<idHash>:<call> (call_start): kept as long as the session
ARGV[1] now (ms)
ARGV[2] stale after (ms): the session must not have been touched for this long, by Redis' clock
        (the one the live set is scored by), whatever the reaping gateway's says
ARGV[3] TTL (s) of the closed session
Returns {'ok', billedSec, cost, balance, recordId, 0, short} or {'skip'} when the call is
no longer stale (a tick arrived meanwhile, perhaps at another gateway) or already closed.
]]
-- @include "num"
-- @include "close"
-- @include "clock"
local score = tonumber(redis.call('ZSCORE', KEYS[3], KEYS[1]))
if not score or score >= redis_ms() - tonumber(ARGV[2]) then return { 'skip' } end
if redis.call('HGET', KEYS[1], 'st') ~= 'live' then
  redis.call('ZREM', KEYS[3], KEYS[1])
  return { 'skip' }
end
return close(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[1]), 'stale', tonumber(ARGV[3]), KEYS[5], KEYS[6])

--[[ release: put a reserved ID back into inventory (payment declined, abandoned, expired hold).
KEYS[1] inventory set        ts:{bN}:inv:<product>
KEYS[2] reservations zset    ts:{bN}:resv
KEYS[3] hold owners hash     ts:{bN}:resvby
ARGV[1] ID hash
ARGV[2] only if held until before this (ms); 0 releases whatever the hold
ARGV[3] the purchase reference releasing its own hold, or '' (the expiry sweep: by time, whoever's)
Returns 1 when it went back, 0 when it was not (or no longer) reserved, e.g. already sold, or the
hold is another purchase's (this one's ran out and the ID was reserved again since).
]]
-- @include "hold_owner"
local until_ms = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]))
if not until_ms then return 0 end
local before = tonumber(ARGV[2])
if before > 0 and until_ms >= before then return 0 end
local owner = hold_owner(KEYS[3], ARGV[1], until_ms)
if ARGV[3] ~= '' and owner and owner ~= ARGV[3] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[1], ARGV[1])
return 1

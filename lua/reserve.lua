--[[ reserve: take one unsold ID of a product out of a bucket's inventory for a purchase.
KEYS[1] inventory set        ts:{bN}:inv:<product>
KEYS[2] reservations zset    ts:{bN}:resv   (ID hash -> held until, ms)
KEYS[3] hold owners hash     ts:{bN}:resvby (ID hash -> '<held until>:<purchase reference>')
ARGV[1] held until (ms): after that the sweeper puts it back unless it was sold
ARGV[2] the purchase reference the hold belongs to: only it sells or releases the ID (sell.lua,
        release.lua), so an attempt whose hold ran out cannot take the ID from the next buyer's
Returns the ID hash, or false when this bucket has none left.
SPOP makes two buyers never get the same ID.
]]
local h = redis.call('SPOP', KEYS[1])
if not h then return false end
redis.call('ZADD', KEYS[2], ARGV[1], h)
redis.call('HSET', KEYS[3], h, ARGV[1] .. ':' .. ARGV[2])
return h

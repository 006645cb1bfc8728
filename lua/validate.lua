--[[ validate: what a redeem would answer now, changing nothing (a scanner's preview).
KEYS[1] ID hash   ts:{bN}:id:<idHash>
ARGV[1] now (ms): unused; the expiry and the validity window are judged by Redis' clock, as redeem's
ARGV[2] venue            ARGV[3] gate ('' if none)
ARGV[4] item ('' if none) ARGV[5] amount (micro-units, goods only)
ARGV[6] direction: 'in' or 'out'
ARGV[7] quantity (entries or uses for tickets and services)
Returns { 'ok', kind, action, amount, left } or { 'no', reason, detail... } (see includes/redeem_check.lua).
]]
-- @include "redeem_check"
-- @flags no-writes
local r = redeem_check(KEYS[1], nil, redis_clock(), ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[7]), ARGV[6])
return r

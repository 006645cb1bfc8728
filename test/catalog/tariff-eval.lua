--[[ Test only: runs lua/includes/tariff.lua's functions on one descriptor.
ARGV[1] descriptor
ARGV[2] answer time (ms)
ARGV[3..] operations, each a name and its arguments:
          charged SEC | cost N | afford N0 AMOUNT | rate SEC | blocks N | flat | disc
Returns one result per operation ('bad' alone when the descriptor does not parse).
]]
-- @include "tariff"
local t = tariff_parse(ARGV[1])
if not t then return { 'bad' } end
local ans = tonumber(ARGV[2])
local out = {}
local i = 3
while i <= #ARGV do
  local op, a, b = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if op == 'charged' then out[#out + 1], i = tariff_charged(t, a), i + 2
  elseif op == 'cost' then out[#out + 1], i = tariff_cost(t, ans, a), i + 2
  elseif op == 'afford' then out[#out + 1], i = tariff_afford(t, ans, a, b), i + 3
  elseif op == 'rate' then out[#out + 1], i = tariff_rate(t, ans, a), i + 2
  elseif op == 'blocks' then out[#out + 1], i = tariff_blocks(t, a), i + 2
  elseif op == 'flat' then out[#out + 1], i = t.flat and 1 or 0, i + 1
  elseif op == 'disc' then out[#out + 1], i = t.disc, i + 1
  else return redis.error_reply('unknown operation ' .. op) end
end
return out

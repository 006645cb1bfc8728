--[[ call_talk_time: how long balances last on calls at given tariffs, priced as a call is
(includes/tariff.lua): the talk time a buyer is shown before buying. Keyless and read-only:
it reads nothing but its arguments and writes nothing.
ARGV[1]                 now (ms): when the calls would start, and be answered
ARGV[2i], ARGV[2i+1]    (i = 1..n) a balance (micro-units) and a tariff descriptor
Returns n integers in order: the seconds each balance buys at its tariff, the connection
fee, blocks, minimums, disconnect charge and rate changes included: the maxSec call_start
would answer for an ID holding that balance alone, 0 when it does not pay the first block
(or the descriptor does not parse).
]]
-- @include "tariff"
-- @flags no-writes
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV - 1, 2 do
  local amount, t = tonumber(ARGV[i]), tariff_parse(ARGV[i + 1])
  local sec = 0
  -- As call_start: the disconnect charge is held back, then the blocks the rest pays.
  if t and amount and amount - t.disc > 0 then sec = tariff_afford(t, now, 0, amount - t.disc) end
  out[#out + 1] = sec
end
return out

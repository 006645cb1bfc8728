-- Redis' own clock, in ms. The live set is scored and judged by it alone: gateways whose
-- clocks disagree (or one that NTP steps) would otherwise reap each other's ticking calls.
local function redis_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

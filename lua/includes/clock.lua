-- Redis' own clock, in ms. The live set is scored and judged by it alone: gateways whose
-- clocks disagree (or one that NTP steps) would otherwise reap each other's ticking calls.
local function redis_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Redis' clock read once per script run, at its first use: a batch that scores many calls
-- costs one TIME, and none when it scores none (most ticks). Made in the script's body, as
-- the library's top level outlives every run.
local function redis_clock()
  local ms
  return function()
    ms = ms or redis_ms()
    return ms
  end
end

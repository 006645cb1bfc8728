-- Rating of one call: pure functions over the tariff descriptor the gateway
-- built from the rate plan when the call started (src/catalog/tariff.ts):
--   "rate fee"                                              flat (today's billing)
--   "rate fee initial next minSec minCost disc [from rate]..."
-- integers separated by single spaces; each (from, rate) pair is a later change
-- of the per-second rate at wall time `from` (ms), ascending. The gateway turns
-- time zones, daylight saving and dated plan versions into these instants, so
-- nothing here knows about calendars.
--
-- The rules, in one place:
--   * a call `sec` seconds long is charged whole blocks: the initial block, then
--     next-blocks, each charged as soon as it starts; then at least minSec;
--   * charged second i (0-based) costs the rate in force at ans + i * 1000,
--     so a call crossing a rate change pays each second at its own rate;
--   * an answered call costs the fee plus its seconds, but at least minCost;
--   * the disconnect charge (t.disc) is the caller's to add when the call ends.
-- Money stays integral: every value is an integer below 2^53, and divisions are
-- done as (a - a % b) / b so no float quotient is ever rounded.
--
-- Parsing is cheap: the header is one string.match, and the rate changes are read lazily, only as far
-- as the time a function is asked about (most calls never reach the first one).
-- @include "num"

-- nil when `s` is not a descriptor (a malformed rate change is an error when a
-- charge reaches it, see tariff_more). Rates are at least 1, or `afford` would divide by 0.
-- Parsed once per descriptor and kept from call to call (the function library
-- lives as long as Redis keeps it): ticks mostly share a few descriptors (one per
-- plan and prefix), and building the table is most of a parse. Dated rate changes
-- make a descriptor per call, so the cache is emptied when it grows past 1,000.
local tariff_parsed, tariff_cached = {}, 0
local function tariff_parse(s)
  local cached = tariff_parsed[s]
  if cached then return cached end
  local rate, fee, pos = string.match(s, '^(%d+) (%d+)()')
  if not rate or tonumber(rate) < 1 then return nil end
  local t = { rate = tonumber(rate), fee = tonumber(fee), ini = 1, nxt = 1, mins = 0, minc = 0, disc = 0,
    flat = true, s = s, pos = pos, n = 0 }
  if pos <= #s then
    local ini, nxt, mins, minc, disc, rest = string.match(s, '^ (%d+) (%d+) (%d+) (%d+) (%d+)()', pos)
    -- The changes are checked as they are read: scanning them all here would cost every tick.
    if not ini then return nil end
    t.ini, t.nxt, t.mins, t.minc, t.disc = tonumber(ini), tonumber(nxt), tonumber(mins), tonumber(minc), tonumber(disc)
    if t.ini < 1 or t.nxt < 1 then return nil end
    t.pos = rest
    t.flat = t.ini == 1 and t.nxt == 1 and t.mins == 0 and t.minc == 0 and rest > #s
  end
  if tariff_cached >= 1000 then tariff_parsed, tariff_cached = {}, 0 end
  tariff_parsed[s], tariff_cached = t, tariff_cached + 1
  return t
end

-- Reads the next rate change into t.at / t.rt (made on first use: a flat call
-- never needs them); false when there is none.
local function tariff_more(t)
  if t.pos > #t.s then return false end
  local at, rate, pos = string.match(t.s, '^ (%d+) (%d+)()', t.pos)
  if not at or tonumber(rate) < 1 then error('tariff: bad rate change at ' .. t.pos .. ' in "' .. t.s .. '"') end
  if t.n == 0 then t.at, t.rt = {}, {} end
  local n = t.n + 1
  t.at[n], t.rt[n], t.pos, t.n = tonumber(at), tonumber(rate), pos, n
  return true
end

-- The first second (0-based) of a call answered at `ans` that a change at wall
-- time `at` applies to: the first i with ans + i * 1000 >= at.
local function tariff_second(ans, at)
  local d = at - ans
  if d <= 0 then return 0 end
  d = d + 999
  return (d - d % 1000) / 1000
end

local function tariff_charged(t, sec)
  if sec <= 0 then return 0 end
  if t.flat then return sec end
  local n = t.ini
  if sec > n then
    local over = sec - n + t.nxt - 1
    n = n + over - over % t.nxt
  end
  if n < t.mins then n = t.mins end
  return n
end

local function tariff_rate(t, ans, sec)
  local rate, j, wall = t.rate, 1, ans + sec * 1000
  while (j <= t.n or tariff_more(t)) and t.at[j] <= wall do
    rate = t.rt[j]
    j = j + 1
  end
  return rate
end

-- What the first n seconds cost at their rates, fee and minimum excluded.
local function tariff_sum(t, ans, n)
  local rate, k, j, sum = t.rate, 0, 1, 0
  while j <= t.n or tariff_more(t) do
    local kc = tariff_second(ans, t.at[j])
    if kc >= n then break end
    sum = sum + (kc - k) * rate
    k, rate, j = kc, t.rt[j], j + 1
  end
  return sum + (n - k) * rate
end

local function tariff_cost(t, ans, n)
  if n <= 0 then return 0 end
  local c
  if t.flat then c = t.fee + n * t.rate else c = t.fee + tariff_sum(t, ans, n) end
  if c < t.minc then c = t.minc end
  return c
end

-- The most seconds from the answer whose per-second charges fit in `budget`.
local function tariff_fit(t, ans, budget)
  if budget <= 0 then return 0 end
  local rate, k, j, left = t.rate, 0, 1, budget
  while j <= t.n or tariff_more(t) do
    local kc = tariff_second(ans, t.at[j])
    local span = (kc - k) * rate
    if span > left then break end
    left = left - span
    k, rate, j = kc, t.rt[j], j + 1
  end
  return k + (left - left % rate) / rate
end

-- Costs only grow with n (every rate is at least 1), so the answer is the
-- largest charged duration within the most seconds the money pays for.
local function tariff_afford(t, ans, n0, amount)
  local limit = amount + tariff_cost(t, ans, n0)
  -- Below the minimum cost no answered call is affordable (n0 is then 0).
  if limit < t.minc then return n0 end
  local m = tariff_fit(t, ans, limit - t.fee)
  local best = 0
  if m >= t.ini then
    local over = m - t.ini
    best = m - over % t.nxt
    -- Block ends below the minimum duration are charged as the minimum itself.
    if best < t.mins then
      if t.mins <= m then best = t.mins else best = 0 end
    end
  end
  if best > n0 then return best end
  return n0
end

-- For the call record: "60" (the initial block), "60+6x4" (and four 6-second
-- blocks), "60x3" (equal blocks), or "min90" when the minimum duration set it.
local function tariff_blocks(t, n)
  if n <= 0 then return '' end
  if n < t.ini or (n - t.ini) % t.nxt ~= 0 then return 'min' .. int(n) end
  local k = (n - t.ini) / t.nxt
  if t.ini == t.nxt then return int(t.nxt) .. 'x' .. int(k + 1) end
  if k == 0 then return int(t.ini) end
  return int(t.ini) .. '+' .. int(t.nxt) .. 'x' .. int(k)
end

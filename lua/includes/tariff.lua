-- Rating of one call: pure functions over the tariff descriptor the gateway
-- built from the rate plan when the call started (src/catalog/tariff.ts):
--   "rate fee"                                              flat (today's billing)
--   "rate fee initial next minSec minCost disc [from rate]..."
-- integers separated by single spaces; each (from, rate) pair is a later change
-- of the rate at wall time `from` (ms), ascending. A rate is micro-units a second,
-- or "R/P": R micro-units per P seconds (a per-minute price: "100000/60"), which
-- no whole per-second rate can say exactly. The gateway turns
-- time zones, daylight saving and dated plan versions into these instants, so
-- nothing here knows about calendars.
--
-- The rules, in one place:
--   * a call `sec` seconds long is charged whole blocks: the initial block, then
--     next-blocks, each charged as soon as it starts; then at least minSec;
--   * charged second i (0-based) costs the rate in force at ans + i * 1000,
--     so a call crossing a rate change pays each second at its own rate;
--   * at a rate R/P the seconds a rate is in force for cost floor(S * R / P),
--     S counted from the first of them: rounding never adds up from tick to
--     tick, and P seconds cost exactly R (a call crossing a rate change costs
--     each rate's run of seconds so, each rounded down on its own);
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

-- A rate token's micro-units and the seconds they pay ("1666" or "100000/60"); nil when it is
-- neither, or either is 0. At most 3600 seconds, as the catalog takes: see tariff_span.
local function tariff_ratio(tok)
  local r, p = string.match(tok, '^(%d+)/(%d+)$')
  if not r then r, p = tok, '1' end
  r, p = tonumber(r), tonumber(p)
  if not r or r < 1 or p < 1 or p > 3600 then return nil end
  return r, p
end

local function tariff_parse(s)
  local cached = tariff_parsed[s]
  if cached then return cached end
  local tok, fee, pos = string.match(s, '^([%d/]+) (%d+)()')
  if not tok then return nil end
  local rate, per = tariff_ratio(tok)
  if not rate then return nil end
  -- Only a per-second rate is flat: a steady tick bills its new seconds times the rate.
  local t = { rate = rate, per = per, fee = tonumber(fee), ini = 1, nxt = 1, mins = 0, minc = 0, disc = 0,
    flat = per == 1, s = s, pos = pos, n = 0 }
  if pos <= #s then
    local ini, nxt, mins, minc, disc, rest = string.match(s, '^ (%d+) (%d+) (%d+) (%d+) (%d+)()', pos)
    -- The changes are checked as they are read: scanning them all here would cost every tick.
    if not ini then return nil end
    t.ini, t.nxt, t.mins, t.minc, t.disc = tonumber(ini), tonumber(nxt), tonumber(mins), tonumber(minc), tonumber(disc)
    if t.ini < 1 or t.nxt < 1 then return nil end
    t.pos = rest
    t.flat = per == 1 and t.ini == 1 and t.nxt == 1 and t.mins == 0 and t.minc == 0 and rest > #s
  end
  if tariff_cached >= 1000 then tariff_parsed, tariff_cached = {}, 0 end
  tariff_parsed[s], tariff_cached = t, tariff_cached + 1
  return t
end

-- Reads the next rate change into t.at / t.rt (made on first use: a flat call
-- never needs them); false when there is none.
local function tariff_more(t)
  if t.pos > #t.s then return false end
  local at, tok, pos = string.match(t.s, '^ (%d+) ([%d/]+)()', t.pos)
  local rate, per
  if at then rate, per = tariff_ratio(tok) end
  if not rate then error('tariff: bad rate change at ' .. t.pos .. ' in "' .. t.s .. '"') end
  if t.n == 0 then t.at, t.rt, t.rp = {}, {}, {} end
  local n = t.n + 1
  t.at[n], t.rt[n], t.rp[n], t.pos, t.n = tonumber(at), rate, per, pos, n
  return true
end

-- What `len` seconds cost at r micro-units per p seconds, counted from the first of them:
-- floor(len * r / p), taken as whole runs of p seconds (r each) and what remains, so that no
-- product passes 2^53 (len * r may: a budget that buys years at a low rate; s * r < 3600 * 10^10).
local function tariff_span(len, r, p)
  if p == 1 then return len * r end
  local s = len % p
  local sr = s * r
  return (len - s) / p * r + (sr - sr % p) / p
end

-- The most seconds whose tariff_span fits in `left` (>= 0): whole runs of p seconds first,
-- then the s < p more with floor(s * r / p) <= rest, that is s * r < (rest + 1) * p.
local function tariff_most(left, r, p)
  local q = (left - left % r) / r
  if p == 1 then return q end
  local x = (left - q * r + 1) * p - 1
  return q * p + (x - x % r) / r
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

-- The rate in force at second `sec`: its micro-units, and the seconds they pay (1 but for "R/P").
local function tariff_rate(t, ans, sec)
  local rate, per, j, wall = t.rate, t.per, 1, ans + sec * 1000
  while (j <= t.n or tariff_more(t)) and t.at[j] <= wall do
    rate, per = t.rt[j], t.rp[j]
    j = j + 1
  end
  return rate, per
end

-- What the first n seconds cost at their rates, fee and minimum excluded.
local function tariff_sum(t, ans, n)
  local rate, per, k, j, sum = t.rate, t.per, 0, 1, 0
  while j <= t.n or tariff_more(t) do
    local kc = tariff_second(ans, t.at[j])
    if kc >= n then break end
    sum = sum + tariff_span(kc - k, rate, per)
    k, rate, per, j = kc, t.rt[j], t.rp[j], j + 1
  end
  return sum + tariff_span(n - k, rate, per)
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
  local rate, per, k, j, left = t.rate, t.per, 0, 1, budget
  while j <= t.n or tariff_more(t) do
    local kc = tariff_second(ans, t.at[j])
    local span = tariff_span(kc - k, rate, per)
    if span > left then break end
    left = left - span
    k, rate, per, j = kc, t.rt[j], t.rp[j], j + 1
  end
  return k + tariff_most(left, rate, per)
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

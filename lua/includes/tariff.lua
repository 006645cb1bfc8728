-- Flat per-second rating (placeholder with the contract's interface; the rating engine replaces it).
-- Descriptor: "<rate>,<fee>".
local function tariff_parse(s)
  local r, f = string.match(s, '^(%d+),(%d+)')
  return { rate = tonumber(r), fee = tonumber(f), disc = 0, flat = true }
end
local function tariff_charged(t, sec) return sec end
local function tariff_cost(t, ans, n)
  if n <= 0 then return 0 end
  return t.fee + n * t.rate
end
local function tariff_afford(t, ans, n0, amount)
  local fee = 0
  if n0 == 0 then fee = t.fee end
  local n = math.floor((amount - fee) / t.rate)
  if n < 0 then n = 0 end
  return n0 + n
end
local function tariff_rate(t, ans, sec) return t.rate end
local function tariff_blocks(t, n) return tostring(n) end

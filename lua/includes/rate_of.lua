-- The tariff of a rate plan for the dialled number, from the gateway's (plan,
-- tariff descriptor) pairs in ARGV starting at ARGV[from]: one per plan the
-- destination's longest prefix matched. nil when the ID's plan has none.
local function rate_of(plan, from)
  for i = from, #ARGV, 2 do
    if ARGV[i] == plan then return ARGV[i + 1] end
  end
  return nil
end

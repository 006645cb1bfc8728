-- The tariff of a rate plan for the dialled number, from the gateway's (plan,
-- tariff descriptor) pairs in ARGV[from..last] (last: #ARGV when not given): one
-- per plan the destination's longest prefix matched. nil when the ID's plan has none.
local function rate_of(plan, from, last)
  for i = from, (last or #ARGV) - 1, 2 do
    if ARGV[i] == plan then return ARGV[i + 1] end
  end
  return nil
end

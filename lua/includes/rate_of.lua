-- The rate and connection fee of a rate plan for the dialled number, from the
-- gateway's (plan, rate, fee) triples in ARGV starting at ARGV[from]: one per plan
-- the destination's longest prefix matched. nil when the ID's plan has none.
local function rate_of(plan, from)
  for i = from, #ARGV, 3 do
    if ARGV[i] == plan then return tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]) end
  end
  return nil, nil
end

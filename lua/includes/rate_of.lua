-- The tariff of a rate plan for the dialled number, from the gateway's (plan,
-- tariff descriptor) pairs in args[from..last] (args: the script's ARGV; last:
-- #args when not given): one per plan the destination's longest prefix matched.
-- nil when the ID's plan has none.
local function rate_of(args, plan, from, last)
  for i = from, (last or #args) - 1, 2 do
    if args[i] == plan then return args[i + 1] end
  end
  return nil
end

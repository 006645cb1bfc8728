-- What of an ID's balance no live call holds: its `free` field, which mint leaves
-- empty (and an ID minted before it existed lacks) until the ID's first call sets
-- it: until then all of the balance is free.
-- Never below zero nor above the balance, whatever a damaged hash says (the audit reports it).
local function free_of(bal, free)
  local f = tonumber(free) or bal
  if f > bal then f = bal end
  if f < 0 then return 0 end
  return f
end

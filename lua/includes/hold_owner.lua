-- The purchase a hold belongs to: ts:{bN}:resvby keeps '<held until>:<purchase reference>' by ID
-- hash beside the hold's score (reserve.lua). nil for a hold an older version took (no owner kept)
-- or one whose entry is stale: an older version's release or sale left it behind and its own
-- reserve took the ID again since, so the hold's end no longer matches. Such a hold is anyone's,
-- as every hold was before owners were kept.
local function hold_owner(owners, idh, until_ms)
  local v = redis.call('HGET', owners, idh)
  if not v then return nil end
  local u, ref = string.match(v, '^(%d+):(.*)$')
  if u and tonumber(u) == until_ms then return ref end
  return nil
end

-- @include "charge"
-- The live calls of ID `ikey` as its bucket's live set `live` (the reaper's own list) has them:
-- how many, and what their reservations hold. A call session lost (a failover's lost write)
-- while the ID's count (`act`) and hold (`bal` less `free`) stayed is in neither: no stop or reap
-- ever comes to give them back. Reads every call of the bucket: for a refusal's second look and
-- the expiry sweep's, never on a call's own path.
local function id_live(live, ikey)
  local n, held = 0, 0
  for _, skey in ipairs(redis.call('ZRANGE', live, 0, -1)) do
    local v = redis.call('HMGET', skey, 'st', 'id', 'used', 'trm', 'ans', 'cov')
    if v[1] == 'live' and v[2] == ikey then
      local _, _, res = money_of(terms_of(v[4]).t, tonumber(v[3]), tonumber(v[5]), tonumber(v[6]))
      n, held = n + 1, held + res
    end
  end
  return n, held
end

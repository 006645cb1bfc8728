--[[ call_held: what a live call has paid so far and what it still holds, for the audit.
KEYS[1] call session hash  ts:{bN}:call:<switch>:<call>
Returns {state, ID hash, paid, reservation} (micro-units), or {} when there is no such session.
A session stores neither sum: both follow from its charged seconds (includes/charge.lua).
]]
-- @include "num"
-- @include "charge"
-- @flags no-writes
local v = redis.call('HMGET', KEYS[1], 'st', 'idh', 'used', 'trm', 'ans', 'cov', 'short')
if not v[1] then return {} end
if v[1] ~= 'live' then return { v[1], v[2] or '', 0, 0 } end
local _, cost, res = money_of(terms_of(v[4]).t, tonumber(v[3]), tonumber(v[5]), tonumber(v[6]))
return { v[1], v[2] or '', cost - tonumber(v[7]), res }

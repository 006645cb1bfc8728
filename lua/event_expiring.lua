--[[ event_expiring: emit an ID's `expiring` event, once per expiry date.
KEYS[1] ID hash                 ts:{bN}:id:<idHash>
KEYS[2] balance events          ts:{bN}:ev (stream)
ARGV[1] now (ms)
ARGV[2] warn until (ms): the ID is expiring when its expiry is after now and at or before this
Only a sold ID with an expiry set is warned. `expw` on the ID hash keeps the expiry it was
warned of, so every sweeper on every gateway may run this: a later expiry (a top-up that
extended it) is warned of again, the same one never.
Returns 1 when it emitted the event, else 0.
]]
-- @include "num"
-- @include "emit"
local f = redis.call('HMGET', KEYS[1], 'st', 'exp', 'expw', 'prod', 'bal')
if f[1] ~= 'sold' then return 0 end
local exp, now = tonumber(f[2]) or 0, tonumber(ARGV[1])
if exp <= now or exp > tonumber(ARGV[2]) or f[3] == f[2] then return 0 end
redis.call('HSET', KEYS[1], 'expw', f[2])
emit(KEYS[2], { 'type', 'expiring', 'idh', string.match(KEYS[1], ':id:(.+)$'), 'prod', f[4] or '',
  'at', int(now), 'bal', f[5] or '0', 'exp', f[2] })
return 1

--[[ purchase_bind: make an ID the one a purchase sells, unless another attempt bound one meanwhile.
KEYS[1] purchase record    ts:{bN}:pur:<key hash>
ARGV[1] the ID hash this attempt last saw bound ('' for none)
ARGV[2] the ID hash it now holds    ARGV[3] that ID's bucket
Returns {'ok'} (bound), or {'taken', idHash, bucket}: another attempt of the same purchase (a retry
that took over after this one's lease ran out) bound another ID since; that one is the purchase's.
One ID per purchase however many attempts overlap: each sells only the bound ID, and selling one ID
twice for one purchase answers the first sale (sell.lua).
]]
local f = redis.call('HMGET', KEYS[1], 'idHash', 'bucket')
if (f[1] or '') ~= ARGV[1] then return { 'taken', f[1] or '', f[2] or '' } end
redis.call('HSET', KEYS[1], 'idHash', ARGV[2], 'bucket', ARGV[3])
return { 'ok' }

--[[ call_claim: claim call ids for the IDs their starts name, in one bucket of the call index.
KEYS[i]      call index         ts:{bN}:cx:<switch>:<call>   (i = 1..n)
ARGV[1]      TTL (s) of the index
ARGV[1+i]    the ID hash key call i is started on
Returns, per call in order, the ID key that already held the call id, or '' when this claim is
the first. A claim repeated in one batch (a retried start) finds the first: it is applied in order.
]]
-- @reply msgpack
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('SET', KEYS[i], ARGV[1 + i], 'EX', ARGV[1], 'NX', 'GET') or ''
end
return out

--[[ purchase_lease: renew or hand back an attempt's lease on a purchase (or recharge) record.
KEYS[1] the record           ts:{bN}:pur:<key hash> (or :rch:)
ARGV[1] the attempt's owner token, as its claim wrote it
ARGV[2] the lease's new end (ms); 0 hands it back
Returns 1, or 0 when another attempt owns the record now (its lease is not this one's to touch).
]]
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease', ARGV[2])
return 1

--[[ purchase_claim: claim a purchase by its Idempotency-Key, or find where it stands.
KEYS[1] purchase record    ts:{bN}:pur:<key hash>
KEYS[2] open purchases     ts:{bN}:purs (zset: record key -> created, ms), for the abandoned-purchase sweep
ARGV[1] now (ms)
ARGV[2] request fingerprint (keyed hash of product, PIN and payment details)
ARGV[3] lease (ms): how long this attempt owns the purchase before a retry may take over
ARGV[4] TTL (s) of a new record (the purchase's end sets the TTL of its answer)
ARGV[5] product, ARGV[6] price (micro-units), ARGV[7] currency: the terms of a new purchase, fixed here
        once and used by every later step; empty: only resume (the abandoned-purchase sweep)
ARGV[8] this attempt's owner token: only it may renew or hand back the lease (purchase_lease.lua)
Returns {'new'} (created, owned), {'resume', state} (an earlier attempt stopped midway; now owned),
{'done', state} (finished: the answer is in the record), {'busy'} (another attempt owns it),
{'conflict'} (the same key was used for a different request), or {'gone'} (no such record, and
ARGV[5] empty: nothing is created).
]]
local f = redis.call('HMGET', KEYS[1], 'fp', 'st', 'lease')
local now = tonumber(ARGV[1])
if not f[1] then
  if ARGV[5] == '' then return { 'gone' } end
  redis.call('HSET', KEYS[1], 'fp', ARGV[2], 'st', 'new', 'lease', string.format('%d', now + tonumber(ARGV[3])),
    'owner', ARGV[8], 'created', ARGV[1], 'product', ARGV[5], 'price', ARGV[6], 'cur', ARGV[7])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
  redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1])
  return { 'new' }
end
if f[1] ~= ARGV[2] then return { 'conflict' } end
if f[2] == 'done' or f[2] == 'declined' then return { 'done', f[2] } end
if tonumber(f[3]) > now then return { 'busy' } end
redis.call('HSET', KEYS[1], 'lease', string.format('%d', now + tonumber(ARGV[3])), 'owner', ARGV[8])
return { 'resume', f[2] }

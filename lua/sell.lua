--[[ sell: turn a reserved ID into a sold one, with its PIN and check link, and record the sale.
KEYS[1] ID hash              ts:{bN}:id:<idHash>
KEYS[2] reservations zset    ts:{bN}:resv
KEYS[3] sale records         ts:{bN}:sales (stream)
KEYS[4] hold owners hash     ts:{bN}:resvby
ARGV[1] now (ms)             ARGV[2] product        ARGV[3] price (micro-units)
ARGV[4] channel              ARGV[5] purchase reference (Idempotency-Key)
ARGV[6] provider reference   ARGV[7] provider commission (micro-units)
ARGV[8] PIN hash (scrypt, encoded)
ARGV[9] currency of the price (the purchase's, fixed when it started)
ARGV[10] keyed hash of the check link's secret part: the link names its ID, so no index leads to it
Returns {'ok', face, recordId, duplicate(0|1)} or {'err', reason}: not_reserved (hold expired and
released, or held now by another purchase, or the ID blocked or sold by hand meanwhile), wrong_product. The sale record holds price, commission and net to the
operator. Selling again for the same purchase (a retry after a crash) answers the first sale.
]]
-- @include "id_fields"
-- @include "hold_owner"
local idh = string.match(KEYS[1], 'id:(.+)$')
local f = id_fields(KEYS[1], { 'st', 'prod', 'face', 'cur', 'pref', 'srec' })
if f[5] == ARGV[5] then return { 'ok', tonumber(f[3]), f[6], 1 } end
local until_ms = tonumber(redis.call('ZSCORE', KEYS[2], idh))
if not until_ms then return { 'err', 'not_reserved' } end
-- Our hold ran out, the sweep put the ID back and another purchase holds it now: theirs, left alone.
local owner = hold_owner(KEYS[4], idh, until_ms)
if owner and owner ~= ARGV[5] then return { 'err', 'not_reserved' } end
if f[2] ~= ARGV[2] then return { 'err', 'wrong_product' } end
-- Blocked or sold by hand while held: not this purchase's to sell. Its hold goes (it must not return
-- to stock either) and the purchase takes another ID, as when its hold ran out.
if f[1] ~= 'minted' then
  redis.call('ZREM', KEYS[2], idh)
  redis.call('HDEL', KEYS[4], idh)
  return { 'err', 'not_reserved' }
end
redis.call('ZREM', KEYS[2], idh)
redis.call('HDEL', KEYS[4], idh)
local price, commission = tonumber(ARGV[3]), tonumber(ARGV[7])
local rec = redis.call('XADD', KEYS[3], '*', 'id', idh, 'product', f[2], 'face', f[3], 'currency', ARGV[9],
  'price', ARGV[3], 'channel', ARGV[4], 'ref', ARGV[5], 'provider', ARGV[6],
  'commission', ARGV[7], 'net', string.format('%d', price - commission), 'time', ARGV[1])
redis.call('HSET', KEYS[1], 'st', 'sold', 'bal', f[3], 'sold', ARGV[1], 'pin', ARGV[8],
  'chk', ARGV[10], 'pinfail', '0', 'pref', ARGV[5], 'srec', rec)
return { 'ok', tonumber(f[3]), rec, 0 }

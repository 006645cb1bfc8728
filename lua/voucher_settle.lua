--[[ voucher_settle: the last step of redeeming a recharge voucher, once the target answered
(lua/topup.lua): 'done' when it was credited, 'return' when it refused (the voucher gets its value
back, with a record that says so, and may be redeemed again).
KEYS[1] voucher ID hash       ts:{bV}:id:<voucherHash>
KEYS[2] sale records          ts:{bV}:sales (stream)
KEYS[3] open transfers        ts:{bV}:vout (zset)
ARGV[1] now (ms)   ARGV[2] 'done' | 'return'   ARGV[3] transfer ref   ARGV[4] reason (return)
Returns {'ok', state}: the transfer's state after ('done' | 'returned'), or what it already was
when settled before (a retry, or the sweep and a request at once); 'stale' for a ref that is not
the voucher's current transfer.
]]
-- @include "id_fields"
-- @include "num"
local f = id_fields(KEYS[1], { 'tn', 'tst', 'tamt', 'prod', 'cur', 'tto', 'st' })
local vh = string.match(KEYS[1], 'id:(.+)$')
if not f[1] or vh .. ':' .. f[1] ~= ARGV[3] then return { 'ok', 'stale' } end
if f[2] ~= 'sent' then return { 'ok', f[2] } end
redis.call('ZREM', KEYS[3], KEYS[1])
if ARGV[2] == 'done' then
  redis.call('HSET', KEYS[1], 'tst', 'done')
  return { 'ok', 'done' }
end
local amount = tonumber(f[3])
redis.call('XADD', KEYS[2], '*', 'type', 'voucher', 'id', vh, 'product', f[4], 'currency', f[5],
  'amount', int(-amount), 'to', string.match(f[6], 'id:(.+)$') or '', 'ref', ARGV[3], 'reason', ARGV[4],
  'time', ARGV[1])
-- A voucher blocked meanwhile (reported stolen) stays blocked: it is sold again once unblocked.
redis.call('HSET', KEYS[1], f[7] == 'blocked' and 'prev' or 'st', 'sold', 'bal', int(amount), 'tst', 'returned')
redis.call('HDEL', KEYS[1], 'tto')
return { 'ok', 'returned' }

--[[ voucher_take: the first step of redeeming a recharge voucher into an ID: in the voucher's own slot,
take its whole value out, record it, and mark the voucher as on its way to that ID.
KEYS[1] voucher ID hash       ts:{bV}:id:<voucherHash>
KEYS[2] sale records          ts:{bV}:sales (stream)
KEYS[3] open transfers        ts:{bV}:vout (zset: voucher key -> taken, ms), for the transfer sweep
ARGV[1] now (ms)   ARGV[2] the target ID's key (ts:{bT}:id:<hash>)   ARGV[3] channel (who asked)
Returns {'ok', transfer ref, amount, currency, into (products, comma-separated), state, duplicate(0|1)}
or {'err', reason}: unknown_id, not_voucher, not_active, blocked, refunded, already_redeemed.
state 'sent': the target has yet to be credited (lua/topup.lua, reference = transfer ref), then the
voucher is settled (lua/voucher_settle.lua); 'done': it was. Taking a voucher again for the same
target answers its transfer (a retry re-drives it); for another target it is already_redeemed.
The transfer ref is '<voucher hash>:<n>', n counting the voucher's transfers (a refused one is
returned and the voucher may be redeemed again, under a new ref).
]]
-- @include "id_fields"
-- @include "num"
local f = id_fields(KEYS[1], { 'st', 'kind', 'bal', 'cur', 'prod', 'tto', 'tn', 'tst', 'tamt', 'refrec', 'into' })
local vh = string.match(KEYS[1], 'id:(.+)$')
if not f[1] then return { 'err', 'unknown_id' } end
if f[2] ~= 'recharge' then return { 'err', 'not_voucher' } end
if f[6] then
  if f[6] ~= ARGV[2] then return { 'err', 'already_redeemed' } end
  return { 'ok', vh .. ':' .. f[7], tonumber(f[9]), f[4], f[11] or '', f[8], 1 }
end
if f[1] == 'minted' then return { 'err', 'not_active' } end
if f[1] == 'blocked' then return { 'err', f[10] and 'refunded' or 'blocked' } end
local bal = tonumber(f[3]) or 0
if f[1] ~= 'sold' or bal <= 0 then return { 'err', 'already_redeemed' } end
local n = (tonumber(f[7]) or 0) + 1
local ref = vh .. ':' .. n
local target = string.match(ARGV[2], 'id:(.+)$')
local rec = redis.call('XADD', KEYS[2], '*', 'type', 'voucher', 'id', vh, 'product', f[5], 'currency', f[4],
  'amount', int(bal), 'to', target, 'ref', ref, 'channel', ARGV[3], 'time', ARGV[1])
redis.call('HSET', KEYS[1], 'st', 'exhausted', 'bal', '0', 'tto', ARGV[2], 'tn', int(n), 'tst', 'sent',
  'tamt', int(bal), 'tat', ARGV[1], 'trec', rec)
redis.call('ZADD', KEYS[3], ARGV[1], KEYS[1])
return { 'ok', ref, bal, f[4], f[11] or '', 'sent', 0 }

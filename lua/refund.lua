--[[ refund: take back an unused sold ID (the card company is asked to void the payment after).
KEYS[1] ID hash              ts:{bN}:id:<idHash>
KEYS[2] sale records         ts:{bN}:sales (stream)
KEYS[3] refunds to void      ts:{bN}:refv (zset: ID hash -> when last asked, ms)
ARGV[1] now (ms)   ARGV[2] reason   ARGV[3] operator
Returns {'ok', value taken back, recordId, the card company's payment reference ('' for a sale by hand:
nothing to void), duplicate(0|1)} or {'err', reason}:
unknown_id, not_sold, already_used (a call or a redemption happened, or it expired: refuse, nothing changes), recharged
(topped up since the sale: refuse, nothing changes).
The ID is blocked with its value at zero, and a refund record holds the value taken back, so
value sold = balance + call, redemption and refund records still holds.
]]
-- @include "id_fields"
local f = id_fields(KEYS[1],
  { 'st', 'bal', 'face', 'first', 'act', 'pref', 'refrec', 'prod', 'cur', 'why', 'srec', 'prev', 'free', 'sref' })
if not f[1] then return { 'err', 'unknown_id' } end
if f[7] then return { 'ok', tonumber(f[3]), f[7], f[6] or '', 1 } end
-- A blocked ID (lost, stolen) is judged by the state it was blocked in.
local st = f[1] == 'blocked' and f[12] or f[1]
-- Spent to zero (calls, redemptions, a voucher's transfer), or past its expiry (counted from its
-- first use, and what it had left forfeited): sold and used, not unsold.
if st == 'exhausted' or st == 'expired' then return { 'err', 'already_used' } end
if st ~= 'sold' then return { 'err', 'not_sold' } end
local bal, face = tonumber(f[2]), tonumber(f[3])
-- `first` is set by a call only when the product counts validity days; `free` by every call (its first
-- start), billed or not, and whatever a recharge since put back: without it such an ID passed as unused,
-- and its `free` outlived the zeroed balance (an audit problem).
if (tonumber(f[4]) or 0) > 0 or bal < face or (tonumber(f[5]) or 0) > 0 or tonumber(f[13]) then
  return { 'err', 'already_used' }
end
-- Recharged, never used: taking it back would take the recharges' value, and void only the sale's payment.
if bal > face then return { 'err', 'recharged' } end
local idh = string.match(KEYS[1], 'id:(.+)$')
-- The sale's reference: a purchase keeps it on the ID, and it is the card company's payment too; a sale
-- by hand keeps it as `sref` (one sold before that: only in its record, if not archived), and it is the
-- operator's note: nothing to void.
local ref = f[6] or f[14]
if not ref and f[11] then
  local sale = redis.call('XRANGE', KEYS[2], f[11], f[11])[1]
  if sale then
    for i = 1, #sale[2], 2 do
      if sale[2][i] == 'ref' then ref = sale[2][i + 1] end
    end
  end
end
local payment = f[6] or ''
ref = ref or ''
local rec = redis.call('XADD', KEYS[2], '*', 'type', 'refund', 'id', idh, 'product', f[8], 'face', f[3],
  'currency', f[9], 'amount', f[2], 'ref', ref, 'channel', ARGV[3], 'reason', ARGV[2], 'time', ARGV[1])
redis.call('HSET', KEYS[1], 'st', 'blocked', 'prev', 'sold', 'why', 'refunded: ' .. ARGV[2], 'blk', ARGV[1],
  'bal', '0', 'refrec', rec)
-- Listed until the card company answers its void: a refund whose answer was lost is asked again.
if payment ~= '' then redis.call('ZADD', KEYS[3], ARGV[1], idh) end
return { 'ok', tonumber(f[2]), rec, payment, 0 }

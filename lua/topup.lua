--[[ topup: credit a talk ID (a recharge voucher's value, an operator's top-up, an online recharge),
once per reference, with its record and its balance event.
KEYS[1] ID hash              ts:{bN}:id:<idHash>
KEYS[2] sale records         ts:{bN}:sales (stream)
KEYS[3] the ID's top-ups     ts:{bN}:tup:<idHash> (hash: '<source>:<reference>' -> first answer)
KEYS[4] balance events       ts:{bN}:ev (stream, includes/emit.lua)
ARGV[1]  now (ms)
ARGV[2]  'apply', or 'check': decide only, write nothing
ARGV[3]  source: 'voucher' | 'operator' | 'online'
ARGV[4]  reference: what the top-up is applied once by (voucher hash:transfer, operator key, recharge ref)
ARGV[5]  amount (micro-units)
ARGV[6]  currency of the amount
ARGV[7]  the product the terms below are of (the ID's, as the gateway's catalog has it)
ARGV[8]  top-up allowed (1|0)
ARGV[9]  days a recharge extends the expiry to, at least, from now (0: unchanged)
ARGV[10] the highest balance a recharge may leave
ARGV[11] products the source may recharge, comma-separated ('' any)
ARGV[12] note: the voucher's ID hash, the operator's note, the recharge's key hash
ARGV[13] price paid, ARGV[14] card company commission (micro-units; online, else 0)
Returns {'ok', amount, balance, expiry (ms, 0 none), recordId, duplicate(0|1)} or {'err', reason}:
unknown_id, wrong_kind, wrong_product, topup_forbidden, wrong_currency, not_active, blocked, refunded,
expired (past its expiry by Redis' clock, which lua/expire.lua judges it by), bad_value,
topup_limit; idempotency_conflict: the reference was applied with another amount.
Under 'apply' the first answer, a refusal too, is kept under the
reference: a retry gets it again, and a reference refused once never credits later (a voucher whose
transfer was refused takes its value back, lua/voucher_settle.lua). An exhausted ID is usable again.
]]
-- @include "id_fields"
-- @include "num"
-- @include "emit"
-- @include "clock"
local now, mode, source, ref = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local field = source .. ':' .. ref
if mode == 'apply' then
  local had = redis.call('HGET', KEYS[3], field)
  if had then
    local p = {}
    for v in string.gmatch(had, '[^|]+') do p[#p + 1] = v end
    if p[1] == 'no' then return { 'err', p[2] } end
    -- The same reference for another amount is no retry: answering the first would read as
    -- if the new amount were credited.
    if p[2] ~= ARGV[5] then return { 'err', 'idempotency_conflict' } end
    return { 'ok', tonumber(p[2]), tonumber(p[3]), tonumber(p[4]), p[5], 1 }
  end
end

local f = id_fields(KEYS[1], { 'st', 'kind', 'bal', 'prod', 'cur', 'exp', 'refrec', 'free' })
local function decide()
  local st = f[1]
  if not st then return 'unknown_id' end
  if f[2] ~= 'talk' then return 'wrong_kind' end
  if f[4] ~= ARGV[7] then return 'wrong_product' end
  if ARGV[8] ~= '1' then return 'topup_forbidden' end
  if ARGV[11] ~= '' and not string.find(',' .. ARGV[11] .. ',', ',' .. f[4] .. ',', 1, true) then
    return 'wrong_product'
  end
  if f[5] ~= ARGV[6] then return 'wrong_currency' end
  if st == 'minted' then return 'not_active' end
  if st == 'blocked' then return f[7] and 'refunded' or 'blocked' end
  local exp = tonumber(f[6]) or 0
  -- Past its expiry by Redis' clock, as lua/expire.lua forfeits what is left and calls and scans
  -- are judged: a gateway whose clock is behind must not credit value the next sweep books as
  -- breakage, nor one ahead refuse money for an ID calls may still use.
  if st == 'expired' or (exp > 0 and redis_ms() >= exp) then return 'expired' end
  if st ~= 'sold' and st ~= 'exhausted' then return 'not_active' end
  local amount = tonumber(ARGV[5])
  if not amount or amount < 1 then return 'bad_value' end
  if tonumber(f[3]) + amount > tonumber(ARGV[10]) then return 'topup_limit' end
  return nil
end

local why = decide()
if why then
  if mode == 'apply' and f[1] then redis.call('HSET', KEYS[3], field, 'no|' .. why) end
  return { 'err', why }
end
local amount = tonumber(ARGV[5])
local bal = tonumber(f[3]) + amount
if mode ~= 'apply' then return { 'ok', amount, bal, tonumber(f[6]) or 0, '', 0 } end

local exp0 = tonumber(f[6]) or 0
local exp = exp0
local days = tonumber(ARGV[9])
-- An ID not used yet (no expiry set) keeps counting its validity from first use.
if exp > 0 and days > 0 then exp = math.max(exp, now + days * 86400000) end
local idh = string.match(KEYS[1], 'id:(.+)$')
redis.call('HSET', KEYS[1], 'st', 'sold', 'bal', int(bal), 'exp', int(exp))
-- The money is free at once: calls in progress are re-granted from it at their next tick.
if tonumber(f[8]) then redis.call('HSET', KEYS[1], 'free', int(tonumber(f[8]) + amount)) end
local rec = redis.call('XADD', KEYS[2], '*', 'type', 'topup', 'id', idh, 'product', f[4], 'currency', f[5],
  'amount', int(amount), 'source', source, 'ref', ref, 'note', ARGV[12], 'price', ARGV[13],
  'commission', ARGV[14], 'bal', int(bal), 'exp', int(exp), 'time', ARGV[1])
redis.call('HSET', KEYS[3], field, 'ok|' .. int(amount) .. '|' .. int(bal) .. '|' .. int(exp) .. '|' .. rec)
-- The event's expiry is the new one, or 0 when the top-up did not move it.
emit(KEYS[4], { 'type', 'topup', 'idh', idh, 'prod', f[4], 'at', ARGV[1], 'bal', int(bal), 'amount', int(amount),
  'source', source, 'ref', ARGV[12], 'exp', exp ~= exp0 and int(exp) or '0' })
return { 'ok', amount, bal, exp, rec, 0 }

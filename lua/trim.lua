--[[ trim: drop a bucket's archived records from its stream, carrying what the
conservation audit needs forward per ID, in one step.
KEYS[1] record stream     ts:{bN}:cdr | ts:{bN}:sales | ts:{bN}:red
KEYS[2] checkpoint hash   ts:{bN}:ckpt   ID hash -> "sold sales calls redeemed refunded topups vouchers expired"
ARGV[1] which stream: 'cdr', 'sales' or 'red'
ARGV[2] the stream id of the last archived record (inclusive)
Every record up to ARGV[2] is added to its ID's checkpoint and the stream is
trimmed to what follows (XTRIM MINID): the sums and the trim are one atomic
step, so a crash leaves either both or neither, and a second call with the same
ARGV[2] finds nothing left to add. Returns how many records were trimmed.
The sums are the audit's (src/ledger/audit.ts): a sale adds its face to sold and
1 to sales, a refund its amount to refunded, a call its cost, a redemption its
amount (a reversal's is negative), a top-up its amount to topups, a recharge voucher's
transfer its amount to vouchers (a returned transfer's is negative), an expiry record its amount (the
value forfeited) to expired. A checkpoint written before a sum existed lacks it: it counts as 0.
]]
-- @include "num"
local kind, upTo = ARGV[1], ARGV[2]
local recs = redis.call('XRANGE', KEYS[1], '-', upTo)
if #recs == 0 then return 0 end
local add = {}
local function sums(idh)
  local s = add[idh]
  if not s then
    s = { 0, 0, 0, 0, 0, 0, 0, 0 }
    add[idh] = s
  end
  return s
end
for _, rec in ipairs(recs) do
  local flat, f = rec[2], {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  if kind == 'red' and f.r then
    -- Packed: type|scan|scanner|id|kind|action|venue|gate|item|qty|amount|... (lua/includes/red_record.lua)
    local i, parts = 0, {}
    for v in string.gmatch(f.r, '([^|]*)|') do
      i = i + 1
      parts[i] = v
      if i == 11 then break end
    end
    f = { id = parts[4], amount = parts[11] }
  end
  local s = sums(f.id)
  if kind == 'sales' then
    if f.type == 'refund' then s[5] = s[5] + tonumber(f.amount)
    elseif f.type == 'topup' then s[6] = s[6] + tonumber(f.amount)
    elseif f.type == 'voucher' then s[7] = s[7] + tonumber(f.amount)
    elseif f.type == 'expiry' then s[8] = s[8] + tonumber(f.amount)
    else
      s[1] = s[1] + tonumber(f.face)
      s[2] = s[2] + 1
    end
  elseif kind == 'cdr' then
    s[3] = s[3] + tonumber(f.cost)
  else
    s[4] = s[4] + tonumber(f.amount)
  end
end
for idh, s in pairs(add) do
  local had = redis.call('HGET', KEYS[2], idh)
  if had then
    local j = 0
    for v in string.gmatch(had, '%S+') do
      j = j + 1
      s[j] = s[j] + tonumber(v)
    end
  end
  local out = {}
  for j = 1, 8 do out[j] = int(s[j]) end
  redis.call('HSET', KEYS[2], idh, table.concat(out, ' '))
end
local last = recs[#recs][1]
local ms, seq = string.match(last, '^(%d+)-(%d+)$')
redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. int(tonumber(seq) + 1))
return #recs

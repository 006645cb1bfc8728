-- @include "charge"
-- Closes a call session: takes the disconnect charge and frees the reservation
-- (release() in charge.lua), frees its concurrency slot, drops it from the live
-- set, appends the call detail record to the bucket's stream and keeps the answer
-- on the session (with a TTL) so a repeated stop returns the same record.
-- Returns billed seconds, cost, balance after, record id.
local function close(skey, ikey, live, cdr, now, cause, ttl)
  local disc, discShort = release(skey, ikey)
  local s = redis.call('HMGET', skey, 'sw', 'call', 'idh', 'dest', 'start', 'ans', 'billed', 'tar', 'used', 'paid',
    'short')
  local billed = tonumber(s[7])
  local t = tariff_parse(s[8])
  local cost = tonumber(s[10]) + disc
  local short = tonumber(s[11]) + discShort
  local idf = redis.call('HMGET', ikey, 'bal', 'st')
  local bal = idf[1] or '0'
  if bal == '0' and idf[2] == 'sold' then redis.call('HSET', ikey, 'st', 'exhausted') end
  local act = tonumber(redis.call('HINCRBY', ikey, 'act', -1))
  if act < 0 then redis.call('HSET', ikey, 'act', '0') end
  redis.call('ZREM', live, skey)
  local ans = tonumber(s[6]) or 0
  local rec = redis.call('XADD', cdr, '*',
    'switch', s[1], 'call', s[2], 'id', s[3], 'dest', s[4],
    'start', s[5], 'answer', s[6] or '', 'end', int(now),
    'sec', s[7], 'used', int(used_of(t, billed, s[9])), 'blocks', tariff_blocks(t, billed),
    'rate', int(tariff_rate(t, ans, 0)), 'fee', int(t.fee), 'disc', int(disc),
    'cost', int(cost), 'short', int(short), 'bal', bal, 'cause', cause)
  redis.call('HSET', skey, 'st', 'closed', 'end', int(now), 'cause', cause, 'bal1', bal, 'rec', rec, 'cost', int(cost),
    'short', int(short))
  redis.call('EXPIRE', skey, ttl)
  return { 'ok', billed, cost, tonumber(bal), rec, 0 }
end

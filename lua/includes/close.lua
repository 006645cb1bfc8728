-- Closes a call session: frees its concurrency slot, drops it from the live set,
-- appends the call detail record to the bucket's stream and keeps the answer on
-- the session (with a TTL) so a repeated stop returns the same record.
-- The cost is derived rather than kept up to date on every tick: every second
-- billed at the call's rate, the fee once answered, less what could not be taken.
-- Returns billed seconds, cost, balance after, record id.
local function close(skey, ikey, live, cdr, now, cause, ttl)
  local s = redis.call('HMGET', skey, 'sw', 'call', 'idh', 'dest', 'start', 'ans', 'billed', 'rate', 'fee', 'short')
  local billed = tonumber(s[7])
  local cost = 0
  if billed > 0 then cost = billed * tonumber(s[8]) + tonumber(s[9]) - tonumber(s[10]) end
  local bal = redis.call('HGET', ikey, 'bal') or '0'
  local act = tonumber(redis.call('HINCRBY', ikey, 'act', -1))
  if act < 0 then redis.call('HSET', ikey, 'act', '0') end
  redis.call('ZREM', live, skey)
  local rec = redis.call('XADD', cdr, '*',
    'switch', s[1], 'call', s[2], 'id', s[3], 'dest', s[4],
    'start', s[5], 'answer', s[6], 'end', int(now),
    'sec', s[7], 'rate', s[8], 'fee', s[9], 'cost', int(cost), 'short', s[10],
    'bal', bal, 'cause', cause)
  redis.call('HSET', skey, 'st', 'closed', 'end', int(now), 'cause', cause, 'bal1', bal, 'rec', rec, 'cost', int(cost))
  redis.call('EXPIRE', skey, ttl)
  return { 'ok', billed, cost, tonumber(bal), rec, 0 }
end

-- Closes a call session: frees its concurrency slot, drops it from the live set,
-- appends the call detail record to the bucket's stream and keeps the answer on
-- the session (with a TTL) so a repeated stop returns the same record.
-- Returns billed seconds, cost, balance after, record id.
local function close(skey, ikey, live, cdr, now, cause, ttl)
  local s = redis.call('HMGET', skey, 'sw', 'call', 'idh', 'dest', 'start', 'ans', 'billed', 'rate', 'fee', 'cost', 'short')
  local bal = redis.call('HGET', ikey, 'bal') or '0'
  local act = tonumber(redis.call('HINCRBY', ikey, 'act', -1))
  if act < 0 then redis.call('HSET', ikey, 'act', '0') end
  redis.call('ZREM', live, skey)
  local rec = redis.call('XADD', cdr, '*',
    'switch', s[1], 'call', s[2], 'id', s[3], 'dest', s[4],
    'start', s[5], 'answer', s[6], 'end', int(now),
    'sec', s[7], 'rate', s[8], 'fee', s[9], 'cost', s[10], 'short', s[11],
    'bal', bal, 'cause', cause)
  redis.call('HSET', skey, 'st', 'closed', 'end', int(now), 'cause', cause, 'bal1', bal, 'rec', rec)
  redis.call('EXPIRE', skey, ttl)
  return { 'ok', tonumber(s[7]), tonumber(s[10]), tonumber(bal), rec, 0 }
end

-- charge_events(evkey, ikey, skey, now, bal, left, fired, exhausted): the balance
-- events one charge() causes, for the webhooks: one `low_balance` per threshold
-- fired (comma-separated in `fired`, highest first) and `exhausted` when this
-- charge took the balance to zero. The product is read only when there is
-- something to emit, so a tick that fires nothing costs nothing more.
-- @include "emit"
local function charge_events(evkey, ikey, skey, now, bal, left, fired, exhausted)
  local idh = string.match(ikey, ':id:(.+)$') or ''
  local prod = redis.call('HGET', ikey, 'prod') or ''
  local at, b = int(now), int(bal)
  for t in string.gmatch(fired, '%d+') do
    emit(evkey, { 'type', 'low_balance', 'idh', idh, 'prod', prod, 'at', at, 'bal', b,
      'left', int(left), 'threshold', t })
  end
  if exhausted then
    emit(evkey, { 'type', 'exhausted', 'idh', idh, 'prod', prod, 'at', at, 'bal', b,
      'call', string.match(skey, ':call:(.+)$') or '' })
  end
end

-- blocked_emptied(ikey): a blocked ID's balance was just taken to zero (the tick or stop that cut its
-- call billed the seconds talked). One that was sold is exhausted once unblocked, so its `prev`
-- becomes `exhausted` and its `exhausted` event is due now, as for a sold one: unblocked later it
-- would otherwise be a sold ID of balance 0 that no webhook ever heard of.
local function blocked_emptied(ikey)
  if redis.call('HGET', ikey, 'prev') ~= 'sold' then return false end
  redis.call('HSET', ikey, 'prev', 'exhausted')
  return true
end

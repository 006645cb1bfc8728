--[[ purchase_admit: count a new anonymous card payment (a buy-page purchase, a check-page recharge)
against its client's limit, its network's and the total.
KEYS[1] the client's count    ts:{b0}:buyc:<keyed hash of the client group (an IPv6 /64)>
KEYS[2] the network's count   ts:{b0}:buyn:<keyed hash of its network (an IPv4 /24, an IPv6 /48)>
KEYS[3] the total count       ts:{b0}:buyall
KEYS[4] the payment's marker  ts:{b0}:buyk:<keyed hash of its record's key>: set when it is counted, so a
        copy of the same form (a double tap, on any gateway) counts nothing; it lasts the window
ARGV[1] payments one client may start per window
ARGV[2] payments one network may start per window
ARGV[3] payments all anonymous clients together may start per window
ARGV[4] window (ms)
Returns {'ok'}, or {'client' | 'network' | 'total', ms}: refused, and how long until that count's
window ends. A refusal writes nothing, so a client that is refused (or a flood of new addresses
once a limit is reached) adds no key: counts and markers exist only for payments admitted in the
current window, at most ARGV[3] markers.
]]
if redis.call('EXISTS', KEYS[4]) == 1 then return { 'ok' } end
local BY = { 'client', 'network', 'total' }
local function full(key, limit)
  local n = tonumber(redis.call('GET', key) or '0')
  if n < tonumber(limit) then return false end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    -- A count without expiry (never written so by this script): end its window now.
    redis.call('PEXPIRE', key, ARGV[4])
    ttl = tonumber(ARGV[4])
  end
  return ttl
end
for i = 1, 3 do
  local wait = full(KEYS[i], ARGV[i])
  if wait then return { BY[i], wait } end
end
for i = 1, 3 do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
end
redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
return { 'ok' }

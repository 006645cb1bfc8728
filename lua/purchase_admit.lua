--[[ purchase_admit: count a new purchase of an anonymous buyer against its client's limit and the total.
KEYS[1] the client's count   ts:{b0}:buyc:<keyed hash of the client address>
KEYS[2] the total count      ts:{b0}:buyall
ARGV[1] purchases one client may start per window
ARGV[2] purchases all anonymous clients together may start per window
ARGV[3] window (ms)
Returns {'ok'}, or {'client', ms} / {'total', ms}: refused, and how long until that count's window ends.
A refusal writes nothing, so a client that is refused (or a flood of new addresses once the total is
reached) adds no key: client counts exist only for purchases admitted in the current window.
]]
local function full(key, limit)
  local n = tonumber(redis.call('GET', key) or '0')
  if n < tonumber(limit) then return false end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    -- A count without expiry (never written so by this script): end its window now.
    redis.call('PEXPIRE', key, ARGV[3])
    ttl = tonumber(ARGV[3])
  end
  return ttl
end
local wait = full(KEYS[1], ARGV[1])
if wait then return { 'client', wait } end
wait = full(KEYS[2], ARGV[2])
if wait then return { 'total', wait } end
for i = 1, 2 do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return { 'ok' }

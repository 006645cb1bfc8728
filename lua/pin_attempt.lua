--[[ pin_attempt: count PIN attempts on a check link; lock the link after too many wrong ones.
KEYS[1] ID hash                    ts:{bN}:id:<idHash>
ARGV[1] now (ms)
ARGV[2] 'try' (before verifying), 'ok' (that PIN was right) or 'wrong' (it was not)
ARGV[3] wrong PINs allowed before the lock
ARGV[4] lock time (ms)
ARGV[5] for 'wrong': the attempt's number, as 'try' answered it
Returns 'try':   {'open', attempt number} or {'locked', until ms}
        'ok':    {'open'} or {'locked', until} (the link locked while this PIN was verified)
        'wrong': {'wrong', tries left} or {'locked', until}
A try is counted before its PIN is compared (scrypt takes tens of ms): a burst of
parallel guesses gets no more comparisons than guesses one after the other.
]]
local f = redis.call('HMGET', KEYS[1], 'pinfail', 'pinlock')
local now, max = tonumber(ARGV[1]), tonumber(ARGV[3])
local lock = tonumber(f[2]) or 0
if lock > now then return { 'locked', lock } end

local function lock_now()
  lock = now + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'pinfail', '0', 'pinlock', string.format('%d', lock))
  return { 'locked', lock }
end

local op = ARGV[2]
if op == 'try' then
  local n = (tonumber(f[1]) or 0) + 1
  -- Tries past the limit are never compared (they were sent alongside the ones that used it up).
  if n > max then return lock_now() end
  redis.call('HSET', KEYS[1], 'pinfail', string.format('%d', n))
  return { 'open', n }
end
if op == 'ok' then
  redis.call('HSET', KEYS[1], 'pinfail', '0')
  return { 'open' }
end
local n = tonumber(ARGV[5])
if n >= max then return lock_now() end
return { 'wrong', max - n }

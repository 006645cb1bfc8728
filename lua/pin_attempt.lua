--[[ pin_attempt: count PIN attempts on a check link; lock the link after too many wrong ones.
KEYS[1] ID hash                    ts:{bN}:id:<idHash>
ARGV[1] now (ms)
ARGV[2] 'try' (before verifying), 'ok' (that PIN was right) or 'wrong' (it was not)
ARGV[3] wrong PINs allowed before the lock
ARGV[4] first lock time (ms)
ARGV[5] for 'wrong': the attempt's number, as 'try' answered it
ARGV[6] longest lock time (ms)
Returns 'try':   {'open', attempt number} or {'locked', until ms}
        'ok':    {'open'} or {'locked', until} (the link locked while this PIN was verified)
        'wrong': {'wrong', tries left} or {'locked', until}
        A lock this call started answers {'locked', until, its number in the series (1, 2, ...)}.
A try is counted before its PIN is compared (scrypt takes tens of ms): a burst of
parallel guesses gets no more comparisons than guesses one after the other.
Each lock lasts twice as long as the one before (ARGV[4], then 2x, 4x, ... up to
ARGV[6]); a right PIN starts the count of locks again.
Fields: pinfail (wrong PINs since the last lock), pinlock (locked until, ms), pinlocks (locks so far).
]]
local f = redis.call('HMGET', KEYS[1], 'pinfail', 'pinlock', 'pinlocks')
local now, max = tonumber(ARGV[1]), tonumber(ARGV[3])
local lock = tonumber(f[2]) or 0
if lock > now then return { 'locked', lock } end

local function lock_now()
  local locks = (tonumber(f[3]) or 0) + 1
  -- 2^(locks-1) capped before it can overflow: 2^40 x any first lock is past every cap.
  local ms = math.min(tonumber(ARGV[4]) * 2 ^ math.min(locks - 1, 40), tonumber(ARGV[6]))
  lock = now + ms
  redis.call('HSET', KEYS[1], 'pinfail', '0', 'pinlock', string.format('%d', lock), 'pinlocks', string.format('%d', locks))
  return { 'locked', lock, locks }
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
  redis.call('HSET', KEYS[1], 'pinfail', '0', 'pinlocks', '0')
  return { 'open' }
end
local n = tonumber(ARGV[5])
if n >= max then return lock_now() end
return { 'wrong', max - n }

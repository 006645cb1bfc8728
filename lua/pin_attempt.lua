--[[ pin_attempt: count a PIN attempt on a check link; lock the link after too many wrong ones.
KEYS[1] ID hash                    ts:{bN}:id:<idHash>
ARGV[1] now (ms)
ARGV[2] 'check' (before verifying: is the link locked?), 'ok' (right PIN) or 'wrong'
ARGV[3] wrong PINs allowed before the lock
ARGV[4] lock time (ms)
Returns {'open'}, {'locked', until ms}, or after 'wrong' {'wrong', tries left} / {'locked', until}.
]]
local f = redis.call('HMGET', KEYS[1], 'pinfail', 'pinlock')
local now = tonumber(ARGV[1])
local lock = tonumber(f[2]) or 0
if lock > now then return { 'locked', lock } end
if ARGV[2] == 'check' then return { 'open' } end
if ARGV[2] == 'ok' then
  redis.call('HSET', KEYS[1], 'pinfail', '0')
  return { 'open' }
end
local fails = (tonumber(f[1]) or 0) + 1
if fails >= tonumber(ARGV[3]) then
  lock = now + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'pinfail', '0', 'pinlock', string.format('%d', lock))
  return { 'locked', lock }
end
redis.call('HSET', KEYS[1], 'pinfail', string.format('%d', fails))
return { 'wrong', tonumber(ARGV[3]) - fails }

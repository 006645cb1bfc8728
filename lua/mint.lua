--[[ mint: put new IDs of one product and one bucket into inventory.
KEYS[1]      inventory set     ts:{bN}:inv:<product>
KEYS[1+i]    ID hash           ts:{bN}:id:<idHash>     (i = 1..n)
ARGV[1]      now (ms)
ARGV[2]      k: how many product-term fields follow
ARGV[3..2+2k] field, value pairs: the product's terms copied onto each ID
              (prod, kind, cur, face, expd, and per kind plan/thr/maxc or ent/venues/...)
ARGV[2+2k+i] the sealed clear ID for KEYS[1+i]
Returns the indexes i whose ID hash already existed with another sealed number (nothing
written for them): mint again. A hash that exists with this very sealed number was written
by an earlier try of this same call (a seal is unique: it carries a random IV), so a retry
of a call whose reply was lost counts it as minted and writes nothing: the retry is idempotent.
]]
local k = tonumber(ARGV[2])
local terms = { 'st', 'minted', 'bal', '0' }
-- A talk ID's `free` (includes/free.lua) is read and written by every tick: it goes
-- next to the balance, where a hash this small finds it first; empty until the first call.
for j = 3, 2 + 2 * k, 2 do
  if ARGV[j] == 'kind' and ARGV[j + 1] == 'talk' then
    terms[5], terms[6] = 'free', ''
  end
end
for _, v in ipairs({ 'act', '0', 'exp', '0', 'mint', ARGV[1] }) do terms[#terms + 1] = v end
for j = 3, 2 + 2 * k do terms[#terms + 1] = ARGV[j] end
local sealAt = 2 + 2 * k
local taken = {}
for i = 2, #KEYS do
  local key = KEYS[i]
  local sealed = ARGV[sealAt + i - 1]
  local had = redis.call('HGET', key, 'seal')
  if had then
    if had ~= sealed then taken[#taken + 1] = i - 1 end
  elseif redis.call('EXISTS', key) == 1 then
    taken[#taken + 1] = i - 1
  else
    redis.call('HSET', key, 'seal', sealed, unpack(terms))
    redis.call('SADD', KEYS[1], string.match(key, 'id:(.+)$'))
  end
end
return taken

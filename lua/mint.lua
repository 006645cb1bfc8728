--[[ mint: put new IDs of one product and one bucket into inventory.
KEYS[1]      inventory set      ts:{bN}:inv:<product>
KEYS[2]      product terms      ts:{bN}:pt:<version>   (hash; the same in every bucket)
KEYS[2+i]    ID hash            ts:{bN}:id:<idHash>     (i = 1..n)
ARGV[1]      now (ms)
ARGV[2]      product name
ARGV[3]      terms version (a digest of the terms: equal terms, one version)
ARGV[4]      k: how many term fields follow
ARGV[5..4+2k] field, value pairs: the product's terms (kind, cur, face, expd, and per kind
              plan/thr/maxc/cc or venues/gates/...), kept once in KEYS[2], not in each ID
ARGV[4+2k+i] the sealed clear ID for KEYS[2+i]
Returns the indexes i whose ID hash already existed with another sealed number (nothing
written for them): mint again. A hash that exists with this very sealed number was written
by an earlier try of this same call (a seal is unique: it carries a random IV), so a retry
of a call whose reply was lost counts it as minted and writes nothing: the retry is idempotent.
]]
local k = tonumber(ARGV[4])
local kind
for j = 5, 4 + 2 * k, 2 do
  if ARGV[j] == 'kind' then kind = ARGV[j + 1] end
end
-- A version's terms never change: written again, they are the same.
redis.call('HSET', KEYS[2], unpack(ARGV, 5, 4 + 2 * k))
-- A talk ID's `free` (includes/free.lua) is read and written by every tick: it goes
-- next to the balance, where a hash this small finds it first; empty until the first call.
local fields = { 'st', 'minted', 'bal', '0' }
if kind == 'talk' then fields[5], fields[6] = 'free', '' end
for _, v in ipairs({ 'act', '0', 'exp', '0', 'mint', ARGV[1], 'prod', ARGV[2], 'pt', ARGV[3] }) do
  fields[#fields + 1] = v
end
-- A ticket's holder starts outside.
if kind == 'entry' then fields[#fields + 1], fields[#fields + 2] = 'inside', '0' end
-- The seal last: a tick reads st, bal and free, and a 60-byte value before them is in its way.
local sealField = #fields + 2
fields[sealField - 1] = 'seal'
local sealAt = 4 + 2 * k
local taken = {}
for i = 3, #KEYS do
  local key = KEYS[i]
  local sealed = ARGV[sealAt + i - 2]
  local had = redis.call('HGET', key, 'seal')
  if had then
    if had ~= sealed then taken[#taken + 1] = i - 2 end
  elseif redis.call('EXISTS', key) == 1 then
    taken[#taken + 1] = i - 2
  else
    fields[sealField] = sealed
    redis.call('HSET', key, unpack(fields))
    redis.call('SADD', KEYS[1], string.match(key, 'id:(.+)$'))
  end
end
return taken

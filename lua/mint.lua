--[[ mint: put new IDs of one product and one bucket into inventory.
KEYS[1]    inventory set     ts:{bN}:inv:<product>
KEYS[1+i]  ID hash           ts:{bN}:id:<idHash>     (i = 1..n)
ARGV[1]    now (ms)
ARGV[2..9] product terms copied onto each ID: product, kind, currency, face value,
           rate plan, thresholds (csv seconds), max concurrent calls, expiry days after first use
ARGV[9+i]  the sealed clear ID for KEYS[1+i]
Returns the indexes i whose ID hash already existed (nothing written for them): mint again.
]]
local taken = {}
for i = 2, #KEYS do
  local key = KEYS[i]
  if redis.call('EXISTS', key) == 1 then
    taken[#taken + 1] = i - 1
  else
    redis.call('HSET', key, 'st', 'minted', 'prod', ARGV[2], 'kind', ARGV[3], 'cur', ARGV[4],
      'face', ARGV[5], 'bal', '0', 'plan', ARGV[6], 'thr', ARGV[7], 'maxc', ARGV[8], 'expd', ARGV[9],
      'act', '0', 'exp', '0', 'mint', ARGV[1], 'seal', ARGV[8 + i])
    redis.call('SADD', KEYS[1], string.match(key, 'id:(.+)$'))
  end
end
return taken

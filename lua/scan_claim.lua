--[[ scan_claim: claim scan ids for the IDs they redeem, before the redeem itself, so one scan id
never redeems two IDs (the redeem runs in the ID's bucket, the claim in the scan key's own).
KEYS[i]  scan index   ts:{bS}:sx:<scanner>:<scan>   (i = 1..n, all in one bucket)
ARGV[1]  TTL (s) of a claim
ARGV[1+i] the terms of scan i: '<ID key>|<item>|<qty>|<dir>'
Returns one entry per scan: 0 claimed now, 1 already claimed with the same terms (a retry),
2 claimed with other terms (scan_conflict), or the error reply's text when its SET failed (the
key is not a string; NOREPLICAS: the primary lacks the replicas it must write to).
]]
local ttl = ARGV[1]
local out = {}
for i = 1, #KEYS do
  -- pcall: a damaged index key (another type) fails its own scan, not the batch.
  local prev = redis.pcall('SET', KEYS[i], ARGV[1 + i], 'EX', ttl, 'NX', 'GET')
  if type(prev) == 'table' and prev.err then out[i] = prev.err
  elseif not prev then out[i] = 0
  elseif prev == ARGV[1 + i] then out[i] = 1
  else out[i] = 2 end
end
return out

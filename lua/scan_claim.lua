--[[ scan_claim: claim scan ids for the IDs they redeem, before the redeem itself, so one scan id
never redeems two IDs (the redeem runs in the ID's bucket, the claim in the scan key's own).
KEYS[1..m]  claims per window   ts:{bC}:claims:<window>  (hash: scan key -> terms; new claims go
            into KEYS[1], the others are read: src/redemption/scan-windows.ts)
KEYS[m+i]   an earlier version's claim of scan i   ts:{bC}:sx:<scan key>  (only while one can be left)
ARGV[1] m   ARGV[2] when KEYS[1] expires at the earliest (ms since the epoch)   ARGV[3] 1 if the KEYS[m+i] are given
ARGV[2+2i] scan i's key '<scanner>:<scan id>'   ARGV[3+2i] its terms '<ID key>|<item>|<qty>|<dir>'
Returns one entry per scan: 0 claimed now, 1 already claimed with the same terms (a retry),
2 claimed with other terms (scan_conflict), or the error reply's text when its claim failed (a
key of another type; NOREPLICAS: the primary lacks the replicas it must write to).
]]
-- @reply msgpack
-- @include "scan_record"
local m, legacy = tonumber(ARGV[1]), ARGV[3] == '1'
local out, claimed = {}, false
local places = { unpack(KEYS, 1, m) }

local function claim_one(i)
  local field, terms = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local prev = window_get(places, field)
  if not prev and legacy then prev = redis.call('GET', KEYS[m + i]) end
  if not prev then
    redis.call('HSET', KEYS[1], field, terms)
    claimed = true
    return 0
  end
  return prev == terms and 1 or 2
end

for i = 1, (#ARGV - 3) / 2 do
  -- A failed claim (a damaged legacy key, NOREPLICAS) is its scan's alone, not the batch's.
  local ok, r = pcall(claim_one, i)
  out[i] = ok and r or tostring(type(r) == 'table' and r.err or r)
end
if claimed then scan_window_expire(KEYS[1], ARGV[2]) end
return out

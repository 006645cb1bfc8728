--[[ redeem: use entries, spend value or use services for one or more scans of one bucket, once per
scan id. Scans are applied in order, so two scans of one ID in a batch see each other.
KEYS[1]     redemption records   ts:{bN}:red (stream; one packed field per entry, includes/red_record.lua)
KEYS[2i]    ID hash              ts:{bN}:id:<idHash>             (i = 1..n)
KEYS[2i+1]  scan record          ts:{bN}:scan:<scanner>:<scan>  (string, includes/scan_record.lua)
ARGV[1] now (ms)   ARGV[2] TTL (s) of the scan records, which answer retries
ARGV[3+9(i-1)..11+9(i-1)] scan i: venue, gate ('' if none), item ('' if none),
        amount (micro-units, goods only; -1 the venue does not sell the item), quantity,
        direction ('in' | 'out'), scanner (token name), scan id, ID hash (for the record)
Returns one flat array, eight entries per scan:
  'ok', kind, action, amount, left, recordId, duplicate (0|1), reversed since (0|1)
  'no', reason, detail, detail, detail, 0, 0, 0   (nothing changed, nothing stored)
  'err', message, 0, 0, 0, 0, 0, 0                (the scan failed in the script; the others went on)
A retry of a scan returns the first answer; the same scan id with other terms is scan_conflict.
]]
-- @include "id_fields"
-- @include "num"
-- @include "redeem_check"
-- @include "scan_record"
-- @include "red_record"
-- now also as the gateway's digits: the records take it as text, with no formatting per scan.
local nows, ttl = ARGV[1], ARGV[2]
local now = tonumber(nows)
local out = {}

local function put(i, r)
  local o = 8 * (i - 1)
  for j = 1, 8 do out[o + j] = r[j] or 0 end
end

local function redeem_one(ikey, skey, venue, gate, item, amount, qty, dir, scanner, scan, idh)
  -- Looked up even when the claim is new: a refused scan's claim is deleted, and a retry racing
  -- that delete may have been granted meanwhile. The record, not the claim, says what happened.
  local prev = scan_read(skey)
  if prev then
    if prev.id ~= ikey or prev.item ~= item or prev.qty ~= qty or prev.dir ~= dir then return { 'no', 'scan_conflict' } end
    return { 'ok', prev.kind, prev.action, tonumber(prev.amount), tonumber(prev.left), prev.rec, 1, prev.st == 'reversed' and 1 or 0 }
  end

  local r, f = redeem_check(ikey, now, venue, gate, item, tonumber(amount), tonumber(qty), dir)
  if r[1] ~= 'ok' then return r end
  local kind, action, amt, left = r[2], r[3], r[4], r[5]

  local lefts, amts = int(left), int(amt)
  local upd = { 'bal', lefts }
  if kind == 'entry' then
    upd[#upd + 1] = 'inside'
    upd[#upd + 1] = action == 'exit' and '0' or '1'
  end
  if (tonumber(f[8]) or 0) == 0 and action ~= 'exit' then
    upd[#upd + 1], upd[#upd + 2], upd[#upd + 3], upd[#upd + 4], upd[#upd + 5], upd[#upd + 6] =
      'first', nows, 'fven', venue, 'fgate', gate
    -- Stored value and services count their validity from first use.
    local expd = tonumber(id_fields(ikey, { 'expd' })[1]) or 0
    if expd > 0 and (tonumber(f[4]) or 0) == 0 then
      upd[#upd + 1] = 'exp'
      upd[#upd + 1] = int(now + expd * 86400000)
    end
  end
  redis.call('HSET', ikey, unpack(upd))

  local rec = redis.call('XADD', KEYS[1], '*', RED_FIELD,
    red_pack('redeem', scan, scanner, idh, kind, action, venue, gate, item, qty, amts, int(left + amt), lefts, nows, ''))
  redis.call('SET', skey, scan_pack(ikey, item, qty, dir, kind, action, amts, lefts, rec, venue, gate, idh, nows, 'ok'),
    'EX', ttl)
  return { 'ok', kind, action, amt, left, rec, 0, 0 }
end

for i = 1, (#KEYS - 1) / 2 do
  local a = 3 + 9 * (i - 1)
  -- One scan's failure (a damaged ID hash, say) is that scan's alone, not its batch's.
  local ok, r = pcall(redeem_one, KEYS[2 * i], KEYS[2 * i + 1], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3],
    ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8])
  put(i, ok and r or { 'err', tostring(type(r) == 'table' and r.err or r) })
end
return out

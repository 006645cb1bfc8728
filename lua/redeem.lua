--[[ redeem: use entries, spend value or use services for one or more scans of one bucket, once per
scan id. Scans are applied in order, so two scans of one ID in a batch see each other.
KEYS[1]        redemption records   ts:{bN}:red (stream; one packed field per entry, includes/red_record.lua)
KEYS[2..1+m]   scan records per window   ts:{bN}:scans:<window> (hash: scan key -> record,
               includes/scan_record.lua; new records go into KEYS[2], the others are read)
then per scan  ID hash   ts:{bN}:id:<idHash>, and with two keys per scan an earlier version's record of
               the scan   ts:{bN}:scan:<scanner>:<scan>   (only while one can be left)
ARGV[1] now (ms): dates the records and a first use; the expiry and the validity window are judged by
        Redis' clock (TIME) for a scan made now
ARGV[2] m   ARGV[3] when KEYS[2] expires at the earliest (ms since the epoch)
ARGV[4] keys per scan (1 | 2), plus 10 when the scans carry the time they were made (a batch holding an offline scan)
ARGV[5+9(i-1)..13+9(i-1)] scan i: venue, gate ('' if none), item ('' if none),
        amount (micro-units, goods only; -1 the venue does not sell the item), quantity,
        direction ('in' | 'out'), scanner (token name), scan id, ID hash (for the record)
With ARGV[4] > 10: ARGV[5], ARGV[6] how long before and after it reached the gateway a scan may say it was
        made (ms), and from ARGV[7] eleven values per scan, the tenth when the scan was made by the scanner's
        clock (ms; '' for now), the eleventh when it reached the gateway (ms: its time is bounded from then, not
        from its turn, which a slow Redis may delay): an
        offline scan is judged at that time (expiry, validity window; never before the ID's sale) but applied in
        arrival order, and its record keeps it as `at`. Without it, a call is what it was before offline scans.
Returns one flat array, eight entries per scan:
  'ok', kind, action, amount, left, recordId, duplicate (0|1), reversed since (0|1)
  'no', reason, detail, detail, detail, 0, 0, 0   (nothing changed, nothing stored; bad_scan_time: the time
                                                  the scan says it was made is outside its bounds)
  'err', message, 0, 0, 0, 0, 0, 0                (the scan failed in the script; the others went on)
A retry of a scan returns the first answer; the same scan id with other terms is scan_conflict.
]]
-- @reply msgpack
-- @include "id_fields"
-- @include "num"
-- @include "redeem_check"
-- @include "scan_record"
-- @include "red_record"
-- @include "moves"
-- now also as the gateway's digits: the records take it as text, with no formatting per scan.
local nows, m, stride = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local now = tonumber(nows)
-- Expiry and validity are judged by Redis' clock (includes/redeem_check.lua), read once per run.
local redis_now = redis_clock()
local out, recorded = {}, false
local places = { unpack(KEYS, 2, 1 + m) }

local function put(i, r)
  local o = 8 * (i - 1)
  for j = 1, 8 do out[o + j] = r[j] or 0 end
end

-- at: an offline scan's time as the scanner sent it (nil: made now).
-- arrived: when it reached the gateway (its time's bounds are counted from it).
local function redeem_one(ikey, legacy, venue, gate, item, amount, qty, dir, scanner, scan, idh, at, arrived)
  -- Looked up even when the claim is new: a refused scan's claim is deleted, and a retry racing
  -- that delete may have been granted meanwhile. The record, not the claim, says what happened.
  local field = scanner .. ':' .. scan
  local prev = scan_find(places, field, legacy)
  if prev then
    if prev.id ~= ikey or prev.item ~= item or prev.qty ~= qty or prev.dir ~= dir then return { 'no', 'scan_conflict' } end
    return { 'ok', prev.kind, prev.action, tonumber(prev.amount), tonumber(prev.left), prev.rec, 1, prev.st == 'reversed' and 1 or 0 }
  end

  -- The time the scan is judged at. An offline scan's is checked after the lookup: a retry of a granted
  -- one answers the first answer however old it is. Ahead of now (a scanner's clock running fast) it is now.
  -- The bounds are read here, not kept in script-level locals: captured, those cost every call (callgrind).
  -- `judged`: an offline scan's time it is judged at (nil: a scan made now, judged by Redis' clock).
  local when, whens, judged = now, nows, nil
  if at then
    local t, came = tonumber(at), tonumber(arrived)
    if t < came - tonumber(ARGV[5]) or t > came + tonumber(ARGV[6]) then return { 'no', 'bad_scan_time' } end
    if t < now then
      -- Never before the ID was sold (as call_recover never moves a use before the sale): a scan dated
      -- before the sale would judge a ticket sold after its window in it, and count validity from then.
      local sold = id_fields(ikey, { 'sold' })[1]
      if sold and tonumber(sold) > t then
        if tonumber(sold) < now then when, whens, judged = tonumber(sold), sold, tonumber(sold) end
      else
        when, whens, judged = t, at, t
      end
    end
  end
  local r, f = redeem_check(ikey, judged, redis_now, venue, gate, item, tonumber(amount), tonumber(qty), dir)
  if r[1] ~= 'ok' then return r end
  local kind, action, amt, left = r[2], r[3], r[4], r[5]

  local lefts, amts = int(left), int(amt)
  local upd = { 'bal', lefts }
  if kind == 'entry' then
    -- Outside while anybody who went out has yet to come back (r.outq: how many). All in, no
    -- count is kept: an older version's exit (during an upgrade) sets `inside` alone, and a '0'
    -- left here would then let nobody back in, where no count lets every entry used back.
    local outq = r.outq or 0
    upd[#upd + 1], upd[#upd + 2] = 'inside', outq > 0 and '0' or '1'
    if outq > 0 then
      upd[#upd + 1], upd[#upd + 2] = 'outq', int(outq)
    else
      redis.call('HDEL', ikey, 'outq')
    end
  end
  -- The first use is the earliest scan: an offline one made before the first use recorded takes its
  -- place, or validity counted from it would gain the time the journal took to be uploaded.
  local first = tonumber(f[8]) or 0
  if action ~= 'exit' and (first == 0 or (at and when < first)) then
    upd[#upd + 1], upd[#upd + 2], upd[#upd + 3], upd[#upd + 4], upd[#upd + 5], upd[#upd + 6] =
      'first', whens, 'fven', venue, 'fgate', gate
    -- Validity counted from first use is set with it, or moves with it; an expiry set otherwise stays.
    local expd = tonumber(id_fields(ikey, { 'expd' })[1]) or 0
    local exp = tonumber(f[4]) or 0
    if expd > 0 and (exp == 0 or exp == first + expd * 86400000) then
      upd[#upd + 1] = 'exp'
      upd[#upd + 1] = int(when + expd * 86400000)
    end
  end
  local packed = red_pack('redeem', scan, scanner, idh, kind, action, venue, gate, item, qty, amts, int(left + amt), lefts,
    nows, '')
  local rec
  -- An offline scan's time is a second field: records without one stay as they were.
  if at then rec = redis.call('XADD', KEYS[1], '*', RED_FIELD, packed, RED_AT, at)
  else rec = redis.call('XADD', KEYS[1], '*', RED_FIELD, packed) end
  if kind == 'entry' then
    upd[#upd + 1] = 'mvs'
    local sign = action == 'exit' and '-' or action == 'reentry' and '*' or '+'
    upd[#upd + 1] = moves_push(redis.call('HGET', ikey, 'mvs'), rec .. sign .. qty .. '.' .. int(r.was))
  end
  redis.call('HSET', ikey, unpack(upd))
  redis.call('HSET', KEYS[2], field,
    scan_pack(ikey, item, qty, dir, kind, action, amts, lefts, rec, venue, gate, idh, nows, 'ok'))
  recorded = true
  return { 'ok', kind, action, amt, left, rec, 0, 0 }
end

-- Scans that carry their time are flagged in ARGV[4] (+10): the bounds come first (ARGV[5..6]) and each
-- scan has a tenth and an eleventh value. A call without any has no argument more.
local timed = stride > 10
if timed then stride = stride - 10 end
local first, width = timed and 7 or 5, timed and 11 or 9
-- One scan's failure (a damaged ID hash, say) is that scan's alone, not its batch's.
for i = 1, (#ARGV - first + 1) / width do
  local a, k = first + width * (i - 1), 2 + m + stride * (i - 1)
  local ok, r = pcall(redeem_one, KEYS[k], stride == 2 and KEYS[k + 1] or nil, ARGV[a], ARGV[a + 1], ARGV[a + 2],
    ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8],
    timed and ARGV[a + 9] ~= '' and ARGV[a + 9] or nil, timed and ARGV[a + 10] or nil)
  put(i, ok and r or { 'err', tostring(type(r) == 'table' and r.err or r) })
end
if recorded then scan_window_expire(KEYS[2], ARGV[3]) end
return out

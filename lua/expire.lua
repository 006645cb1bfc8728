--[[ expire: forfeit what a sold ID has left once it is past its expiry (breakage), with its expiry
record and its `expired` balance event, once per value: what it forfeits is gone from the ID.
KEYS[1] ID hash              ts:{bN}:id:<idHash>
KEYS[2] sale records         ts:{bN}:sales (stream)
KEYS[3] balance events       ts:{bN}:ev (stream, includes/emit.lua)
KEYS[4] live calls           ts:{bN}:live (zset): where the ID's live calls are, when it looks in use
ARGV[1] grace (ms) for goods, entry and service IDs: an offline scan made before the expiry may still
        arrive this long after it (OFFLINE_MAX_AGE_MS) and is paid from the value left, so that value
        is not forfeited before then. Talk IDs have none: a call is only admitted before the expiry.
ARGV[2] how long past its expiry (ms) a call admitted before it may still be live: the longest call's
        seconds (MAX_CALL_SEC), its ring and its silence before the reaper closes it
Returns {'ok', amount forfeited, recordId, expiry (ms: a ticket's validUntil when its window ended
first)} or {'no', why}, writing nothing:
unknown_id; not_sold (minted, or a recharge voucher: its value has no expiry of its own);
blocked (a block freezes the ID as it is: lifted after its expiry, a later sweep forfeits it);
not_due (no expiry yet, as for an ID never used, or not past it and its grace by Redis' clock; a
ticket's expiry is the end of its validity window when that comes first, used or not);
in_use (a live call, or a reservation one holds: forfeited once it has ended and been billed). An
ID whose count of live calls (`act`) or whose hold (`bal` less `free`, includes/free.lua) says in use
ARGV[2] past its expiry, while no live call of the bucket's live set is its (left by a call session
lost, in a failover say), is forfeited all the same, its count set to 0;
empty (nothing left, never forfeited); done (forfeited before, `xrec` its latest record, and nothing left).
Value that comes back to an expired ID after its forfeiture (a redemption reversed, a late stop's
give-back) is forfeited too, with a record of its own: every record forfeits value on the ID at the
time, so a repeat, or two calls at once, find nothing left and write nothing.
Expiry is judged by Redis' own clock (TIME), which also dates the record, so gateways whose clocks
disagree agree on it. The record (type `expiry`) holds the value forfeited as `amount`, the ID's
balance after as `bal` (0) and the expiry as `exp`; the ID is left `expired`, `bal` 0, `act` 0, `free` 0
when it had one, `xrec` the record and `xamt` what its records forfeited in all.
value sold + top-ups = balance + calls + redemptions + refunds + vouchers + expired still holds.
]]
-- @include "id_fields"
-- @include "num"
-- @include "emit"
-- @include "clock"
-- @include "free"
-- @include "id_live"
local f = id_fields(KEYS[1],
  { 'st', 'kind', 'bal', 'exp', 'act', 'free', 'xrec', 'prod', 'cur', 'face', 'xamt', 'until' })
local st = f[1]
if not st then return { 'no', 'unknown_id' } end
local bal = tonumber(f[3]) or 0
if f[7] and bal <= 0 then return { 'no', 'done' } end
if st == 'blocked' then return { 'no', 'blocked' } end
-- `expired` too: a start that found a talk ID past its expiry marked it so, its value still on it.
if (st ~= 'sold' and st ~= 'exhausted' and st ~= 'expired') or f[2] == 'recharge' then
  return { 'no', 'not_sold' }
end
local exp = tonumber(f[4]) or 0
local grace = f[2] == 'talk' and 0 or tonumber(ARGV[1])
local now = redis_ms()
local due = exp > 0 and now >= exp + grace
-- A ticket is of no use past its window (`until`, validUntil: no scan but an exit is granted after
-- it), used or not and whatever its expiry says: what it has left is forfeited from then on.
local till = tonumber(f[12]) or 0
if till > 0 and (exp <= 0 or till < exp) then exp, due = till, now > till + grace end
if not due then return { 'no', 'not_due' } end
-- A call admitted before the expiry runs to its end and is billed from this balance: what is left
-- is known once it has stopped. Its count (`act`) and its hold (what is not free) say so, but a call
-- session lost while they stayed (a failover's) leaves them for good: no stop or reap ever comes to
-- take them back, so only a live call of the live set, the reaper's own list, keeps the ID waiting.
local act = tonumber(f[5]) or 0
if act > 0 or free_of(bal, f[6]) < bal then
  -- No call starts past the expiry (call_start judges it by this clock), and none admitted before it
  -- bills seconds beyond ARGV[2]: until then the count is taken at its word.
  if now < exp + tonumber(ARGV[2]) then return { 'no', 'in_use' } end
  if id_live(KEYS[4], KEYS[1]) > 0 then return { 'no', 'in_use' } end
end
if bal <= 0 then return { 'no', 'empty' } end

local idh = string.match(KEYS[1], ':id:(.+)$')
local nows, bals, exps = int(now), int(bal), int(exp)
local rec = redis.call('XADD', KEYS[2], '*', 'type', 'expiry', 'id', idh, 'product', f[8], 'face', f[10],
  'currency', f[9], 'amount', bals, 'bal', '0', 'exp', exps, 'time', nows)
local upd = { 'st', 'expired', 'bal', '0', 'xrec', rec, 'xamt', int((tonumber(f[11]) or 0) + bal) }
if act ~= 0 then upd[#upd + 1], upd[#upd + 2] = 'act', '0' end
if f[6] and f[6] ~= '' then upd[#upd + 1], upd[#upd + 2] = 'free', '0' end
redis.call('HSET', KEYS[1], unpack(upd))
emit(KEYS[3], { 'type', 'expired', 'idh', idh, 'prod', f[8], 'at', nows, 'bal', '0', 'amount', bals,
  'exp', exps })
return { 'ok', bal, rec, exp }

-- @include "id_fields"
-- @include "clock"
-- Decides what one scan of a ticket, stored-value or service ID would do, without
-- changing anything (validate and redeem share it, so a preview never disagrees
-- with the real thing). Returns
--   { 'ok', kind, action, amount, left } where action is entry | reentry | exit | spend | use; a
--                                        ticket's also outq (who is out after it) and was (before it)
--   { 'no', reason, detail... }          details: already_redeemed -> first time, venue, gate;
--                                        insufficient_value -> value left; not_yet_valid -> valid from
-- and, second, the ID fields it read (redeem uses them for the first-use fields).
-- The fields every kind needs come in one HMGET; a ticket's gate and re-entry terms, a
-- service's name and the first-use venue of a refusal only when the scan needs them
-- (HMGET walks the ID's hash once per field: half the fields, half the walk).
-- A scan made now is judged against the expiry and the validity window by Redis' clock (`clock`, a
-- redis_clock()), as lua/expire.lua forfeits by it: a gateway whose clock is off must neither let an
-- ID past its expiry by Redis' clock in, nor refuse one still valid by it. `when` is an offline scan's
-- time (nil: made now), judged as it is.
local ID_COMMON = { 'st', 'kind', 'bal', 'exp', 'venues', 'from', 'until', 'first' }
-- f[1..8] as above

local function listed(csv, name)
  -- Names never hold ',' (the catalog's name pattern), so a plain find of ',name,' is exact.
  return string.find(',' .. csv .. ',', ',' .. name .. ',', 1, true) ~= nil
end

local function used_up(ikey, f)
  local where = redis.call('HMGET', ikey, 'fven', 'fgate')
  return { 'no', 'already_redeemed', tonumber(f[8]) or 0, where[1] or '', where[2] or '' }
end

local function decide(ikey, f, when, clock, venue, gate, item, amount, qty, dir)
  local st, kind = f[1], f[2]
  if not st then return { 'no', 'unknown_id' } end
  -- Before anything about the ID's state: another venue's scanner learns only that it is not valid
  -- here (as status tells it nothing), not whether it is sold, used, blocked or expired.
  if (f[5] or '') ~= '' and not listed(f[5], venue) then return { 'no', 'wrong_venue' } end
  if kind == 'talk' or kind == 'recharge' then return { 'no', 'wrong_kind' } end
  if st == 'blocked' then return { 'no', st } end
  -- Expired with its entries left forfeited (lua/expire.lua): as past its validity, a ticket still
  -- lets out whoever its scans say is inside (below).
  if st == 'expired' and (dir ~= 'out' or kind ~= 'entry') then return { 'no', st } end
  if st ~= 'sold' and st ~= 'expired' then return { 'no', 'not_active' } end
  local exp, from, till = tonumber(f[4]) or 0, tonumber(f[6]) or 0, tonumber(f[7]) or 0
  -- Redis' clock is read only for an ID that has a time to be judged against.
  local now = 0
  if exp > 0 or from > 0 or till > 0 then now = when or clock() end
  -- Past its validity a ticket's exit scan is still judged below (on who is inside), not refused here.
  local late = st == 'expired' or (exp > 0 and now >= exp) or (till > 0 and now > till)
  if late and (dir ~= 'out' or kind ~= 'entry') then return { 'no', 'expired' } end
  if from > 0 and now < from then return { 'no', 'not_yet_valid', from } end
  local bal = tonumber(f[3])
  -- An exit scan is a ticket's: a gate scanning a card or a service ID out must not spend or use it.
  if dir == 'out' and kind ~= 'entry' then return { 'no', 'wrong_kind' } end
  if kind == 'goods' then
    -- amount < 0: no item given, or not one this venue sells.
    if amount < 0 then return { 'no', 'unknown_item' } end
    if bal < amount then return { 'no', 'insufficient_value', bal } end
    return { 'ok', kind, 'spend', amount, bal - amount }
  elseif kind == 'service' then
    -- At a gate a scan without the service's name is somebody coming in: a service ID shown
    -- there is no ticket, and must not lose a use to it. A desk at a gate names its service.
    if item == '' and gate ~= '' then return { 'no', 'wrong_kind' } end
    if item ~= '' and item ~= id_fields(ikey, { 'svc' })[1] then return { 'no', 'unknown_item' } end
    if bal < 1 then return used_up(ikey, f) end
    if bal < qty then return { 'no', 'insufficient_value', bal } end
    return { 'ok', kind, 'use', qty, bal - qty }
  end
  -- entry: a ticket is not paid with at a till (whatever gates it lists: the till has none)
  if item ~= '' then return { 'no', 'wrong_kind' } end
  local e = id_fields(ikey, { 'gates', 'reent', 'inside', 'face', 'outq', 'xamt' })
  if (e[1] or '') ~= '' and not listed(e[1], gate) then return { 'no', 'wrong_gate' } end
  -- Entries forfeited at expiry (`xamt`) were never used: nobody came in on them.
  local used = tonumber(e[4]) - bal - (tonumber(e[6]) or 0)
  -- Who is out and may come back: the exit scans' qty since all were last in, never more than
  -- the entries used (none counted, as before outq or after a reverse: all of them).
  local out = e[3] == '0' and math.min(tonumber(e[5]) or used, used) or 0
  if dir == 'out' then
    -- Expired, the ticket still lets out whoever its scans say is inside: nobody else.
    if late and qty > used - out then return { 'no', 'expired' } end
    return { 'ok', kind, 'exit', 0, bal, outq = math.min(out + qty, used), was = out }
  end
  -- Back in after an exit, as long as an entry is in use (a reversed entry is not), and no
  -- more people than went out: one person's exit does not let the rest of a group in twice.
  if e[2] == '1' and out > 0 then
    if qty > out then return { 'no', 'insufficient_value', out } end
    return { 'ok', kind, 'reentry', 0, bal, outq = out - qty, was = out }
  end
  if bal < 1 then return used_up(ikey, f) end
  if bal < qty then return { 'no', 'insufficient_value', bal } end
  return { 'ok', kind, 'entry', qty, bal - qty, was = out }
end

local function redeem_check(ikey, when, clock, venue, gate, item, amount, qty, dir)
  local f = id_fields(ikey, ID_COMMON)
  return decide(ikey, f, when, clock, venue, gate, item, amount, qty, dir), f
end

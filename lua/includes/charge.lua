-- Billing and credit control of a live call session, shared by call_tick, call_stop and call_recover.
-- @include "tariff"
--
-- Money moves in two steps. A call holds a reservation (`res`, micro-units) that
-- no other call of its ID can spend: the ID's `rsv` is the sum of its live calls'
-- reservations and never exceeds its balance, so `bal - rsv` is what is still free
-- (`avail`). Billing takes from the reservation first and only then from what is
-- free; what neither covers is `short` (a switch that talked past its grant).
-- The reservation also holds the tariff's disconnect charge until close.
--
-- `gnt` is how far (seconds since answer) the reservation carries the call: the
-- grant. It is topped up from what is free when less than half a grant slice
-- (`gs` seconds; 0 means all that is free) is left, and is final (`fin`) when
-- nothing free would buy another charged second.
--
-- `billed` counts charged seconds (blocks are charged when they start, so it can
-- run ahead of `used`, the highest second the switch reported; a per-second
-- tariff keeps no `used`: it is `billed`, see used_of); `paid` is the money
-- taken so far. Thresholds (seconds left in all, at the call's tariff) fire once
-- each. When the call's funds are spent the switch is told to cut; at zero the ID
-- is exhausted; a blocked ID cuts its calls too.
--
-- read_session() reads what every tick needs in one positional HMGET: call_start
-- writes these fields first, so HMGET walks a short list. The rest (start, short,
-- final action) is read only when a tick needs it.
--
-- Given `evkey` (the bucket's events stream), charge() also emits the balance
-- events for the webhooks: thresholds fired and exhaustion (includes/charge_events.lua).
-- @include "charge_events"
local function read_session(skey)
  local v = redis.call('HMGET', skey, 'st', 'id', 'billed', 'tar', 'seen', 'thr', 'cut', 'ans', 'res', 'gnt', 'used', 'gs',
    'fin', 'val', 'paid')
  return {
    st = v[1], id = v[2], billed = v[3], tar = v[4], seen = v[5], thr = v[6], cut = v[7], ans = v[8], res = v[9],
    gnt = v[10], used = v[11], gs = v[12], fin = v[13], val = v[14], paid = v[15],
  }
end

-- The highest second the switch reported: stored only where blocks make it differ from the charged seconds.
local function used_of(t, billed, used)
  if t.flat then return billed end
  return tonumber(used)
end

local function put_field(upd, name, value)
  upd[#upd + 1] = name
  upd[#upd + 1] = value
end

-- Seconds a reservation of `res` carries a call charged through `billed`, and whether nothing free buys more.
local function grant_of(t, ans, billed, res, avail)
  local covered = tariff_afford(t, ans, billed, res - t.disc)
  local more = covered
  if avail > 0 then more = tariff_afford(t, ans, covered, avail) end
  return covered, more == covered
end

-- The money a grant slice of `gs` seconds from second `from` needs on top of `res` (all that is free when gs = 0).
local function wanted(t, ans, billed, from, res, avail, gs)
  if gs == 0 then return avail end
  local target = tariff_charged(t, from + gs)
  local need = tariff_cost(t, ans, target) - tariff_cost(t, ans, billed) + t.disc - res
  if need > avail then need = avail end
  if need < 0 then need = 0 end
  return need
end

-- Bills up to `sec` seconds after answer, re-grants, and appends the session fields
-- to write to `upd` (the caller writes them once). Returns balance, seconds left
-- in all, fired thresholds ('300,60' or ''), cut-off reason ('' while the call may
-- go on), 1 when this very call ordered the cut-off, the grant (seconds since
-- answer), 1 when it is final, 1 when it became final just now, and whether `sec`
-- was news (above the highest second reported before).
local function charge(s, skey, ikey, sec, now, upd, evkey)
  local t = tariff_parse(s.tar)
  local billed, res = tonumber(s.billed), tonumber(s.res)
  local used = used_of(t, billed, s.used)
  local advanced = sec > used
  local gnt, fin = tonumber(s.gnt), s.fin == '1'
  local idf = redis.call('HMGET', ikey, 'bal', 'st', 'rsv')
  local bal, st, rsv = tonumber(idf[1]) or 0, idf[2], tonumber(idf[3]) or 0
  local avail = bal - rsv
  if avail < 0 then avail = 0 end
  local ans = tonumber(s.ans)
  -- moved: the balance or reservation changed; regrant: the grant may have (taking
  -- from the reservation what it was reserved for leaves the grant where it was).
  local moved, regrant = false, false
  local emptied = false
  if advanced then
    if not t.flat then put_field(upd, 'used', int(sec)) end
    if not ans then
      -- Answered `sec` seconds ago, but never before the call started (clock steps, late first tick).
      ans = math.max(tonumber(redis.call('HGET', skey, 'start')), now - sec * 1000)
      put_field(upd, 'ans', int(ans))
    end
    local n = tariff_charged(t, sec)
    if n > billed then
      local owed = tariff_cost(t, ans, n) - tariff_cost(t, ans, billed)
      local fromRes = res - t.disc
      if fromRes > owed then fromRes = owed end
      if fromRes < 0 then fromRes = 0 end
      local fromAvail = owed - fromRes
      if fromAvail > avail then fromAvail = avail end
      res, rsv, avail = res - fromRes, rsv - fromRes, avail - fromAvail
      bal = bal - fromRes - fromAvail
      put_field(upd, 'paid', int(tonumber(s.paid) + fromRes + fromAvail))
      if fromRes + fromAvail < owed then
        put_field(upd, 'short', int(tonumber(redis.call('HGET', skey, 'short')) + owed - fromRes - fromAvail))
      end
      put_field(upd, 'billed', int(n))
      billed = n
      moved = true
      regrant = fromAvail > 0
    end
  end
  -- A repeated or backward report changes nothing: the call is where its highest report put it.
  if sec < used then sec = used end
  local a = ans or now
  local from = math.max(sec, billed)
  -- Re-grant before the reservation runs out, while something is free; a blocked ID gets no more.
  if avail > 0 and st ~= 'blocked' then
    local gs = tonumber(s.gs)
    if gs == 0 or gnt - sec < math.ceil(gs / 2) then
      local add = wanted(t, a, billed, from, res, avail, gs)
      if add > 0 then
        res, rsv, avail = res + add, rsv + add, avail - add
        moved, regrant = true, true
      end
    end
  end
  local finNow = 0
  if moved then
    put_field(upd, 'res', int(res))
    if regrant then
      local was = gnt
      local final
      gnt, final = grant_of(t, a, billed, res, avail)
      if gnt ~= was then put_field(upd, 'gnt', int(gnt)) end
      if final ~= fin then
        fin = final
        if fin then finNow = 1 end
        put_field(upd, 'fin', fin and '1' or '0')
      end
    end
    if bal == 0 and st == 'sold' then
      st = 'exhausted'
      emptied = true
      redis.call('HSET', ikey, 'bal', '0', 'rsv', int(rsv), 'st', st)
    else
      redis.call('HSET', ikey, 'bal', int(bal), 'rsv', int(rsv))
    end
  end
  -- Other calls may have taken what was free since: with nothing left, this grant is the last.
  if not fin and avail == 0 then
    fin, finNow = true, 1
    put_field(upd, 'fin', '1')
  end

  -- With nothing free the grant is all the call has left.
  local left = gnt - sec
  if avail > 0 then left = tariff_afford(t, a, billed, res - t.disc + avail) - sec end
  if left < 0 then left = 0 end
  local alerts = ''
  -- Thresholds are stored highest first: nothing to do until the first is reached.
  if s.thr ~= '' and left <= tonumber(string.match(s.thr, '^%d+')) then
    local fired, keep = {}, {}
    for th in string.gmatch(s.thr, '%d+') do
      if left <= tonumber(th) then fired[#fired + 1] = th else keep[#keep + 1] = th end
    end
    alerts = table.concat(fired, ',')
    put_field(upd, 'thr', table.concat(keep, ','))
  end
  if evkey and (alerts ~= '' or emptied) then charge_events(evkey, ikey, skey, now, bal, left, alerts, emptied) end
  local cut = s.cut or ''
  if cut == '' then
    if fin and gnt <= sec then
      cut = 'exhausted'
    elseif st == 'blocked' then
      cut = 'blocked'
    end
  end
  local fresh = 0
  if cut ~= (s.cut or '') then
    fresh = 1
    put_field(upd, 'cut', cut)
  end
  return bal, left, alerts, cut, fresh, gnt, fin and 1 or 0, finNow, advanced
end

-- Ends a call's hold on its ID: takes the tariff's disconnect charge from the
-- reservation (an answered call only) and frees what is left of it. Returns the
-- disconnect charge taken and what of it could not be (short).
local function release(skey, ikey)
  local v = redis.call('HMGET', skey, 'res', 'tar', 'billed')
  local res = tonumber(v[1]) or 0
  local disc = 0
  if tonumber(v[3]) > 0 then disc = tariff_parse(v[2]).disc end
  local idf = redis.call('HMGET', ikey, 'bal', 'rsv')
  local bal, rsv = tonumber(idf[1]) or 0, tonumber(idf[2]) or 0
  rsv = rsv - res
  if rsv < 0 then rsv = 0 end
  local take = disc
  if take > bal - rsv then take = math.max(0, bal - rsv) end
  if res > 0 or take > 0 then redis.call('HSET', ikey, 'bal', int(bal - take), 'rsv', int(rsv)) end
  redis.call('HSET', skey, 'res', '0')
  return take, disc - take
end

-- Billing and credit control of a live call session, shared by call_tick, call_stop and call_recover.
-- @include "tariff"
-- @include "free"
--
-- Money moves in two steps. A call holds a reservation (micro-units) that no
-- other call of its ID can spend: the ID's `free` is its balance less what its
-- live calls hold (empty until its first call: then all of `bal` is free).
-- Billing takes from the reservation first and only then from what is free;
-- what neither covers is `short` (a switch that talked past its grant). The
-- reservation also holds the tariff's disconnect charge until close.
--
-- A session stores only what a tick cannot derive, so that a tick in the steady
-- state (paid from its reservation) writes one field of the session (`used`)
-- and one of the ID (`bal`), as plain per-second billing did before reservations:
--   used   the highest second since answer the switch reported;
--          the charged seconds are tariff_charged(used) (blocks are charged when
--          they start, so they can run ahead of it);
--   cov    what the call has covered: the cost of its charged seconds plus its
--          reservation, so reservation = cov - cost (money_of). It changes only
--          when the call takes from what is free (a re-grant, a charge the
--          reservation did not cover) or runs short;
--   short  what the call was charged but could not pay; paid = cost - short.
--
-- `trm` holds the call's terms, fixed at start: "<gs> <val> <tariff descriptor>",
-- one field parsed once and kept across calls, however many ticks share it
-- (terms_of). `gnt` is how far (seconds since answer) the reservation carries the
-- call: the grant. It is topped up from what is free when less than half a grant
-- slice (`gs` seconds; 0 means all that is free) is left, and is final (`fin`) when
-- nothing free would buy another charged second. Thresholds (seconds left in
-- all, at the call's tariff) fire once each. When the call's funds are spent the
-- switch is told to cut; at zero the ID is exhausted; a blocked ID cuts its calls too.
--
-- read_session() reads what every tick needs in one positional HMGET: call_start
-- writes these fields first, in this order, so HMGET walks a short list. The rest
-- (start, short, final action) is read only when a tick needs it. The fields are
-- used where HMGET put them, s[S_USED] and so on: a table with named keys built
-- per tick cost 0.5 µs of a steady tick's 7.
--
-- Given `evkey` (the bucket's events stream), charge() also emits the balance
-- events for the webhooks: thresholds fired and exhaustion (includes/charge_events.lua).
-- @include "charge_events"
local S_ST, S_ID, S_USED, S_TRM, S_THR, S_CUT, S_ANS, S_COV, S_GNT, S_FIN = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
local function read_session(skey)
  return redis.call('HMGET', skey, 'st', 'id', 'used', 'trm', 'thr', 'cut', 'ans', 'cov', 'gnt', 'fin')
end

-- A session's terms: grant slice `gs` (s), quota validity `val` (s; 0 for a call
-- in tick mode) and tariff `t`. Parsed once per string and kept, as tariffs are.
local terms_parsed, terms_cached = {}, 0
local function terms_of(trm)
  local c = terms_parsed[trm]
  if c then return c end
  local gs, val, pos = string.match(trm, '^(%d+) (%d+) ()')
  c = { gs = tonumber(gs), val = tonumber(val), t = tariff_parse(string.sub(trm, pos)) }
  if terms_cached >= 1000 then terms_parsed, terms_cached = {}, 0 end
  terms_parsed[trm], terms_cached = c, terms_cached + 1
  return c
end

-- The highest threshold left ("300" of "300,60"), which every tick compares: kept
-- per string like the terms (a product's calls share a few).
local thr_heads, thr_cached = {}, 0
local function threshold_head(thr)
  local h = thr_heads[thr]
  if h then return h end
  h = tonumber(string.match(thr, '^%d+'))
  if thr_cached >= 1000 then thr_heads, thr_cached = {}, 0 end
  thr_heads[thr], thr_cached = h, thr_cached + 1
  return h
end

-- The terms call_start (and call_recover) write.
local function terms_field(gs, val, desc)
  return int(gs) .. ' ' .. int(val) .. ' ' .. desc
end

-- A session's money from its stored fields: charged seconds, their cost, and the reservation left.
local function money_of(t, used, ans, cov)
  local billed = tariff_charged(t, used)
  local cost = 0
  if billed > 0 then cost = tariff_cost(t, ans, billed) end
  return billed, cost, cov - cost
end

-- Seconds a reservation of `res` carries a call charged through `billed`, and whether nothing free buys more.
local function grant_of(t, ans, billed, res, avail)
  local covered = tariff_afford(t, ans, billed, res - t.disc)
  local more = covered
  if avail > 0 then more = tariff_afford(t, ans, covered, avail) end
  return covered, more == covered
end

-- The money a grant slice of `gs` seconds from second `from` needs on top of `res`, for a call whose
-- charged seconds cost `cost` so far (all that is free when gs = 0).
local function wanted(t, ans, cost, from, res, avail, gs)
  if gs == 0 then return avail end
  local target = tariff_charged(t, from + gs)
  local need = tariff_cost(t, ans, target) - cost + t.disc - res
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
-- `idf` is the ID's bal, st and free when the caller has read them (charge_steady).
local function charge(s, skey, ikey, sec, now, upd, evkey, idf)
  local terms = terms_of(s[S_TRM])
  local t = terms.t
  local used, cov0 = tonumber(s[S_USED]), tonumber(s[S_COV])
  local billed = tariff_charged(t, used)
  local cov = cov0
  local advanced = sec > used
  local gnt, fin = tonumber(s[S_GNT]), s[S_FIN] == '1'
  -- A cut-off is final: the switch is tearing the call down, so its grant stays where the
  -- cut-off found it, whatever is free since (a top-up is kept for the next call).
  local cut0 = s[S_CUT] or ''
  idf = idf or redis.call('HMGET', ikey, 'bal', 'st', 'free')
  local bal0, st = tonumber(idf[1]) or 0, idf[2]
  local avail0 = free_of(bal0, idf[3])
  local bal, avail = bal0, avail0
  local n = billed
  if advanced then n = tariff_charged(t, sec) end
  -- What the call has cost and still holds is needed only to charge a new block or to
  -- re-grant from what is free: a tick inside a block, on a call holding all it may, skips
  -- it. A flat tariff's charges do not depend on when the call was answered: its 13
  -- digits are not parsed for them (0 stands for the time).
  local ans, cost, res
  if n > billed or avail0 > 0 then
    if s[S_ANS] ~= '' then ans = t.flat and 0 or tonumber(s[S_ANS]) end
    cost = 0
    if billed > 0 then cost = tariff_cost(t, ans, billed) end
    res = cov0 - cost
  end
  local regrant, answered, ranShort = false, false, false
  local res0 = res
  if advanced then
    upd[#upd + 1] = 'used'
    upd[#upd + 1] = int(sec)
    if s[S_ANS] == '' then
      -- Answered `sec` seconds ago, but never before the call started (clock steps, late first tick).
      ans = math.max(tonumber(redis.call('HGET', skey, 'start')), now - sec * 1000)
      upd[#upd + 1] = 'ans'
      upd[#upd + 1] = int(ans)
      -- The grant was priced as if answered at the start: a rate that changed while it rang
      -- (a peak from 08:00, a dated version) makes the reservation carry it less far, or further.
      answered = not t.flat
    end
    if n > billed then
      local owed = tariff_cost(t, ans, n) - cost
      local fromRes = res - t.disc
      if fromRes > owed then fromRes = owed end
      if fromRes < 0 then fromRes = 0 end
      local fromAvail = owed - fromRes
      if fromAvail > avail then fromAvail = avail end
      local short = owed - fromRes - fromAvail
      res, avail, bal = res - fromRes, avail - fromAvail, bal - fromRes - fromAvail
      billed, cost, cov = n, cost + owed, cov + fromAvail + short
      if short > 0 then
        ranShort = true
        upd[#upd + 1] = 'short'
        upd[#upd + 1] = int(tonumber(redis.call('HGET', skey, 'short')) + short)
      end
      -- Seconds paid from what is free move the grant with them, but for a blocked ID, which
      -- gets no more grant: its call is cut where the block found its grant.
      regrant = fromAvail > 0 and st ~= 'blocked'
    end
  end
  -- A repeated or backward report changes nothing: the call is where its highest report put it.
  if sec < used then sec = used end
  local a = ans or now
  -- Re-grant before the reservation runs out, while something is free; a blocked ID gets no more.
  -- A final grant is re-granted as soon as something is free again (a top-up, another call's
  -- reservation given back), not at the half-slice mark: told its grant is the last, a
  -- quota-mode switch would end the call at it, money left or not.
  if avail > 0 and st ~= 'blocked' and cut0 == '' then
    local gs = terms.gs
    if gs == 0 or fin or gnt - sec < math.ceil(gs / 2) then
      local add = wanted(t, a, cost, math.max(sec, billed), res, avail, gs)
      if add > 0 then res, avail, cov = res + add, avail - add, cov + add end
      if add > 0 or fin then regrant = true end
    end
  end
  local finNow = 0
  if (regrant or answered) and cut0 == '' then
    local was = gnt
    local final
    gnt, final = grant_of(t, a, billed, res, avail)
    -- A call that ran short has talked past all it could pay: the block it started unpaid
    -- carries it no further, else a skipped tick mid-block would put off its cut-off. On the
    -- tick that answers it the grant it had is the start's, priced as if answered then: priced
    -- again from the answer, as the switch is told from now on (0 when it does not pay the first block).
    if ranShort then
      local had = was
      if answered then had = grant_of(t, a, 0, res0, avail0) end
      gnt = math.min(gnt, had, sec)
    end
    if gnt ~= was then
      upd[#upd + 1] = 'gnt'
      upd[#upd + 1] = int(gnt)
    end
    if final ~= fin then
      fin = final
      if fin then finNow = 1 end
      upd[#upd + 1] = 'fin'
      upd[#upd + 1] = fin and '1' or '0'
    end
  end
  if cov ~= cov0 then
    upd[#upd + 1] = 'cov'
    upd[#upd + 1] = int(cov)
  end
  local emptied = false
  if bal == 0 and bal0 > 0 and st == 'blocked' then emptied = blocked_emptied(ikey) end
  if bal == 0 and bal0 > 0 and st == 'sold' then
    st = 'exhausted'
    emptied = true
    redis.call('HSET', ikey, 'bal', '0', 'free', int(avail), 'st', st)
  elseif avail ~= avail0 then
    redis.call('HSET', ikey, 'bal', int(bal), 'free', int(avail))
  elseif bal ~= bal0 then
    -- The steady state: the reservation paid, what is free untouched.
    redis.call('HSET', ikey, 'bal', int(bal))
  end
  -- Other calls may have taken what was free since, the ID was blocked (no more grants) or
  -- the call cut off: then this grant is the last.
  local more = avail > 0 and st ~= 'blocked' and cut0 == ''
  if not fin and not more then
    fin, finNow = true, 1
    upd[#upd + 1] = 'fin'
    upd[#upd + 1] = '1'
  end

  -- With nothing more to come the grant is all the call has left.
  local left = gnt - sec
  if more then left = tariff_afford(t, a, billed, res - t.disc + avail) - sec end
  if left < 0 then left = 0 end
  local alerts = ''
  -- Thresholds are stored highest first: nothing to do until the first is reached. A blocked
  -- ID's call is cut, not short of money: no "top up soon" for it.
  if s[S_THR] ~= '' and st ~= 'blocked' and left <= threshold_head(s[S_THR]) then
    local fired, keep = {}, {}
    for th in string.gmatch(s[S_THR], '%d+') do
      if left <= tonumber(th) then fired[#fired + 1] = th else keep[#keep + 1] = th end
    end
    alerts = table.concat(fired, ',')
    upd[#upd + 1] = 'thr'
    upd[#upd + 1] = table.concat(keep, ',')
  end
  if evkey and (alerts ~= '' or emptied) then charge_events(evkey, ikey, skey, now, bal, left, alerts, emptied) end
  local cut = cut0
  if cut == '' then
    -- The block first: a blocked ID's call reaching its grant on the same tick is ended, not
    -- sent to the top-up line as an exhausted one would be.
    if st == 'blocked' then
      cut = 'blocked'
    elseif fin and gnt <= sec then
      cut = 'exhausted'
    end
  end
  local fresh = 0
  if cut ~= cut0 then
    fresh = 1
    upd[#upd + 1] = 'cut'
    upd[#upd + 1] = cut
  end
  return bal, left, alerts, cut, fresh, gnt, fin and 1 or 0, finNow, advanced
end

-- The steady tick, most ticks of most calls: a flat tariff, the new seconds
-- (if any: a repeated report is steady too) paid in full from the call's
-- reservation, and nothing else to do: no re-grant due, no threshold reached, no
-- cut-off, the ID neither emptied nor blocked. It does what charge() does in that
-- case (take the seconds' cost from the reservation and the balance; the
-- session's `cov` stays) without the general arithmetic, which costs a tick more
-- Lua than its two reads and two writes. Returns the ID's fields it read and,
-- when the tick was steady, the balance, the seconds left and the grant, having
-- written the balance; the caller writes `used`. Otherwise (nothing written)
-- charge() decides, given the fields read.
local function charge_steady(s, t, gs, ikey, sec, used)
  local idf = redis.call('HMGET', ikey, 'bal', 'st', 'free')
  if not t.flat or used == 0 or s[S_ANS] == '' or s[S_CUT] ~= '' or idf[2] ~= 'sold' then return idf end
  -- A repeated or backward report changes nothing: the call is where its highest report put it.
  if sec < used then sec = used end
  local rate = t.rate
  local bal = tonumber(idf[1]) or 0
  local avail = free_of(bal, idf[3])
  local owed = (sec - used) * rate
  -- What the reservation holds beyond the disconnect charge once this tick is paid.
  local res = tonumber(s[S_COV]) - t.fee - sec * rate - t.disc
  local gnt = tonumber(s[S_GNT])
  if res < 0 or owed >= bal or gnt <= sec then return idf end
  local left
  if avail == 0 then
    -- charge() would mark the grant final: unless it is, that is its job.
    if s[S_FIN] ~= '1' then return idf end
    left = gnt - sec
  else
    -- No re-grant is due (charge()'s rule: a final grant is re-granted as soon as anything is
    -- free, even less than a second: with what the reservation holds over its grant it may buy
    -- one); the seconds all the money left buys, as tariff_afford counts them.
    if gs == 0 or gnt - sec < math.ceil(gs / 2) or s[S_FIN] == '1' then return idf end
    left = (res + avail - (res + avail) % rate) / rate
  end
  if s[S_THR] ~= '' and left <= threshold_head(s[S_THR]) then return idf end
  if owed > 0 then redis.call('HSET', ikey, 'bal', int(bal - owed)) end
  return idf, bal - owed, left, gnt
end

-- Ends a call's hold on its ID: what is left of its reservation `res` is free
-- again, and the disconnect charge `disc` (an answered call's) is taken from what
-- is then free. Returns the charge taken, what of it could not be (short) and the
-- balance after.
local function release(ikey, res, disc)
  local idf = redis.call('HMGET', ikey, 'bal', 'free')
  local bal = tonumber(idf[1]) or 0
  local free = free_of(bal, idf[2]) + res
  -- Never more free than the balance, whatever a damaged hash says: that would be an overdraft.
  if free > bal then free = bal end
  local take = disc
  if take > free then take = free end
  redis.call('HSET', ikey, 'bal', int(bal - take), 'free', int(free - take))
  return take, disc - take, bal - take
end

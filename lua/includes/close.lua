-- @include "charge"
-- @include "id_calls"
-- Closes a call session: frees its reservation and takes the disconnect charge
-- (release() in charge.lua), frees its concurrency slot, drops it from the live
-- set, appends the call detail record to the bucket's stream and keeps the answer
-- on the session (with a TTL) so a repeated stop returns the same record. When
-- the disconnect charge takes the last of the balance, the ID is exhausted here,
-- with its event on `evkey` (the bucket's events stream) as a tick's would be.
-- Returns billed seconds, cost, balance after, record id, and what the call ran
-- short of (the record's `short`: charged, and not paid).
-- Appends a call record to `cdr`: its fields, and `per` (the seconds its `rate` pays) first when
-- the rate is not per second; records of per-second rates are as they always were.
local function cdr_add(cdr, per, ...)
  if per == 1 then return redis.call('XADD', cdr, '*', ...) end
  return redis.call('XADD', cdr, '*', 'per', int(per), ...)
end

local function close(skey, ikey, live, cdr, now, cause, ttl, evkey, ickey)
  local s = redis.call('HMGET', skey, 'sw', 'call', 'idh', 'dest', 'start', 'ans', 'used', 'trm', 'cov', 'short')
  local t = terms_of(s[8]).t
  local used, ans = tonumber(s[7]), tonumber(s[6])
  local billed, charged, res = money_of(t, used, ans, tonumber(s[9]))
  -- The fee and the disconnect charge come with an answered call: a record says what it took,
  -- so a call never answered records neither (nor, reaped so, does it again with its late stop).
  local disc, fee = 0, 0
  if billed > 0 then disc, fee = t.disc, t.fee end
  local took, discShort, bal = release(ikey, res, disc)
  -- What the call paid: its charges but what it ran short of, and the disconnect charge.
  local cost = charged - tonumber(s[10]) + took
  local short = tonumber(s[10]) + discShort
  local st = bal == 0 and redis.call('HGET', ikey, 'st')
  if st == 'sold' then
    redis.call('HSET', ikey, 'st', 'exhausted')
    charge_events(evkey, ikey, skey, now, 0, 0, '', true)
  elseif st == 'blocked' and blocked_emptied(ikey) then
    charge_events(evkey, ikey, skey, now, 0, 0, '', true)
  end
  local act = tonumber(redis.call('HINCRBY', ikey, 'act', -1))
  if act < 0 then redis.call('HSET', ikey, 'act', '0') end
  redis.call('ZREM', live, skey)
  local rate, per = tariff_rate(t, ans or 0, 0)
  local rec = cdr_add(cdr, per,
    'switch', s[1], 'call', s[2], 'id', s[3], 'dest', s[4],
    'start', s[5], 'answer', s[6] or '', 'end', int(now),
    'sec', int(billed), 'used', int(used), 'blocks', tariff_blocks(t, billed),
    'rate', int(rate), 'fee', int(fee), 'disc', int(took),
    'cost', int(cost), 'short', int(short), 'bal', int(bal), 'cause', cause)
  redis.call('HSET', skey, 'st', 'closed', 'end', int(now), 'cause', cause, 'bal1', int(bal), 'rec', rec, 'cost',
    int(cost), 'short', int(short), 'cov', int(charged))
  redis.call('EXPIRE', skey, ttl)
  -- The ID's calls by call id (call_start) are kept while their sessions are, no longer: a week
  -- past the start otherwise, whatever the call's length.
  if ickey then id_calls_closed(ickey, skey, ttl) end
  return { 'ok', billed, cost, bal, rec, 0, short }
end

-- Returns `back` (> 0) to an ID's balance, free: an ID exhausted by the charge
-- it undoes is usable again (a blocked one will be once unblocked). Returns the balance.
local function credit_back(ikey, back)
  local idf = redis.call('HMGET', ikey, 'bal', 'free', 'st')
  local bal = tonumber(idf[1]) + back
  local w = { 'bal', int(bal) }
  if tonumber(idf[2]) then w[3], w[4] = 'free', int(tonumber(idf[2]) + back) end
  if idf[3] == 'exhausted' then w[#w + 1], w[#w + 2] = 'st', 'sold' end
  if idf[3] == 'blocked' and redis.call('HGET', ikey, 'prev') == 'exhausted' then
    w[#w + 1], w[#w + 2] = 'prev', 'sold'
  end
  redis.call('HSET', ikey, unpack(w))
  return bal
end

-- Undoes `amount` of a call's charges: what it ran short of (`short`, charged and
-- never paid) is forgiven first, the rest goes back to the balance (credit_back).
-- Returns what was forgiven, what went back, and the balance after (nil when
-- nothing went back).
local function undo_charge(ikey, short, amount)
  local forgiven = math.min(short, amount)
  local back = amount - forgiven
  if back > 0 then return forgiven, back, credit_back(ikey, back) end
  return forgiven, back, nil
end

-- A stop's seconds are the call's final duration. Ticks claim seconds as they
-- pass, and one can race the hang-up (its end reported late, a switch under
-- load): what they charged beyond the stop's seconds is given back before the
-- call closes. What the call ran short of is forgiven first; the rest returns to
-- the balance, free, and an ID that was exhausted by it is usable again.
local function give_back(s, skey, ikey, sec)
  local t = terms_of(s[S_TRM]).t
  local billed, n = tariff_charged(t, tonumber(s[S_USED])), tariff_charged(t, sec)
  local upd = { 'used', int(sec) }
  if n < billed then
    local ans = tonumber(s[S_ANS])
    local over = tariff_cost(t, ans, billed) - tariff_cost(t, ans, n)
    local short = tonumber(redis.call('HGET', skey, 'short'))
    local forgiven = undo_charge(ikey, short, over)
    upd[3], upd[4], upd[5], upd[6] = 'short', int(short - forgiven), 'cov', int(tonumber(s[S_COV]) - over)
  end
  redis.call('HSET', skey, unpack(upd))
end

-- The stop of a live call: bills up to `sec` (or gives back what ticks charged
-- beyond it), then closes it. Returns close()'s answer.
local function stop_live(s, skey, ikey, live, cdr, now, sec, cause, ttl, evkey, ickey)
  if sec < tonumber(s[S_USED]) then
    give_back(s, skey, ikey, sec)
  else
    local upd = {}
    charge(s, skey, ikey, sec, now, upd, evkey)
    if #upd > 0 then redis.call('HSET', skey, unpack(upd)) end
  end
  return close(skey, ikey, live, cdr, now, cause, ttl, evkey, ickey)
end

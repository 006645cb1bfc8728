-- @include "charge"
-- @include "close"
-- A stop for a closed call. Usually a repeat: it gets the first answer. But a
-- call the reaper closed (cause `stale`) may have gone on: its switch lost
-- Tessera for a while and, under a `continue` failure policy (or within its
-- grant), kept talking. Its stop reports seconds the reaper never saw; they
-- are billed now, from what is free of the balance (never below zero, the
-- rest as short), in a second call record with cause `late` for just those
-- seconds, so the first record stays as written and the audit sums both.
-- Only the switch's first stop after the reaper's may bill: every later one is
-- a repeat, whatever seconds it reports (`swstop` marks one that billed nothing;
-- one that billed leaves the cause `late`). Both records together bill what an
-- ordinary stop of the call would have: the disconnect charge too, here, when
-- the reaper closed the call before its first billed second (and took none).
-- A call a stop under another token name closed live (`stopby`, call_recover) may
-- have gone on too, until its switch's next tick was told to hang up: its own
-- switch's first stop bills the seconds past that stop the same way (a stop under
-- yet another name, `elsewhere`, is a repeat; nothing is given back: both are stops).
-- The late stop of a reaped call that reports fewer charged seconds than the
-- reaper billed (its last tick raced the hang-up): as an ordinary stop would,
-- what was charged beyond them is given back, what the call ran short of
-- forgiven first, and with no second left the disconnect charge too. A second
-- record with cause `late` holds the give-back, its seconds and cost negative,
-- so the first stays as written and the audit sums both.
local function late_credit(skey, ikey, cdr, now, sec, c, t, used, billed)
  local n = tariff_charged(t, sec)
  local ans = tonumber(c[6])
  local undo = tariff_cost(t, ans, billed) - tariff_cost(t, ans, n)
  local disc = 0
  if n == 0 then disc = t.disc end
  undo = undo + disc
  local short = tonumber(c[5])
  local forgiven, back, after = undo_charge(ikey, short, undo)
  -- All forgiven, nothing back: the balance is as it is now, not as the reaper left it (a top-up,
  -- another call or a stop under another name may have moved it since).
  local bal = after or tonumber(redis.call('HGET', ikey, 'bal')) or 0
  local m = redis.call('HMGET', skey, 'sw', 'call', 'idh', 'dest')
  local rate, per = tariff_rate(t, ans, n)
  local rec = cdr_add(cdr, per,
    'switch', m[1], 'call', m[2], 'id', m[3], 'dest', m[4],
    'start', c[7], 'answer', c[6] or '', 'end', int(now),
    'sec', int(n - billed), 'used', int(sec - used), 'blocks', '',
    'rate', int(rate), 'fee', int(n == 0 and -t.fee or 0), 'disc', int(-disc),
    'cost', int(-back), 'short', int(-forgiven), 'bal', int(bal), 'cause', 'late')
  local cost = tonumber(c[1]) - back
  redis.call('HSET', skey, 'used', int(sec), 'cost', int(cost), 'bal1', int(bal), 'rec', rec,
    'cause', 'late', 'short', int(short - forgiven))
  return { 'ok', n, cost, bal, rec, 0, 0 }
end

local function late_stop(s, skey, ikey, cdr, now, sec, evkey, elsewhere)
  local c = redis.call('HMGET', skey, 'cost', 'bal1', 'rec', 'cause', 'short', 'ans', 'start', 'swstop', 'stopby')
  local cost, bal = tonumber(c[1]), tonumber(c[2])
  local t = terms_of(s[S_TRM]).t
  local used = tonumber(s[S_USED])
  local billed = tariff_charged(t, used)
  if c[4] == 'stale' and not c[8] and tariff_charged(t, sec) < billed then
    return late_credit(skey, ikey, cdr, now, sec, c, t, used, billed)
  end
  local talkedOn = c[4] == 'stale' or (c[9] and not elsewhere)
  if not talkedOn or c[8] or sec <= used then
    if talkedOn and not c[8] then redis.call('HSET', skey, 'swstop', '1') end
    return { 'ok', billed, cost, bal, c[3], 1, 0 }
  end
  local ans = tonumber(c[6]) or math.max(tonumber(c[7]), now - sec * 1000)
  local n = tariff_charged(t, sec)
  local owed, disc = 0, 0
  if n > billed then owed = tariff_cost(t, ans, n) - tariff_cost(t, ans, billed) end
  if billed == 0 and n > 0 then disc = t.disc end
  local idf = redis.call('HMGET', ikey, 'bal', 'free', 'st')
  local idBal = tonumber(idf[1]) or 0
  local free = free_of(idBal, idf[2])
  -- The charges first, then the disconnect charge from what is left, as close() takes them.
  local take = owed
  if take > free then take = free end
  local took = disc
  if took > free - take then took = free - take end
  owed, take = owed + disc, take + took
  idBal = idBal - take
  local w = { 'bal', int(idBal) }
  if tonumber(idf[2]) then w[3], w[4] = 'free', int(free - take) end
  local emptied = idBal == 0 and idf[3] == 'sold'
  if emptied then w[#w + 1], w[#w + 2] = 'st', 'exhausted' end
  redis.call('HSET', ikey, unpack(w))
  if emptied or (idBal == 0 and take > 0 and idf[3] == 'blocked' and blocked_emptied(ikey)) then
    charge_events(evkey, ikey, skey, now, 0, 0, '', true)
  end
  local m = redis.call('HMGET', skey, 'sw', 'call', 'idh', 'dest')
  local rate, per = tariff_rate(t, ans, used)
  local rec = cdr_add(cdr, per,
    'switch', m[1], 'call', m[2], 'id', m[3], 'dest', m[4],
    'start', c[7], 'answer', int(ans), 'end', int(now),
    'sec', int(n - billed), 'used', int(sec - used), 'blocks', '',
    -- The connection fee comes with the first billed second: here, when the reaper billed none.
    'rate', int(rate), 'fee', int((billed == 0 and n > 0) and t.fee or 0), 'disc', int(took),
    'cost', int(take), 'short', int(owed - take), 'bal', int(idBal), 'cause', 'late')
  cost = cost + take
  redis.call('HSET', skey, 'used', int(sec), 'cost', int(cost), 'bal1', int(idBal), 'rec', rec,
    'cause', 'late', 'short', int(tonumber(c[5]) + owed - take))
  -- Its `stopby` stays (its ticks are still told `stopped`): this stop is had, later ones repeat it.
  if c[9] then redis.call('HSET', skey, 'swstop', '1') end
  return { 'ok', n, cost, idBal, rec, 0, owed - take }
end

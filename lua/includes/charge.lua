-- Per-second billing of a live call session, shared by call_tick and call_stop.
--
-- read_session() reads the fields every tick needs, in one positional HMGET;
-- the ones only the first billed second or a shortfall need (fee, short, start)
-- are read by charge() when it gets there. This runs for every tick of every
-- call, and Redis' time per tick goes mostly to fields looked up and Lua values
-- made: call_start writes these fields first in the hash, and nothing here reads
-- what it does not use.
-- charge() bills up to `sec` seconds after answer: (sec - billed) * rate, plus the
-- connection fee with the first billed second. The balance never goes below
-- zero: what cannot be taken is kept as `short` so the record shows it.
-- Thresholds (seconds left at the call's rate) fire once each. When the balance
-- can no longer pay one more second at this rate the switch is told to cut; at
-- zero the ID is exhausted; a blocked ID cuts its calls too.
-- charge() appends the session fields to write to `upd` (the caller writes them
-- once) and returns balance, seconds left, fired thresholds (comma-separated,
-- highest first, or ''), cut-off reason ('' while the call may go on), and 1 when
-- this very call ordered the cut-off. It writes only what changed (the cost is
-- derived at close, see close.lua) and looks at the thresholds only when the
-- highest one left is reached.
-- Given `evkey` (the bucket's events stream), it also emits the balance events
-- for the webhooks: thresholds fired and exhaustion (includes/charge_events.lua).
-- @include "charge_events"
local function read_session(skey)
  local v = redis.call('HMGET', skey, 'st', 'id', 'billed', 'rate', 'seen', 'thr', 'cut', 'ans')
  return { st = v[1], id = v[2], billed = v[3], rate = v[4], seen = v[5], thr = v[6], cut = v[7], ans = v[8] }
end

local function charge(s, skey, ikey, sec, now, upd, evkey)
  local rate, billed = tonumber(s.rate), tonumber(s.billed)
  local idf = redis.call('HMGET', ikey, 'bal', 'st')
  local bal, st = tonumber(idf[1]) or 0, idf[2]
  local alerts = ''
  local cut = s.cut or ''
  local fresh = 0
  local emptied = false
  if sec > billed then
    local owed = (sec - billed) * rate
    local cold
    if billed == 0 or s.ans == '' or owed > bal then cold = redis.call('HMGET', skey, 'fee', 'short', 'start') end
    if billed == 0 then owed = owed + tonumber(cold[1]) end
    local take = owed
    if take > bal then take = bal end
    bal = bal - take
    if bal == 0 and st == 'sold' then
      st = 'exhausted'
      emptied = true
      redis.call('HSET', ikey, 'bal', '0', 'st', st)
    else
      redis.call('HSET', ikey, 'bal', int(bal))
    end
    upd[#upd + 1] = 'billed'
    upd[#upd + 1] = int(sec)
    if take < owed then
      upd[#upd + 1] = 'short'
      upd[#upd + 1] = int(tonumber(cold[2]) + owed - take)
    end
    if s.ans == '' then
      -- Answered `sec` seconds ago, but never before the call started (clock steps, late first tick).
      upd[#upd + 1] = 'ans'
      upd[#upd + 1] = int(math.max(tonumber(cold[3]), now - sec * 1000))
    end
    local left = math.floor(bal / rate)
    -- Thresholds are stored highest first: nothing to do until the first is reached.
    if s.thr ~= '' and left <= tonumber(string.match(s.thr, '^%d+')) then
      local fired, keep = {}, {}
      for t in string.gmatch(s.thr, '%d+') do
        if left <= tonumber(t) then fired[#fired + 1] = t else keep[#keep + 1] = t end
      end
      alerts = table.concat(fired, ',')
      upd[#upd + 1] = 'thr'
      upd[#upd + 1] = table.concat(keep, ',')
    end
    if left == 0 and cut == '' then cut = 'exhausted' end
    if evkey and (alerts ~= '' or emptied) then charge_events(evkey, ikey, skey, now, bal, left, alerts, emptied) end
  end
  if cut == '' and st == 'blocked' then cut = 'blocked' end
  if cut ~= (s.cut or '') then
    fresh = 1
    upd[#upd + 1] = 'cut'
    upd[#upd + 1] = cut
  end
  return bal, math.floor(bal / rate), alerts, cut, fresh
end

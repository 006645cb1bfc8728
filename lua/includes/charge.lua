-- Per-second billing of a live call session, shared by call_tick and call_stop.
--
-- read_session() reads, in one HMGET, every session field a script needs.
-- charge() bills up to `sec` seconds after answer: (sec - billed) * rate, plus the
-- connection fee with the first billed second. The balance never goes below
-- zero: what cannot be taken is kept as `short` so the record shows it.
-- Thresholds (seconds left at the call's rate) fire once each. When the balance
-- can no longer pay one more second at this rate the switch is told to cut; at
-- zero the ID is exhausted; a blocked ID cuts its calls too.
-- charge() appends the session fields to write to `upd` (the caller writes them
-- once) and returns balance, seconds left, fired thresholds, cut-off reason
-- ('' while the call may go on), and 1 when this very call ordered the cut-off.
-- This runs for every tick of every call: it writes only what changed (the cost
-- is derived at close, see close.lua) and looks at the thresholds only when the
-- highest one left is reached.
local SESSION_FIELDS = { 'st', 'id', 'billed', 'rate', 'fee', 'short', 'thr', 'ans', 'cut', 'start', 'seen', 'cause', 'bal1', 'rec', 'cost' }

local function read_session(skey)
  local v = redis.call('HMGET', skey, unpack(SESSION_FIELDS))
  local s = {}
  for i, f in ipairs(SESSION_FIELDS) do s[f] = v[i] end
  return s
end

local function charge(s, ikey, sec, now, upd)
  local rate, fee, billed = tonumber(s.rate), tonumber(s.fee), tonumber(s.billed)
  local idf = redis.call('HMGET', ikey, 'bal', 'st')
  local bal, st = tonumber(idf[1]) or 0, idf[2]
  local alerts = {}
  local cut = s.cut or ''
  local fresh = 0
  local function put(k, v)
    upd[#upd + 1] = k
    upd[#upd + 1] = v
  end
  if sec > billed then
    local owed = (sec - billed) * rate
    if billed == 0 then owed = owed + fee end
    local take = owed
    if take > bal then take = bal end
    bal = bal - take
    if bal == 0 and st == 'sold' then
      st = 'exhausted'
      redis.call('HSET', ikey, 'bal', '0', 'st', st)
    else
      redis.call('HSET', ikey, 'bal', int(bal))
    end
    put('billed', int(sec))
    if take < owed then put('short', int(tonumber(s.short) + owed - take)) end
    if s.ans == '' then
      -- Answered `sec` seconds ago, but never before the call started (clock steps, late first tick).
      put('ans', int(math.max(tonumber(s.start), now - sec * 1000)))
    end
    local left = math.floor(bal / rate)
    -- Thresholds are stored highest first: nothing to do until the first is reached.
    if s.thr ~= '' and left <= tonumber(string.match(s.thr, '^%d+')) then
      local keep = {}
      for t in string.gmatch(s.thr, '%d+') do
        if left <= tonumber(t) then alerts[#alerts + 1] = tonumber(t) else keep[#keep + 1] = t end
      end
      if #alerts > 0 then put('thr', table.concat(keep, ',')) end
    end
    if left == 0 and cut == '' then cut = 'exhausted' end
  end
  if cut == '' and st == 'blocked' then cut = 'blocked' end
  if cut ~= (s.cut or '') then
    fresh = 1
    put('cut', cut)
  end
  return bal, math.floor(bal / rate), alerts, cut, fresh
end

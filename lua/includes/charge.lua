-- Bills a live call session up to `sec` seconds after answer.
-- Per-second: (sec - billed) * rate, plus the connection fee with the first billed
-- second. The balance never goes below zero: what cannot be taken is kept as
-- `short` on the session so the record shows it. Thresholds (seconds left at the
-- call's rate) fire once each. When the balance can no longer pay one more second
-- at this call's rate the switch is told to cut; at zero the ID is exhausted.
-- Returns balance, seconds left, fired thresholds, cut-off reason ('' while the call may go on),
-- and 1 when this very call of charge() ordered the cut-off (0 when it was ordered before).
local function charge(skey, ikey, sec, now)
  local s = redis.call('HMGET', skey, 'rate', 'fee', 'billed', 'cost', 'short', 'thr', 'ans', 'cut', 'start')
  local rate, fee, billed = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
  local bal = tonumber(redis.call('HGET', ikey, 'bal')) or 0
  local alerts = {}
  local cut = s[8] or ''
  local fresh = 0
  if sec > billed then
    local owed = (sec - billed) * rate
    if billed == 0 then owed = owed + fee end
    local take = owed
    if take > bal then take = bal end
    bal = bal - take
    redis.call('HSET', ikey, 'bal', int(bal))
    local upd = { 'billed', int(sec), 'cost', int(tonumber(s[4]) + take), 'short', int(tonumber(s[5]) + owed - take) }
    if s[7] == '' then
      upd[#upd + 1] = 'ans'
      -- Answered `sec` seconds ago, but never before the call started (clock steps, late first tick).
      upd[#upd + 1] = int(math.max(tonumber(s[9]), now - sec * 1000))
    end
    local left = math.floor(bal / rate)
    if s[6] ~= '' then
      local keep = {}
      for t in string.gmatch(s[6], '%d+') do
        if left <= tonumber(t) then alerts[#alerts + 1] = tonumber(t) else keep[#keep + 1] = t end
      end
      if #alerts > 0 then
        upd[#upd + 1] = 'thr'
        upd[#upd + 1] = table.concat(keep, ',')
      end
    end
    if left == 0 and cut == '' then
      fresh = 1
      cut = 'exhausted'
      upd[#upd + 1] = 'cut'
      upd[#upd + 1] = cut
    end
    if bal == 0 and redis.call('HGET', ikey, 'st') == 'sold' then redis.call('HSET', ikey, 'st', 'exhausted') end
    redis.call('HSET', skey, unpack(upd))
  end
  return bal, math.floor(bal / rate), alerts, cut, fresh
end

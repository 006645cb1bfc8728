-- The ID's calls by call id, ts:{bN}:ic:<idHash>:<call>: the session key of every call the ID
-- has had under that call id, whatever token name started it (call_start) or recovered it
-- (call_recover), separated by spaces (neither token names nor call ids hold one). Usually
-- one; more when another name's switch used the call id too, or a stop under another name
-- was a lost call of its own: a stop resent under yet another name must find each of them.
-- A session gone is dropped when the key is next written. A call once closed (stopped, reaped
-- or recovered) is also listed as its session key followed by ID_CALL_CLOSED, an entry that
-- stays after its session has gone, for ID_CALL_KEEP_SEC after the close at least: the record
-- that the call was stopped and billed, which keeps a stop of it resent after its session's
-- SESSION_TTL_SEC from being billed again as a lost call (call_recover). It names no key, so a
-- reader of sessions (call_start, an earlier version's scripts) finds nothing there.

-- How much earlier than its start a call may seem answered, by the seconds its stop reports
-- (the switch's clock and counting against the gateway's), and still be the call the stop names.
local ID_CALL_SKEW_MS = 5000

-- What follows a closed call's session key in its second entry.
local ID_CALL_CLOSED = '!'

-- How long (s) after its close a call stays listed at least, its session kept or not: a week
-- (MAX_CALL_SEC, src/protocol/switch.ts; the default SESSION_TTL_SEC), whatever SESSION_TTL_SEC is.
local ID_CALL_KEEP_SEC = 604800

-- The session key a closed call's entry names, or nil for a session's own entry.
local function id_call_closed_of(e)
  local n = #e
  if string.sub(e, n) == ID_CALL_CLOSED then return string.sub(e, 1, n - 1) end
  return nil
end

-- Lists `skey` among the calls of `ickey`, which then lives at least `ttl` (s) more. `v` is the
-- key's value when the caller has read it (false: no key), nil to read it here. A closed call of
-- the same session key before it is forgotten: this is another call (its session had gone).
local function id_calls_add(ickey, skey, ttl, v)
  if v == nil then v = redis.call('GET', ickey) end
  local list = {}
  if v then
    for e in string.gmatch(v, '%S+') do
      local closed = id_call_closed_of(e)
      if closed then
        if closed ~= skey then list[#list + 1] = e end
      elseif e ~= skey and redis.call('EXISTS', e) == 1 then
        list[#list + 1] = e
      end
    end
  end
  list[#list + 1] = skey
  if #list > 1 and redis.call('TTL', ickey) > ttl then
    redis.call('SET', ickey, table.concat(list, ' '), 'KEEPTTL')
  else
    redis.call('SET', ickey, table.concat(list, ' '), 'EX', ttl)
  end
end

-- The session `skey` of `ickey` closed, kept `ttl` (s) more: listed as closed too, and the key is
-- kept as long as the longest kept of its calls, and ID_CALL_KEEP_SEC at least.
local function id_calls_closed(ickey, skey, ttl)
  local v = redis.call('GET', ickey)
  if not v then return end
  local mark = skey .. ID_CALL_CLOSED
  local listed, marked, live, keep = false, false, false, math.max(ttl, ID_CALL_KEEP_SEC)
  for e in string.gmatch(v, '%S+') do
    if e == skey then
      listed = true
    elseif e == mark then
      marked = true
    elseif not id_call_closed_of(e) then
      local left = redis.call('TTL', e)
      if left == -1 then live = true end
      if left > keep then keep = left end
    end
  end
  if not listed then return end
  if not marked then redis.call('SET', ickey, v .. ' ' .. mark, 'KEEPTTL') end
  -- A live one's start kept the key past its longest life: only ever made longer then.
  if live then
    redis.call('EXPIRE', ickey, keep, 'GT')
  else
    redis.call('EXPIRE', ickey, keep)
  end
end

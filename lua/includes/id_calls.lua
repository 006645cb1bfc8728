-- The ID's calls by call id, ts:{bN}:ic:<idHash>:<call>: the session key of every call the ID
-- has had under that call id, whatever token name started it (call_start) or recovered it
-- (call_recover), separated by spaces (neither token names nor call ids hold one). Usually
-- one; more when another name's switch used the call id too, or a stop under another name
-- was a lost call of its own: a stop resent under yet another name must find each of them.
-- A session gone (its TTL run out) is dropped when the key is next written.

-- How much earlier than its start a call may seem answered, by the seconds its stop reports
-- (the switch's clock and counting against the gateway's), and still be the call the stop names.
local ID_CALL_SKEW_MS = 5000

-- Lists `skey` among the calls of `ickey`, which then lives at least `ttl` (s) more. `v` is the
-- key's value when the caller has read it (false: no key), nil to read it here.
local function id_calls_add(ickey, skey, ttl, v)
  if v == nil then v = redis.call('GET', ickey) end
  local list = {}
  if v then
    for k in string.gmatch(v, '%S+') do
      if k ~= skey and redis.call('EXISTS', k) == 1 then list[#list + 1] = k end
    end
  end
  list[#list + 1] = skey
  if #list > 1 and redis.call('TTL', ickey) > ttl then
    redis.call('SET', ickey, table.concat(list, ' '), 'KEEPTTL')
  else
    redis.call('SET', ickey, table.concat(list, ' '), 'EX', ttl)
  end
end

-- The session `skey` of `ickey` closed, kept `ttl` (s) more: the key is kept as long as the
-- longest kept of its calls, no longer (as long as a live one's start set it, while one is).
local function id_calls_closed(ickey, skey, ttl)
  local v = redis.call('GET', ickey)
  if not v then return end
  local listed, keep = false, ttl
  for k in string.gmatch(v, '%S+') do
    if k == skey then
      listed = true
    else
      local left = redis.call('TTL', k)
      if left == -1 then return end
      if left > keep then keep = left end
    end
  end
  if listed then redis.call('EXPIRE', ickey, keep) end
end

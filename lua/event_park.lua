--[[ event_park: a balance event failed for good at some webhooks: keep it for the operator, then drop it.
KEYS[1] balance events          ts:{bN}:ev (stream)
KEYS[2] delivery state          ts:{bN}:evtry (hash)
KEYS[3] failed deliveries       ts:{bN}:evfail (stream)
ARGV[1] the event's stream entry id
ARGV[2] now (ms)
ARGV[3] delivery attempts made
ARGV[4..] pairs: the URL of a webhook it failed at, and that webhook's last error
Each URL gets one failed entry: the event's fields, `eid` (its first stream entry id, which
its event id is made of), `url`, `attempts`, `error` and `failed` (ms). The event is then
acknowledged and deleted, like a delivered one.
Returns the number of failed entries written (0 when the event was already gone).
]]
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
local n = 0
if rows[1] then
  local fields, eid = rows[1][2], ARGV[1]
  local keep = {}
  for i = 1, #fields, 2 do
    if fields[i] == 'eid' then eid = fields[i + 1]
    elseif fields[i] ~= 'to' then
      keep[#keep + 1] = fields[i]
      keep[#keep + 1] = fields[i + 1]
    end
  end
  for j = 4, #ARGV, 2 do
    local rec = { unpack(keep) }
    for _, v in ipairs({ 'eid', eid, 'url', ARGV[j], 'attempts', ARGV[3], 'error', ARGV[j + 1], 'failed', ARGV[2] }) do
      rec[#rec + 1] = v
    end
    redis.call('XADD', KEYS[3], '*', unpack(rec))
    n = n + 1
  end
end
redis.call('XACK', KEYS[1], 'hooks', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return n

--[[ event_requeue: the operator retries a failed delivery: back into the events stream, for its webhook only.
KEYS[1] failed deliveries       ts:{bN}:evfail (stream)
KEYS[2] balance events          ts:{bN}:ev (stream)
ARGV[1] the failed entry's id
The event goes back with its fields, its `eid` (so receivers see the same event id) and
`to` (the one webhook URL to deliver it to); the failed entry is deleted.
Returns the new stream entry id, or false when there is no such failed entry.
]]
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if not rows[1] then return false end
local fields, back = rows[1][2], {}
for i = 1, #fields, 2 do
  local f = fields[i]
  if f == 'url' then
    back[#back + 1] = 'to'
    back[#back + 1] = fields[i + 1]
  elseif f ~= 'attempts' and f ~= 'error' and f ~= 'failed' then
    back[#back + 1] = f
    back[#back + 1] = fields[i + 1]
  end
end
local id = redis.call('XADD', KEYS[2], '*', unpack(back))
redis.call('XDEL', KEYS[1], ARGV[1])
return id

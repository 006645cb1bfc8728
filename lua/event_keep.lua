--[[ event_keep: a gateway still holds these balance events in its queue: keep them from being taken over.
KEYS[1] balance events          ts:{bN}:ev (stream)
ARGV[1] the gateway's consumer name in group `hooks`
ARGV[2..] the events' stream entry ids
An event pending at this consumer has its idle time set to 0 (XCLAIM to itself), so no other
gateway takes it over (XAUTOCLAIM after claimIdleMs) while it waits for a slot here.
Returns the ids no longer pending at this consumer (delivered, or taken over by another gateway).
]]
local lost = {}
for i = 2, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], 'hooks', ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], 'hooks', ARGV[1], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost

--[[ event_later: a balance event failed at some webhooks and is tried again later: keep its delivery state.
KEYS[1] balance events          ts:{bN}:ev (stream)
KEYS[2] delivery state          ts:{bN}:evtry (hash)
ARGV[1] the event's stream entry id
ARGV[2] its delivery state (JSON: attempts, webhooks done, next attempt ms, last error)
Written only while the event is still pending in group `hooks`, so a gateway that lost a
race with another one's delivery leaves nothing behind.
Returns 1 when written, 0 when the event was no longer pending.
]]
local p = redis.call('XPENDING', KEYS[1], 'hooks', ARGV[1], ARGV[1], 1)
if not p[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1

--[[ event_later: a balance event failed at some webhooks, or was deferred, and is tried again later: keep its delivery state.
KEYS[1] balance events          ts:{bN}:ev (stream)
KEYS[2] delivery state          ts:{bN}:evtry (hash)
ARGV[1] the event's stream entry id
ARGV[2] its delivery state (JSON: attempts, webhooks done, next attempt ms, last error)
ARGV[3] optional: its idle time is set to this (ms), so the next takeover (XAUTOCLAIM with
        this min idle time) takes it at once: an event deferred only because its receiver had
        its share of the queue is due again at once
Written only while the event is still pending in group `hooks`, so a gateway that lost a
race with another one's delivery leaves nothing behind.
Returns 1 when written, 0 when the event was no longer pending.
]]
local p = redis.call('XPENDING', KEYS[1], 'hooks', ARGV[1], ARGV[1], 1)
if not p[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] then redis.call('XCLAIM', KEYS[1], 'hooks', p[1][2], 0, ARGV[1], 'IDLE', ARGV[3], 'JUSTID') end
return 1

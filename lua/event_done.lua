--[[ event_done: a balance event is delivered (or has no webhook): acknowledge and delete it.
KEYS[1] balance events          ts:{bN}:ev (stream)
KEYS[2] delivery state          ts:{bN}:evtry (hash)
ARGV[1] the event's stream entry id
Returns 1 when the entry was still pending (this call settled it), 0 when another gateway already had.
]]
-- @flags allow-oom
local acked = redis.call('XACK', KEYS[1], 'hooks', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return acked

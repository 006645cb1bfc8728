--[[ event_forget: forgets the consumers of group `hooks` that hold no event and have been idle this
long. Every gateway process reads under a name of its own, so each restart leaves one in every
bucket's group. XGROUP DELCONSUMER drops what a consumer still holds: the check and the delete are
one step, and a consumer forgotten while alive is only made again by its next read.
KEYS[1] balance events   ts:{bN}:ev (stream)
ARGV[1] idle (ms) after which a consumer holding nothing is forgotten
Returns how many were forgotten.
]]
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], 'hooks')
-- No stream or no group yet: nobody to forget.
if not ok then return 0 end
local idle, n = tonumber(ARGV[1]), 0
for _, c in ipairs(consumers) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f.pending == 0 and f.idle >= idle then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'hooks', f.name)
    n = n + 1
  end
end
return n

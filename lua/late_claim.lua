--[[ late_claim: claim the next late-authorization reference of a bucket due to be asked after.
KEYS[1] late authorizations  ts:{bN}:late (zset: '<first seen, ms>:<reference>' -> next check, ms)
ARGV[1] now (ms)
ARGV[2] the shortest wait between two checks (ms): the first check comes this long after first seen
ARGV[3] the longest wait (ms)
ARGV[4] how long a reference is asked after (ms), from first seen
Returns the member claimed, the one due longest, or false when none is due. It is moved to its next
check first (the wait grows as it ages: as long as it has been listed, within ARGV[2]..ARGV[3]), so
a sweep meanwhile (another gateway's) skips it until then. The last check is due when ARGV[4] has
passed since first seen. Claimed then, the member stays listed, due again ARGV[2] on, until the
sweep has the card company's answer and drops it (lateDone): a check unanswered, or lost with its
gateway, is made again. Claimed once ARGV[3] more has passed, it is dropped in the claim: asked a
last time, whatever comes of it.
]]
local now = tonumber(ARGV[1])
local shortest, longest, watch = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
if #due == 0 then return false end
local member = due[1]
local first = tonumber(string.match(member, '^(%d+):'))
if not first then
  -- Listed by a version that kept the first-seen time as the score and the reference alone.
  redis.call('ZREM', KEYS[1], member)
  first = tonumber(due[2])
  member = string.format('%d:%s', first, member)
end
local age = now - first
if age >= watch + longest then
  redis.call('ZREM', KEYS[1], member)
  return member
end
if age >= watch then
  redis.call('ZADD', KEYS[1], string.format('%d', now + shortest), member)
  return member
end
local wait = math.min(math.max(age, shortest), longest)
redis.call('ZADD', KEYS[1], string.format('%d', math.min(now + wait, first + watch)), member)
return member

--[[ ani_index: which ID a caller number (ANI) logs in to, in the number's own bucket.
The index is the source of truth at use: a switch's `start` with `ani` reads it,
then call_start checks in the ID's bucket that the ID still lists the number.
KEYS[1] ANI index          ts:{bN}:ani:<aniHash>   (value: the ID key)
ARGV[1] 'claim' or 'release'
ARGV[2] the ID key
ARGV[3] for 'claim': the ID key the index may name now and be taken from ('' for none):
        a stale entry, or a number the operator moves
Returns 'claim':   {'new'} written, {'same'} it already named this ID, {'taken', ID key} it names another
        'release': {'gone'} deleted, {'kept'} it names another ID or nothing
]]
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == 'release' then
  if cur == ARGV[2] then
    redis.call('DEL', KEYS[1])
    return { 'gone' }
  end
  return { 'kept' }
end
if cur == ARGV[2] then return { 'same' } end
if cur and cur ~= ARGV[3] then return { 'taken', cur } end
redis.call('SET', KEYS[1], ARGV[2])
return { 'new' }

--[[ ani_bind: add a caller number (ANI) to a talk ID's list, or take it off.
KEYS[1] ID hash            ts:{bN}:id:<idHash>
ARGV[1] now (ms)
ARGV[2] 'add', 'remove', or 'spend': count one change and nothing else (an owner's add of a number
        another ID has: were it free, owners could test numbers for registrations without end)
ARGV[3] ANI hash (keyed hash of the normalised number)
ARGV[4] for 'add': the number, sealed
ARGV[5] for 'add': caller numbers the ID may have (its product's maxAnis)
ARGV[6] changes (adds and removals) allowed per window; 0: no limit (the operator, a repair)
ARGV[7] the window (ms)
Returns {'ok', 'new'|'same'|'gone'|'spent', numbers listed now} or {'err', reason}.
An add of a number already listed, or a removal, changes nothing but what it says.
Fields: anis (ANI hashes, comma-separated), ani:<hash> (the sealed number),
anich (changes in the window), aniwin (when the window ends, ms).
]]
-- @include "id_fields"
-- @include "num"
local f = id_fields(KEYS[1], { 'st', 'kind', 'anis', 'anich', 'aniwin' })
if not f[1] then return { 'err', 'unknown_id' } end
local op, h = ARGV[2], ARGV[3]
local list, at = {}, nil
for x in string.gmatch(f[3] or '', '[0-9a-f]+') do
  list[#list + 1] = x
  if x == h then at = #list end
end

if op == 'add' then
  if at then return { 'ok', 'same', #list } end
  if f[2] ~= 'talk' then return { 'err', 'wrong_kind' } end
  if f[1] == 'blocked' then return { 'err', 'blocked' } end
  if f[1] ~= 'sold' and f[1] ~= 'exhausted' and f[1] ~= 'expired' then return { 'err', 'not_active' } end
  if #list >= tonumber(ARGV[5]) then return { 'err', 'too_many_anis' } end
elseif op == 'remove' and not at then
  return { 'err', 'unknown_ani' }
end

local limit, now = tonumber(ARGV[6]), tonumber(ARGV[1])
if limit > 0 then
  local n, win = tonumber(f[4]) or 0, tonumber(f[5]) or 0
  if now >= win then n, win = 0, now + tonumber(ARGV[7]) end
  if n >= limit then return { 'err', 'too_many_changes' } end
  redis.call('HSET', KEYS[1], 'anich', int(n + 1), 'aniwin', int(win))
end
if op == 'spend' then return { 'ok', 'spent', #list } end

if op == 'add' then
  list[#list + 1] = h
  redis.call('HSET', KEYS[1], 'anis', table.concat(list, ','), 'ani:' .. h, ARGV[4])
  return { 'ok', 'new', #list }
end
table.remove(list, at)
redis.call('HSET', KEYS[1], 'anis', table.concat(list, ','))
redis.call('HDEL', KEYS[1], 'ani:' .. h)
return { 'ok', 'gone', #list }

-- A ticket's latest ways in and out, newest last, in its `mvs` field, at most MOVES_KEPT of them:
-- '<record id><sign><qty>.<out before>', sign '+' an entry, '*' a re-entry, '-' an exit, and
-- <out before> how many were out (and might come back) before it. Reversing one of them replays
-- the ones after it from that count (reverse.lua): the count is what it would have been had the
-- reversed scan never been made, whatever order reverses come in. Earlier versions kept
-- '<record id>+' and '<record id>-' alone, with no count.
local MOVES_KEPT = 8

local function moves_push(list, move)
  local t = {}
  for m in string.gmatch(list or '', '[^,]+') do t[#t + 1] = m end
  t[#t + 1] = move
  while #t > MOVES_KEPT do table.remove(t, 1) end
  return table.concat(t, ',')
end

-- A movement as a table { rec, sign, qty, before }; qty and before nil for an earlier version's.
local function moves_parse(m)
  local rec, sign, q, before = string.match(m, '^(%d+%-%d+)([+*-])(%d+)%.(%d+)$')
  if rec then return { rec = rec, sign = sign, qty = tonumber(q), before = tonumber(before) } end
  rec, sign = string.match(m, '^(.+)([+-])$')
  return { rec = rec, sign = sign }
end

-- How many are out after the movements t[from..] applied to `out`, each as it was granted: an exit
-- adds its qty (never more than the entries used then), a re-entry takes its qty back, an entry
-- leaves the count to a re-entry ticket (its entries are granted with nobody out) and ends it on
-- another (as redeem.lua does). `used` is the entries used now; before a movement, those used
-- now less the entries after it. Rewrites each movement's count before it.
local function moves_replay(t, from, out, used, reent)
  local later = 0
  for j = from, #t do
    if t[j].sign == '+' then later = later + t[j].qty end
  end
  for j = from, #t do
    local mv = t[j]
    mv.before = out
    if mv.sign == '+' then
      later = later - mv.qty
      if not reent then out = 0 end
    elseif mv.sign == '*' then
      out = math.max(out - mv.qty, 0)
    else
      out = math.min(out + mv.qty, used - later)
    end
  end
  return math.min(out, used)
end

local function moves_text(t)
  local s = {}
  for j = 1, #t do
    local mv = t[j]
    s[j] = mv.qty and (mv.rec .. mv.sign .. mv.qty .. '.' .. mv.before) or (mv.rec .. mv.sign)
  end
  return table.concat(s, ',')
end

-- Undoes the movement of record `rec` in `list`, with `used` the entries used once it is undone.
-- Returns the list without it, whether it was kept, and then either how many are out now, or
-- (nil, inside) when it or one after it is an earlier version's, uncounted: the latest movement
-- still standing then says whether the holder is inside ('1' | '0'; nil: where they were, or,
-- with none left, as the reversed scan says).
local function moves_undo(list, rec, used, reent)
  local t, k, gone = {}, nil, nil
  for m in string.gmatch(list, '[^,]+') do
    local mv = moves_parse(m)
    if mv.rec == rec then k, gone = #t + 1, mv else t[#t + 1] = mv end
  end
  if not k then return list, false end
  local counted = gone.before ~= nil
  for j = k, #t do counted = counted and t[j].qty ~= nil end
  if counted then
    local out = moves_replay(t, k, gone.before, used, reent)
    return moves_text(t), true, out
  end
  if k <= #t then return moves_text(t), true end
  local last = t[#t]
  return moves_text(t), true, nil, last and (last.sign == '-' and '0' or '1')
end

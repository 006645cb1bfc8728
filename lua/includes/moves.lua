-- A ticket's latest ways in and out, newest last, in its `mvs` field: '<record id>+' for a way
-- in, '<record id>-' for a way out, at most MOVES_KEPT of them. Reversing one of them leaves the
-- holder where the last one standing put them (reverse.lua), whatever order reverses come in.
local MOVES_KEPT = 8

local function moves_push(list, move)
  local t = {}
  for m in string.gmatch(list or '', '[^,]+') do t[#t + 1] = m end
  t[#t + 1] = move
  while #t > MOVES_KEPT do table.remove(t, 1) end
  return table.concat(t, ',')
end

-- `list` without the movement of record `rec`; whether it was kept, and whether it was the latest.
local function moves_drop(list, rec)
  local t, found, latest = {}, false, false
  for m in string.gmatch(list, '[^,]+') do
    if string.sub(m, 1, -2) == rec then
      found, latest = true, true
    else
      t[#t + 1] = m
      latest = false
    end
  end
  return table.concat(t, ','), found, latest
end

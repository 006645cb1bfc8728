-- Integers go back to Redis as plain digits: Lua 5.1 would print 1e15 as "1e+15".
local function int(n)
  return string.format('%d', n)
end

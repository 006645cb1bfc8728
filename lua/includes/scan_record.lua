-- A scan's record: its first answer (for retries) and what a reversal needs, packed in one
-- string ('|' never occurs in names, scan ids or ID keys: the protocol's patterns exclude it),
-- kept under the scan key in its bucket's hash of the window it was granted in
-- (src/redemption/scan-windows.ts).
local SCAN_FIELDS = { 'id', 'item', 'qty', 'dir', 'kind', 'action', 'amount', 'left', 'rec', 'venue', 'gate',
  'idh', 'time', 'st', 'revrec', 'revleft', 'revtime' }

-- One concatenation, no table: this runs for every granted scan.
local function scan_pack(id, item, qty, dir, kind, action, amount, left, rec, venue, gate, idh, time, st, revrec, revleft, revtime)
  return id .. '|' .. item .. '|' .. qty .. '|' .. dir .. '|' .. kind .. '|' .. action .. '|' .. amount .. '|' .. left .. '|'
    .. rec .. '|' .. venue .. '|' .. gate .. '|' .. idh .. '|' .. time .. '|' .. st .. '|' .. (revrec or '') .. '|'
    .. (revleft or '') .. '|' .. (revtime or '')
end

local function scan_unpack(s)
  if not s then return nil end
  local r, i = {}, 1
  for v in string.gmatch(s .. '|', '([^|]*)|') do
    r[SCAN_FIELDS[i]] = v
    i = i + 1
  end
  return r
end

-- Reads a scan's record kept in a key of its own, as earlier versions did. Records written before
-- they were packed are hashes: still read, so a retry or reversal across an upgrade is answered,
-- not redeemed again.
local function scan_read(key)
  local s = redis.pcall('GET', key)
  if type(s) ~= 'table' or not s.err then return scan_unpack(s) end
  local flat, r = redis.call('HGETALL', key), {}
  for i = 1, #flat, 2 do r[flat[i]] = flat[i + 1] end
  return r
end

-- A scan key's value in the first of the window hashes `places` that holds it, and that hash
-- (claims and records alike: src/redemption/scan-windows.ts).
local function window_get(places, field)
  for k = 1, #places do
    local v = redis.call('HGET', places[k], field)
    if v then return v, places[k] end
  end
end

-- Finds a scan's record in the window hashes `places`, then (legacy: a key, or nil once no such
-- key can be left) in the key of its own an earlier version kept it in. Returns the record and
-- the key it is in.
local function scan_find(places, field, legacy)
  local s, where = window_get(places, field)
  if s then return scan_unpack(s), where end
  if legacy then return scan_read(legacy), legacy end
end

-- Gives a window's hash its expiry, or a later one: never an earlier one. Gateways agree on the
-- windows, but one configured with a longer SCAN_TTL_SEC (during a change of it) keeps its
-- scans as long as it says. PEXPIRETIME is -1 for a hash with no expiry yet.
local function scan_window_expire(key, at)
  if redis.call('PEXPIRETIME', key) < tonumber(at) then redis.call('PEXPIREAT', key, at) end
end

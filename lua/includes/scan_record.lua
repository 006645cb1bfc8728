-- A scan's record: its first answer (for retries) and what a reversal needs, packed in one
-- string ('|' never occurs in names, scan ids or ID keys: the protocol's patterns exclude it).
-- One string key with a TTL is the cheapest record Redis keeps: one SET, one GET.
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

-- Reads a scan's record. Records written before they were packed are hashes: still read, so a
-- retry or reversal across an upgrade is answered, not redeemed again.
local function scan_read(key)
  local s = redis.pcall('GET', key)
  if type(s) ~= 'table' or not s.err then return scan_unpack(s) end
  local flat, r = redis.call('HGETALL', key), {}
  for i = 1, #flat, 2 do r[flat[i]] = flat[i + 1] end
  return r
end

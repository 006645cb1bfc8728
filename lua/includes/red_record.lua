-- A redemption or reversal record: one stream field holding the values in a fixed order
-- (src/redemption/record.ts names them). A stream entry costs Redis per field: fourteen
-- fields took a third of a redemption's script time, one takes a tenth.
-- '|' occurs in none but the last, the reversal's free-text reason.
local RED_FIELD = 'r'

local function red_pack(typ, scan, scanner, idh, kind, action, venue, gate, item, qty, amount, before, after, time, reason)
  return typ .. '|' .. scan .. '|' .. scanner .. '|' .. idh .. '|' .. kind .. '|' .. action .. '|' .. venue .. '|'
    .. gate .. '|' .. item .. '|' .. qty .. '|' .. amount .. '|' .. before .. '|' .. after .. '|' .. time .. '|' .. reason
end

-- A redemption or reversal record: one stream field holding the values in a fixed order
-- (src/redemption/record.ts names them). A stream entry costs Redis per field: fourteen
-- fields were 56,000 of a scan's 198,000 instructions, one is 24,000 (callgrind).
-- '|' occurs in none but the last, the reversal's free-text reason.
local RED_FIELD = 'r'
-- An offline scan's record has a second field: when the scan was made, by the scanner's clock (ms).
-- Only those pay for it; `time` stays when the record was written.
local RED_AT = 'at'

local function red_pack(typ, scan, scanner, idh, kind, action, venue, gate, item, qty, amount, before, after, time, reason)
  return typ .. '|' .. scan .. '|' .. scanner .. '|' .. idh .. '|' .. kind .. '|' .. action .. '|' .. venue .. '|'
    .. gate .. '|' .. item .. '|' .. qty .. '|' .. amount .. '|' .. before .. '|' .. after .. '|' .. time .. '|' .. reason
end

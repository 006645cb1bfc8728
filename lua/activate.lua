--[[ activate: sell an ID from inventory, loading its face value, and record the sale.
KEYS[1] ID hash            ts:{bN}:id:<idHash>
KEYS[2] inventory set      ts:{bN}:inv:<product>
KEYS[3] sale records       ts:{bN}:sales (stream)
KEYS[4] reservations zset  ts:{bN}:resv
KEYS[5] hold owners hash   ts:{bN}:resvby
ARGV[1] now (ms)
ARGV[2] product the caller expects the ID to belong to
ARGV[3] channel (e.g. 'manual', 'web')
ARGV[4] price paid (micro-units)
ARGV[5] reference (operator name, payment reference)
Returns {'ok', balance, recordId} or {'err', reason}: unknown_id, wrong_product, blocked (unsold and
blocked), already_active.
]]
-- @include "id_fields"
local f = id_fields(KEYS[1], { 'st', 'prod', 'face', 'cur', 'prev' })
if not f[1] then return { 'err', 'unknown_id' } end
if f[2] ~= ARGV[2] then return { 'err', 'wrong_product' } end
-- Unsold but blocked (a stolen batch): not sold already, and not to be sold until unblocked.
if f[1] == 'blocked' and f[5] == 'minted' then return { 'err', 'blocked' } end
if f[1] ~= 'minted' then return { 'err', 'already_active' } end
local idh = string.match(KEYS[1], 'id:(.+)$')
redis.call('SREM', KEYS[2], idh)
-- A purchase's hold on it goes too: its purchase takes another ID, and when the hold would have run
-- out the sweep must not put a sold ID back on sale.
redis.call('ZREM', KEYS[4], idh)
redis.call('HDEL', KEYS[5], idh)
local rec = redis.call('XADD', KEYS[3], '*', 'id', idh, 'product', f[2], 'face', f[3], 'currency', f[4],
  'price', ARGV[4], 'channel', ARGV[3], 'ref', ARGV[5], 'time', ARGV[1])
-- `sref` keeps the sale's reference for its refund record, which must name it even once `archive` has
-- trimmed the sale record.
redis.call('HSET', KEYS[1], 'st', 'sold', 'bal', f[3], 'sold', ARGV[1], 'srec', rec, 'sref', ARGV[5])
return { 'ok', tonumber(f[3]), rec }

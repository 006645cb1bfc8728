--[[ set_state: block an ID (fraud, refund, loss) or lift the block.
KEYS[1] ID hash              ts:{bN}:id:<idHash>
KEYS[2] inventory set        ts:{bN}:inv:<product>   (the ID's own product)
KEYS[3] reservations zset    ts:{bN}:resv
KEYS[4] hold owners hash     ts:{bN}:resvby
ARGV[1] 'block' or 'unblock'
ARGV[2] reason (kept on the ID)
ARGV[3] now (ms)
Returns {'ok', newState} or {'err', reason}. A block keeps the balance untouched;
live calls are not cut here but their next start is refused. A refunded ID's block is for good
(refunded): its value went back to the buyer, and lifting it would sell it again for nothing.
An unsold ID leaves the inventory (and any purchase's hold) while blocked, so no buyer pays for an
ID that cannot be sold (a purchase holding it takes another); unblocked, it is back on sale.
]]
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return { 'err', 'unknown_id' } end
local idh = string.match(KEYS[1], 'id:(.+)$')
if ARGV[1] == 'block' then
  if st ~= 'blocked' then
    redis.call('HSET', KEYS[1], 'st', 'blocked', 'prev', st, 'why', ARGV[2], 'blk', ARGV[3])
    if st == 'minted' then
      redis.call('SREM', KEYS[2], idh)
      redis.call('ZREM', KEYS[3], idh)
      redis.call('HDEL', KEYS[4], idh)
    end
  end
  return { 'ok', 'blocked' }
end
if st ~= 'blocked' then return { 'err', 'not_blocked' } end
if redis.call('HEXISTS', KEYS[1], 'refrec') == 1 then return { 'err', 'refunded' } end
local prev = redis.call('HGET', KEYS[1], 'prev')
redis.call('HSET', KEYS[1], 'st', prev)
redis.call('HDEL', KEYS[1], 'prev', 'why', 'blk')
if prev == 'minted' then redis.call('SADD', KEYS[2], idh) end
return { 'ok', prev }

--[[ call_quote: what a call on a talk ID to a destination would cost, and how long
its balance lasts there, without starting one. Read-only: it writes nothing, not
even an expiry it finds due (call_start does that at the next start).
KEYS[1] ID hash            ts:{bN}:id:<idHash>
ARGV[1] now (ms)
ARGV[2..] triples: rate plan name, rate (micro-units/s), connection fee (micro-units):
          the destination's rate in every plan that has one; the ID's plan picks.
Returns {'ok', maxSec, balance, rate, fee, currency} or {'err', reason}.
maxSec is what call_start would grant now: floor((balance - fee) / rate), or 0
when the balance does not buy one second (an exhausted ID included).
]]
-- @include "rate_of"
local f = redis.call('HMGET', KEYS[1], 'st', 'kind', 'bal', 'plan', 'exp', 'cur')
local st = f[1]
if not st then return { 'err', 'unknown_id' } end
if st == 'blocked' or st == 'expired' then return { 'err', st } end
if st ~= 'sold' and st ~= 'exhausted' then return { 'err', 'not_active' } end
if f[2] ~= 'talk' then return { 'err', 'wrong_kind' } end
local exp = tonumber(f[5]) or 0
if exp > 0 and tonumber(ARGV[1]) >= exp then return { 'err', 'expired' } end

local rate, fee = rate_of(f[4], 2)
if not rate then return { 'err', 'no_rate' } end

local bal = tonumber(f[3]) or 0
local maxs = 0
if bal > 0 then maxs = math.max(0, math.floor((bal - fee) / rate)) end
return { 'ok', maxs, bal, rate, fee, f[6] or '' }

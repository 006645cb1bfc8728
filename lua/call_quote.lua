--[[ call_quote: what a call on a talk ID to a destination would cost, and how long
its balance lasts there, without starting one. Read-only: it writes nothing, not
even an expiry it finds due (call_start does that at the next start).
KEYS[1] ID hash            ts:{bN}:id:<idHash>
ARGV[1] now (ms): the rate in force; the expiry is judged by Redis' clock (includes/clock.lua)
ARGV[2..] pairs: rate plan name, tariff descriptor (includes/tariff.lua): the destination's
          tariff in every plan that has one; the ID's plan picks.
Returns {'ok', maxSec, balance, rate, fee, currency, per} or {'err', reason}.
maxSec is what call_start would answer now: the seconds what is free of the balance
(not held by the ID's live calls) buys at the tariff, or 0 when it buys none (an
exhausted ID included). rate is the rate in force now: micro-units per `per` seconds.
]]
-- @include "id_fields"
-- @include "rate_of"
-- @include "tariff"
-- @include "free"
-- @include "clock"
-- @flags no-writes
local f = id_fields(KEYS[1], { 'st', 'kind', 'bal', 'plan', 'exp', 'cur', 'free' })
local st = f[1]
if not st then return { 'err', 'unknown_id' } end
if st == 'blocked' or st == 'expired' then return { 'err', st } end
if st ~= 'sold' and st ~= 'exhausted' then return { 'err', 'not_active' } end
if f[2] ~= 'talk' then return { 'err', 'wrong_kind' } end
local exp = tonumber(f[5]) or 0
-- By Redis' clock, as call_start judges it.
if exp > 0 and redis_ms() >= exp then return { 'err', 'expired' } end

local desc = rate_of(ARGV, f[4], 2)
if not desc then return { 'err', 'no_rate' } end

local now = tonumber(ARGV[1])
local t = tariff_parse(desc)
local bal = tonumber(f[3]) or 0
local free = free_of(bal, f[7]) - t.disc
local maxs = 0
if free > 0 then maxs = tariff_afford(t, now, 0, free) end
local rate, per = tariff_rate(t, now, 0)
return { 'ok', maxs, bal, rate, t.fee, f[6] or '', per }

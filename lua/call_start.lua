--[[ call_start: admit calls on talk IDs of one bucket, reserve each its first grant and open its session.
KEYS[1]      live calls zset    ts:{bN}:live
KEYS[3i-1]   ID hash            ts:{bN}:id:<idHash>            (i = 1..n)
KEYS[3i]     call session hash  ts:{bN}:call:<switch>:<call>
KEYS[3i+1]   the calls by ID    ts:{bN}:ic:<idHash>:<call> (includes/id_calls.lua): its session key
             is added, so that a stop of the call under another token name finds it (call_recover)
ARGV[1]      now (ms): when the gateway sent the starts (the call's start, its rates, a first use); the
             expiry is judged by Redis' clock (includes/clock.lua)
ARGV[2]      ring grace (ms): an unanswered call counts as stale this much later than an answered one
             (its place in the live set is scored by Redis' clock, includes/clock.lua)
ARGV[3]      TTL (s) of KEYS[3i+1]: past the call's longest life and its closed session's TTL
then, for each call i in order, a count k of the call's own arguments and those k arguments:
  1 dialled destination (digits)
  2 switch name
  3 call id (as the switch sent it)
  4 ID hash (for the call record)
  5 mode: 'tick' (the switch reports every second) or 'quota' (it reports when it asks again)
  6 ANI hash when the switch started the call by caller number (the gateway found the ID by
    it), else '': the ID must still list that number, or the call is refused unknown_ani
  7.. pairs: rate plan name, tariff descriptor (includes/tariff.lua): the destination's
      tariff in every plan that has one; the ID's plan picks.
Returns one answer per call, in order: {'ok', maxSec, balance, rate, fee, duplicate(0|1), grant,
final(0|1), finalAction, onFailure, failureSec, validitySec, per}, {'err', reason}, or {'failed', error}
when the script failed on that call (a damaged hash; the other calls went on).
rate is micro-units per `per` seconds (1 but for a price per minute or so, includes/tariff.lua).
maxSec is how long the call could last on all that is free of the ID's balance; grant is
how far its reservation carries it. A repeated start of a live call returns the first
answer (with the grant as it is now) and changes nothing; a start repeated within one batch
is applied in order, so it answers as a repeat. A start sent (`now`) no later than a call of
the ID, call id and destination recovered from its stop under another token name was
answered (give or take ID_CALL_SKEW_MS) is that call's, landing late: call_ended.
]]
-- @reply msgpack
-- @include "id_fields"
-- @include "num"
-- @include "rate_of"
-- @include "terms"
-- @include "charge"
-- @include "id_calls"
-- @include "id_live"
-- @include "clock"
local now = tonumber(ARGV[1])
local ringGrace = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local redis_now = redis_clock()
-- How often a refusal may count an ID's calls again (ms).
local ACT_RECOUNT_MS = 60000

-- Before a refusal the ID's count (`act`) or hold may cause (concurrent_limit, insufficient_balance),
-- its calls themselves are counted. A lost session leaves its count and its hold behind for good (no
-- stop or reap gives them back): they are put right here, in the ID and in `f` (its fields as read).
-- The count reads every call of the bucket, so an ID gets it at most once a minute (`actchk`, by
-- Redis' clock): a switch retrying a busy ID's calls must not make each refusal that dear.
-- Returns the count, as it stands when it is not counted.
local function recount(ikey, bal, act, f)
  local checked = tonumber(redis.call('HGET', ikey, 'actchk')) or 0
  if redis_now() - checked < ACT_RECOUNT_MS then return act end
  local n, held = id_live(KEYS[1], ikey)
  redis.call('HSET', ikey, 'actchk', int(redis_now()))
  if n ~= act then
    f[10] = int(math.max(0, bal - held))
    redis.call('HSET', ikey, 'act', int(n), 'free', f[10])
  end
  return n
end

-- One call's start: ikey, skey its keys; its arguments are ARGV[a..last] (see above).
local function start(ikey, skey, ickey, a, last)
  local dest, sw, call, idh, mode, ani = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local s = redis.call('HMGET', skey, 'st', 'idh', 'dest', 'maxs', 'bal0', 'trm', 'gnt', 'fin', 'fa', 'fail', 'start')
  if s[1] then
    if s[2] ~= idh or s[3] ~= dest then return { 'err', 'call_conflict' } end
    if s[1] ~= 'live' then return { 'err', 'call_ended' } end
    local terms = terms_of(s[6])
    -- Another mode is another call: its first `started` would not answer it.
    if (terms.val > 0) ~= (mode == 'quota') then return { 'err', 'call_conflict' } end
    local t = terms.t
    local fail, fsec = string.match(s[10], '^(%a+):(%d+)$')
    -- The rate as admission answered it: in force at the start, not now (a rate change since is no news).
    local rate, per = tariff_rate(t, tonumber(s[11]), 0)
    return { 'ok', tonumber(s[4]), tonumber(s[5]), rate, t.fee, 1, tonumber(s[7]),
      s[8] == '1' and 1 or 0, s[9], fail, tonumber(fsec), terms.val, per }
  end
  -- This call recovered from its stop under another token name (includes/id_calls.lua) when that
  -- stop says it was answered no earlier than this start was sent: the call's own start, held
  -- back (a failover, on a connection since revoked) and landing after its stop. Refused as a
  -- start after its stop under the same name is: opened again, it would hold the ID till reaped.
  local ic = redis.call('GET', ickey)
  if ic then
    for k in string.gmatch(ic, '%S+') do
      local o = redis.call('HMGET', k, 'id', 'dest', 'cause', 'start')
      if o[1] == ikey and o[2] == dest and o[3] == 'recovered' and now <= tonumber(o[4]) + ID_CALL_SKEW_MS then
        return { 'err', 'call_ended' }
      end
    end
  end
  -- Caller-number login: a number moved or removed since the gateway read its index bills nobody.
  if ani ~= '' and redis.call('HEXISTS', ikey, 'ani:' .. ani) == 0 then return { 'err', 'unknown_ani' } end

  local f = id_fields(ikey, { 'st', 'kind', 'bal', 'plan', 'maxc', 'act', 'exp', 'expd', 'thr', 'free', 'cc' })
  local st = f[1]
  if not st then return { 'err', 'unknown_id' } end
  if st == 'blocked' or st == 'exhausted' or st == 'expired' then return { 'err', st } end
  if st ~= 'sold' then return { 'err', 'not_active' } end
  if f[2] ~= 'talk' then return { 'err', 'wrong_kind' } end
  local exp = tonumber(f[7]) or 0
  -- Past its expiry by Redis' clock, as lua/expire.lua forfeits by it: a gateway whose clock runs
  -- behind must not admit a call on an ID Redis counts expired, nor one running ahead refuse (and
  -- mark expired, for every gateway) an ID still valid.
  if exp > 0 and redis_now() >= exp then
    redis.call('HSET', ikey, 'st', 'expired')
    return { 'err', 'expired' }
  end
  local bal = tonumber(f[3])
  if bal <= 0 then return { 'err', 'exhausted' } end

  local desc = rate_of(ARGV, f[4], a + 6, last)
  if not desc then return { 'err', 'no_rate' } end
  local maxc = tonumber(f[5]) or 1
  local act = tonumber(f[6]) or 0
  if act >= maxc then
    act = recount(ikey, bal, act, f)
    if act >= maxc then return { 'err', 'concurrent_limit' } end
  end

  -- What the other live calls hold is not free: a call is admitted only if what is
  -- free pays its first charged block (and the disconnect charge).
  local t = tariff_parse(desc)
  if not t then return { 'err', 'no_rate' } end
  local avail = free_of(bal, f[10])
  local first = tariff_cost(t, now, tariff_charged(t, 1)) + t.disc
  -- Short while calls are counted: a lost one's hold, under the limit, would refuse every call
  -- of the ID this way until it expired, balance and all.
  if avail < first and act > 0 then
    act = recount(ikey, bal, act, f)
    avail = free_of(bal, f[10])
  end
  if avail < first then return { 'err', 'insufficient_balance' } end
  local maxs = tariff_afford(t, now, 0, avail - t.disc)

  local cc = credit_terms(f[11], maxc)
  local res = wanted(t, now, 0, 0, 0, avail, cc.gs)
  local gnt, final = grant_of(t, now, 0, res, avail - res)
  local fa = cc.fa
  local fail = cc.fail .. ':' .. cc.fsec
  -- A quota-mode switch reports only when it asks again: the reaper allows for the validity time.
  local val = 0
  if mode == 'quota' then val = cc.val end

  -- Thresholds already behind us at admission are not announced: maxSec says it all.
  local thr = {}
  for th in string.gmatch(f[9] or '', '%d+') do
    if tonumber(th) < maxs then thr[#thr + 1] = th end
  end

  -- What every tick reads comes first (read_session in includes/charge.lua).
  redis.call('HSET', skey,
    'st', 'live', 'id', ikey, 'used', '0', 'trm', terms_field(cc.gs, val, desc),
    'thr', table.concat(thr, ','), 'cut', '', 'ans', '', 'cov', int(res), 'gnt', int(gnt), 'fin', final and '1' or '0',
    'short', '0', 'start', int(now), 'fa', fa, 'fail', fail,
    'sw', sw, 'call', call, 'idh', idh, 'dest', dest, 'maxs', int(maxs), 'bal0', int(bal))
  redis.call('HINCRBY', ikey, 'act', 1)
  redis.call('HSET', ikey, 'free', int(avail - res))
  id_calls_add(ickey, skey, keep, ic)
  -- Expiry counts from first use.
  local expd = tonumber(f[8]) or 0
  if exp == 0 and expd > 0 then
    redis.call('HSET', ikey, 'exp', int(now + expd * 86400000), 'first', int(now))
  end
  -- Until its first tick a call may ring: the reaper gives it the ring grace on top.
  redis.call('ZADD', KEYS[1], int(redis_now() + ringGrace + val * 1000), skey)
  local rate, per = tariff_rate(t, now, 0)
  return { 'ok', maxs, bal, rate, t.fee, 0, gnt, final and 1 or 0, fa, cc.fail, cc.fsec, cc.val, per }
end

local out = {}
local a = 4
for i = 1, (#KEYS - 1) / 3 do
  local last = a + tonumber(ARGV[a])
  -- One call's failure (a damaged hash) is that call's alone, not its batch's.
  local ok, r = pcall(start, KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1], a + 1, last)
  if ok then out[i] = r else out[i] = { 'failed', tostring(type(r) == 'table' and r.err or r) } end
  a = last + 1
end
return out

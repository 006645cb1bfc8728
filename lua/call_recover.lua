--[[ call_recover: bill and close a call from its stop when its session is gone (lost in a failover).
KEYS[1] call session hash  ts:{bN}:call:<switch>:<call>
KEYS[2] ID hash            ts:{bN}:id:<idHash>
KEYS[3] live calls zset    ts:{bN}:live
KEYS[4] call records       ts:{bN}:cdr (stream)
KEYS[5] balance events     ts:{bN}:ev (stream): thresholds fired and exhaustion, for the webhooks
KEYS[6] the calls by ID    ts:{bN}:ic:<idHash>:<call>: the sessions of the ID's calls of this call id,
        whatever token name started them (call_start) or recovered them (here) (includes/id_calls.lua)
ARGV[1] now (ms)
ARGV[2] seconds since answer, as the switch reports them
ARGV[3] stop cause (used when the session turns out to be there after all)
ARGV[4] TTL (s) of the closed session, which answers repeated stops
ARGV[5] switch name
ARGV[6] call id (as the switch sent it)
ARGV[7] ID hash (for the call record)
ARGV[8] dialled destination (digits)
ARGV[9]  ANI hash when the stop named the caller number instead of the ID, else '': the ID must
         still list that number, or the stop is refused unknown_ani (as call_start does)
ARGV[10] TTL (s) of another name's live call this stop closes (below): at least as long as a call may
         last, as the reaper keeps what it closes, for its switch may talk on, unaware, and its own stop
         must find it to bill only the seconds past this one (a `late` record), not all of them again
ARGV[11..] pairs: rate plan name, tariff descriptor (includes/tariff.lua): the destination's
          tariff in every plan that has one; the ID's plan picks.
Returns {'ok', billedSec, cost, balance, recordId, duplicate(0|1), short (the new record's; 0 for a
repeat)} or {'err', reason}: call_conflict when the session is there after all (a stop of the
call that missed it) with another ID or destination than the stop names, as call_stop refuses it.
The call is rated from the stop: the destination's tariff in the ID's plan for the
seconds reported. What is free of the balance pays; the rest is kept as `short`; the
record's cause is `recovered`. The closed session answers repeated stops.
A stop under another token name than the call's start (a switch back under a new
name after its token was revoked) finds the call by its ID and call id (KEYS[6]):
a call of them whose destination agrees and that started no later than the stop says
it was answered (the latest started, if several do) is that call, stopped as its own
stop would (live), or as a stop after the reaper's (closed): billed once, never again
as a lost call. A lost call is listed there too, so its stop resent under any other
name is a repeat. A call listed there as closed whose session has gone since (its
SESSION_TTL_SEC over; the list keeps it longer, includes/id_calls.lua) may be the one
this stop names, resent: nothing tells, so nothing is billed (unknown_call).
]]
-- @include "id_fields"
-- @include "num"
-- @include "rate_of"
-- @include "charge"
-- @include "close"
-- @include "late"
-- @include "id_calls"
local now = tonumber(ARGV[1])
local sec = tonumber(ARGV[2])
local s = read_session(KEYS[1])
if s[S_ST] then
  -- Another ID or destination is another call, as call_stop refuses it: a stop that missed the
  -- session (a stop of the same call resent in the same frame, recovered just before) is no repeat.
  if s[S_ID] ~= KEYS[2] or redis.call('HGET', KEYS[1], 'dest') ~= ARGV[8] then return { 'err', 'call_conflict' } end
  if s[S_ST] == 'closed' then return late_stop(s, KEYS[1], KEYS[2], KEYS[4], now, sec, KEYS[5]) end
  -- The session is there after all: an ordinary stop.
  return stop_live(s, KEYS[1], KEYS[2], KEYS[3], KEYS[4], now, sec, ARGV[3], tonumber(ARGV[4]), KEYS[5], KEYS[6])
end

local ttl = tonumber(ARGV[4])
-- A call id reused under another name is another call, started after this one was answered:
-- of the calls that fit, the latest started is the one this stop names.
local other, otherStart, forgotten
for k in string.gmatch(redis.call('GET', KEYS[6]) or '', '%S+') do
  local closed = id_call_closed_of(k)
  if closed then
    -- Closed, billed, and its session gone since (SESSION_TTL_SEC): this stop may be its repeat.
    if redis.call('EXISTS', closed) == 0 then forgotten = true end
  elseif k ~= KEYS[1] then
    local m = redis.call('HMGET', k, 'id', 'dest', 'start')
    local st = tonumber(m[3])
    if m[1] == KEYS[2] and m[2] == ARGV[8] and st and st <= now - sec * 1000 + ID_CALL_SKEW_MS
      and not (other and otherStart >= st) then
      other, otherStart = k, st
    end
  end
end
-- Nothing tells that call from this one: billed again, it might be billed twice. Not billed.
if forgotten and not other then return { 'err', 'unknown_call' } end
if other then
  local o = read_session(other)
  local r
  local live = o[S_ST] == 'live'
  if live then
    r = stop_live(o, other, KEYS[2], KEYS[3], KEYS[4], now, sec, ARGV[3], math.max(ttl, tonumber(ARGV[10])), KEYS[5],
      KEYS[6])
  else
    r = late_stop(o, other, KEYS[2], KEYS[4], now, sec, KEYS[5], true)
  end
  -- This name's session answers its repeats as the call's own does: a copy, marked as one that
  -- already had the switch's stop, so a repeat never bills (late.lua). Not the mark of a call
  -- stopped under another name: this name stopped it, its ticks are not told to hang up.
  local all, copy = redis.call('HGETALL', other), {}
  for i = 1, #all, 2 do
    if all[i] ~= 'stopby' then copy[#copy + 1], copy[#copy + 2] = all[i], all[i + 1] end
  end
  copy[#copy + 1], copy[#copy + 2] = 'swstop', '1'
  redis.call('HSET', KEYS[1], unpack(copy))
  redis.call('EXPIRE', KEYS[1], ttl)
  -- Stopped live under another name: the switch that started it may still be talking, unaware.
  -- Its next tick is told to hang up (call_tick), or the call would run on unmetered.
  if live then redis.call('HSET', other, 'stopby', ARGV[5]) end
  return r
end

local f = id_fields(KEYS[2], { 'st', 'kind', 'bal', 'plan', 'exp', 'expd', 'sold' })
if not f[1] then return { 'err', 'unknown_id' } end
-- The call was admitted once, so the ID was sold then: whatever happened to it since, the call is billed.
if f[1] ~= 'sold' and f[1] ~= 'exhausted' and f[1] ~= 'blocked' and f[1] ~= 'expired' then
  return { 'err', 'not_active' }
end
if f[2] ~= 'talk' then return { 'err', 'wrong_kind' } end
if ARGV[9] ~= '' and redis.call('HEXISTS', KEYS[2], 'ani:' .. ARGV[9]) == 0 then return { 'err', 'unknown_ani' } end
local desc = rate_of(ARGV, f[4], 11)
if not desc then return { 'err', 'no_rate' } end

-- The session call_start would have written, answered `sec` seconds ago, holding
-- nothing: what is free pays. close() frees the slot it takes.
local start = now - sec * 1000
redis.call('HSET', KEYS[1],
  'st', 'live', 'id', KEYS[2], 'used', '0', 'trm', terms_field(1, 0, desc), 'thr', '', 'cut', '',
  'ans', '', 'cov', '0', 'gnt', '0', 'fin', '1', 'short', '0', 'start', int(start),
  'fa', 'terminate', 'fail', 'terminate:0',
  'sw', ARGV[5], 'call', ARGV[6], 'idh', ARGV[7], 'dest', ARGV[8], 'maxs', '0', 'bal0', int(tonumber(f[3]) or 0))
redis.call('HINCRBY', KEYS[2], 'act', 1)
-- Found by call id as a started call is: this stop, resent under yet another name (its answer
-- lost with the connection), is a repeat.
id_calls_add(KEYS[6], KEYS[1], ttl)
-- Expiry counts from first use, as call_start counts it: this call was the use. A stop
-- reporting more seconds than the ID has been sold for never moves the use before the sale.
local expd = tonumber(f[6]) or 0
if (tonumber(f[5]) or 0) == 0 and expd > 0 then
  local first = math.max(start, tonumber(f[7]) or 0)
  redis.call('HSET', KEYS[2], 'exp', int(first + expd * 86400000), 'first', int(first))
end
local upd = {}
charge(read_session(KEYS[1]), KEYS[1], KEYS[2], sec, now, upd, KEYS[5])
if #upd > 0 then redis.call('HSET', KEYS[1], unpack(upd)) end
return close(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now, 'recovered', tonumber(ARGV[4]), KEYS[5], KEYS[6])

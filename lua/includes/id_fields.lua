-- An ID's fields by name, its product's terms among them, in the order asked (false where absent).
-- The terms are kept once per product version and bucket (ts:{bN}:pt:<version>, written by
-- mint.lua; the ID names its version in `pt`), not copied into every ID. A version's terms never
-- change (the version is a digest of them), so each is read once per Redis process and kept
-- for every later call. A term the ID's own hash holds wins: an ID minted before the terms
-- moved out (no `pt`) keeps them all there, and an operator may set one for one ID.
-- ID_TERMS is src/catalog/terms.ts's TERM_FIELDS.
local ID_TERMS = { kind = true, cur = true, expd = true, face = true, plan = true, thr = true, maxc = true, cc = true,
  venues = true, gates = true, from = true, ['until'] = true, reent = true, svc = true, into = true }
local terms_by_version, versions_kept = {}, 0
local function product_terms(ikey, pt)
  local t = terms_by_version[pt]
  if t then return t end
  local key = string.match(ikey, '^(.*}:)') .. 'pt:' .. pt
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then error('product terms ' .. key .. ' missing for ' .. ikey) end
  t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  if versions_kept >= 1000 then terms_by_version, versions_kept = {}, 0 end
  terms_by_version[pt], versions_kept = t, versions_kept + 1
  return t
end

local function id_fields(ikey, names)
  local v = redis.call('HMGET', ikey, 'pt', unpack(names))
  local pt, out, t = v[1], {}, nil
  for i = 1, #names do
    local n = names[i]
    if pt and ID_TERMS[n] and not v[i + 1] then
      t = t or product_terms(ikey, pt)
      out[i] = t[n] or false
    else
      out[i] = v[i + 1]
    end
  end
  return out
end

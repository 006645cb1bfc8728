-- A talk ID's credit-control terms, packed by the catalog into one ID-hash field
-- `cc`: "<grant slice s>|<final action>|<on failure>:<seconds>|<quota validity s>".
-- The grant slice 0 reserves all that is free; an ID minted before the field
-- existed gets today's defaults: all of the balance when it has one call at a
-- time, else 60 s; terminate at zero; terminate on failure; 600 s validity.
local function credit_terms(cc, maxc)
  local gs, fa, fail, fsec, val = string.match(cc or '', '^(%d+)|([^|]*)|(%a+):(%d+)|(%d+)$')
  if not gs then
    gs = 60
    if maxc <= 1 then gs = 0 end
    return { gs = gs, fa = 'terminate', fail = 'terminate', fsec = 0, val = 600 }
  end
  return { gs = tonumber(gs), fa = fa, fail = fail, fsec = tonumber(fsec), val = tonumber(val) }
end

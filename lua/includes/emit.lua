-- emit(stream, fields) appends one balance event to its bucket's events stream
-- (ts:{bN}:ev) and returns its entry id. `fields` is a flat list of field and
-- value: type, idh, prod, at, bal and the type's own (docs/operations.md,
-- Webhooks). The stream is never trimmed here: an event stays until the
-- webhook delivery has delivered (or parked) it and deletes it.
local function emit(stream, fields)
  return redis.call('XADD', stream, '*', unpack(fields))
end

-- Appends a balance event to its bucket's stream (ts:{bN}:ev), in the script call that caused it,
-- so the event exists exactly when its change does. `fields` is a flat list of name, value pairs
-- (type, idh, prod, at, bal and the type's own fields). No MAXLEN: an event is never trimmed
-- before it is delivered; the delivery worker deletes what receivers acknowledged.
local function emit(stream, fields)
  return redis.call('XADD', stream, '*', unpack(fields))
end

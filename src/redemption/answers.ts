/**
 * How an answer looks on the wire (WebSocket and HTTP alike): what was granted,
 * named for the kind, or the refusal with what a gate screen needs to show.
 */
import { messageOf } from '../protocol/reasons';
import type { Answer } from './service';

const LEFT_FIELD: Record<string, string> = { entry: 'entriesLeft', goods: 'valueLeft', service: 'usesLeft' };

export function granted(a: Extract<Answer, { ok: true }>, item?: string): Record<string, unknown> {
  return grantedInto({}, a, item);
}

/** The granted fields added to `out` (a reply already holding op, ref and scan). */
export function grantedInto(
  out: Record<string, unknown>,
  a: Extract<Answer, { ok: true }>,
  item?: string,
): Record<string, unknown> {
  out.kind = a.kind;
  out.action = a.action;
  out.amount = a.amount;
  out[LEFT_FIELD[a.kind] ?? 'left'] = a.left;
  if (item) out.item = item;
  if (a.duplicate) out.duplicate = true;
  if (a.reversed) out.reversed = true;
  return out;
}

export function refusal(a: Extract<Answer, { ok: false }>): Record<string, unknown> {
  const { ok: _ok, reason, ...details } = a;
  return { reason, message: messageOf(reason), ...details };
}

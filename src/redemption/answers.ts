import type { Answer } from './service';

/**
 * How an answer looks on the wire (WebSocket and HTTP alike): what was granted,
 * named for the kind, or the refusal with what a gate screen needs to show.
 */
const LEFT_FIELD: Record<string, string> = { entry: 'entriesLeft', goods: 'valueLeft', service: 'usesLeft' };

const MESSAGES: Record<string, string> = {
  unknown_id: 'no such ID',
  bad_checksum: 'the ID is mistyped (check digit)',
  bad_format: 'not an ID number',
  not_active: 'the ID has not been sold',
  blocked: 'the ID is blocked',
  expired: 'the ID has expired',
  not_yet_valid: 'not valid yet',
  wrong_venue: 'not valid at this venue',
  wrong_gate: 'not valid at this gate',
  already_redeemed: 'already used',
  insufficient_value: 'not enough value left',
  unknown_item: 'this item is not sold here',
  wrong_kind: 'this ID is not for this use',
  scan_conflict: 'this scan id was used for another ID or item',
  unknown_scan: 'no redemption with this scan id',
  throttled: 'too many unknown IDs; wait',
  no_venue: 'this scanner token has no venue',
  bad_value: 'bad quantity or price',
};

export function granted(a: Extract<Answer, { ok: true }>, item?: string): Record<string, unknown> {
  return grantedInto({}, a, item);
}

/** The granted fields added to `out` (a reply already holding op, ref and scan). */
export function grantedInto(out: Record<string, unknown>, a: Extract<Answer, { ok: true }>, item?: string): Record<string, unknown> {
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
  return { reason, message: MESSAGES[reason] ?? reason.replace(/_/g, ' '), ...details };
}

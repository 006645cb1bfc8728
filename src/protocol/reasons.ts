/**
 * Every refusal reason Tessera gives, once: the HTTP status it is answered with
 * and the message a client gets when the refusal carries none of its own.
 * WebSocket errors carry the same reasons (their status is not sent). Domains
 * return reasons; only the HTTP layer turns them into statuses, from here.
 * Integrators' tables of what each reason means and what to do about it are in
 * docs/protocol.md, docs/scanners.md and docs/sales.md.
 */
export interface ReasonInfo {
  status: number;
  message: string;
}

const reason = (status: number, message: string): ReasonInfo => ({ status, message });

export const REASONS = {
  // Frames, messages and request bodies
  bad_frame: reason(400, 'frame is not valid JSON or MessagePack'),
  frame_too_large: reason(413, 'frame too large'),
  batch_too_large: reason(413, 'too many messages in one frame'),
  empty_batch: reason(400, 'an array frame must hold at least one message'),
  bad_message: reason(400, 'a message is a map with an op'),
  missing_field: reason(400, 'a required field is missing'),
  unknown_op: reason(400, 'unknown op'),
  bad_type: reason(400, 'a field has the wrong type'),
  bad_value: reason(400, 'bad quantity or price'),
  bad_json: reason(400, 'body is not valid JSON'),
  body_too_large: reason(413, 'body too large'),
  body_incomplete: reason(400, 'the connection closed before the body was complete'),
  not_found: reason(404, 'no such endpoint'),
  method_not_allowed: reason(405, 'this endpoint does not take this method (Allow lists those it takes)'),
  upgrade_required: reason(426, 'this endpoint takes WebSocket upgrades only (Upgrade: websocket)'),
  bad_host: reason(400, 'a request carries one Host header, not several (RFC 9112 §3.2)'),

  // Clients and capacity
  unauthorized: reason(401, 'bearer token required'),
  forbidden: reason(403, 'this token may not use this endpoint'),
  reserved_name: reason(
    403,
    'this name is reserved: a sales token may not be named web (the buy page), an admin token cli (the command line)',
  ),
  too_many_connections: reason(503, 'too many connections'),
  overloaded: reason(503, 'the gateway is at capacity, retry shortly'),
  throttled: reason(429, 'too many unknown IDs; wait'),
  unavailable: reason(503, 'storage unavailable, try again'),
  internal: reason(500, 'internal error'),

  // ID numbers and their state
  bad_format: reason(400, 'not an ID number'),
  bad_checksum: reason(400, 'the ID is mistyped (check digit)'),
  unknown_id: reason(404, 'no such ID'),
  not_active: reason(422, 'the ID has not been sold'),
  blocked: reason(403, 'the ID is blocked'),
  expired: reason(410, 'the ID has expired'),
  exhausted: reason(422, 'no balance left'),
  wrong_kind: reason(422, 'this ID is not for this use'),
  already_active: reason(409, 'the ID is already sold'),
  wrong_product: reason(409, 'the ID is of another product'),
  not_blocked: reason(409, 'the ID is not blocked'),
  not_sold: reason(409, 'the ID has not been sold'),
  already_used: reason(409, 'the ID has been used'),
  recharged: reason(409, 'the ID was recharged since its sale: a refund would take the recharges too'),

  // Calls (switch protocol)
  insufficient_balance: reason(422, 'not enough balance for the first charged block and its fee'),
  no_rate: reason(422, 'no rate for this destination'),
  concurrent_limit: reason(409, 'the ID has as many calls as it may'),
  call_conflict: reason(409, 'this call id belongs to another call'),
  call_ended: reason(409, 'the call has ended'),
  unknown_call: reason(404, 'no such call'),

  // Redemption (scanner protocol)
  not_yet_valid: reason(422, 'not valid yet'),
  wrong_venue: reason(403, 'not valid at this venue'),
  wrong_gate: reason(403, 'not valid at this gate'),
  already_redeemed: reason(409, 'already used'),
  insufficient_value: reason(422, 'not enough value left'),
  unknown_item: reason(404, 'this item is not sold here'),
  scan_conflict: reason(409, 'this scan id was used for another ID or item'),
  unknown_scan: reason(404, 'no redemption with this scan id'),
  no_venue: reason(403, 'this scanner token has no venue'),
  bad_scan_time: reason(422, 'the time the scan says it was made (at) is in the future or too long ago'),

  // Sales
  unknown_product: reason(404, 'no such product'),
  out_of_stock: reason(409, 'sold out'),
  too_many_purchases: reason(429, 'too many purchases started; retry after the time in Retry-After'),
  in_progress: reason(409, 'this purchase is being processed; retry shortly'),
  idempotency_conflict: reason(422, 'this Idempotency-Key was used for another request'),
  missing_idempotency_key: reason(400, 'send an Idempotency-Key header'),
  payment_pending: reason(503, 'the card company did not answer; retry with the same Idempotency-Key'),
  abandoned: reason(402, 'the purchase was not completed in time; any payment was cancelled'),
  capture_failed: reason(402, 'the card company did not take the payment'),
  not_member: reason(402, 'the card company does not know this card holder'),
  insufficient_funds: reason(402, 'not enough credit on the card'),
  card_invalid: reason(402, 'the card number is not valid'),
  wrong_card_pin: reason(402, 'the card PIN is wrong'),
  wrong_pin: reason(403, 'wrong PIN'),
  locked: reason(429, 'too many wrong PINs; locked for a while'),
  bad_link: reason(404, 'no check link is written so: cut short or mistyped'),
  // Buyer pages
  foreign_form: reason(
    403,
    "the form was not posted from this site's page in this browser (no form cookie, a token of another, or the browser says it came from elsewhere)",
  ),
  pin_required: reason(
    403,
    'enter the PIN on the check page again: the recharge form carries no live grant of it (15 minutes, this browser)',
  ),
  unknown_area: reason(404, 'no such access number area'),

  // Caller numbers (ANI login)
  bad_ani: reason(400, 'not a caller number: international format, 7 to 15 digits, country code first'),
  unknown_ani: reason(404, 'no ID is registered to this caller number'),
  ani_taken: reason(409, 'this caller number is registered to another ID'),
  too_many_anis: reason(409, 'this ID has as many caller numbers as its product allows'),
  too_many_changes: reason(429, 'too many caller number changes on this ID today; try again tomorrow'),
  // Top-up
  topup_forbidden: reason(422, 'IDs of this product cannot be recharged'),
  topup_limit: reason(422, 'the recharge would take the balance above what this product may hold'),
  refunded: reason(409, 'the ID was refunded'),
  wrong_currency: reason(422, 'the voucher is in another currency than the ID'),
  not_voucher: reason(422, 'this is not a recharge voucher'),
  // Operator commands
  file_unreadable: reason(400, 'the file cannot be read'),
  bad_catalog_file: reason(400, 'not a catalog file: not valid JSON or CSV, or not laid out as one'),
  bad_catalog_entry: reason(422, 'an entry of the file breaks a catalog rule'),
  duplicate_entry: reason(409, 'the file gives one entry, or one field of an entry, twice'),
  too_many_versions: reason(409, 'a rate plan may have at most 16 versions to come'),
  archive_running: reason(409, 'another tessera archive is at work on this Redis; run again once it has ended'),
  name_taken: reason(409, 'a token of another role has this name: give each role names of its own'),
  name_elsewhere: reason(
    409,
    'the tokens of this name are of another venue: move them all with token-update --venue, or choose another name',
  ),
} as const satisfies Record<string, ReasonInfo>;

export type Reason = keyof typeof REASONS;

export const isReason = (r: string): r is Reason => Object.hasOwn(REASONS, r);

/**
 * The HTTP status of a refusal. A reason outside the catalogue comes from a peer
 * (a card company's own decline reasons): the caller says what such a refusal
 * is (402 for a card company's decline), else 422.
 */
export function statusOf(r: string, unlisted = 422): number {
  return isReason(r) ? REASONS[r].status : unlisted;
}

/** The default message of a refusal; an unlisted reason reads as itself. */
export function messageOf(r: string): string {
  return isReason(r) ? REASONS[r].message : r.replace(/_/g, ' ');
}

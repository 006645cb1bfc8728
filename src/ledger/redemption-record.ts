import { namedFields } from './records';

/**
 * Redemption and reversal records: each stream entry holds its values packed in
 * one field, `r`, in this order (lua/includes/red_record.lua packs them). Only
 * the last, a reversal's free-text reason, may hold '|'. An offline scan's
 * record has a second field, `at`: when the scan was made, by the scanner's
 * clock (`time` is when the record was written).
 */
export const REDEMPTION_FIELDS = [
  'type',
  'scan',
  'scanner',
  'id',
  'kind',
  'action',
  'venue',
  'gate',
  'item',
  'qty',
  'amount',
  'before',
  'after',
  'time',
  'reason',
] as const;

const LAST = REDEMPTION_FIELDS.length - 1;

/** A record's fields by name, from the stream entry's flat field list (records written before packing had them named). */
export function redemptionFields(flat: readonly string[]): Record<string, string> {
  if (flat[0] === 'r') {
    const out: Record<string, string> = {};
    const packed = flat[1]!;
    let at = 0;
    for (let i = 0; i < LAST; i++) {
      const bar = packed.indexOf('|', at);
      if (bar < 0) throw new Error(`redemption record with ${i + 1} of ${REDEMPTION_FIELDS.length} fields`);
      out[REDEMPTION_FIELDS[i]!] = packed.slice(at, bar);
      at = bar + 1;
    }
    // A redemption has no reason: as before packing, the field is absent rather than empty.
    const reason = packed.slice(at);
    if (reason !== '' || out.type === 'reverse') out.reason = reason;
    for (let i = 2; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
    return out;
  }
  return namedFields(flat);
}

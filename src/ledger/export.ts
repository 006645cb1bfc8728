import { stringify } from 'csv-stringify/sync';
import type { Context } from '../app/context';
import { namedFields, readStream, type DecodeFields } from './records';
import { REDEMPTION_FIELDS, redemptionFields } from './redemption-record';
import { keys } from '../redis/keys';

const FIELDS = {
  calls: [
    'record',
    'time',
    'switch',
    'call',
    'id',
    'dest',
    'start',
    'answer',
    'end',
    'sec',
    'used',
    'blocks',
    'rate',
    'fee',
    'disc',
    'cost',
    'short',
    'bal',
    'cause',
    // Last, so that the columns before stay where they were: the seconds `rate` pays, empty for 1.
    'per',
  ],
  // Sales, refunds and top-ups share the stream: `type` is empty for a sale, `refund` for a refund, `topup`
  // for a top-up (`amount` in, `source`, `note`, `bal`, `exp` after) and `voucher` for a recharge voucher's
  // value sent `to` an ID (negative `amount` when it came back); refunds carry `amount` (the value taken back)
  // and `reason`, sales through a card company `provider`, `commission`, `net`; `expiry` the value left on an
  // ID past its expiry, forfeited (`amount`, `bal` 0 after, `exp` when it expired; lua/expire.lua).
  sales: [
    'record',
    'time',
    'id',
    'product',
    'face',
    'currency',
    'price',
    'channel',
    'ref',
    'type',
    'amount',
    'provider',
    'commission',
    'net',
    'reason',
    'source',
    'note',
    'to',
    'bal',
    'exp',
  ],
  // A redemption record's own fields, its time moved up front like every kind's; last, an offline
  // scan's `at` (when it was made, by the scanner's clock), empty for the others.
  redemptions: ['record', 'time', ...REDEMPTION_FIELDS.filter((f) => f !== 'time'), 'at'],
} as const;

export type RecordKind = keyof typeof FIELDS;

export const streamOf = { calls: keys.cdr, sales: keys.sales, redemptions: keys.redemptions } as const;
export const decodeOf: Record<RecordKind, DecodeFields> = {
  calls: namedFields,
  sales: namedFields,
  redemptions: redemptionFields,
};

/** A record as export and archive write it: `record` (`<bucket>/<stream id>`), `time` (ms), then its fields. */
export function exportRow(bucket: number, id: string, fields: Record<string, string>): Record<string, string> {
  return { record: `${bucket}/${id}`, time: id.split('-')[0]!, ...fields };
}

/** A whole number, negative ones too (a reversal's amount): exported as it is, so it stays a number. */
const WHOLE_NUMBER = /^-?[0-9]+$/;
/** What a spreadsheet takes for the start of a formula (or, for tab and CR, moves a field over). */
const FORMULA_START = /^[=+\-@\t\r]/;

/**
 * A CSV field as a spreadsheet may safely open it: text that starts like a
 * formula (`=`, `+`, `-`, `@`, tab, CR) gets a leading `'`, so it shows as
 * text and never runs. Whole numbers, negative ones included, are left alone.
 */
export function spreadsheetSafe(v: string): string {
  return FORMULA_START.test(v) && !WHOLE_NUMBER.test(v) ? `'${v}` : v;
}

/**
 * Reads every bucket's record stream and writes the records in time order.
 * CSV fields are spreadsheetSafe; NDJSON holds the values as recorded.
 */
export async function exportRecords(
  ctx: Context,
  kind: RecordKind,
  format: 'csv' | 'ndjson',
  write: (s: string) => void,
  range: { since?: number; until?: number } = {},
): Promise<number> {
  const all: Record<string, string>[] = [];
  const start = range.since !== undefined ? String(range.since) : '-';
  const end = range.until !== undefined ? String(range.until) : '+';
  for (let b = 0; b < ctx.cfg.buckets; b++) {
    for await (const { id, fields } of readStream(ctx, streamOf[kind](b), start, end, decodeOf[kind]))
      all.push(exportRow(b, id, fields));
  }
  all.sort((a, b) => Number(a.time) - Number(b.time));
  const fields = FIELDS[kind];
  if (format === 'csv') {
    write(stringify([fields]));
    for (let i = 0; i < all.length; i += 1000)
      write(stringify(all.slice(i, i + 1000).map((r) => fields.map((f) => spreadsheetSafe(r[f] ?? '')))));
  } else {
    for (const r of all) write(JSON.stringify(r) + '\n');
  }
  return all.length;
}

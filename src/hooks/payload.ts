/**
 * What a webhook receives for a balance event: the JSON body built from the
 * stream entry's fields, its event id, and the signature header (as Stripe
 * signs theirs: HMAC-SHA256 over "<unix seconds>.<body>").
 */
import { createHmac } from 'node:crypto';

/** The group that delivers every bucket's events stream. */
export const HOOKS_GROUP = 'hooks';

/**
 * The event id receivers de-duplicate by: `<bucket>-<stream entry id>`, the
 * entry the event was first written as (`eid` when an operator re-queued it).
 */
export const eventId = (bucket: number, entry: string, fields: Readonly<Record<string, string>>): string =>
  `${bucket}-${fields.eid ?? entry}`;

/** When a stream entry was written (ms): the time part of its id. */
export const entryTime = (entry: string): number => Number(entry.split('-')[0]);

/** When an event was first written (ms): the time of its first stream entry. */
export const eventTime = (entry: string, fields: Readonly<Record<string, string>>): number =>
  entryTime(fields.eid ?? entry);

const int = (v: string | undefined): number => Number(v ?? 0);

/** The type's own fields of the body. */
function data(f: Readonly<Record<string, string>>): Record<string, unknown> {
  switch (f.type) {
    case 'low_balance':
      return { secondsLeft: int(f.left), threshold: int(f.threshold) };
    case 'exhausted':
      return { call: f.call ?? '' };
    case 'expiring':
      return { expires: int(f.exp) };
    case 'topup':
      return { amount: int(f.amount), source: f.source ?? '', ref: f.ref ?? '', expires: int(f.exp) };
    case 'expired':
      return { amount: int(f.amount), expires: int(f.exp) };
    default:
      return {};
  }
}

/** The JSON body of one event. */
export function eventBody(bucket: number, entry: string, f: Readonly<Record<string, string>>): string {
  return JSON.stringify({
    id: eventId(bucket, entry, f),
    type: f.type ?? '',
    at: int(f.at),
    product: f.prod ?? '',
    idHash: f.idh ?? '',
    balance: int(f.bal),
    data: data(f),
  });
}

/** `Tessera-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. */
export function signature(secret: string, unixSec: number, body: string): string {
  const mac = createHmac('sha256', secret).update(`${unixSec}.${body}`).digest('hex');
  return `t=${unixSec},v1=${mac}`;
}

/** A flat [field, value, …] list from Redis as an object. */
export function fieldsOf(flat: readonly string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) o[flat[i]!] = flat[i + 1]!;
  return o;
}

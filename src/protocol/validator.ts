import type { Static, TSchema } from '@sinclair/typebox';
import Ajv, { type ErrorObject } from 'ajv';
import type { Reason } from './reasons';

/** A compiled validator: a type guard that leaves its errors behind. */
export interface Checked<T> {
  (v: unknown): v is T;
  errors?: ErrorObject[] | null;
}

/** For configuration: strings from the environment become numbers, defaults fill in. */
export const ajv = new Ajv({ coerceTypes: true, useDefaults: true, allErrors: true, strict: false });

/**
 * For catalog records (files an operator writes, JSON stored in Redis): defaults
 * fill in, but nothing is coerced. `"price": null` is no price, not a free
 * product, and `"face": "0x10"` no face; a CSV file's cells are typed by its
 * reader (catalog/files.ts) before they get here.
 */
export const catalogAjv = new Ajv({ coerceTypes: false, useDefaults: true, allErrors: true, strict: false });

/** For the wire: no coercion, a wrong type is the client's error and must be reported as such. */
export const wireAjv = new Ajv({
  coerceTypes: false,
  useDefaults: false,
  allErrors: false,
  strict: false,
  verbose: true,
});

export function describeErrors(errors: ErrorObject[] | null | undefined): string {
  if (!errors || errors.length === 0) return 'invalid';
  // A field of several forms fails each of them, then the anyOf: one message, its forms joined.
  const anyOf = new Set(errors.filter((e) => e.keyword === 'anyOf').map((e) => e.instancePath));
  const said = new Map<string, { where: string; what: Set<string> }>();
  errors.forEach((e, i) => {
    if (e.keyword === 'anyOf') return;
    const key = anyOf.has(e.instancePath) ? e.instancePath : `#${i}`;
    const entry = said.get(key);
    if (entry) entry.what.add(messageOf(e));
    else said.set(key, { where: whereOf(e), what: new Set([messageOf(e)]) });
  });
  return [...said.values()].map(({ where, what }) => `${where} ${[...what].join(' or ')}`).join('; ');
}

/** Ajv's words, with what they leave out: the field that is not allowed, the values that are. */
function messageOf(e: ErrorObject): string {
  const p = e.params as { additionalProperty?: string; allowedValue?: unknown; allowedValues?: unknown[] };
  if (e.keyword === 'additionalProperties') return `has a field it does not take: "${p.additionalProperty}"`;
  if (e.keyword === 'const' && 'allowedValue' in p) return `must be ${JSON.stringify(p.allowedValue)}`;
  if (e.keyword === 'enum' && p.allowedValues)
    return `must be one of ${p.allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
  return e.message ?? 'is invalid';
}

function whereOf(e: ErrorObject): string {
  return e.instancePath
    ? e.instancePath.slice(1).replace(/\//g, '.')
    : ((e.params as { missingProperty?: string }).missingProperty ?? 'value');
}

/** A wire schema's validator. */
export function compile<T extends TSchema>(schema: T): Checked<Static<T>> {
  return wireAjv.compile<Static<T>>(schema) as Checked<Static<T>>;
}

/** Stable machine-readable reason for the first schema violation, and a message that names it. */
export function schemaReason(errors: ErrorObject[] | null | undefined): { reason: Reason; message: string } {
  const first = errors?.[0];
  if (!errors || !first) return { reason: 'bad_value', message: 'invalid' };
  // docs/protocol.md: a number beyond ±2^53 (or past a double's range) is no integer the wire
  // can carry, whatever its bounds: the bound would be the wrong thing to name.
  const data: unknown = first.data;
  const wanted = (first.params as { type?: string }).type ?? '';
  const numeric = first.keyword !== 'type' || /integer|number/.test(wanted);
  if (
    numeric &&
    typeof data === 'number' &&
    !Number.isSafeInteger(data) &&
    (!Number.isFinite(data) || Number.isInteger(data))
  )
    return { reason: 'bad_type', message: `${whereOf(first)} must be an integer within ±2^53` };
  const reason = first.keyword === 'required' ? 'missing_field' : first.keyword === 'type' ? 'bad_type' : 'bad_value';
  return { reason, message: describeErrors(errors) };
}

import type { Static, TSchema } from '@sinclair/typebox';
import Ajv, { type ErrorObject } from 'ajv';
import type { Reason } from './reasons';

/** A compiled validator: a type guard that leaves its errors behind. */
export interface Checked<T> {
  (v: unknown): v is T;
  errors?: ErrorObject[] | null;
}

/** For configuration and files: strings from the environment or CSV become numbers, defaults fill in. */
export const ajv = new Ajv({ coerceTypes: true, useDefaults: true, allErrors: true, strict: false });

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
  return errors.map((e) => `${whereOf(e)} ${e.message ?? 'is invalid'}`).join('; ');
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
  if (typeof data === 'number' && !Number.isSafeInteger(data) && (!Number.isFinite(data) || Number.isInteger(data)))
    return { reason: 'bad_type', message: `${whereOf(first)} must be an integer within ±2^53` };
  const reason = first.keyword === 'required' ? 'missing_field' : first.keyword === 'type' ? 'bad_type' : 'bad_value';
  // A field of several forms fails each of them, then the anyOf: one message, its forms joined.
  const anyOf = errors.find((e) => e.keyword === 'anyOf');
  if (anyOf) {
    const forms = errors.filter((e) => e !== anyOf && e.instancePath === anyOf.instancePath);
    const said = [...new Set(forms.map((e) => e.message ?? 'is invalid'))];
    return { reason, message: `${whereOf(anyOf)} ${said.join(' or ')}` };
  }
  return { reason, message: describeErrors(errors) };
}

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
  return errors
    .map((e) => {
      const where = e.instancePath
        ? e.instancePath.slice(1).replace(/\//g, '.')
        : ((e.params as { missingProperty?: string }).missingProperty ?? 'value');
      return `${where} ${e.message ?? 'is invalid'}`;
    })
    .join('; ');
}

/** A wire schema's validator. */
export function compile<T extends TSchema>(schema: T): Checked<Static<T>> {
  return wireAjv.compile<Static<T>>(schema) as Checked<Static<T>>;
}

/** Stable machine-readable reason for the first schema violation. */
export function schemaReason(errors: ErrorObject[] | null | undefined): { reason: Reason; message: string } {
  const first = errors?.[0];
  // docs/protocol.md: a number beyond ±2^53 is no integer the wire can carry, whatever its bounds.
  const unsafe = typeof first?.data === 'number' && Number.isInteger(first.data) && !Number.isSafeInteger(first.data);
  const reason =
    first?.keyword === 'required' ? 'missing_field' : first?.keyword === 'type' || unsafe ? 'bad_type' : 'bad_value';
  return { reason, message: describeErrors(errors) };
}

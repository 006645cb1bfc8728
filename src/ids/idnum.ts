/**
 * ID numbers: (length - 1) digits from a CSPRNG plus a Luhn check digit, so a
 * mistyped number is refused before Redis is asked. The first digit is never 0
 * so the number keeps its length when a spreadsheet or a keypad drops zeros.
 */
import { luhnDigit, luhnValid } from './luhn';
import { randomByte } from './random';

export type IdCheck = { ok: true; id: string } | { ok: false; reason: 'bad_format' | 'bad_checksum' };

function randomDigit(first: boolean): number {
  for (;;) {
    const b = randomByte();
    // Rejection sampling keeps digits uniform: 250 is the largest multiple of 10 below 256.
    if (b >= 250) continue;
    const d = b % 10;
    if (first && d === 0) continue;
    return d;
  }
}

export function generateId(length: number): string {
  let body = '';
  for (let i = 0; i < length - 1; i++) body += String.fromCharCode(48 + randomDigit(i === 0));
  return body + String(luhnDigit(body));
}

const SEPARATORS = /[\s-]/g;

/** Accepts what a person types (spaces and dashes allowed) and returns the bare digits. */
export function checkId(input: unknown, length: number): IdCheck {
  // Numbers are refused: 16 digits do not survive a trip through a float.
  if (typeof input !== 'string') return { ok: false, reason: 'bad_format' };
  const id = input.replace(SEPARATORS, '');
  if (id.length !== length || !/^[0-9]+$/.test(id)) return { ok: false, reason: 'bad_format' };
  if (!luhnValid(id)) return { ok: false, reason: 'bad_checksum' };
  return { ok: true, id };
}

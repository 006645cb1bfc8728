/**
 * Caller numbers as Tessera keeps them (E.164 digits): what a buyer types on
 * the check page, a switch's `ani`, and the CLI all go through aniDigits.
 */
import { describe, expect, it } from 'vitest';
import { aniDigits } from '../../src/ledger/anis';

describe('aniDigits', () => {
  it('keeps an international number, country code first, whatever its prefix and spacing', () => {
    expect(['+44 20 7946 0000', '0044 20 7946 0000', '+1 212 555 0100'].map(aniDigits)).toEqual([
      '442079460000',
      '442079460000',
      '12125550100',
    ]);
  });

  it('refuses, never guesses: a national number, and a +1 number with no area code', () => {
    // Australia's international prefix is 0011: read as 00 and 11..., it was kept as a +1 number.
    // North American area codes start with 2-9, so +10... and +11... are no numbers.
    expect(['020 7946 0000', '0011 44 20 7946 0000', '+1 112 555 0100', '+10 212 555 0100'].map(aniDigits)).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
  });
});

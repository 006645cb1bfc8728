import { describe, expect, it } from 'vitest';
import { intArg } from '../../src/cli/command';

describe('a whole-number option', () => {
  it('takes decimal digits', () => {
    expect(intArg('0', '--since')).toBe(0);
    expect(intArg('1796403600000', '--since')).toBe(1796403600000);
    expect(intArg('007', '--max')).toBe(7);
  });

  // Number() reads these as numbers: a time in exponent or hex, or a blank one read as 0.
  it.each(['1e12', '0x10', '0b11', '', ' 5', '5 ', '+5', '5.0', '-0', 'Infinity'])('refuses %j', (v) => {
    expect(() => intArg(v, '--since')).toThrow('--since must be a whole number');
  });

  it('names the range when there is one', () => {
    expect(() => intArg('1e3', '--count', { min: 1, max: 10 })).toThrow('--count must be 1 to 10');
    expect(() => intArg('11', '--count', { min: 1, max: 10 })).toThrow('--count must be 1 to 10');
  });
});

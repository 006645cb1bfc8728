import { describe, expect, it } from 'vitest';
import { PrefixTable } from '../../src/catalog/rateplan';

describe('PrefixTable: longest prefix wins', () => {
  const t = new PrefixTable({
    name: 'p',
    rates: [
      { prefix: '', rate: 100, fee: 0 },
      { prefix: '4', rate: 150, fee: 0 },
      { prefix: '44', rate: 200, fee: 0 },
      { prefix: '449', rate: 1000, fee: 5000 },
      { prefix: '4420', rate: 300, fee: 10 },
      { prefix: '1800', rate: 1, fee: 0 },
    ],
  });

  it.each([
    ['4912345', 150, 0],
    ['441234', 200, 0],
    ['44', 200, 0],
    ['442', 200, 0],
    ['4491', 1000, 5000],
    ['449', 1000, 5000],
    ['44207946000', 300, 10],
    ['4', 150, 0],
    ['18005550000', 1, 0],
    ['180', 100, 0],
    ['1234', 100, 0],
    ['', 100, 0],
    ['33123456789012345678', 100, 0],
  ])('%s → rate %i fee %i', (dest, rate, fee) => {
    expect(t.lookup(dest)).toMatchObject({ rate, fee });
  });

  it('without a catch-all prefix, an unmatched destination has no rate', () => {
    const n = new PrefixTable({
      name: 'n',
      rates: [
        { prefix: '999', rate: 7, fee: 1 },
        { prefix: '99912', rate: 9, fee: 0 },
      ],
    });
    expect(n.lookup('12')).toBeUndefined();
    expect(n.lookup('99')).toBeUndefined();
    expect(n.lookup('')).toBeUndefined();
    expect(n.lookup('998999')).toBeUndefined();
    expect(n.lookup('999')).toMatchObject({ rate: 7, fee: 1 });
    expect(n.lookup('9991')).toMatchObject({ rate: 7, fee: 1 });
    expect(n.lookup('99912')).toMatchObject({ rate: 9, fee: 0 });
    expect(n.lookup('999123')).toMatchObject({ rate: 9, fee: 0 });
  });
});

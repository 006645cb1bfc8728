/** The tariff descriptors the gateway builds from rate plans (src/catalog/tariff.ts). */
import { describe, expect, it } from 'vitest';
import type { RatePlan } from '../../src/catalog/schema';
import { MAX_RATE_CHANGES, PlanTariff, TARIFF_HORIZON_MS } from '../../src/catalog/tariff';

const NO_PERIODS: RatePlan['periods'] = [];
const EVERY_DAY = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
const utc = (y: number, m: number, d: number, h: number, min = 0): number => Date.UTC(y, m - 1, d, h, min);

/** The changes of a descriptor as [from, rate] pairs, after its seven header numbers. */
const changesOf = (d: string): number[][] => {
  const n = d.split(' ').map(Number).slice(7);
  return Array.from({ length: n.length / 2 }, (_, i) => [n[2 * i]!, n[2 * i + 1]!]);
};

describe('tariff descriptors', () => {
  it('a plain prefix gives the short flat form; billing terms give the full header', () => {
    const plan = new PlanTariff([
      {
        name: 'p',
        periods: NO_PERIODS,
        rates: [
          { prefix: '', rate: 400, fee: 0 },
          { prefix: '33', rate: 100, fee: 5000, initial: 60, next: 6 },
          { prefix: '44', rate: 100, fee: 0, minSec: 30, minCost: 2000, disconnect: 700 },
        ],
      },
    ]);
    const now = utc(2027, 1, 13, 6);
    expect(plan.descriptor('1555', now)).toBe('400 0');
    expect(plan.descriptor('33612', now)).toBe('100 5000 60 6 0 0 0');
    expect(plan.descriptor('4420', now)).toBe('100 0 1 1 30 2000 700');
    expect(plan.rateAt('33612', now)).toEqual({ rate: 100, fee: 5000 });
  });

  it('peak, off-peak and weekend in Europe/Paris: every change of the coming week, local times in UTC', () => {
    const plan = new PlanTariff([
      {
        name: 'tod',
        tz: 'Europe/Paris',
        periods: [
          { name: 'peak', days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '08:00', to: '20:00' },
          { name: 'weekend', days: ['sat', 'sun'] },
        ],
        rates: [
          { prefix: '', rate: 100, fee: 0, periodRates: { peak: 300, weekend: 50 } },
          { prefix: '33', rate: 400, fee: 0 },
        ],
      },
    ]);
    const now = utc(2027, 1, 13, 6); // Wednesday 07:00 in Paris (UTC+1)
    const d = plan.descriptor('1', now)!;
    expect(d.startsWith('100 0 1 1 0 0 0 ')).toBe(true);
    expect(changesOf(d)).toEqual([
      [utc(2027, 1, 13, 7), 300],
      [utc(2027, 1, 13, 19), 100],
      [utc(2027, 1, 14, 7), 300],
      [utc(2027, 1, 14, 19), 100],
      [utc(2027, 1, 15, 7), 300],
      [utc(2027, 1, 15, 19), 100],
      [utc(2027, 1, 15, 23), 50], // Saturday 00:00 in Paris
      [utc(2027, 1, 17, 23), 100],
      [utc(2027, 1, 18, 7), 300],
      [utc(2027, 1, 18, 19), 100],
      [utc(2027, 1, 19, 7), 300],
      [utc(2027, 1, 19, 19), 100],
      // Not the peak of Wednesday 20th at 08:00 in Paris: 7 days and an hour after the start.
    ]);
    // A prefix without period rates pays its rate in every period: no changes at all.
    expect(plan.descriptor('33', now)).toBe('400 0');
    expect(plan.rateAt('1', utc(2027, 1, 13, 12))).toEqual({ rate: 300, fee: 0 });
    expect(plan.rateAt('1', utc(2027, 1, 16, 12))).toEqual({ rate: 50, fee: 0 });
  });

  it('daylight saving days in Europe/Paris: a window shortened by the spring change, doubled by the autumn one', () => {
    const rates = [{ prefix: '', rate: 100, fee: 0, periodRates: { p: 300 } }];
    const spring = new PlanTariff([
      { name: 's', tz: 'Europe/Paris', periods: [{ name: 'p', days: [...EVERY_DAY], to: '03:00' }], rates },
    ]);
    // 00:00-03:00 on Sunday 2027-03-28 lasts two hours: the clocks go from 02:00 CET to 03:00 CEST at 01:00Z.
    expect(changesOf(spring.descriptor('1', utc(2027, 3, 27, 22))!).slice(0, 4)).toEqual([
      [utc(2027, 3, 27, 23), 300],
      [utc(2027, 3, 28, 1), 100],
      [utc(2027, 3, 28, 22), 300],
      [utc(2027, 3, 29, 1), 100],
    ]);
    const autumn = new PlanTariff([
      {
        name: 'a',
        tz: 'Europe/Paris',
        periods: [{ name: 'p', days: [...EVERY_DAY], from: '02:00', to: '03:00' }],
        rates,
      },
    ]);
    // 02:00-03:00 on Sunday 2027-10-31 happens twice (CEST, then CET): two hours from 00:00Z.
    expect(changesOf(autumn.descriptor('1', utc(2027, 10, 30, 12))!).slice(0, 4)).toEqual([
      [utc(2027, 10, 31, 0), 300],
      [utc(2027, 10, 31, 2), 100],
      [utc(2027, 11, 1, 1), 300],
      [utc(2027, 11, 1, 2), 100],
    ]);
  });

  it('a dated version takes over at its activation, at Paris midnight, inside a call started before', () => {
    const midnight = Date.parse('2027-01-01T00:00:00+01:00');
    const plan = new PlanTariff([
      {
        name: 'd',
        activeFrom: midnight,
        rates: [
          { prefix: '', rate: 150, fee: 20, initial: 60, next: 6 },
          { prefix: '33', rate: 90, fee: 0 },
        ],
      },
      {
        name: 'd',
        rates: [
          { prefix: '', rate: 100, fee: 10 },
          { prefix: '44', rate: 200, fee: 0 },
        ],
      },
    ]);
    const before = midnight - 3_600_000;
    // The terms are the start's; the rate changes at midnight.
    expect(plan.descriptor('1', before)).toBe(`100 10 1 1 0 0 0 ${midnight} 150`);
    expect(plan.descriptor('1', midnight - 1)).toBe(`100 10 1 1 0 0 0 ${midnight} 150`);
    expect(plan.descriptor('1', midnight)).toBe('150 20 60 6 0 0 0');
    expect(plan.rateAt('1', midnight - 1)).toEqual({ rate: 100, fee: 10 });
    expect(plan.rateAt('1', midnight)).toEqual({ rate: 150, fee: 20 });
    // A destination only the new version has is not rated before it; one it dropped is not rated after,
    // but a call already running keeps its rate (44 falls back to '' in the new version here).
    expect(plan.descriptor('33', before)).toBe(`100 10 1 1 0 0 0 ${midnight} 90`);
    expect(plan.descriptor('44', before)).toBe(`200 0 1 1 0 0 0 ${midnight} 150`);

    const only = new PlanTariff([{ name: 'o', activeFrom: midnight, rates: [{ prefix: '', rate: 5, fee: 0 }] }]);
    expect(only.descriptor('1', before)).toBeUndefined();
    expect(only.rateAt('1', before)).toBeUndefined();
    expect(only.descriptor('1', midnight)).toBe('5 0');
  });

  it('a version that no longer rates a destination leaves a running call at its rate', () => {
    const at = utc(2027, 6, 1, 0);
    const plan = new PlanTariff([
      { name: 'x', rates: [{ prefix: '44', rate: 200, fee: 0 }] },
      { name: 'x', activeFrom: at, rates: [{ prefix: '33', rate: 90, fee: 0 }] },
    ]);
    expect(plan.descriptor('44', at - 1000)).toBe('200 0');
    expect(plan.descriptor('44', at)).toBeUndefined();
  });

  it('a period named like an Object.prototype member charges the rate of a prefix that does not price it', () => {
    // `constructor`, `toString`, `valueOf` are valid period names: a prefix's periodRates without
    // them must not find Object.prototype's functions, which no call script can parse.
    const plan = new PlanTariff([
      {
        name: 'proto',
        periods: [
          { name: 'peak', days: [...EVERY_DAY], to: '12:00' },
          { name: 'constructor', days: [...EVERY_DAY], from: '12:00', to: '18:00' },
          { name: 'toString', days: [...EVERY_DAY], from: '18:00', to: '21:00' },
          { name: 'valueOf', days: [...EVERY_DAY], from: '21:00' },
        ],
        rates: [
          { prefix: '', rate: 100, fee: 0, periodRates: { peak: 300 } },
          { prefix: '33', rate: 50, fee: 0, periodRates: { constructor: 70 } },
        ],
      },
    ]);
    const now = utc(2027, 1, 13, 6);
    const d = plan.descriptor('1', now)!;
    expect(d).toMatch(/^\d+( \d+)*$/);
    expect(changesOf(d).slice(0, 2)).toEqual([
      [utc(2027, 1, 13, 12), 100],
      [utc(2027, 1, 14, 0), 300],
    ]);
    expect(plan.rateAt('1', utc(2027, 1, 13, 13))).toEqual({ rate: 100, fee: 0 });
    expect(plan.rateAt('1', utc(2027, 1, 13, 19))).toEqual({ rate: 100, fee: 0 });
    expect(plan.descriptor('1', utc(2027, 1, 13, 22))).toMatch(/^100 0 1 1 0 0 0 \d+ 300( \d+)*$/);
    expect(plan.rateAt('33', utc(2027, 1, 13, 13))).toEqual({ rate: 70, fee: 0 });
    expect(plan.rateAt('33', utc(2027, 1, 13, 19))).toEqual({ rate: 50, fee: 0 });
  });

  it('lists the changes up to 7 days after the start, that instant included, however the descriptor was cached', () => {
    const start = utc(2027, 1, 13, 6);
    const edge = start + TARIFF_HORIZON_MS;
    const versions: RatePlan[] = [
      { name: 'w', rates: [{ prefix: '', rate: 100, fee: 0 }] },
      { name: 'w', activeFrom: start + 1000, rates: [{ prefix: '', rate: 150, fee: 0 }] },
      { name: 'w', activeFrom: edge, rates: [{ prefix: '', rate: 200, fee: 0 }] },
      { name: 'w', activeFrom: edge + 1000, rates: [{ prefix: '', rate: 300, fee: 0 }] },
    ];
    const plan = new PlanTariff(versions);
    const exact = `100 0 1 1 0 0 0 ${start + 1000} 150 ${edge} 200`;
    // Built half an hour before: the change at start + 7 days lies past that call's horizon.
    expect(plan.descriptor('1', start - 1_800_000)).toBe(`100 0 1 1 0 0 0 ${start + 1000} 150`);
    // A call starting at `start` gets its own 7 days, not the cached descriptor's, nor a second more.
    expect(plan.descriptor('1', start)).toBe(exact);
    expect(plan.descriptor('1', start + 999)).toBe(exact);
    expect(plan.descriptor('1', start + 1000)).toBe(`150 0 1 1 0 0 0 ${edge} 200 ${edge + 1000} 300`);
    // Built fresh, the same: no second past the 7 days.
    expect(new PlanTariff(versions).descriptor('1', start)).toBe(exact);
  });

  it('lists at most MAX_RATE_CHANGES changes', () => {
    const hours = Array.from({ length: 12 }, (_, i) => ({
      name: 'odd',
      days: [...EVERY_DAY],
      from: `${String(2 * i + 1).padStart(2, '0')}:00`,
      to: `${String(2 * i + 2).padStart(2, '0')}:00`,
    }));
    const plan = new PlanTariff([
      { name: 'h', periods: hours, rates: [{ prefix: '', rate: 10, fee: 0, periodRates: { odd: 20 } }] },
    ]);
    const changes = changesOf(plan.descriptor('1', utc(2027, 1, 1, 0))!);
    expect(changes).toHaveLength(MAX_RATE_CHANGES);
    expect(changes[0]).toEqual([utc(2027, 1, 1, 1), 20]);
    expect(changes[MAX_RATE_CHANGES - 1]).toEqual([utc(2027, 1, 3, 16), 10]);
  });
});

/** Rate plan files with billing terms, periods and dated versions, and how versions are stored. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Redis from 'ioredis';
import { CatalogCache } from '../../src/catalog/cache';
import { parsePeriods, readPlansFile } from '../../src/catalog/files';
import { MAX_PLAN_VERSIONS, putPlans, readCatalog } from '../../src/catalog/store';
import { PlanTariff } from '../../src/catalog/tariff';
import { createLogger } from '../../src/observability/log';
import { keys } from '../../src/redis/keys';
import { startHarness, type Harness } from '../support/harness';
import { captureLog } from '../support/log';

let dir: string;
let h: Harness;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-plans-'));
  h = await startHarness();
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await h?.stop();
});

const file = (name: string, text: string): string => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

const fields = async (): Promise<string[]> => (await h.r.hkeys(keys.plans)).sort();

describe('rate plan files', () => {
  it('CSV: billing columns, rate.<period> columns, and the plan columns on any row', async () => {
    const csv = [
      'plan,prefix,rate,fee,initial,next,minSec,minCost,disconnect,rate.peak,rate.weekend,tz,periods',
      'eu,,1000,0,60,6,,,,1500,500,Europe/Paris,peak=mon-fri 08:00-20:00|weekend=sat+sun',
      'eu,33,400,20000,30,6,60,50000,10000,600,,,',
    ].join('\n');
    const [stored] = await putPlans(h.ctx.redis, readPlansFile(file('tod.csv', csv)));
    expect(stored).toEqual({
      name: 'eu',
      tz: 'Europe/Paris',
      periods: [
        { name: 'peak', days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '08:00', to: '20:00' },
        { name: 'weekend', days: ['sat', 'sun'] },
      ],
      rates: [
        { prefix: '', rate: 1000, fee: 0, initial: 60, next: 6, periodRates: { peak: 1500, weekend: 500 } },
        {
          prefix: '33',
          rate: 400,
          fee: 20000,
          initial: 30,
          next: 6,
          minSec: 60,
          minCost: 50000,
          disconnect: 10000,
          periodRates: { peak: 600 },
        },
      ],
    });
    expect((await readCatalog(h.r)).plans.get('eu')).toEqual(stored);
  });

  it("CSV: a price list's price per minute, exact: perMinute 0.10 is rate 100000 per 60 s", async () => {
    const csv = [
      'plan,prefix,perMinute,perMinute.peak,fee,initial,next,periods',
      'cc,,0.10,0.0125,0,60,60,peak=mon-fri 08:00-20:00',
      'cc,33,0.072,,,,,',
      'cc,44,1,,,,,',
    ].join('\n');
    const [stored] = await putPlans(h.ctx.redis, readPlansFile(file('per-minute.csv', csv)));
    expect(stored!.rates).toEqual([
      { prefix: '', rate: 100_000, per: 60, fee: 0, initial: 60, next: 60, periodRates: { peak: 12_500 } },
      { prefix: '33', rate: 72_000, per: 60, fee: 0 },
      { prefix: '44', rate: 1_000_000, per: 60, fee: 0 },
    ]);
    // The `per` column as the JSON field, and a descriptor per second where the price divides.
    const [json] = await putPlans(h.ctx.redis, readPlansFile(file('per.csv', 'plan,prefix,rate,per\ncp,,100000,60')));
    expect(json!.rates).toEqual([{ prefix: '', rate: 100_000, per: 60, fee: 0 }]);
    const t = new PlanTariff([stored!]);
    const sunday = Date.UTC(2027, 0, 17, 12);
    // Monday's peak: the rate per 60 s from 08:00 UTC, back to the base rate at 20:00.
    const monday = Date.UTC(2027, 0, 18);
    expect(t.descriptor('1', sunday)!.split(' ').slice(0, 11)).toEqual(
      `100000/60 0 60 60 0 0 0 ${monday + 8 * 3_600_000} 12500/60 ${monday + 20 * 3_600_000} 100000/60`.split(' '),
    );
    expect([t.descriptor('33', sunday), t.rateAt('1', sunday)]).toEqual(['1200 0', { rate: 100_000, per: 60, fee: 0 }]);
  });

  it('CSV: a price per minute it cannot take is refused, naming the plan and the prefix', async () => {
    const cases: [string, string, RegExp][] = [
      [
        'perMinute',
        '0.1234567',
        /rate plan cc: prefix '33' \(row 1\): perMinute '0.1234567' is no price per minute: a price has at most 6 decimals/,
      ],
      [
        'perMinute',
        '"0,10"',
        /rate plan cc: prefix '33' \(row 1\): perMinute '0,10' is no price per minute: write the decimal point as "."/,
      ],
      [
        'perMinute',
        '-0.10',
        /prefix '33' \(row 1\): perMinute '-0.10' is no price per minute: write a price in units of the currency/,
      ],
      ['perMinute', '1e-1', /prefix '33' \(row 1\): perMinute '1e-1' is no price per minute/],
    ];
    for (const [col, cell, message] of cases)
      expect(() => readPlansFile(file('bad-min.csv', `plan,prefix,${col}\ncc,33,${cell}`))).toThrow(message);
    // Both ways in one row: a per-second rate.peak beside a price per minute would be read per minute.
    expect(() =>
      readPlansFile(file('both.csv', 'plan,prefix,perMinute,rate.peak,periods\ncc,33,0.10,2000,peak=mon')),
    ).toThrow(
      /rate plan cc: prefix '33' \(row 1\): has both a price per minute and rate.peak: give its prices one way/,
    );
    expect(() =>
      readPlansFile(file('only-peak.csv', 'plan,prefix,perMinute.peak,periods\ncc,33,0.10,peak=mon')),
    ).toThrow(/rate plan cc: prefix '33' \(row 1\): has perMinute.<period> prices but no perMinute/);
    // Free, less than a micro-unit a second, or past the highest rate: said in the price list's
    // terms, naming the row (a price list's free destination, 0.00, read "rate must be >= 1").
    for (const [cols, cells, message] of [
      ['perMinute', '0', /prefix '33' \(row 1\): perMinute '0' is below the least price per minute, 0\.00006/],
      ['perMinute', '0.00', /perMinute '0.00' is below the least price per minute, 0\.00006 .*cannot be free/],
      ['perMinute', '0.000059', /prefix '33' \(row 1\): perMinute '0.000059' is below the least price per minute/],
      ['perMinute,perMinute.peak,periods', '0.10,0.000001,peak=mon', /perMinute.peak '0.000001' is below/],
      ['perMinute', '10000.000001', /prefix '33' \(row 1\): perMinute '10000.000001' is above the most a minute/],
    ] as const)
      expect(() => readPlansFile(file('price.csv', `plan,prefix,${cols}\ncc,33,${cells}`))).toThrow(message);
    await putPlans(h.ctx.redis, readPlansFile(file('edges.csv', 'plan,prefix,perMinute\ncc,33,0.00006\ncc,1,10000')));
    await expect(
      putPlans(h.ctx.redis, [{ name: 'cc', rates: [{ prefix: '1', rate: 100_000, per: 3601 }] }]),
    ).rejects.toThrow(/rate plan cc: prefix '1': per must be <= 3600/);
  });

  it('CSV: one version per (plan, activeFrom), stored beside the plan in force', async () => {
    const csv = [
      'plan,prefix,rate,fee,activeFrom',
      'dated,,100,0,',
      'dated,,120,0,2099-01-01T00:00:00+01:00',
      'dated,44,90,0,2099-01-01T00:00:00+01:00',
    ].join('\n');
    const plans = await putPlans(h.ctx.redis, readPlansFile(file('dated.csv', csv)));
    const at = Date.parse('2099-01-01T00:00:00+01:00');
    expect(plans).toEqual([
      { name: 'dated', rates: [{ prefix: '', rate: 100, fee: 0 }] },
      {
        name: 'dated',
        activeFrom: at,
        rates: [
          { prefix: '', rate: 120, fee: 0 },
          { prefix: '44', rate: 90, fee: 0 },
        ],
      },
    ]);
    expect((await fields()).filter((f) => f.startsWith('dated'))).toEqual(['dated', `dated@${at}`]);
  });

  it('CSV: a header without its plan column is said so, not blamed on the rows; a row without a plan is named', () => {
    // A spreadsheet's header (Plan, Prefix, Rate) was refused as 'a row without a plan': every row has one.
    const caps = file('caps.csv', ['Plan,Prefix,Rate', 'cc,33,40'].join('\n'));
    expect(() => readPlansFile(caps)).toThrow(
      `rates file ${caps}: the header row has no column "plan" (it has Plan, Prefix, Rate; names are case-sensitive)`,
    );
    const gap = file('gap.csv', ['plan,prefix,rate', 'cc,33,40', ',34,50'].join('\n'));
    expect(() => readPlansFile(gap)).toThrow(`rates file ${gap} row 2: a row without a plan`);
  });

  it('CSV: two different values of a plan column in one version are refused, naming the row', () => {
    const csv = ['plan,prefix,rate,tz', 'z,,10,Europe/Paris', 'z,33,10,Europe/Berlin'].join('\n');
    expect(() => readPlansFile(file('tz.csv', csv))).toThrow(/row 2: plan z has two different values of tz/);
  });

  it('CSV: a column named __proto__, or rate.__proto__, is refused like any other unknown column', async () => {
    // Assigned to a plain object such a column set its prototype (or nothing) and vanished: the
    // plan loaded without it, where a column the schema does not take, or a rate for a period the
    // plan does not define, is refused.
    const refused: [string, RegExp][] = [
      ['__proto__', /rate plan pz: prefix '': has a field it does not take: "__proto__"/],
      ['rate.__proto__', /rate plan pz: prefix '' has a rate for period '__proto__', which the plan does not define/],
    ];
    for (const [col, why] of refused) {
      const plans = readPlansFile(file('proto.csv', [`plan,prefix,rate,${col}`, 'pz,,10,5'].join('\n')));
      await expect(putPlans(h.ctx.redis, plans)).rejects.toThrow(why);
    }
  });

  it('periods: day ranges wrap, lists join with +, the times are optional', () => {
    expect(parsePeriods('night=fri-mon 00:00-06:00 | we=sat+sun')).toEqual([
      { name: 'night', days: ['fri', 'sat', 'sun', 'mon'], from: '00:00', to: '06:00' },
      { name: 'we', days: ['sat', 'sun'] },
    ]);
    expect(() => parsePeriods('peak=weekdays')).toThrow(/days are sun, mon/);
    expect(() => parsePeriods('peak mon-fri')).toThrow(/name=days/);
  });

  it('refuses what cannot be rated, naming the plan, and writes nothing', async () => {
    const base = { name: 'bad', rates: [{ prefix: '', rate: 10 }] };
    const cases: [unknown, RegExp][] = [
      [{ ...base, tz: 'Europe/Atlantis' }, /rate plan bad: unknown time zone 'Europe\/Atlantis'/],
      ...['next tuesday', '2027-01-01', '2027-01-01T00:00:00', '2027-02-29T00:00:00Z', '2027-04-30T24:00:00+02:00'].map(
        (activeFrom): [unknown, RegExp] => [
          { ...base, activeFrom },
          new RegExp(
            `rate plan bad: activeFrom '${activeFrom.replace('+', '\\+')}' is not ms since 1970 or a date-time`,
          ),
        ],
      ),
      [
        { ...base, periods: [{ name: 'p', days: ['mon'], from: '20:00', to: '08:00' }] },
        /rate plan bad: period p must end after it starts/,
      ],
      [
        { ...base, rates: [{ prefix: '', rate: 10, periodRates: { peak: 20 } }] },
        /rate plan bad: prefix '' has a rate for period 'peak', which the plan does not define/,
      ],
      [{ ...base, rates: [{ prefix: '', rate: 10, initial: 0 }] }, /initial must be >= 1/],
      // 90 s on 60/60: a call past 60 s starts a block to 120 that a 90-second grant did not cover.
      [
        { ...base, rates: [{ prefix: '', rate: 10, initial: 60, next: 60, minSec: 90 }] },
        /rate plan bad: prefix '': minSec 90 is not the end of a block \(initial 60 \+ a whole number of next blocks of 60\)/,
      ],
      [{ ...base, rates: [{ prefix: '33', rate: 10, initial: 30, next: 6, minSec: 45 }] }, /prefix '33': minSec 45/],
      // A deck written with the international prefix: 0033 would never match, France would pay the catch-all.
      [
        {
          ...base,
          rates: [
            { prefix: '', rate: 10 },
            { prefix: '0033', rate: 4 },
          ],
        },
        /rate plan bad: prefix '0033' starts with 0/,
      ],
      [{ ...base, periods: [{ name: 'p', days: ['monday'] }] }, /days/],
      // Past 10^10/s a week-long call's cost leaves the integers Lua carries exactly (2^53).
      [{ ...base, rates: [{ prefix: '', rate: 1e10 + 1 }] }, /rate must be <= 10000000000/],
      [
        {
          ...base,
          periods: [{ name: 'p', days: ['mon'] }],
          rates: [{ prefix: '', rate: 10, periodRates: { p: 1e12 } }],
        },
        /must be <= 10000000000/,
      ],
    ];
    for (const [plan, message] of cases) await expect(putPlans(h.ctx.redis, [plan])).rejects.toThrow(message);
    await expect(
      putPlans(h.ctx.redis, [
        { ...base, activeFrom: 5e12 },
        { ...base, activeFrom: 5e12 },
      ]),
    ).rejects.toThrow(/rate plan bad: two versions with the same activeFrom/);
    expect(await h.r.hget(keys.plans, 'bad')).toBeNull();
  });

  it('takes a minimum duration at a block end, or within the initial block', async () => {
    const rates = [
      { prefix: '', rate: 10, initial: 30, next: 6, minSec: 60 },
      { prefix: '33', rate: 10, initial: 60, next: 60, minSec: 180 },
      { prefix: '44', rate: 10, initial: 60, next: 6, minSec: 45 },
      { prefix: '49', rate: 10, minSec: 37 },
    ];
    const [stored] = await putPlans(h.ctx.redis, [{ name: 'minsec', rates }]);
    expect(stored!.rates.map((r) => r.minSec)).toEqual([60, 180, 45, 37]);
  });
});

describe('rate plan versions', () => {
  const v = (rate: number, activeFrom?: number) => ({
    name: 'ver',
    ...(activeFrom ? { activeFrom } : {}),
    rates: [{ prefix: '', rate }],
  });
  const NOW = Date.UTC(2030, 0, 1);

  it('a dated load adds a version; an undated load replaces them all', async () => {
    await putPlans(h.ctx.redis, [v(100)], NOW);
    await putPlans(h.ctx.redis, [v(110, NOW + 1000)], NOW);
    await putPlans(h.ctx.redis, [v(120, NOW + 2000)], NOW);
    await putPlans(h.ctx.redis, [v(111, NOW + 1000)], NOW); // same activation: replaced
    expect((await fields()).filter((f) => f.startsWith('ver'))).toEqual([
      'ver',
      `ver@${NOW + 1000}`,
      `ver@${NOW + 2000}`,
    ]);
    const versions = [...(await readCatalog(h.r)).plans.values()].filter((p) => p.name === 'ver');
    const tariff = new PlanTariff(versions);
    expect([NOW, NOW + 1000, NOW + 2000].map((t) => tariff.rateAt('1', t)?.rate)).toEqual([100, 111, 120]);

    await putPlans(h.ctx.redis, [v(130)], NOW);
    expect((await fields()).filter((f) => f.startsWith('ver'))).toEqual(['ver']);
  });

  it('versions a later one has superseded are removed at the next load', async () => {
    await putPlans(h.ctx.redis, [v(100), v(110, NOW - 2000), v(120, NOW - 1000), v(130, NOW + 1000)], NOW);
    expect((await fields()).filter((f) => f.startsWith('ver'))).toEqual([`ver@${NOW - 1000}`, `ver@${NOW + 1000}`]);
    await putPlans(h.ctx.redis, [v(140, NOW + 5000)], NOW + 2000);
    expect((await fields()).filter((f) => f.startsWith('ver'))).toEqual([`ver@${NOW + 1000}`, `ver@${NOW + 5000}`]);
  });
  it('keeps up to 16 versions to come beside the one in force, and refuses a 17th', async () => {
    const dated = (n: number, from = 1) =>
      Array.from({ length: n }, (_, i) => ({ ...v(200 + i, NOW + (from + i) * 86_400_000), name: 'cap' }));
    await putPlans(h.ctx.redis, [{ ...v(100), name: 'cap' }, ...dated(MAX_PLAN_VERSIONS)], NOW);
    expect((await fields()).filter((f) => f.startsWith('cap'))).toHaveLength(MAX_PLAN_VERSIONS + 1);
    await expect(putPlans(h.ctx.redis, dated(1, MAX_PLAN_VERSIONS + 1), NOW)).rejects.toThrow(
      `rate plan cap: more than ${MAX_PLAN_VERSIONS} versions to come`,
    );
    expect((await fields()).filter((f) => f.startsWith('cap'))).toHaveLength(MAX_PLAN_VERSIONS + 1);
  });
});

describe('the gateway catalog cache', () => {
  it("gives each plan's versions together: the rate in force for quotes, one descriptor per plan for calls", async () => {
    const at = Date.now() + 3_600_000;
    await putPlans(h.ctx.redis, [
      { name: 'cached', rates: [{ prefix: '', rate: 100, fee: 7 }] },
      { name: 'cached', activeFrom: at, rates: [{ prefix: '', rate: 200, fee: 9, initial: 60, next: 6 }] },
    ]);
    const sub = new Redis(h.redis.url);
    const cache = new CatalogCache(h.ctx.redis, sub, createLogger('silent'), 60_000);
    try {
      await cache.start();
      expect(cache.rateFor('cached', '33')).toEqual({ rate: 100, fee: 7 });
      expect(cache.rateFor('cached', '33', at)).toEqual({ rate: 200, fee: 9 });
      const args = cache.tariffArgs('33', at - 1000);
      expect(args.slice(args.indexOf('cached'), args.indexOf('cached') + 2)).toEqual([
        'cached',
        `100 7 1 1 0 0 0 ${at} 200`,
      ]);
      expect(cache.tariffArgs('33', at)).toContain('200 9 60 6 0 0 0');
    } finally {
      cache.stop();
      sub.disconnect();
    }
  });

  it('says which stored record it skips and why: a plan stored before the rate cap is not dropped silently', async () => {
    // Written as a gateway before the 10^10 cap stored it: the schema now refuses it on reading.
    const old = { name: 'pre-cap', rates: [{ prefix: '', rate: 2e10, fee: 0 }] };
    await h.r.hset(keys.plans, 'pre-cap', JSON.stringify(old));
    const sub = new Redis(h.redis.url);
    const { log, lines } = captureLog();
    const cache = new CatalogCache(h.ctx.redis, sub, log, 60_000);
    try {
      await cache.start();
      expect(cache.rateFor('pre-cap', '33')).toBeUndefined();
      const warned = lines.filter((l) => l.level === 40 && l.field === 'pre-cap');
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatchObject({ hash: keys.plans });
      expect(String(warned[0]!.why)).toMatch(/rate/);
    } finally {
      cache.stop();
      sub.disconnect();
      await h.r.hdel(keys.plans, 'pre-cap');
    }
  });
});

/**
 * lua/includes/tariff.lua, run in a real Redis through a test-only wrapper
 * (tariff-eval.lua) expanded by the scripts' own include loader.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlanTariff } from '../../src/catalog/tariff';
import { expandLua } from '../../src/redis/scripts';
import { startHarness, type Harness } from '../support/harness';

let h: Harness;
const lua = expandLua(readFileSync(join(__dirname, 'tariff-eval.lua'), 'utf8'), 'tariff-eval.lua');
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.stop();
});

type Op = ['charged' | 'cost' | 'rate' | 'blocks', number] | ['afford', number, number] | ['flat'] | ['disc'];

async function run(descriptor: string, ans: number, ops: Op[]): Promise<(number | string)[]> {
  return (await h.r.eval(lua, 0, descriptor, ans, ...ops.flat())) as (number | string)[];
}

/** Charged seconds and cost of calls of each length. */
async function bill(descriptor: string, ans: number, secs: number[]): Promise<[number, number, string][]> {
  const charged = (await run(
    descriptor,
    ans,
    secs.map((s) => ['charged', s]),
  )) as number[];
  const out = await run(
    descriptor,
    ans,
    charged.flatMap((n): Op[] => [
      ['cost', n],
      ['blocks', n],
    ]),
  );
  return charged.map((n, i) => [n, out[2 * i] as number, out[2 * i + 1] as string]);
}

const CALLS = [1, 29, 31, 61, 3599];
const T0 = Date.UTC(2027, 0, 13, 12);

describe('tariff.lua: billing increments', () => {
  it('60/6 at 100 a second with a 5000 fee: blocks charged as they start', async () => {
    expect(await bill('100 5000 60 6 0 0 0', T0, CALLS)).toEqual([
      [60, 11000, '60'],
      [60, 11000, '60'],
      [60, 11000, '60'],
      [66, 11600, '60+6x1'],
      [3600, 365000, '60+6x590'],
    ]);
  });

  it('30/6 at 100 a second with a 5000 fee', async () => {
    expect(await bill('100 5000 30 6 0 0 0', T0, CALLS)).toEqual([
      [30, 8000, '30'],
      [30, 8000, '30'],
      [36, 8600, '30+6x1'],
      [66, 11600, '30+6x6'],
      [3600, 365000, '30+6x595'],
    ]);
  });

  it('the flat descriptor bills per second, fee with the first second, nothing for an unanswered call', async () => {
    expect(await bill('100 5000', T0, [0, 1, 29, 31, 61, 3599])).toEqual([
      [0, 0, ''],
      [1, 5100, '1x1'],
      [29, 7900, '1x29'],
      [31, 8100, '1x31'],
      [61, 11100, '1x61'],
      [3599, 364900, '1x3599'],
    ]);
    expect(await run('100 5000', T0, [['flat'], ['disc']])).toEqual([1, 0]);
    expect(await run('100 5000 1 1 0 0 700', T0, [['flat'], ['disc']])).toEqual([1, 700]);
    expect(await run('100 5000 60 6 0 0 0', T0, [['flat']])).toEqual([0]);
  });

  it('a minimum duration raises short calls, and block ends below it are charged as the minimum', async () => {
    expect(await bill('100 0 1 1 60 0 0', T0, [1, 59, 60, 61])).toEqual([
      [60, 6000, '1x60'],
      [60, 6000, '1x60'],
      [60, 6000, '1x60'],
      [61, 6100, '1x61'],
    ]);
    expect(await bill('100 0 30 6 45 0 0', T0, [10, 40, 45, 46, 50])).toEqual([
      [45, 4500, 'min45'],
      [45, 4500, 'min45'],
      [48, 4800, '30+6x3'],
      [48, 4800, '30+6x3'],
      [54, 5400, '30+6x4'],
    ]);
  });

  it('a minimum cost raises cheap calls (fee included), not unanswered ones', async () => {
    expect(await bill('100 1000 1 1 0 5000 0', T0, [0, 1, 39, 40, 41])).toEqual([
      [0, 0, ''],
      [1, 5000, '1x1'],
      [39, 5000, '1x39'],
      [40, 5000, '1x40'],
      [41, 5100, '1x41'],
    ]);
  });

  it('refuses what is not a descriptor', async () => {
    for (const bad of ['', '100', '100 x', '100 5 1', '100 5 0 1 0 0 0', '-1 5', '0 5'])
      expect(await run(bad, T0, [['flat']]), bad).toEqual(['bad']);
    // Rate changes are checked when a charge first reaches them, not by every tick's parse.
    const d = `100 5 1 1 0 0 0 ${T0 + 5000} 12x 4`;
    expect(await run(d, T0, [['cost', 5]])).toEqual([505]);
    await expect(run(d, T0, [['cost', 6]])).rejects.toThrow(/tariff: bad rate change/);
    await expect(run(`100 5 1 1 0 0 0 ${T0} 0`, T0, [['cost', 1]])).rejects.toThrow(/tariff: bad rate change/);
  });
});

describe('tariff.lua: rate changes during a call', () => {
  const B = Date.UTC(2027, 0, 13, 19); // peak ends
  const D = `300 0 1 1 0 0 0 ${B} 100 ${B + 3_600_000} 50`;

  it('each second pays the rate in force when it starts', async () => {
    const ans = B - 10_500; // seconds 0..10 start before the change, 11.. after
    expect(
      await run(D, ans, [
        ['rate', 0],
        ['rate', 10],
        ['rate', 11],
        ['cost', 11],
        ['cost', 20],
      ]),
    ).toEqual([300, 300, 100, 11 * 300, 11 * 300 + 9 * 100]);
    // Answered exactly at the change: all at the new rate; long enough to reach the second change too.
    expect(
      await run(D, B, [
        ['cost', 10],
        ['cost', 3610],
      ]),
    ).toEqual([1000, 3600 * 100 + 10 * 50]);
    // Blocks charged at the second each starts with: 60/6, answered 30 s before the change.
    expect(await run(`300 0 60 6 0 0 0 ${B} 100`, B - 30_000, [['cost', 66]])).toEqual([30 * 300 + 36 * 100]);
  });

  it('across the spring-forward night in Paris, by the descriptor the gateway builds', async () => {
    // "early" is 00:00-03:00 local; on 2027-03-28 it ends at 01:00Z, an hour after 00:00Z, not two.
    const plan = new PlanTariff([
      {
        name: 'night',
        tz: 'Europe/Paris',
        periods: [{ name: 'early', days: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], to: '03:00' }],
        rates: [{ prefix: '', rate: 100, fee: 0, periodRates: { early: 300 } }],
      },
    ]);
    const ans = Date.UTC(2027, 2, 28, 0, 59, 50); // 01:59:50 CET, ten seconds before the clocks go to 03:00 CEST
    const d = plan.descriptor('33', ans)!;
    expect(
      await run(d, ans, [
        ['cost', 20],
        ['rate', 9],
        ['rate', 10],
      ]),
    ).toEqual([10 * 300 + 10 * 100, 300, 100]);
  });

  it('across the activation of a dated version at midnight', async () => {
    const midnight = Date.parse('2027-01-01T00:00:00+01:00');
    const plan = new PlanTariff([
      { name: 'd', rates: [{ prefix: '', rate: 100, fee: 10 }] },
      { name: 'd', activeFrom: midnight, rates: [{ prefix: '', rate: 150, fee: 99 }] },
    ]);
    const ans = midnight - 5000;
    const d = plan.descriptor('1', ans - 20_000)!; // started ringing 20 s before the answer
    // Five seconds at the old rate, then the new one; the fee is the start's.
    expect(
      await run(d, ans, [
        ['cost', 8],
        ['afford', 0, 10 + 5 * 100 + 3 * 150],
      ]),
    ).toEqual([10 + 500 + 450, 8]);
  });

  it("the operations guide's example: 45 s over the end of peak, 30/6, minimum 60 s and minimum cost", async () => {
    const plan = new PlanTariff([
      {
        name: 'eu-business',
        tz: 'Europe/Paris',
        periods: [
          { name: 'peak', days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '08:00', to: '20:00' },
          { name: 'weekend', days: ['sat', 'sun'] },
        ],
        rates: [
          { prefix: '33', rate: 400, fee: 20000, initial: 30, next: 6, minSec: 60, minCost: 50000, disconnect: 10000 },
        ].map((r) => ({ ...r, periodRates: { peak: 600 } })),
      },
    ]);
    const ans = Date.UTC(2027, 0, 13, 18, 59, 30); // Wednesday 19:59:30 in Paris
    const d = plan.descriptor('33612345678', ans)!;
    expect(await run(d, ans, [['charged', 45], ['cost', 60], ['disc'], ['blocks', 60]])).toEqual([
      60,
      50000,
      10000,
      '30+6x5',
    ]);
  });

  it('afford is the inverse of cost: the largest charged duration the amount pays for', async () => {
    const ans = T0 + 250;
    const descriptors = [
      '7 3',
      '5 20 30 6 45 0 0',
      '5 20 4 3 10 100 9',
      `5 20 4 3 10 100 9 ${ans + 2500} 11 ${ans + 9000} 2`,
      `3 0 1 1 0 0 0 ${ans - 5000} 4 ${ans + 1} 2 ${ans + 1000} 9`,
      `4 7 2 5 0 60 0 ${ans + 12_000} 2`,
      // Rates per P seconds: each rate's run of seconds costed from its own count, rounded down.
      '7/3 3',
      '5/2 0 60 60 0 0 0',
      `13/6 20 4 3 10 100 9 ${ans + 2500} 11/4 ${ans + 9000} 5/2`,
      `5/3 0 30 6 0 0 4 ${ans + 31_000} 2`,
    ];
    const N = 200;
    for (const d of descriptors) {
      const range = [...Array(N + 1).keys()];
      const charged = (await run(
        d,
        ans,
        range.map((s) => ['charged', s]),
      )) as number[];
      const cost = (await run(
        d,
        ans,
        range.map((n) => ['cost', n]),
      )) as number[];
      const valid = [...new Set(charged)].filter((n) => n <= N).sort((a, b) => a - b);
      const cases: [number, number][] = [];
      for (const n0 of valid.filter((n) => n <= 40))
        for (let amount = 0; amount <= 250; amount++) cases.push([n0, amount]);
      const got = (await run(
        d,
        ans,
        cases.map(([n0, amount]) => ['afford', n0, amount]),
      )) as number[];
      cases.forEach(([n0, amount], i) => {
        const fits = valid.filter((n) => n >= n0 && cost[n]! - cost[n0]! <= amount);
        expect(fits[fits.length - 1], `${d}: all of the range fits`).toBeLessThan(valid[valid.length - 1]!);
        expect(got[i], `${d}: afford(${n0}, ${amount})`).toBe(fits.length ? Math.max(...fits) : n0);
      });
    }
  });
});

describe('tariff.lua: a price per minute (rate R/P)', () => {
  /** Seconds charged for a call of `sec` on initial/next blocks. */
  const charged = (sec: number, ini: number, nxt: number): number =>
    sec <= 0 ? 0 : sec <= ini ? ini : ini + Math.ceil((sec - ini) / nxt) * nxt;
  const LENGTHS = [...Array.from({ length: 61 }, (_, i) => i + 1), 600];

  it('0.10 EUR a minute on 60/60, 30/6 and 1/1: charged S seconds cost floor(S × 100000 / 60)', async () => {
    for (const [ini, nxt] of [
      [60, 60],
      [30, 6],
      [1, 1],
    ] as const) {
      const d = `100000/60 0 ${ini} ${nxt} 0 0 0`;
      const got = await bill(d, T0, LENGTHS);
      LENGTHS.forEach((sec, i) => {
        const n = charged(sec, ini, nxt);
        expect(got[i]!.slice(0, 2), `${ini}/${nxt}, ${sec} s`).toEqual([n, Math.floor((n * 100_000) / 60)]);
      });
    }
    // A minute costs exactly the printed price, ten of them ten times it; the short form bills per second.
    expect(await bill('100000/60 0', T0, [7, 60, 600])).toEqual([
      [7, 11_666, '1x7'],
      [60, 100_000, '1x60'],
      [600, 1_000_000, '1x600'],
    ]);
    expect(await run('100000/60 0', T0, [['flat'], ['rate', 0]])).toEqual([0, 100_000]);
  });

  it('what a balance buys is the most charged seconds whose cost fits it', async () => {
    expect(
      await run('100000/60 0 60 60 0 0 0', T0, [
        ['afford', 0, 1_000_000],
        ['afford', 0, 999_999],
        ['afford', 0, 99_999],
      ]),
    ).toEqual([600, 540, 0]);
    expect(
      await run('100000/60 0', T0, [
        ['afford', 0, 1_000_000],
        ['afford', 0, 999_999],
        ['afford', 0, 1666],
        ['afford', 0, 1665],
        // A balance of 10^15 micro-units: no product of it with the seconds goes past 2^53.
        ['afford', 0, 1e15],
        ['cost', 600_000_000_000],
      ]),
    ).toEqual([600, 599, 1, 0, 600_000_000_000, 1e15]);
  });

  it('a rate change mid-call: each rate costs its own run of seconds, rounded down on its own', async () => {
    const B = Date.UTC(2027, 0, 13, 19);
    const d = `100000/60 0 1 1 0 0 0 ${B} 50000/60`;
    const ans = B - 30_500; // seconds 0..30 start before the change, 31.. after
    const cost = (n: number): number =>
      Math.floor((Math.min(n, 31) * 100_000) / 60) + Math.floor((Math.max(0, n - 31) * 50_000) / 60);
    const secs = [1, 30, 31, 32, 33, 61, 91, 600];
    expect(
      await run(
        d,
        ans,
        secs.map((n): Op => ['cost', n]),
      ),
    ).toEqual(secs.map(cost));
    expect(
      await run(d, ans, [
        ['rate', 30],
        ['rate', 31],
      ]),
    ).toEqual([100_000, 50_000]);
  });

  it('refuses a rate per no second, or per more than an hour', async () => {
    for (const bad of ['100000/0 0', '100000/3601 0', '100000/ 0', '/60 0', '0/60 0', '100000/60/2 0'])
      expect(await run(bad, T0, [['flat']]), bad).toEqual(['bad']);
    await expect(run(`100 5 1 1 0 0 0 ${T0 + 5000} 4/0`, T0, [['cost', 6]])).rejects.toThrow(/bad rate change/);
  });
});

/**
 * A price per minute (a plan row's `rate` per `per` 60 seconds), through real
 * switch sockets: calls billed floor(charged seconds × rate / 60) tick by tick
 * on 60/60, 30/6 and 1/1 blocks, the cut-off and the low-balance alerts at
 * exactly what the balance buys, the quote and start answers, the records and
 * the audit; and a per-second plan's answers as they always were.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, type Harness } from '../support/harness';
import { idFields } from '../support/redis';
import { type Client, type Msg } from '../support/ws-client';
import { cdrsOf, connectSwitch, msgs, newCall } from './fixtures';
import type { Gateway } from '../../src/gateway/server';
import { putPlans } from '../../src/catalog/store';
import { audit } from '../../src/ledger/audit';

let h: Harness;
let gw: Gateway;
let c: Client;
let refs = 0;
const ref = (): number => ++refs;

/** 0.10 EUR a minute: 1666.67 micro-units a second, which no per-second rate says. */
const RATE = 100_000;
const BLOCKS = [
  [60, 60],
  [30, 6],
  [1, 1],
] as const;
const planOf = (ini: number, nxt: number): string => `min-${ini}-${nxt}`;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  await putPlans(h.ctx.redis, [
    ...BLOCKS.map(([initial, next]) => ({
      name: planOf(initial, next),
      rates: [{ prefix: '', rate: RATE, per: 60, fee: 0, initial, next }],
    })),
    { name: 'per-second', rates: [{ prefix: '', rate: 1666, fee: 0 }] },
  ]);
  gw = await gateway(h);
  ({ c } = await connectSwitch(h, gw.port));
});
afterAll(async () => {
  await c?.close();
  await gw?.close();
  await h?.stop();
});

/** Seconds charged for a call of `sec` on initial/next blocks. */
const chargedOf = (sec: number, ini: number, nxt: number): number =>
  sec <= 0 ? 0 : sec <= ini ? ini : ini + Math.ceil((sec - ini) / nxt) * nxt;
/** The documented cost: charged seconds × rate / 60, rounded down once, over the whole call. */
const costOf = (charged: number): number => Math.floor((charged * RATE) / 60);

async function begin(
  plan: string,
  face: number,
  thresholds: number[] = [],
): Promise<{ id: string; call: string; started: Msg }> {
  const [id] = await soldIds(
    h,
    talkProduct({ name: `${plan}-${face}-${thresholds.length}`, plan, face, price: face, thresholds }),
  );
  const call = newCall(plan);
  const started = await c.request({ op: 'start', ref: ref(), call, id, dest: '4912345' });
  expect(started.op, JSON.stringify(started)).toBe('started');
  return { id: id!, call, started };
}
const tick = (call: string, sec: number): Promise<Msg> => c.request({ op: 'tick', ref: ref(), call, sec });
const stop = (call: string, sec: number): Promise<Msg> => c.request({ op: 'stop', ref: ref(), call, sec });

describe('0.10 EUR a minute (rate 100000 per 60 s)', () => {
  for (const [ini, nxt] of BLOCKS)
    it(`on ${ini}/${nxt}: calls of 1–61 s and 10 minutes cost floor(charged × 100000 / 60), every tick`, async () => {
      const face = 10_000_000;
      for (const sec of [...Array.from({ length: 61 }, (_, i) => i + 1), 600]) {
        const { id, call } = await begin(planOf(ini, nxt), face);
        // Each tick takes what the call's seconds so far cost less what earlier ticks took: the
        // balance is always the face less the cost of the seconds charged, never a rounding more.
        for (let s = 1; s < sec; s++)
          expect(await tick(call, s), `${sec} s call, tick ${s}`).toMatchObject({
            balance: face - costOf(chargedOf(s, ini, nxt)),
          });
        const n = chargedOf(sec, ini, nxt);
        expect(await stop(call, sec), `${sec} s call`).toMatchObject({
          billedSec: n,
          cost: costOf(n),
          balance: face - costOf(n),
        });
        expect(await cdrsOf(h, id, call)).toMatchObject([
          { sec: String(n), cost: String(costOf(n)), rate: String(RATE), per: '60', short: '0' },
        ]);
      }
      // Ten minutes are exactly ten times the printed price, on every block.
      expect(costOf(chargedOf(600, ini, nxt))).toBe(1_000_000);
      expect((await audit(h.ctx)).problems).toEqual([]);
    }, 120_000);

  it('a balance of 1.00 EUR talks 10 minutes on 60/60 and is cut then, not a second early or late', async () => {
    const { id, call, started } = await begin(planOf(60, 60), 1_000_000);
    expect(started).toMatchObject({ maxSec: 600, grant: 600, final: true, rate: RATE, per: 60, fee: 0 });
    expect(await tick(call, 541)).toMatchObject({ balance: 0, secLeft: 59 });
    expect(await tick(call, 599)).toMatchObject({ balance: 0, secLeft: 1 });
    expect(msgs(c, call, 'cutoff')).toEqual([]);
    expect(await tick(call, 600)).toMatchObject({ balance: 0, secLeft: 0 });
    expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'exhausted', action: 'terminate' }]);
    expect(await stop(call, 600)).toMatchObject({ billedSec: 600, cost: 1_000_000, balance: 0 });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ cost: '1000000', short: '0', blocks: '60x10' }]);
    expect((await idFields(h, id)).st).toBe('exhausted');
  });

  it('per second (1/1): 1.00 EUR is cut at 600 s, 0.999999 EUR at 599 s with 1666 left', async () => {
    const full = await begin(planOf(1, 1), 1_000_000);
    expect(full.started).toMatchObject({ maxSec: 600, grant: 600, final: true });
    expect(await tick(full.call, 599)).toMatchObject({ balance: 1_000_000 - costOf(599), secLeft: 1 });
    expect(msgs(c, full.call, 'cutoff')).toEqual([]);
    expect(await tick(full.call, 600)).toMatchObject({ balance: 0, secLeft: 0 });
    expect(msgs(c, full.call, 'cutoff')).toHaveLength(1);
    expect(await stop(full.call, 600)).toMatchObject({ billedSec: 600, cost: 1_000_000, balance: 0 });

    const less = await begin(planOf(1, 1), 999_999);
    expect(less.started).toMatchObject({ maxSec: 599, grant: 599, final: true });
    expect(await tick(less.call, 598)).toMatchObject({ secLeft: 1 });
    expect(msgs(c, less.call, 'cutoff')).toEqual([]);
    expect(await tick(less.call, 599)).toMatchObject({ balance: 999_999 - 998_333, secLeft: 0 });
    expect(msgs(c, less.call, 'cutoff')).toHaveLength(1);
    expect(await stop(less.call, 599)).toMatchObject({ billedSec: 599, cost: 998_333, balance: 1666 });
    // Each call is rounded down on its own: 1666 pays a new call's first second (floor(100000 / 60)).
    const again = newCall('again');
    expect(await c.request({ op: 'start', ref: ref(), call: again, id: less.id, dest: '4912345' })).toMatchObject({
      op: 'started',
      maxSec: 1,
    });
    expect(await stop(again, 1)).toMatchObject({ cost: 1666, balance: 0 });
  });

  it('low-balance alerts come at the seconds left the balance really buys', async () => {
    const { call, started } = await begin(planOf(1, 1), 1_000_000, [60, 10]);
    expect(started).toMatchObject({ maxSec: 600 });
    const fired: { sec: number; level: unknown; secLeft: unknown }[] = [];
    for (const sec of [539, 540, 541, 589, 590, 591]) {
      const before = msgs(c, call, 'alert').length;
      expect(await tick(call, sec)).toMatchObject({ secLeft: 600 - sec });
      for (const a of msgs(c, call, 'alert').slice(before)) fired.push({ sec, level: a.level, secLeft: a.secLeft });
    }
    expect(fired).toEqual([
      { sec: 540, level: 60, secLeft: 60 },
      { sec: 590, level: 10, secLeft: 10 },
    ]);
    await stop(call, 591);
  });

  it('two calls on one ID with 60 s grants: each reserves a minute exactly, re-granted tick by tick, the last cut at the balance', async () => {
    const face = 250_000; // two and a half minutes at 0.10
    const [id] = await soldIds(
      h,
      talkProduct({
        name: 'min-two',
        plan: planOf(1, 1),
        face,
        price: face,
        maxCalls: 2,
        grantSec: 60,
        thresholds: [],
      }),
    );
    const a = newCall('a');
    const b = newCall('b');
    // A minute's reservation is its price, 100000, not 60 × 1666 or 60 × 1667.
    expect(await c.request({ op: 'start', ref: ref(), call: a, id, dest: '4912345' })).toMatchObject({
      grant: 60,
      maxSec: 150,
      final: false,
    });
    expect(await idFields(h, id!)).toMatchObject({ free: String(face - 100_000) });
    expect(await c.request({ op: 'start', ref: ref(), call: b, id, dest: '4912345' })).toMatchObject({
      grant: 60,
      maxSec: 90,
    });
    expect(await idFields(h, id!)).toMatchObject({ free: String(face - 200_000) });
    // Both talk a minute, each tick paid from the reservations and re-grants, b then stops: exactly 100000.
    for (let sec = 1; sec <= 60; sec++) {
      for (const call of [a, b]) {
        const t = await tick(call, sec);
        expect(t.grant as number, `${call} at ${sec}`).toBeGreaterThanOrEqual(sec);
      }
      expect(await idFields(h, id!)).toMatchObject({ bal: String(face - 2 * costOf(sec)) });
    }
    expect(await stop(b, 60)).toMatchObject({ billedSec: 60, cost: 100_000, balance: face - 200_000 });
    // a goes on, re-granted what is free, and is cut when all 150000 left are spent: at 90 s.
    let cut = 0;
    for (let sec = 61; sec <= 100 && !cut; sec++) {
      expect(await tick(a, sec)).toMatchObject({ balance: face - 100_000 - costOf(sec) });
      if (msgs(c, a, 'cutoff').length) cut = sec;
    }
    expect(cut).toBe(90);
    expect(await stop(a, 90)).toMatchObject({ billedSec: 90, cost: 150_000, balance: 0 });
    expect((await idFields(h, id!)).st).toBe('exhausted');
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('a quote and a start name the rate and the seconds it pays; a per-second plan answers as before', async () => {
    const [id] = await soldIds(h, talkProduct({ name: 'quoted-min', plan: planOf(60, 60), face: 1_000_000, price: 0 }));
    expect(await c.request({ op: 'quote', ref: ref(), id, dest: '4912345' })).toEqual({
      op: 'quoted',
      ref: refs,
      rate: RATE,
      per: 60,
      fee: 0,
      maxSec: 600,
      balance: 1_000_000,
      currency: 'EUR',
    });
    const [sid] = await soldIds(h, talkProduct({ name: 'quoted-sec', plan: 'per-second', face: 1_000_000, price: 0 }));
    const quoted = await c.request({ op: 'quote', ref: ref(), id: sid, dest: '4912345' });
    expect(quoted).toEqual({
      op: 'quoted',
      ref: refs,
      rate: 1666,
      fee: 0,
      maxSec: 600,
      balance: 1_000_000,
      currency: 'EUR',
    });
    const call = newCall('sec');
    const started = await c.request({ op: 'start', ref: ref(), call, id: sid, dest: '4912345' });
    expect(started).toMatchObject({ op: 'started', rate: 1666, maxSec: 600 });
    expect(started).not.toHaveProperty('per');
    // 0.09996 EUR a minute, as a per-second rate charges it.
    expect(await stop(call, 60)).toMatchObject({ cost: 99_960 });
    expect((await cdrsOf(h, sid!, call))[0]).not.toHaveProperty('per');
  });
});

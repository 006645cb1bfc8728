/**
 * Tariffs applied by the call scripts, through real switch sockets: blocks
 * charged when they start (and the cut-off that respects them), minimum cost
 * and disconnect charge, and a call across a dated rate change charged each
 * second at the rate in force for it; and, on the scripts themselves, a
 * repeated start after a rate change (answered the admission's rate) and, at the
 * night of a daylight-saving change, a call across a peak window's end.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, type Harness } from '../support/harness';
import { idFields } from '../support/redis';
import { type Client, type Msg } from '../support/ws-client';
import { cdrsOf, connectSwitch, msgs, newCall, sessionKey, tickAt } from './fixtures';
import type { Gateway } from '../../src/gateway/server';
import { putPlans } from '../../src/catalog/store';
import { audit } from '../../src/ledger/audit';
import { PlanTariff } from '../../src/catalog/tariff';
import { callKeysFor, callKeyOf, type CallKeys } from '../../src/metering/call-keys';
import { callStart, callStop, type StartResult } from '../../src/metering/scripts';
import type { RatePlan } from '../../src/catalog/schema';
import { keys } from '../../src/redis/keys';

let h: Harness;
let gw: Gateway;
let c: Client;
let sw: string;
let refs = 0;
const ref = (): number => ++refs;
/** When plan `dated` goes from 100 to 300 micro-units a second: two minutes after the suite starts. */
let rateChangeAt: number;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  rateChangeAt = Date.now() + 120_000;
  await putPlans(h.ctx.redis, [
    { name: 'blocks', rates: [{ prefix: '', rate: 100, fee: 0, initial: 60, next: 6 }] },
    { name: 'blocks-10', rates: [{ prefix: '', rate: 100, fee: 0, initial: 10, next: 10 }] },
    { name: 'minimums', rates: [{ prefix: '', rate: 100, fee: 200, minCost: 5000, disconnect: 300 }] },
    { name: 'dated', rates: [{ prefix: '', rate: 100, fee: 0 }] },
    { name: 'dated', activeFrom: rateChangeAt, rates: [{ prefix: '', rate: 300, fee: 0 }] },
  ]);
  gw = await gateway(h);
  ({ c, name: sw } = await connectSwitch(h, gw.port));
});
afterAll(async () => {
  await c?.close();
  await gw?.close();
  await h?.stop();
});

async function begin(plan: string, face: number, name = plan): Promise<{ id: string; call: string; started: Msg }> {
  const [id] = await soldIds(h, talkProduct({ name, plan, face, price: face, thresholds: [] }));
  const call = newCall(plan);
  const started = await c.request({ op: 'start', ref: ref(), call, id, dest: '4912345' });
  expect(started.op).toBe('started');
  return { id: id!, call, started };
}
const tick = (call: string, sec: number): Promise<Msg> => c.request({ op: 'tick', ref: ref(), call, sec });
/**
 * A call to 4912345 started straight through call_start at `now`, on an ID of a
 * product of its own rated by `plans` (the versions of one plan); `start(now)`
 * sends the same start again.
 */
async function startAt(
  plans: RatePlan[],
  face: number,
  now: number,
): Promise<{
  id: string;
  call: string;
  ck: CallKeys;
  started: StartResult;
  start: (at: number) => Promise<StartResult>;
}> {
  const name = plans[0]!.name;
  const [id] = await soldIds(h, talkProduct({ name, plan: name, face, thresholds: [] }));
  const { hash, bucket } = h.ctx.ids.hash(id!);
  const call = newCall(name);
  const ck = callKeysFor(keys.id(bucket, hash), callKeyOf(`${name}-switch`, call));
  const rates = [name, new PlanTariff(plans).descriptor('4912345', now)!];
  const args = { dest: '4912345', sw: `${name}-switch`, call, idHash: hash, ringGraceMs: 0, aniHash: '', rates };
  const start = (at: number): Promise<StartResult> => callStart(h.ctx.scripts, ck, { ...args, mode: 'tick', now: at });
  return { id: id!, call, ck, started: await start(now), start };
}

const stop = (call: string, sec: number): Promise<Msg> => c.request({ op: 'stop', ref: ref(), call, sec });

describe('billing increments (60/6 at 100 a second)', () => {
  it('a block is charged when it starts; a 61 s call is charged 66 s', async () => {
    const { id, call, started } = await begin('blocks', 100_000);
    expect(started).toMatchObject({ maxSec: 996, rate: 100 });
    // The first second starts the 60 s initial block: all of it is taken at once.
    expect(await tick(call, 1)).toMatchObject({ balance: 94_000 });
    expect(await tick(call, 60)).toMatchObject({ balance: 94_000 });
    expect(await tick(call, 61)).toMatchObject({ balance: 93_400 });
    expect(await stop(call, 61)).toMatchObject({ billedSec: 66, cost: 6600, balance: 93_400 });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '66', used: '61', blocks: '60+6x1', cost: '6600' }]);
  });

  it('the cut-off respects blocks: a balance of 70 s is cut at 66 s, nothing short, the rest stays', async () => {
    const { id, call, started } = await begin('blocks', 7000, 'blocks-70');
    expect(started).toMatchObject({ maxSec: 66, grant: 66, final: true });
    expect(await tick(call, 65)).toMatchObject({ balance: 400, secLeft: 1 });
    expect(msgs(c, call, 'cutoff')).toEqual([]);
    expect(await tick(call, 66)).toMatchObject({ balance: 400, secLeft: 0 });
    expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'exhausted', action: 'terminate' }]);
    expect(await stop(call, 66)).toMatchObject({ billedSec: 66, cost: 6600, balance: 400 });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ short: '0' }]);
  });
  it('a first tick that skips past the final grant mid-block is cut: the grant does not grow with the short block', async () => {
    const { id, call, started } = await begin('blocks', 7000, 'blocks-70-skip');
    expect(started).toMatchObject({ maxSec: 66, grant: 66, final: true });
    // Ticks lost up to 69 s: the block to 72 s is charged, only 66 s of it paid.
    expect(await tick(call, 69)).toMatchObject({ balance: 0, secLeft: 0, grant: 66, final: true });
    expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'exhausted', action: 'terminate' }]);
    expect(await stop(call, 69)).toMatchObject({ billedSec: 72, cost: 7000, balance: 0 });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ short: '200' }]);
  });
});

describe('low-balance alerts on a block tariff (10/10 at 100 a second)', () => {
  it('each threshold fires once, at the tick where secLeft first falls to it, inside a paid block or not', async () => {
    const [id] = await soldIds(
      h,
      talkProduct({ name: 'alerts-10', plan: 'blocks-10', face: 10_000, thresholds: [50, 20, 5] }),
    );
    const call = newCall('alerts');
    expect(await c.request({ op: 'start', ref: ref(), call, id, dest: '4912345' })).toMatchObject({ maxSec: 100 });
    const fired: { sec: number; level: unknown; secLeft: unknown }[] = [];
    for (let sec = 1; sec <= 100; sec++) {
      const before = msgs(c, call, 'alert').length;
      const ticked = await tick(call, sec);
      // Every tick is sent twice, the repeat after the first was answered: a repeat fires nothing.
      expect(await tick(call, sec)).toMatchObject({ secLeft: ticked.secLeft });
      for (const a of msgs(c, call, 'alert').slice(before)) fired.push({ sec, level: a.level, secLeft: a.secLeft });
    }
    // Seconds 50, 80 and 95 lie inside blocks already paid (blocks start at 0, 10, … 90): each
    // alert comes at its tick all the same, not at the next block's start, and never again.
    expect(fired).toEqual([
      { sec: 50, level: 50, secLeft: 50 },
      { sec: 80, level: 20, secLeft: 20 },
      { sec: 95, level: 5, secLeft: 5 },
    ]);
    expect(msgs(c, call, 'cutoff')[0]).toMatchObject({ reason: 'exhausted' });
    await stop(call, 100);
  });
});

describe('minimum cost and disconnect charge', () => {
  it('a short call costs the minimum plus the disconnect charge, reserved from the start', async () => {
    const { id, call, started } = await begin('minimums', 100_000);
    // 100 000 less the 300 disconnect charge and the 200 fee buys 995 s.
    expect(started).toMatchObject({ maxSec: 995, fee: 200 });
    expect(await stop(call, 10)).toMatchObject({ billedSec: 10, cost: 5300, balance: 94_700 });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ cost: '5300', disc: '300', short: '0' }]);
  });

  it('an unanswered call costs nothing, no disconnect charge either', async () => {
    const { id, call } = await begin('minimums', 100_000, 'minimums-0');
    expect(await stop(call, 0)).toMatchObject({ billedSec: 0, cost: 0, balance: 100_000 });
    expect(await idFields(h, id)).toMatchObject({ bal: '100000', free: '100000' });
  });
});

describe('a rate change during a call', () => {
  it('each second is charged at the rate in force for it: before the dated version, and after', async () => {
    const { id, call, started } = await begin('dated', 10_000_000);
    expect(started).toMatchObject({ rate: 100 });
    await tick(call, 1);
    const ans = Number(await h.r.hget(sessionKey(h, id, sw, call), 'ans'));
    // Long enough to run 20 s past the change.
    const sec = Math.ceil((rateChangeAt - ans) / 1000) + 20;
    let expected = 0;
    for (let i = 0; i < sec; i++) expected += ans + i * 1000 >= rateChangeAt ? 300 : 100;
    expect(expected).toBeGreaterThan(sec * 100);
    expect(await stop(call, sec)).toMatchObject({ billedSec: sec, cost: expected });
    expect((await audit(h.ctx)).problems).toEqual([]);
  });
});

describe('a repeated start', () => {
  it('answers the rate admission answered, even after a rate change since', async () => {
    const t0 = Date.now();
    const { started: first, start } = await startAt(
      [
        { name: 'dated-repeat', rates: [{ prefix: '', rate: 100, fee: 50 }] },
        { name: 'dated-repeat', activeFrom: t0 + 60_000, rates: [{ prefix: '', rate: 300, fee: 50 }] },
      ],
      1_000_000,
      t0,
    );
    expect(first).toMatchObject({ ok: true, rate: 100, fee: 50, duplicate: false });
    if (!first.ok) return;
    // Two minutes on, past the change to 300: the same maxSec, balance, rate and fee.
    const again = await start(t0 + 120_000);
    const { maxSec, balance, rate, fee, grant, final } = first;
    expect(again).toMatchObject({ ok: true, duplicate: true, maxSec, balance, rate, fee, grant, final });
  });
});

describe('a rate change while the call rings', () => {
  it('the grant is priced again at answer: the reservation carries the call as far as it pays, nothing short', async () => {
    const t0 = Date.now();
    const { id, call, ck, started } = await startAt(
      [
        { name: 'ring-change', rates: [{ prefix: '', rate: 100, fee: 0 }] },
        { name: 'ring-change', activeFrom: t0 + 10_000, rates: [{ prefix: '', rate: 300, fee: 0 }] },
      ],
      10_000,
      t0,
    );
    // Priced as if answered at the start: 10 s at 100 a second, then 9 000 at 300: 40 s.
    expect(started).toMatchObject({ ok: true, rate: 100, grant: 40, final: true });
    // Answered after ringing 11 s, past the change: 10 000 at 300 a second is 33 s.
    expect(await tickAt(h, ck, 1, t0 + 12_000)).toMatchObject({ grant: 33, isFinal: true, cut: '' });
    expect(await tickAt(h, ck, 33, t0 + 44_000)).toMatchObject({ balance: 100, secLeft: 0, cut: 'exhausted' });
    expect(await callStop(h.ctx.scripts, ck, t0 + 45_000, 33, 'normal', 60)).toMatchObject({
      ok: true,
      billedSec: 33,
      cost: 9900,
      balance: 100,
    });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ short: '0' }]);
  });
});

describe('a rate rise while the call rings leaves its first block short', () => {
  const rising = (name: string, t0: number, terms: { initial?: number; next?: number }): RatePlan[] => [
    { name, rates: [{ prefix: '', rate: 100, fee: 0, ...terms }] },
    { name, activeFrom: t0 + 10_000, rates: [{ prefix: '', rate: 300, fee: 0, ...terms }] },
  ];

  it('per second: the first report, at the start grant, is answered the grant priced from the answer', async () => {
    const t0 = Date.now();
    const { id, call, ck, started } = await startAt(rising('short-first-s', t0, {}), 10_000, t0);
    expect(started).toMatchObject({ ok: true, grant: 40, final: true });
    // A switch that ran to its first grant (a quota update, or ticks lost) reports 40 s, answered
    // at t0 + 12 s: 10 000 at 300 a second carried it 33 s, not the start's 40.
    expect(await tickAt(h, ck, 40, t0 + 52_000)).toMatchObject({
      grant: 33,
      isFinal: true,
      secLeft: 0,
      cut: 'exhausted',
    });
    expect(await callStop(h.ctx.scripts, ck, t0 + 53_000, 40, 'normal', 60)).toMatchObject({
      billedSec: 40,
      cost: 10_000,
      short: 2000,
    });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ short: '2000' }]);
  });

  it('10/10 blocks: a reservation that does not pay the first block at the answer carries the call 0 s', async () => {
    const t0 = Date.now();
    const { ck, started } = await startAt(rising('short-first-b', t0, { initial: 10, next: 10 }), 2000, t0);
    // Priced at the start, the first block costs 1000 and the next, after the rise, 3000: 10 s.
    expect(started).toMatchObject({ ok: true, grant: 10, final: true });
    // Answered at t0 + 12 s, the first block costs 3000: the 2000 held pays no block at all.
    expect(await tickAt(h, ck, 10, t0 + 22_000)).toMatchObject({ grant: 0, isFinal: true, cut: 'exhausted' });
    // Later reports answer the same grant.
    expect(await tickAt(h, ck, 11, t0 + 23_000)).toMatchObject({ grant: 0, cut: 'exhausted' });
  });
});

describe('time of day across a daylight-saving change', () => {
  it('the hour that happens twice in Europe/Paris is peak twice: a call crossing its end pays each second its rate', async () => {
    // Peak (300 a second) from 02:00 to 03:00 Paris time, 100 otherwise. On Sunday 2027-10-31 the clocks
    // go back at 03:00 CEST (01:00Z) to 02:00 CET: peak runs from 00:00Z to 02:00Z, two hours.
    const plan = {
      name: 'paris',
      tz: 'Europe/Paris',
      periods: [{ name: 'peak', days: ['sun' as const], from: '02:00', to: '03:00' }],
      rates: [{ prefix: '', rate: 100, fee: 0, periodRates: { peak: 300 } }],
    };
    await putPlans(h.ctx.redis, [plan]);
    const t0 = Date.UTC(2027, 9, 31, 1, 58); // 02:58 CET, the second 02:00-03:00
    const { id, ck, started } = await startAt([plan], 1_000_000, t0);
    expect(started).toMatchObject({ ok: true, rate: 300 });
    // Four minutes from 01:58Z: 120 s of peak, then 120 s after it (a peak ended at 01:00Z, the
    // first 03:00, would have charged them all 100).
    const stopped = await callStop(h.ctx.scripts, ck, t0 + 240_000, 240, 'normal', 60);
    expect(stopped).toMatchObject({ ok: true, billedSec: 240, cost: 120 * 300 + 120 * 100 });
    expect(await idFields(h, id)).toMatchObject({ bal: String(1_000_000 - 48_000) });
  });
});

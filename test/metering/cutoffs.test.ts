/**
 * Cut-offs: a call is told to cut as soon as its balance can no longer pay a
 * second, every later tick repeats the order, and each cut-off is counted
 * once in /metrics.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, type Harness } from '../support/harness';
import { metricsText, sample } from '../support/metrics';
import { idFields } from '../support/redis';
import { until } from '../support/wait';
import type { Client, Msg } from '../support/ws-client';
import { cdrsOf, connectSwitch, msgs, newCall, range } from './fixtures';
import type { Gateway } from '../../src/gateway/server';
import type { Product } from '../../src/catalog/schema';
import { setIdState } from '../../src/ledger/ids';
import { putProducts } from '../../src/catalog/store';

let h: Harness;
let gw: Gateway;
let c: Client;
let refs = 0;
const ref = (): number => ++refs;

/** plan std: 100 micro/s, no fee */
const DEST = '4912345';
const P_STD = talkProduct();
/** Enough for 10 s and a half at 100/s; no thresholds, so only cut-offs come back. */
const P_1050 = talkProduct({ name: 'talk1050', face: 1050, price: 1050, thresholds: [], maxCalls: 2 });
/** Exactly 10 s at 100/s. */
const P_1000 = talkProduct({ name: 'talk1000', face: 1000, price: 1000, thresholds: [] });

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [P_STD, P_1050, P_1000]);
  gw = await gateway(h);
  ({ c } = await connectSwitch(h, gw.port));
});
afterAll(async () => {
  await c?.close();
  await gw?.close();
  await h?.stop();
});

async function begin(product: Product = P_STD): Promise<{ id: string; call: string; started: Msg }> {
  const [id] = await soldIds(h, product);
  const call = newCall();
  const started = await c.request({ op: 'start', ref: ref(), call, id: id!, dest: DEST });
  expect(started.op).toBe('started');
  return { id: id!, call, started };
}

describe('cut-offs are counted once', () => {
  const cutoffs = async (reason: string): Promise<number> => {
    return sample(await metricsText(gw.port), 'tessera_cutoffs_total', { reason }) ?? 0;
  };

  it('an exhausted call that keeps ticking is told to cut on each tick, counted once', async () => {
    const before = await cutoffs('exhausted');
    const { id, call, started } = await begin(P_1000);
    expect(started).toMatchObject({ maxSec: 10, balance: 1000, rate: 100 });
    const r10 = ref();
    const ticks: Msg[] = range(1, 10).map((sec) => ({ op: 'tick', call, sec }));
    ticks[9]!.ref = r10;
    c.send(ticks);
    expect(await c.waitFor((m) => m.ref === r10)).toMatchObject({
      op: 'ticked',
      ref: r10,
      call,
      balance: 0,
      secLeft: 0,
    });
    expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'exhausted', action: 'terminate' }]);
    expect(await idFields(h, id)).toMatchObject({ st: 'exhausted', bal: '0' });
    expect(await cutoffs('exhausted')).toBe(before + 1);

    // The switch talks on: every further tick (new seconds, or a repeat) repeats the order.
    for (const sec of [11, 12, 13, 13]) {
      expect(await c.request({ op: 'tick', ref: ref(), call, sec })).toMatchObject({
        op: 'ticked',
        balance: 0,
        secLeft: 0,
      });
    }
    expect(msgs(c, call, 'cutoff')).toEqual(
      Array.from({ length: 5 }, () => ({ op: 'cutoff', call, reason: 'exhausted', action: 'terminate' })),
    );
    expect(await cutoffs('exhausted')).toBe(before + 1);
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 13 })).toMatchObject({
      op: 'stopped',
      billedSec: 13,
      cost: 1000,
      balance: 0,
    });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '13', cost: '1000', short: '300', bal: '0' }]);
    expect(await cutoffs('exhausted')).toBe(before + 1);
  });

  it('a blocked ID gets cutoff blocked on each later tick, counted once', async () => {
    const beforeB = await cutoffs('blocked');
    const beforeE = await cutoffs('exhausted');
    const { id, call } = await begin();
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 1 })).toMatchObject({ balance: 999_900 });
    expect(await setIdState(h.ctx, id, 'block', 'test')).toEqual({ ok: true, state: 'blocked' });
    for (const sec of [2, 3, 3, 4]) {
      expect(await c.request({ op: 'tick', ref: ref(), call, sec })).toMatchObject({ op: 'ticked' });
    }
    expect(msgs(c, call, 'cutoff')).toEqual(
      Array.from({ length: 4 }, () => ({ op: 'cutoff', call, reason: 'blocked', action: 'terminate' })),
    );
    expect(await cutoffs('blocked')).toBe(beforeB + 1);
    expect(await cutoffs('exhausted')).toBe(beforeE);
    await c.request({ op: 'stop', ref: ref(), call, sec: 4 });
    expect(await cutoffs('blocked')).toBe(beforeB + 1);
  });

  it('a blocked ID whose next tick also reaches the final grant is cut blocked, never redirected', async () => {
    const product = talkProduct({
      name: 'redir-1000',
      face: 1000,
      price: 1000,
      thresholds: [],
      finalAction: 'redirect',
      redirectTo: '+18005550100',
    });
    await putProducts(h.ctx.redis, [product]);
    await gw.catalog.refresh();
    for (const sec of [10, 12]) {
      const { id, call } = await begin(product);
      expect(await setIdState(h.ctx, id, 'block', 'test')).toEqual({ ok: true, state: 'blocked' });
      // The first tick since the block lands on (or past) the end of the final grant.
      const at = await c.request({ op: 'tick', ref: ref(), call, sec });
      expect(at).toMatchObject({ op: 'ticked', final: true });
      expect(at.redirect).toBeUndefined();
      expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'blocked', action: 'terminate' }]);
      await c.request({ op: 'stop', ref: ref(), call, sec });
    }
  });

  it("a blocked ID's call gets no more grant, even for seconds it talked past it paid from what is free", async () => {
    // Two calls allowed: the call holds a 60 s slice, the rest of the balance is free.
    const product = talkProduct({ name: 'duo-block', maxCalls: 2, thresholds: [] });
    await putProducts(h.ctx.redis, [product]);
    await gw.catalog.refresh();
    const { id, call, started } = await begin(product);
    expect(started).toMatchObject({ grant: 60, final: false });
    expect(await setIdState(h.ctx, id, 'block', 'test')).toEqual({ ok: true, state: 'blocked' });
    // Past its grant: the 61st second is paid from what is free, as any second is billed.
    const cut = { op: 'ticked', balance: 1_000_000 - 6100, grant: 60, secLeft: 0, final: true };
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 61 })).toMatchObject(cut);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 61 })).toMatchObject(cut);
    expect(msgs(c, call, 'cutoff')).toEqual(
      Array.from({ length: 2 }, () => ({ op: 'cutoff', call, reason: 'blocked', action: 'terminate' })),
    );
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 61 })).toMatchObject({ cost: 6100 });
  });
});

describe('cut as soon as a second can no longer be paid', () => {
  it('face 1050 at 100/s: cut at 10 s with 50 left; the ID stays sold; sec 11 takes the 50 and exhausts it', async () => {
    const { id, call, started } = await begin(P_1050);
    expect(started).toMatchObject({ maxSec: 10, balance: 1050, rate: 100, fee: 0 });
    const r9 = ref();
    c.send(range(1, 9).map((sec) => ({ op: 'tick', call, sec, ...(sec === 9 ? { ref: r9 } : {}) })));
    expect(await c.waitFor((m) => m.ref === r9)).toMatchObject({
      op: 'ticked',
      ref: r9,
      call,
      balance: 150,
      secLeft: 1,
    });
    expect(msgs(c, call, 'cutoff')).toEqual([]);

    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 10 })).toMatchObject({
      op: 'ticked',
      balance: 50,
      secLeft: 0,
    });
    expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'exhausted', action: 'terminate' }]);
    expect(await idFields(h, id)).toMatchObject({ st: 'sold', bal: '50', act: '1' });

    // 50 cannot pay a second at 100/s: a new call on this (two-call) ID is refused.
    const other = newCall();
    expect(await c.request({ op: 'start', ref: ref(), call: other, id, dest: DEST })).toMatchObject({
      op: 'error',
      call: other,
      reason: 'insufficient_balance',
    });
    expect(await idFields(h, id)).toMatchObject({ st: 'sold', bal: '50', act: '1' });

    // The switch talks on: second 11 takes the last 50, 50 short, and the ID is exhausted.
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 11 })).toMatchObject({
      op: 'ticked',
      balance: 0,
      secLeft: 0,
    });
    expect(msgs(c, call, 'cutoff')).toEqual([
      { op: 'cutoff', call, reason: 'exhausted', action: 'terminate' },
      { op: 'cutoff', call, reason: 'exhausted', action: 'terminate' },
    ]);
    expect(await idFields(h, id)).toMatchObject({ st: 'exhausted', bal: '0' });
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 11 })).toMatchObject({
      op: 'stopped',
      billedSec: 11,
      cost: 1050,
      balance: 0,
    });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '11', cost: '1050', short: '50', bal: '0' }]);
    expect(await idFields(h, id)).toMatchObject({ st: 'exhausted', bal: '0', act: '0' });
    expect(await c.request({ op: 'start', ref: ref(), call: newCall(), id, dest: DEST })).toMatchObject({
      op: 'error',
      reason: 'exhausted',
    });
  });
});

describe('a call closed under its switch that still ticks is counted once', () => {
  // Reaped 300 ms after its last tick (a sweep every 100 ms).
  let rg: Gateway;
  let a: Client;
  let b: Client;
  beforeAll(async () => {
    rg = await gateway(h, { staleAfterMs: 300, ringTimeoutMs: 300, reapIntervalMs: 100 });
    ({ c: a } = await connectSwitch(h, rg.port));
    ({ c: b } = await connectSwitch(h, rg.port));
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await rg?.close();
  });
  const cutoffs = async (reason: string): Promise<number> =>
    sample(await metricsText(rg.port), 'tessera_cutoffs_total', { reason }) ?? 0;
  /** Ticks without ref, then one with: the cut-offs they brought have come by its answer. */
  const tickOn = async (call: string, secs: number[]): Promise<Msg> => {
    const barrier = ref();
    a.send([...secs.map((sec) => ({ op: 'tick', call, sec })), { op: 'tick', call, sec: 99, ref: barrier }]);
    return a.waitFor((m) => m.ref === barrier);
  };
  const startOn = async (): Promise<{ id: string; call: string }> => {
    const [id] = await soldIds(h, P_STD);
    const call = newCall();
    expect(await a.request({ op: 'start', ref: ref(), call, id: id!, dest: DEST })).toMatchObject({ op: 'started' });
    expect(await a.request({ op: 'tick', ref: ref(), call, sec: 2 })).toMatchObject({ op: 'ticked' });
    return { id: id!, call };
  };

  it('reaped: every tick without ref is told to cut, the cut-off counted once', async () => {
    const before = await cutoffs('stale');
    const { id, call } = await startOn();
    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000, 20);
    expect(await tickOn(call, [3, 4, 4, 5])).toMatchObject({ op: 'error', reason: 'call_ended' });
    expect(msgs(a, call, 'cutoff')).toEqual(
      Array.from({ length: 4 }, () => ({ op: 'cutoff', call, reason: 'stale', action: 'terminate' })),
    );
    expect(await tickOn(call, [6])).toMatchObject({ reason: 'call_ended' });
    expect(msgs(a, call, 'cutoff')).toHaveLength(5);
    expect(await cutoffs('stale')).toBe(before + 1);
  });

  it('reaped, first ticked with a ref: that error ends the call for its switch, and counts it', async () => {
    const before = await cutoffs('stale');
    const { id, call } = await startOn();
    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000, 20);
    expect(await a.request({ op: 'tick', ref: ref(), call, sec: 3 })).toMatchObject({ reason: 'call_ended' });
    expect(await cutoffs('stale')).toBe(before + 1);
    expect(await tickOn(call, [4, 5])).toMatchObject({ reason: 'call_ended' });
    expect(msgs(a, call, 'cutoff')).toHaveLength(2);
    expect(await cutoffs('stale')).toBe(before + 1);
  });

  it('stopped under another token name: every tick without ref is told to cut, counted once', async () => {
    const before = await cutoffs('stopped');
    const { id, call } = await startOn();
    expect(await b.request({ op: 'stop', ref: ref(), call, sec: 3, id, dest: DEST })).toMatchObject({
      op: 'stopped',
      billedSec: 3,
    });
    expect(await tickOn(call, [3, 4, 4])).toMatchObject({ reason: 'call_ended' });
    expect(msgs(a, call, 'cutoff')).toEqual(
      Array.from({ length: 3 }, () => ({ op: 'cutoff', call, reason: 'stopped', action: 'terminate' })),
    );
    expect(await cutoffs('stopped')).toBe(before + 1);
  });
});

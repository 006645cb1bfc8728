/**
 * Credit control over real Redis and real switch sockets: reservations that
 * keep parallel calls on one ID from overdrawing it, re-grants, the final unit
 * and redirect, quota mode billed exactly as ticks, and the audit's check of
 * reservations.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { metricsText, sample } from '../support/metrics';
import { idFields, idKeyOf } from '../support/redis';
import { Client, type Msg } from '../support/ws-client';
import { cdrsOf, connectSwitch, msgs, newCall, range, sendTicks } from './fixtures';
import type { Gateway } from '../../src/gateway/server';
import type { TalkProduct } from '../../src/catalog/schema';
import { audit } from '../../src/ledger/audit';
import { setIdState } from '../../src/ledger/ids';
import { putProducts } from '../../src/catalog/store';

let h: Harness;
let gw: Gateway;
let c: Client;
/** The token name of `c`. */
let sw: string;
let refs = 0;
const ref = (): number => ++refs;
/** plan std: 100 micro-units a second. */
const DEST = '4912345';

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  gw = await gateway(h);
  ({ c, name: sw } = await connectSwitch(h, gw.port));
});
afterAll(async () => {
  await c?.close();
  await gw?.close();
  await h?.stop();
});

const start = (id: string, call: string, extra: Record<string, unknown> = {}): Promise<Msg> =>
  c.request({ op: 'start', ref: ref(), call, id, dest: DEST, ...extra });
const tick = (call: string, sec: number): Promise<Msg> => c.request({ op: 'tick', ref: ref(), call, sec });
const stop = (call: string, sec: number): Promise<Msg> => c.request({ op: 'stop', ref: ref(), call, sec });

async function auditProblems(): Promise<unknown[]> {
  return (await audit(h.ctx)).problems;
}

/**
 * n calls on one ID tick second by second, each stopping the moment it is told
 * to cut (a switch that honours its grants). Returns the second each was cut at.
 */
async function raceToZero(product: TalkProduct, n: number): Promise<{ id: string; calls: string[]; cutAt: number[] }> {
  const [id] = await soldIds(h, product);
  const calls = range(1, n).map(() => newCall('race'));
  for (const call of calls) expect(await start(id!, call)).toMatchObject({ op: 'started' });
  const cutAt: number[] = calls.map(() => 0);
  for (let sec = 1; cutAt.some((s) => s === 0); sec++) {
    if (sec > 1000) throw new Error('no cut-off after 1000 s');
    // All live calls' ticks of one second go in one frame, as a busy switch sends them.
    const live = calls.map((call, i) => ({ call, i })).filter(({ i }) => cutAt[i] === 0);
    c.send(live.map(({ call }) => ({ op: 'tick', call, sec, ref: `${call}@${sec}` })));
    for (const { call, i } of live) {
      await c.waitFor((m) => m.ref === `${call}@${sec}`);
      if (msgs(c, call, 'cutoff').length > 0) {
        cutAt[i] = sec;
        await stop(call, sec);
      }
    }
  }
  return { id: id!, calls, cutAt };
}

describe('reservations: parallel calls on one ID never overdraw it', () => {
  it.each([2, 5])('%i calls racing to zero: face value billed exactly, short 0 on every call', async (n) => {
    // 100 s of balance, 10 s grants: the calls hold and re-grant slices of it as they go.
    const product = talkProduct({ name: `race${n}`, face: 10_000, maxCalls: n, grantSec: 10, thresholds: [] });
    const { id, calls, cutAt } = await raceToZero(product, n);
    let cost = 0;
    for (const call of calls) {
      const [rec] = await cdrsOf(h, id, call);
      expect(rec, call).toMatchObject({ short: '0' });
      cost += Number(rec!.cost);
    }
    expect(cost).toBe(10_000);
    // Every second billed was paid for: the seconds talked add up to the face value.
    expect(cutAt.reduce((s, x) => s + x, 0)).toBe(100);
    expect(await idFields(h, id)).toMatchObject({ bal: '0', free: '0', act: '0', st: 'exhausted' });
    expect(await auditProblems()).toEqual([]);
  });

  it('a start is refused when the other calls hold all that is left, and admitted once they give it back', async () => {
    const [id] = await soldIds(h, talkProduct({ name: 'hold', face: 3000, maxCalls: 2, grantSec: 60 }));
    const a = newCall();
    expect(await start(id!, a)).toMatchObject({ op: 'started', grant: 30, maxSec: 30, final: true });
    const b = newCall();
    expect(await start(id!, b)).toMatchObject({ op: 'error', reason: 'insufficient_balance' });
    // Stopped after 10 s, a gives back the 20 s it did not use.
    expect(await stop(a, 10)).toMatchObject({ billedSec: 10, cost: 1000, balance: 2000 });
    expect(await idFields(h, id!)).toMatchObject({ bal: '2000', free: '2000' });
    expect(await start(id!, b)).toMatchObject({ op: 'started', grant: 20 });
    await stop(b, 0);
  });

  it('re-grants before a grant runs out while balance is free, under a load of ticks from many calls', async () => {
    // Ten IDs, two calls each, 10 s grants: each call is re-granted every 5 s or so.
    const product = talkProduct({ name: 'regrant', face: 100_000, maxCalls: 2, grantSec: 10, thresholds: [] });
    const ids = await soldIds(h, product, 10);
    const calls = ids.flatMap((id) => [newCall('rg'), newCall('rg')].map((call) => ({ id: id, call })));
    const grants = new Map<string, number[]>();
    for (const { id, call } of calls) {
      const s = await start(id, call);
      expect(s).toMatchObject({ op: 'started', grant: 10, final: false });
      grants.set(call, [s.grant as number]);
    }
    for (let sec = 1; sec <= 120; sec++) {
      c.send(calls.map(({ call }) => ({ op: 'tick', call, sec, ref: `${call}#${sec}` })));
      for (const { call } of calls) {
        const t = await c.waitFor((m) => m.ref === `${call}#${sec}`);
        expect(t.op, call).toBe('ticked');
        // The grant always reaches past the second just billed: the call never talks unfunded.
        expect(t.grant as number, `${call} at ${sec}`).toBeGreaterThan(sec);
        grants.get(call)!.push(t.grant as number);
      }
      if (sec === 60) expect(await auditProblems()).toEqual([]);
    }
    for (const { id, call } of calls) {
      expect(new Set(grants.get(call)).size, call).toBeGreaterThan(10);
      expect(await stop(call, 120)).toMatchObject({ billedSec: 120, cost: 12_000 });
      const [rec] = await cdrsOf(h, id, call);
      expect(rec).toMatchObject({ short: '0', cost: '12000' });
    }
    for (const id of ids)
      expect(await idFields(h, id)).toMatchObject({ bal: String(100_000 - 24_000), free: String(100_000 - 24_000) });
    expect(await auditProblems()).toEqual([]);
  });

  it('a top-up during a call is free at once: the next tick grants it and the caller talks on', async () => {
    // The seeded product (on sale, top-ups allowed), one call at a time: the call holds all 10,000 s.
    const [id] = await soldIds(h, talkProduct());
    const call = newCall();
    expect(await start(id!, call)).toMatchObject({ op: 'started', grant: 10_000, final: true });
    expect(await tick(call, 10)).toMatchObject({ op: 'ticked', balance: 999_000, grant: 10_000 });
    const up = await gw.topups.operator(id!, 2000, 'goodwill');
    expect(up).toMatchObject({ ok: true, balance: 1_001_000 });
    // The 2000 are free, not held: the books balance before the call hears of them.
    expect(await idFields(h, id!)).toMatchObject({ bal: '1001000', free: '2000' });
    expect(await auditProblems()).toEqual([]);
    expect(await tick(call, 11)).toMatchObject({ op: 'ticked', balance: 1_000_900, grant: 10_020 });
    expect(await stop(call, 45)).toMatchObject({ billedSec: 45, cost: 4500, balance: 997_500 });
    expect(await idFields(h, id!)).toMatchObject({ bal: '997500', free: '997500', act: '0' });
    expect(await auditProblems()).toEqual([]);
  });

  it('a damaged hash saying more is free than the balance grants no more than the balance', async () => {
    const [id] = await soldIds(h, talkProduct({ name: 'damaged-free', face: 3000, maxCalls: 2, grantSec: 0 }));
    await h.r.hset(idKeyOf(h, id!), 'free', '999999');
    const call = newCall();
    expect(await start(id!, call)).toMatchObject({ op: 'started', maxSec: 30, grant: 30 });
    expect(await stop(call, 30)).toMatchObject({ billedSec: 30, cost: 3000, balance: 0 });
  });

  it('the audit reports an ID whose reservations do not add up', async () => {
    const [id] = await soldIds(h, talkProduct({ name: 'audit-rsv', maxCalls: 2, grantSec: 60 }));
    const call = newCall();
    await start(id!, call);
    expect(await auditProblems()).toEqual([]);
    const bal = Number(await h.r.hget(idKeyOf(h, id!), 'bal'));
    await h.r.hset(idKeyOf(h, id!), 'free', String(bal - 1));
    expect(await auditProblems()).toEqual([
      expect.objectContaining({ problem: 'reserved 1 but live calls hold 6000' }),
    ]);
    await h.r.hset(idKeyOf(h, id!), 'free', String(bal - 6000));
    await stop(call, 0);
    expect(await auditProblems()).toEqual([]);
  });
});

describe('final unit and redirect', () => {
  /** Two calls at most, 20 s grant slices, sent to a top-up line at zero. */
  const redirecting = (name: string, face: number): TalkProduct =>
    talkProduct({
      name,
      face,
      maxCalls: 2,
      grantSec: 20,
      thresholds: [],
      finalAction: 'redirect',
      redirectTo: '+18005550100',
    });

  it('a product that redirects at zero says so in started, in ticks once final, and in the cut-off', async () => {
    const product = redirecting('redir', 5000);
    const [id] = await soldIds(h, product);
    const call = newCall();
    // 50 s of balance, 20 s grants: the first grant is not the last.
    expect(await start(id!, call)).toMatchObject({ op: 'started', grant: 20, maxSec: 50, final: false });
    expect((await start(id!, call)).action).toBeUndefined();
    // Re-granted when less than half a grant is left: 20 s more, with 15 s still free after it.
    const regrant = await tick(call, 15);
    expect(regrant).toMatchObject({ op: 'ticked', grant: 35 });
    expect(regrant.final).toBeUndefined();
    // The next re-grant takes all that is free: it is the last.
    expect(await tick(call, 30)).toMatchObject({
      op: 'ticked',
      grant: 50,
      final: true,
      action: 'redirect',
      redirect: '+18005550100',
    });
    // Every later answer says the grant is final, and what to do at its end.
    expect(await tick(call, 49)).toMatchObject({
      op: 'ticked',
      grant: 50,
      final: true,
      action: 'redirect',
      redirect: '+18005550100',
    });
    expect(msgs(c, call, 'cutoff')).toEqual([]);
    expect(await tick(call, 50)).toMatchObject({ balance: 0, secLeft: 0 });
    expect(msgs(c, call, 'cutoff')).toEqual([
      { op: 'cutoff', call, reason: 'exhausted', action: 'redirect', redirect: '+18005550100' },
    ]);
    expect(await stop(call, 50)).toMatchObject({ billedSec: 50, cost: 5000 });
  });

  it('a call whose first grant is final says so in every tick and update answer', async () => {
    const [id] = await soldIds(h, talkProduct({ name: 'final-at-once', face: 5000, thresholds: [] }));
    const call = newCall();
    expect(await start(id!, call)).toMatchObject({ op: 'started', grant: 50, final: true, action: 'terminate' });
    for (const sec of [1, 2, 2])
      expect(await tick(call, sec)).toEqual({
        op: 'ticked',
        ref: refs,
        call,
        balance: 5000 - sec * 100,
        secLeft: 50 - sec,
        grant: 50,
        final: true,
        action: 'terminate',
      });
    expect(await c.request({ op: 'update', ref: ref(), call, sec: 3 })).toMatchObject({
      op: 'granted',
      grant: 50,
      final: true,
      action: 'terminate',
    });
    expect(await stop(call, 3)).toMatchObject({ billedSec: 3 });
  });

  it('a grant made final by a tick without ref says its action in the next answer a switch hears', async () => {
    // 40 s of balance, 20 s slices: the second call takes all that the first leaves free.
    const product = redirecting('redir-unheard', 4000);
    const [id] = await soldIds(h, product);
    const [a, b] = [newCall(), newCall()];
    expect(await start(id!, a)).toMatchObject({ op: 'started', grant: 20, final: false });
    expect(await start(id!, b)).toMatchObject({ op: 'started', grant: 20, final: true, action: 'redirect' });
    // Nothing is free: a's next tick makes its grant final, and has no ref, so no answer.
    c.send({ op: 'tick', call: a, sec: 1 });
    // The first answer the switch hears tells it what to do at the grant's end: until
    // 2026-12-08 it said `final` only, and a switch learnt to redirect from the cut-off alone.
    const heard = { op: 'ticked', grant: 20, final: true, action: 'redirect', redirect: '+18005550100' };
    expect(await tick(a, 2)).toMatchObject(heard);
    expect(await tick(a, 12)).toMatchObject(heard);
    // A gateway that did not start the call (a reconnect elsewhere) asks call_tick for the action.
    const other = await gateway(h);
    const o = await Client.connect(other.port, await token(h, 'switch', sw));
    try {
      expect(await o.request({ op: 'tick', ref: ref(), call: a, sec: 12 })).toMatchObject(heard);
    } finally {
      await o.close();
      await other.close();
    }
    expect(await c.request({ op: 'update', ref: ref(), call: a, sec: 13 })).toMatchObject({
      op: 'granted',
      validity: 0,
      final: true,
      action: 'redirect',
      redirect: '+18005550100',
    });
    expect(await stop(a, 13)).toMatchObject({ billedSec: 13, cost: 1300 });
    expect(await stop(b, 0)).toMatchObject({ billedSec: 0, cost: 0 });
  });

  it('a final grant is final no longer once a top-up frees money: the next answer re-grants', async () => {
    // 100 s of balance, 10 s grants: at 92 s the call holds all that is left.
    const product = talkProduct({ name: 'final-topup', face: 10_000, maxCalls: 3, grantSec: 10, thresholds: [] });
    await putProducts(h.ctx.redis, [product]); // the top-up reads its rules from the catalog
    await gw.catalog.refresh();
    const [id] = await soldIds(h, product);
    const call = newCall();
    const update = (sec: number): Promise<Msg> => c.request({ op: 'update', ref: ref(), call, sec });
    await start(id!, call, { mode: 'quota' });
    expect(await update(92)).toMatchObject({ op: 'granted', grant: 100, final: true, action: 'terminate' });
    expect(await gw.topups.operator(id!, 50_000, 'goodwill')).toMatchObject({ ok: true });
    // 8 s of the grant are left, more than half a slice: without the top-up no re-grant would
    // be due, but a quota switch told "final" would end the call at 100 s with 500 s paid for.
    const after = await update(93);
    expect(after).toMatchObject({ op: 'granted', grant: 103, balance: 50_700, secLeft: 507, final: false });
    expect(after.action).toBeUndefined();
    expect(await stop(call, 93)).toMatchObject({ billedSec: 93, cost: 9300, balance: 50_700 });
    expect(await auditProblems()).toEqual([]);
  });

  it('a cut-off is final: a top-up after it is kept for the next call, never re-granted to this one', async () => {
    // 10 s at 100/s: the call is cut off exhausted at 10 s.
    const product = talkProduct({
      name: 'cut-topup',
      face: 1000,
      price: 1000,
      thresholds: [],
      finalAction: 'redirect',
      redirectTo: '+18005550100',
    });
    await putProducts(h.ctx.redis, [product]); // the top-up reads its rules from the catalog
    await gw.catalog.refresh();
    const cut = { op: 'cutoff', reason: 'exhausted', action: 'redirect', redirect: '+18005550100' };
    for (const mode of ['tick', 'quota'] as const) {
      const [id] = await soldIds(h, product);
      const call = newCall(mode);
      const report = (sec: number): Promise<Msg> =>
        c.request({ op: mode === 'tick' ? 'tick' : 'update', ref: ref(), call, sec });
      expect(await start(id!, call, { mode })).toMatchObject({ op: 'started', grant: 10, final: true });
      const atCut = { grant: 10, final: true, secLeft: 0, action: 'redirect', redirect: '+18005550100' };
      expect(await report(10)).toMatchObject({ ...atCut, balance: 0 });
      expect(msgs(c, call, 'cutoff')).toEqual([{ ...cut, call }]);
      expect(await gw.topups.operator(id!, 5000, 'goodwill')).toMatchObject({ ok: true, balance: 5000 });
      // The switch is tearing the call down: the same answer and the same cut-off, no new grant.
      expect(await report(10)).toMatchObject({ ...atCut, balance: 5000 });
      expect(msgs(c, call, 'cutoff')).toEqual([
        { ...cut, call },
        { ...cut, call },
      ]);
      expect(await idFields(h, id!)).toMatchObject({ bal: '5000', free: '5000' });
      expect(await stop(call, 10)).toMatchObject({ billedSec: 10, cost: 1000, balance: 5000 });
      expect(await auditProblems()).toEqual([]);
    }
  });

  it('a blocked ID is cut, never redirected', async () => {
    const product = talkProduct({ name: 'redir-b', finalAction: 'redirect', redirectTo: '+18005550100' });
    const [id] = await soldIds(h, product);
    const call = newCall();
    await start(id!, call);
    await setIdState(h.ctx, id!, 'block', 'test');
    await tick(call, 1);
    expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'blocked', action: 'terminate' }]);
    await stop(call, 1);
  });
});

describe('a blocked ID', () => {
  it('gets no more grants: its quota call is told its grant is final, and secLeft counts only the grant', async () => {
    const product = talkProduct({
      name: 'blocked-q',
      face: 100_000,
      maxCalls: 2,
      grantSec: 10,
      thresholds: [300, 60, 10],
      finalAction: 'redirect',
      redirectTo: '+18005550100',
    });
    const [id] = await soldIds(h, product);
    const call = newCall('bq');
    expect(await start(id!, call, { mode: 'quota' })).toMatchObject({ grant: 10, final: false });
    await setIdState(h.ctx, id!, 'block', 'test');
    const granted = await c.request({ op: 'update', ref: ref(), call, sec: 4 });
    // Ended, never redirected; and no "top up soon" for money it still holds.
    expect(granted).toMatchObject({ op: 'granted', grant: 10, final: true, secLeft: 6, action: 'terminate' });
    expect(granted.redirect).toBeUndefined();
    expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'blocked', action: 'terminate' }]);
    expect(msgs(c, call, 'alert')).toEqual([]);
    await stop(call, 4);
  });
});

describe('quota mode', () => {
  it('a one-hour call reported every 5 minutes is billed exactly as the same call ticked every second', async () => {
    const product = talkProduct({ name: 'quota', face: 1_000_000, maxCalls: 2, grantSec: 300, thresholds: [] });
    const [qid, tid] = await soldIds(h, product, 2);
    const q = newCall('q');
    const started = await start(qid!, q, { mode: 'quota' });
    expect(started).toMatchObject({ op: 'started', grant: 300, validity: 600, final: false });
    let grant = started.grant as number;
    for (let sec = 300; sec <= 3600; sec += 300) {
      // The switch asks again as each grant is used up, reporting the seconds used so far.
      expect(sec).toBeLessThanOrEqual(grant);
      const g = await c.request({ op: 'update', ref: ref(), call: q, sec });
      expect(g).toMatchObject({ op: 'granted', call: q, validity: 600 });
      grant = g.grant as number;
    }
    // A repeated update changes nothing.
    expect(await c.request({ op: 'update', ref: ref(), call: q, sec: 3600 })).toMatchObject({ grant });
    const qs = await stop(q, 3600);

    const t = newCall('t');
    await start(tid!, t);
    sendTicks(c, t, range(1, 3600), 200, 'tlast');
    await c.waitFor((m) => m.ref === 'tlast', 20_000);
    const ts = await stop(t, 3600);

    expect(qs).toMatchObject({ billedSec: 3600, cost: 360_000, balance: 640_000 });
    expect({ ...qs, ref: 0, call: '' }).toEqual({ ...ts, ref: 0, call: '' });
    const [qr] = await cdrsOf(h, qid!, q);
    const [tr] = await cdrsOf(h, tid!, t);
    for (const f of ['sec', 'used', 'cost', 'short', 'bal', 'rate', 'fee']) expect(qr![f], f).toBe(tr![f]);
    expect(await auditProblems()).toEqual([]);
  });

  it('ticks and updates mix: each is billed as the other would be, and answered in its own kind', async () => {
    const product = talkProduct({ name: 'quota-mix', face: 1_000_000, thresholds: [] });
    const [qid, tid] = await soldIds(h, product, 2);
    const q = newCall('qmix');
    await start(qid!, q, { mode: 'quota' });
    expect(await c.request({ op: 'tick', ref: ref(), call: q, sec: 10 })).toMatchObject({
      op: 'ticked',
      balance: 999_000,
    });
    const t = newCall('tmix');
    await start(tid!, t);
    expect(await c.request({ op: 'update', ref: ref(), call: t, sec: 10 })).toMatchObject({
      op: 'granted',
      balance: 999_000,
      validity: 0,
    });
    expect(await stop(q, 20)).toMatchObject({ billedSec: 20, cost: 2000 });
    expect(await stop(t, 20)).toMatchObject({ billedSec: 20, cost: 2000 });
  });

  it('updates are counted in tessera_events_total as updates, not as ticks too', async () => {
    const [id] = await soldIds(h, talkProduct({ name: 'quota-metrics', face: 1_000_000, thresholds: [] }));
    const q = newCall('qmet');
    await start(id!, q, { mode: 'quota' });
    const count = async (op: string): Promise<number> =>
      sample(await metricsText(gw.port), 'tessera_events_total', { op, outcome: 'ok' }) ?? 0;
    const [ticks, updates] = [await count('tick'), await count('update')];
    for (const sec of [5, 10, 15]) await c.request({ op: 'update', ref: ref(), call: q, sec });
    expect(await count('update')).toBe(updates + 3);
    expect(await count('tick')).toBe(ticks);
    await stop(q, 15);
  });

  it('a quota call is not reaped between its updates, only when its validity has passed', async () => {
    const g2 = await gateway(h, { staleAfterMs: 300, reapIntervalMs: 100 });
    const { c: c2 } = await connectSwitch(h, g2.port);
    try {
      const [id] = await soldIds(h, talkProduct({ name: 'quota-reap', quotaValiditySec: 10 }));
      const call = newCall('qr');
      expect(await c2.request({ op: 'start', ref: 1, call, id, dest: DEST, mode: 'quota' })).toMatchObject({
        validity: 10,
      });
      expect(await c2.request({ op: 'update', ref: 2, call, sec: 5 })).toMatchObject({ op: 'granted' });
      // Well past the stale time, well inside the validity: still live.
      await new Promise((r) => setTimeout(r, 1000));
      expect(await g2.reaper.sweep()).toBe(0);
      expect(await c2.request({ op: 'stop', ref: 3, call, sec: 8 })).toMatchObject({ billedSec: 8, cost: 800 });
    } finally {
      await c2.close();
      await g2.close();
    }
  });
});

/**
 * Per-second billing against real Redis through real switch sockets: exact
 * debits, thresholds, cut-off, connection fees, idempotent ticks and stops,
 * concurrent calls on one ID, blocks mid-call, large amounts, and the answer
 * time a call detail record gives.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { bucketOf, hashOf, idFields } from '../support/redis';
import { sleep } from '../support/wait';
import { Client, type Msg } from '../support/ws-client';
import { cdrsOf, connectSwitch, msgs, newCall, range, sendTicks, sessionKey } from './fixtures';
import { captureLog } from '../support/log';
import { metricsText, sample } from '../support/metrics';
import type { Gateway } from '../../src/gateway/server';
import type { Product } from '../../src/catalog/schema';
import { putPlans } from '../../src/catalog/store';
import { audit } from '../../src/ledger/audit';
import { setIdState } from '../../src/ledger/ids';
import { keys } from '../../src/redis/keys';

let h: Harness;
let gw: Gateway;
let c: Client;
let sw: string;
let refs = 0;

const BIG = { rate: 123_456_789, fee: 987_654_321 };
const HUGE = { rate: 10_000_000_000, fee: 0 };

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  await putPlans(h.ctx.redis, [
    { name: 'big', rates: [{ prefix: '', ...BIG }] },
    { name: 'huge', rates: [{ prefix: '', ...HUGE }] },
  ]);
  gw = await gateway(h);
  ({ c, name: sw } = await connectSwitch(h, gw.port));
});
afterAll(async () => {
  await c?.close();
  await gw?.close();
  await h?.stop();
});

const ref = (): number => ++refs;
/** plan std: '' prefix, 100 micro/s, no fee */
const DEST = '4912345';
/** plan std: '44' prefix, 200 micro/s, no fee */
const DEST44 = '4420000';
/** plan std: '449' prefix, 1000 micro/s plus 5000 connection fee */
const DEST449 = '4491234';

async function begin(product: Product, dest = DEST, client = c): Promise<{ id: string; call: string; started: Msg }> {
  const [id] = await soldIds(h, product);
  const call = newCall();
  const started = await client.request({ op: 'start', ref: ref(), call, id, dest });
  expect(started.op).toBe('started');
  return { id: id!, call, started };
}
const tick = (call: string, sec: number, client = c): Promise<Msg> =>
  client.request({ op: 'tick', ref: ref(), call, sec });
const stop = (call: string, sec: number, cause?: string, client = c): Promise<Msg> =>
  client.request({ op: 'stop', ref: ref(), call, sec, ...(cause ? { cause } : {}) });

/** Levels, secLeft and balance of every alert of a call, in arrival order. */
const alertsOf = (call: string, client = c): [number, number, number][] =>
  msgs(client, call, 'alert').map((m) => [m.level, m.secLeft, m.balance]);

describe('per-second debit', () => {
  it('a one-hour call of 3600 ticks bills exactly 3600 x rate', async () => {
    const { id, call, started } = await begin(talkProduct(), DEST44);
    expect(started).toMatchObject({ maxSec: 5000, balance: 1_000_000, rate: 200, fee: 0 });
    const t0 = Date.now();
    sendTicks(c, call, range(1, 3600), 100, 'last');
    const last = await c.waitFor((m) => m.ref === 'last', 10_000);
    expect(last).toMatchObject({
      op: 'ticked',
      ref: 'last',
      call,
      balance: 1_000_000 - 3600 * 200,
      secLeft: (1_000_000 - 3600 * 200) / 200,
    });
    expect(await idFields(h, id)).toMatchObject({ bal: '280000', act: '1', st: 'sold' });

    const stopped = await stop(call, 3600, 'caller_hangup');
    expect(stopped).toEqual({
      op: 'stopped',
      ref: stopped.ref,
      call,
      billedSec: 3600,
      cost: 720_000,
      balance: 280_000,
    });
    expect(await idFields(h, id)).toMatchObject({ bal: '280000', act: '0', st: 'sold' });
    // Thresholds were never near; nothing else came back for this call.
    expect(msgs(c, call, 'alert')).toEqual([]);
    expect(msgs(c, call, 'cutoff')).toEqual([]);
    expect(msgs(c, call, 'error')).toEqual([]);
    expect(c.received.filter((m) => m.call === call).map((m) => m.op)).toEqual(['started', 'ticked', 'stopped']);

    const recs = await cdrsOf(h, id, call);
    expect(recs).toHaveLength(1);
    const rec = recs[0]!;
    expect(rec).toMatchObject({
      switch: sw,
      call,
      id: h.ctx.ids.hash(id).hash,
      dest: DEST44,
      sec: '3600',
      rate: '200',
      fee: '0',
      cost: '720000',
      short: '0',
      bal: '280000',
      cause: 'caller_hangup',
    });
    for (const f of ['start', 'answer', 'end']) expect(rec[f], f).toMatch(/^\d{13}$/);
    expect(Number(rec.start)).toBeGreaterThanOrEqual(t0 - 5000);
    expect(Number(rec.end)).toBeGreaterThanOrEqual(Number(rec.start));
    expect(Number(rec.end)).toBeLessThanOrEqual(Date.now());
    // The session is out of the live set.
    expect(await h.r.zscore(keys.live(bucketOf(h, id)), sessionKey(h, id, sw, call))).toBeNull();
    expect(await h.r.hget(sessionKey(h, id, sw, call), 'st')).toBe('closed');
  });

  it('the connection fee is charged once, with the first billed second', async () => {
    const { id, call, started } = await begin(talkProduct(), DEST449);
    expect(started).toMatchObject({ maxSec: 995, balance: 1_000_000, rate: 1000, fee: 5000 });
    // Second 0: nothing billed yet, not even the fee.
    expect(await tick(call, 0)).toMatchObject({ op: 'ticked', balance: 1_000_000, secLeft: 995 });
    expect(await tick(call, 1)).toMatchObject({ op: 'ticked', balance: 994_000, secLeft: 994 });
    expect(await tick(call, 2)).toMatchObject({ op: 'ticked', balance: 993_000, secLeft: 993 });
    expect(await tick(call, 2)).toMatchObject({ op: 'ticked', balance: 993_000, secLeft: 993 });
    expect(await stop(call, 3)).toMatchObject({ op: 'stopped', billedSec: 3, cost: 8000, balance: 992_000 });
    expect((await idFields(h, id)).bal).toBe('992000');
    const [rec, ...more] = await cdrsOf(h, id, call);
    expect(more).toEqual([]);
    expect(rec).toMatchObject({ sec: '3', rate: '1000', fee: '5000', cost: '8000', short: '0', bal: '992000' });
  });

  it('the fee comes with a first tick that jumps, or with the stop when there was no tick', async () => {
    const a = await begin(talkProduct(), DEST449);
    expect(await tick(a.call, 5)).toMatchObject({ balance: 1_000_000 - 5000 - 5000 });
    expect(await stop(a.call, 5)).toMatchObject({ billedSec: 5, cost: 10_000, balance: 990_000 });

    const b = await begin(talkProduct(), DEST449);
    expect(await stop(b.call, 4)).toMatchObject({ billedSec: 4, cost: 9000, balance: 991_000 });
    expect((await idFields(h, b.id)).bal).toBe('991000');
  });

  it('an unanswered call (stop at 0 s) costs nothing, fee included', async () => {
    const { id, call } = await begin(talkProduct(), DEST449);
    expect(await stop(call, 0)).toMatchObject({ billedSec: 0, cost: 0, balance: 1_000_000 });
    expect(await idFields(h, id)).toMatchObject({ bal: '1000000', act: '0' });
    expect(await cdrsOf(h, id, call)).toMatchObject([
      { sec: '0', cost: '0', fee: '0', disc: '0', short: '0', bal: '1000000', answer: '' },
    ]);
  });
});

describe('thresholds', () => {
  it('300, 60 and 10 s left fire once each, in that order, with the balance at that second', async () => {
    const { id, call, started } = await begin(talkProduct({ face: 40_000 }));
    expect(started).toMatchObject({ maxSec: 400 });
    sendTicks(c, call, range(1, 399), 50, 'at399');
    expect(await c.waitFor((m) => m.ref === 'at399')).toMatchObject({ balance: 100, secLeft: 1 });
    expect(alertsOf(call)).toEqual([
      [300, 300, 30_000],
      [60, 60, 6000],
      [10, 10, 1000],
    ]);
    for (const a of msgs(c, call, 'alert'))
      expect(Object.keys(a).sort()).toEqual(['balance', 'call', 'level', 'op', 'secLeft']);
    expect(msgs(c, call, 'cutoff')).toEqual([]);
    // Ticks again over the same seconds fire nothing new.
    sendTicks(c, call, range(90, 399), 100);
    expect(await tick(call, 399)).toMatchObject({ balance: 100 });
    expect(alertsOf(call)).toHaveLength(3);
    expect(await stop(call, 399)).toMatchObject({ billedSec: 399, cost: 39_900, balance: 100 });
    expect((await idFields(h, id)).bal).toBe('100');
  });

  it('thresholds at or above maxSec at start are not announced', async () => {
    // maxSec 300 exactly: the 300 s warning would say nothing the start did not.
    const { call, started } = await begin(talkProduct({ face: 30_000 }));
    expect(started).toMatchObject({ maxSec: 300 });
    sendTicks(c, call, range(1, 295), 100, 'at295');
    expect(await c.waitFor((m) => m.ref === 'at295')).toMatchObject({ balance: 500, secLeft: 5 });
    expect(alertsOf(call)).toEqual([
      [60, 60, 6000],
      [10, 10, 1000],
    ]);
    await stop(call, 295);
  });

  it('a threshold equal to maxSec - 1 is announced at the first second', async () => {
    const { call, started } = await begin(talkProduct({ face: 30_100, thresholds: [300] }));
    expect(started).toMatchObject({ maxSec: 301 });
    expect(await tick(call, 1)).toMatchObject({ balance: 30_000, secLeft: 300 });
    expect(alertsOf(call)).toEqual([[300, 300, 30_000]]);
    await stop(call, 1);
  });

  it('one tick crossing several thresholds fires each once, highest first, even if the product lists them unsorted', async () => {
    const { call, started } = await begin(talkProduct({ face: 40_000, thresholds: [10, 300, 60] }));
    expect(started).toMatchObject({ maxSec: 400 });
    expect(await tick(call, 395)).toMatchObject({ balance: 500, secLeft: 5 });
    expect(alertsOf(call)).toEqual([
      [300, 5, 500],
      [60, 5, 500],
      [10, 5, 500],
    ]);
    expect(await tick(call, 396)).toMatchObject({ balance: 400, secLeft: 4 });
    expect(alertsOf(call)).toHaveLength(3);
    await stop(call, 396);
  });

  it('thresholds count at the call rate: the 449 rate with its fee', async () => {
    // 1000/s, fee 5000: face 71_000 gives maxSec 66; 60 s left is crossed at second 6.
    const { call, started } = await begin(talkProduct({ face: 71_000 }), DEST449);
    expect(started).toMatchObject({ maxSec: 66, rate: 1000, fee: 5000 });
    expect(await tick(call, 5)).toMatchObject({ balance: 61_000, secLeft: 61 });
    expect(alertsOf(call)).toEqual([]);
    expect(await tick(call, 6)).toMatchObject({ balance: 60_000, secLeft: 60 });
    expect(alertsOf(call)).toEqual([[60, 60, 60_000]]);
    await stop(call, 6);
  });
});

describe('cut-off at zero', () => {
  it('cuts at exactly zero, exhausts the ID, never goes negative, refuses the next start', async () => {
    const { id, call, started } = await begin(talkProduct({ face: 10_000 }));
    expect(started).toMatchObject({ maxSec: 100 });
    sendTicks(c, call, range(1, 99), 100, 'at99');
    expect(await c.waitFor((m) => m.ref === 'at99')).toMatchObject({ balance: 100, secLeft: 1 });
    expect(msgs(c, call, 'cutoff')).toEqual([]);
    expect((await idFields(h, id)).st).toBe('sold');

    expect(await tick(call, 100)).toMatchObject({ op: 'ticked', ref: refs, call, balance: 0, secLeft: 0 });
    expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'exhausted', action: 'terminate' }]);
    // The 300 s threshold was above maxSec; 60 and 10 fired once each.
    expect(alertsOf(call)).toEqual([
      [60, 60, 6000],
      [10, 10, 1000],
    ]);
    expect(await idFields(h, id)).toMatchObject({ st: 'exhausted', bal: '0', act: '1' });

    // The switch is slow to cut: five more seconds are reported.
    sendTicks(c, call, range(101, 105), 100, 'at105');
    expect(await c.waitFor((m) => m.ref === 'at105')).toMatchObject({ balance: 0, secLeft: 0 });
    expect(msgs(c, call, 'cutoff').every((m) => m.reason === 'exhausted')).toBe(true);
    expect(msgs(c, call, 'cutoff').length).toBeGreaterThanOrEqual(1);
    for (const m of c.received.filter((x) => x.call === call && 'balance' in x))
      expect(m.balance).toBeGreaterThanOrEqual(0);
    expect((await idFields(h, id)).bal).toBe('0');

    const again = newCall();
    expect(await c.request({ op: 'start', ref: ref(), call: again, id, dest: DEST })).toMatchObject({
      op: 'error',
      call: again,
      reason: 'exhausted',
    });

    expect(await stop(call, 105)).toMatchObject({ op: 'stopped', billedSec: 105, cost: 10_000, balance: 0 });
    expect(await idFields(h, id)).toMatchObject({ st: 'exhausted', bal: '0', act: '0' });
    const recs = await cdrsOf(h, id, call);
    expect(recs).toHaveLength(1);
    expect(recs[0]).toMatchObject({ sec: '105', cost: '10000', short: '500', bal: '0' });
  });

  it('a tick that jumps past the end takes what is left, records the rest as short', async () => {
    const { id, call } = await begin(talkProduct({ face: 10_000 }));
    expect(await tick(call, 150)).toMatchObject({ op: 'ticked', balance: 0, secLeft: 0 });
    expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'exhausted', action: 'terminate' }]);
    expect(alertsOf(call)).toEqual([
      [60, 0, 0],
      [10, 0, 0],
    ]);
    expect(await idFields(h, id)).toMatchObject({ st: 'exhausted', bal: '0' });
    expect(await stop(call, 150)).toMatchObject({ billedSec: 150, cost: 10_000, balance: 0 });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '150', cost: '10000', short: '5000', bal: '0' }]);
  });

  it('a stop past the end without ticks also stops at zero', async () => {
    const { id, call } = await begin(talkProduct({ face: 10_000 }));
    expect(await stop(call, 250)).toMatchObject({ billedSec: 250, cost: 10_000, balance: 0 });
    expect(await idFields(h, id)).toMatchObject({ st: 'exhausted', bal: '0', act: '0' });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ cost: '10000', short: '15000', bal: '0' }]);
  });

  it('a balance that is not a whole number of seconds is cut when it cannot pay a second; a switch that talks on is short by the part second', async () => {
    const { id, call, started } = await begin(talkProduct({ face: 1050, thresholds: [] }));
    expect(started).toMatchObject({ maxSec: 10 });
    // 50 left cannot pay another second: the cut-off comes now, not a second late.
    expect(await tick(call, 10)).toMatchObject({ balance: 50, secLeft: 0 });
    expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'exhausted', action: 'terminate' }]);
    expect((await idFields(h, id)).st).toBe('sold');
    expect(await tick(call, 11)).toMatchObject({ balance: 0, secLeft: 0 });
    expect(await stop(call, 11)).toMatchObject({ billedSec: 11, cost: 1050, balance: 0 });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ cost: '1050', short: '50', bal: '0' }]);
  });
});

describe('repeated and out-of-order ticks', () => {
  it('duplicate, repeated and backward ticks change nothing and fire nothing', async () => {
    const { id, call } = await begin(talkProduct({ face: 40_000 }));
    expect(await tick(call, 100)).toMatchObject({ balance: 30_000, secLeft: 300 });
    expect(alertsOf(call)).toEqual([[300, 300, 30_000]]);
    c.send([100, 50, 99, 0, 100, 1, 100].map((sec) => ({ op: 'tick', call, sec })));
    c.send({ op: 'tick', call, sec: 100 });
    expect(await tick(call, 100)).toMatchObject({ op: 'ticked', ref: refs, call, balance: 30_000, secLeft: 300 });
    expect(await tick(call, 42)).toMatchObject({ op: 'ticked', ref: refs, call, balance: 30_000, secLeft: 300 });
    expect(await idFields(h, id)).toMatchObject({ bal: '30000' });
    expect(await h.r.hget(sessionKey(h, id, sw, call), 'used')).toBe('100');
    expect(alertsOf(call)).toHaveLength(1);
    expect(msgs(c, call, 'error')).toEqual([]);

    expect(await tick(call, 101)).toMatchObject({ balance: 29_900, secLeft: 299 });
    // A stop is the call's final duration: what ticks charged beyond it (ticks that raced a hang-up
    // whose end the switch learnt late) is given back, and the record says what the call lasted.
    expect(await stop(call, 90)).toMatchObject({ billedSec: 90, cost: 9000, balance: 31_000 });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '90', used: '90', cost: '9000', bal: '31000' }]);
    expect(await idFields(h, id)).toMatchObject({ bal: '31000', free: '31000', act: '0' });
  });

  it('a stop below the ticks forgives the shortfall first, gives back the rest, and revives an exhausted ID', async () => {
    const { id, call } = await begin(talkProduct({ face: 1000, thresholds: [] }));
    sendTicks(c, call, range(1, 12), 100, 'at12');
    // The 10 s it could pay, then 2 s it could not: short 200, the ID exhausted.
    expect(await c.waitFor((m) => m.ref === 'at12')).toMatchObject({ balance: 0 });
    expect(await idFields(h, id)).toMatchObject({ st: 'exhausted', bal: '0' });
    // The hang-up was at 8.3 s: 9 started seconds. 300 were charged beyond them: 200 of it short, 100 paid.
    expect(await stop(call, 9)).toMatchObject({ billedSec: 9, cost: 900, balance: 100 });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '9', cost: '900', short: '0', bal: '100' }]);
    expect(await idFields(h, id)).toMatchObject({ st: 'sold', bal: '100', free: '100', act: '0' });
    expect((await audit(h.ctx)).problems.filter((p) => p.id === hashOf(h, id))).toEqual([]);
  });

  it('ticks of one frame arriving out of order bill up to the highest second', async () => {
    const { id, call } = await begin(talkProduct());
    c.send([5, 3, 9, 7, 2].map((sec) => ({ op: 'tick', call, sec })));
    expect(await tick(call, 9)).toMatchObject({ balance: 999_100, secLeft: 9991 });
    expect((await idFields(h, id)).bal).toBe('999100');
    await stop(call, 9);
  });

  it('a tick with ref gets ticked; a tick without ref gets no reply', async () => {
    const { call } = await begin(talkProduct());
    c.send({ op: 'tick', call, sec: 3 });
    const r = ref();
    const t = await c.request({ op: 'tick', ref: r, call, sec: 3 });
    expect(t).toMatchObject({ op: 'ticked', ref: r, call, balance: 999_700, secLeft: 9997 });
    c.send({ op: 'tick', call, sec: 4 });
    await sleep(30);
    expect(c.received.filter((m) => m.call === call).map((m) => m.op)).toEqual(['started', 'ticked']);
    expect(await stop(call, 4)).toMatchObject({ billedSec: 4, cost: 400, balance: 999_600 });
  });

  it('unknown_call for a tick (with or without ref) and a stop of a call never started', async () => {
    const call = newCall();
    c.send({ op: 'tick', call, sec: 1 });
    expect(await c.waitFor((m) => m.call === call && m.op === 'error')).toMatchObject({
      op: 'error',
      call,
      reason: 'unknown_call',
    });
    const r1 = ref();
    expect(await c.request({ op: 'tick', ref: r1, call, sec: 2 })).toMatchObject({
      op: 'error',
      ref: r1,
      call,
      reason: 'unknown_call',
    });
    const r2 = ref();
    expect(await c.request({ op: 'stop', ref: r2, call, sec: 2 })).toMatchObject({
      op: 'error',
      ref: r2,
      call,
      reason: 'unknown_call',
    });
  });

  it("another switch cannot tick or stop this switch's call", async () => {
    const { id, call } = await begin(talkProduct());
    const { c: other } = await connectSwitch(h, gw.port);
    try {
      expect(await other.request({ op: 'tick', ref: 1, call, sec: 50 })).toMatchObject({
        op: 'error',
        reason: 'unknown_call',
      });
      expect(await other.request({ op: 'stop', ref: 2, call, sec: 50 })).toMatchObject({
        op: 'error',
        reason: 'unknown_call',
      });
    } finally {
      await other.close();
    }
    expect(await idFields(h, id)).toMatchObject({ bal: '1000000', act: '1' });
    expect(await stop(call, 2)).toMatchObject({ billedSec: 2, cost: 200, balance: 999_800 });
  });

  it('a tick after the stop: call_ended with ref, silence without, nothing charged', async () => {
    const { id, call } = await begin(talkProduct());
    expect(await stop(call, 6)).toMatchObject({ billedSec: 6, cost: 600, balance: 999_400 });
    c.send({ op: 'tick', call, sec: 20 });
    const r = ref();
    expect(await c.request({ op: 'tick', ref: r, call, sec: 30 })).toMatchObject({
      op: 'error',
      ref: r,
      call,
      reason: 'call_ended',
    });
    expect(msgs(c, call, 'error')).toHaveLength(1);
    expect(await idFields(h, id)).toMatchObject({ bal: '999400', act: '0' });
  });
});

describe('duplicate stop', () => {
  it("a stop naming one of Tessera's own causes is refused: its repeat must not read as a reaped call's late stop", async () => {
    const { id, call } = await begin(talkProduct({ maxCalls: 2 }));
    expect(await tick(call, 100)).toMatchObject({ balance: 990_000 });
    // Kept as `stale`, the call's repeat stop of 0 s gave all 10 000 back as a reaped call's would.
    for (const cause of ['stale', 'recovered', 'late'])
      expect(await stop(call, 100, cause)).toMatchObject({ op: 'error', reason: 'bad_value' });
    expect(await stop(call, 100, 'normal')).toMatchObject({ billedSec: 100, cost: 10_000, balance: 990_000 });
    expect(await stop(call, 0)).toMatchObject({ billedSec: 100, cost: 10_000, balance: 990_000 });
    expect((await cdrsOf(h, id, call)).map((r) => r.cause)).toEqual(['normal']);
  });

  it('returns the same record and charges nothing more', async () => {
    const { id, call } = await begin(talkProduct({ maxCalls: 2 }));
    expect(await tick(call, 10)).toMatchObject({ balance: 999_000 });
    const first = await stop(call, 12);
    expect(first).toMatchObject({ op: 'stopped', call, billedSec: 12, cost: 1200, balance: 998_800 });
    const again = await stop(call, 30, 'retry');
    expect(again).toEqual({ ...first, ref: again.ref });
    expect(await idFields(h, id)).toMatchObject({ bal: '998800', act: '0' });

    // The ID is used again; a later retry still answers the call's own record.
    const next = newCall();
    await c.request({ op: 'start', ref: ref(), call: next, id, dest: DEST });
    expect(await stop(next, 5)).toMatchObject({ billedSec: 5, cost: 500, balance: 998_300 });
    const late = await stop(call, 12);
    expect(late).toEqual({ ...first, ref: late.ref });
    expect((await idFields(h, id)).bal).toBe('998300');

    const recs = await cdrsOf(h, id, call);
    expect(recs).toHaveLength(1);
    expect(recs[0]).toMatchObject({ sec: '12', cost: '1200', bal: '998800', cause: 'normal' });
  });

  it('a retried stop on another gateway (no local state) returns the same record', async () => {
    const name = `sw-restart-${refs}`;
    const tok = await token(h, 'switch', name);
    const c1 = await Client.connect(gw.port, tok);
    const gw2 = await gateway(h);
    const c2 = await Client.connect(gw2.port, tok);
    try {
      const id = (await soldIds(h, talkProduct()))[0]!;
      const call = newCall();
      expect(await c1.request({ op: 'start', ref: 1, call, id, dest: DEST })).toMatchObject({
        op: 'started',
        maxSec: 10000,
      });
      expect(await c1.request({ op: 'tick', ref: 2, call, sec: 4 })).toMatchObject({ balance: 999_600 });
      // The call goes on at the other gateway: same session, same billing.
      expect(await c2.request({ op: 'tick', ref: 3, call, sec: 9 })).toMatchObject({
        op: 'ticked',
        balance: 999_100,
        secLeft: 9991,
      });
      expect(await c2.request({ op: 'start', ref: 4, call, id, dest: DEST })).toMatchObject({
        op: 'started',
        maxSec: 10000,
        balance: 1_000_000,
      });
      const first = await c2.request({ op: 'stop', ref: 5, call, sec: 11 });
      expect(first).toMatchObject({ op: 'stopped', billedSec: 11, cost: 1100, balance: 998_900 });
      const again = await c1.request({ op: 'stop', ref: 6, call, sec: 11 });
      expect(again).toEqual({ ...first, ref: 6 });
      expect(await idFields(h, id)).toMatchObject({ bal: '998900', act: '0' });
      expect(await cdrsOf(h, id, call)).toHaveLength(1);
    } finally {
      await c1.close();
      await c2.close();
      await gw2.close();
    }
  });
});

describe('two calls on one ID', () => {
  it('with maxCalls 2, each call is granted its own reservation: both cut at their grant, face value billed, none short', async () => {
    const id = (await soldIds(h, talkProduct({ face: 10_000, maxCalls: 2, thresholds: [] })))[0]!;
    const a = newCall();
    const b = newCall();
    // A reserves a 60 s slice; B gets the 40 s that are left free, and that grant is final.
    expect(await c.request({ op: 'start', ref: ref(), call: a, id, dest: DEST })).toMatchObject({
      op: 'started',
      maxSec: 100,
      grant: 60,
      final: false,
    });
    expect(await c.request({ op: 'start', ref: ref(), call: b, id, dest: DEST })).toMatchObject({
      op: 'started',
      maxSec: 40,
      grant: 40,
      final: true,
      action: 'terminate',
    });
    expect(await idFields(h, id)).toMatchObject({ act: '2', bal: '10000', free: '0' });

    // Both tick every second and honour their cut-off, as a switch does.
    const cutAt: Record<string, number> = {};
    const balances: number[] = [];
    for (let sec = 1; !(a in cutAt && b in cutAt); sec++) {
      if (sec > 120) throw new Error('no cut-off after 120 rounds');
      for (const call of [a, b].filter((x) => !(x in cutAt))) {
        balances.push((await tick(call, sec)).balance);
        if (msgs(c, call, 'cutoff').length > 0) cutAt[call] = sec;
      }
    }
    expect(cutAt).toEqual({ [a]: 60, [b]: 40 });
    for (const bal of balances) expect(bal).toBeGreaterThanOrEqual(0);
    expect(await idFields(h, id)).toMatchObject({ bal: '0', free: '0', st: 'exhausted' });

    expect(await stop(a, 60)).toMatchObject({ billedSec: 60, cost: 6000, balance: 0 });
    expect(await stop(b, 40)).toMatchObject({ billedSec: 40, cost: 4000, balance: 0 });
    expect(await cdrsOf(h, id, a)).toMatchObject([{ cost: '6000', short: '0' }]);
    expect(await cdrsOf(h, id, b)).toMatchObject([{ cost: '4000', short: '0' }]);
    expect(await idFields(h, id)).toMatchObject({ bal: '0', act: '0', free: '0', st: 'exhausted' });
  });

  it('ticks of both calls in one frame bill both from their own reservations; a call past its grant is short', async () => {
    const id = (await soldIds(h, talkProduct({ face: 10_000, maxCalls: 2, thresholds: [] })))[0]!;
    const a = newCall();
    const b = newCall();
    await c.request({ op: 'start', ref: ref(), call: a, id, dest: DEST });
    await c.request({ op: 'start', ref: ref(), call: b, id, dest: DEST44 });
    // a at 100/s holds 60 s (6000); b at 200/s gets the 4000 left: 20 s.
    c.send([
      ...range(1, 30).map((sec) => ({ op: 'tick', call: a, sec })),
      ...range(1, 30).map((sec) => ({ op: 'tick', call: b, sec })),
    ]);
    expect(await tick(a, 30)).toMatchObject({ balance: 3000, secLeft: 30, grant: 60 });
    // b talked 10 s past its grant: what its reservation did not cover is short, a's is untouched.
    expect(await tick(b, 30)).toMatchObject({ balance: 3000, secLeft: 0, grant: 20 });
    c.send([
      ...range(31, 60).map((sec) => ({ op: 'tick', call: a, sec })),
      ...range(31, 60).map((sec) => ({ op: 'tick', call: b, sec })),
    ]);
    expect(await tick(a, 60)).toMatchObject({ balance: 0, secLeft: 0 });
    const sa = await stop(a, 60);
    const sb = await stop(b, 60);
    expect(sa).toMatchObject({ cost: 6000 });
    expect(sb).toMatchObject({ cost: 4000 });
    expect(await cdrsOf(h, id, a)).toMatchObject([{ short: '0' }]);
    expect(await cdrsOf(h, id, b)).toMatchObject([{ short: String(40 * 200) }]);
    expect(await idFields(h, id)).toMatchObject({ bal: '0', act: '0', st: 'exhausted' });
  });
});

describe('block during a live call', () => {
  it('cuts the call at the next tick with reason blocked', async () => {
    const { id, call } = await begin(talkProduct());
    expect(await tick(call, 5)).toMatchObject({ balance: 999_500 });
    expect(await setIdState(h.ctx, id, 'block', 'fraud')).toEqual({ ok: true, state: 'blocked' });
    expect(msgs(c, call, 'cutoff')).toEqual([]);
    expect(await tick(call, 6)).toMatchObject({ op: 'ticked', balance: 999_400, secLeft: 9994 });
    expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'blocked', action: 'terminate' }]);
    expect(await idFields(h, id)).toMatchObject({ st: 'blocked', bal: '999400' });
    expect(await stop(call, 6)).toMatchObject({ billedSec: 6, cost: 600, balance: 999_400 });
    expect(await idFields(h, id)).toMatchObject({ st: 'blocked', bal: '999400', act: '0' });
    const again = newCall();
    expect(await c.request({ op: 'start', ref: ref(), call: again, id, dest: DEST })).toMatchObject({
      op: 'error',
      reason: 'blocked',
    });
  });

  it('a repeated tick after a block also orders the cut-off', async () => {
    const { id, call } = await begin(talkProduct());
    expect(await tick(call, 5)).toMatchObject({ balance: 999_500 });
    await setIdState(h.ctx, id, 'block');
    expect(await tick(call, 5)).toMatchObject({ balance: 999_500 });
    expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'blocked', action: 'terminate' }]);
    await stop(call, 5);
  });
});

describe('large amounts', () => {
  it('a face of 1e14 at 123456789/s with a 987654321 fee stays exact to the micro-unit', async () => {
    const face = 100_000_000_000_000;
    const bi = (n: number | bigint): bigint => BigInt(n);
    const maxSec = Number((bi(face) - bi(BIG.fee)) / bi(BIG.rate));
    const bin = await connectSwitch(h, gw.port, { binary: true });
    try {
      const { id, call, started } = await begin(talkProduct({ face, plan: 'big' }), DEST, bin.c);
      expect(started).toMatchObject({ maxSec, balance: face, rate: BIG.rate, fee: BIG.fee });
      expect(maxSec).toBe(809_992);

      const bal1 = bi(face) - bi(600_000) * bi(BIG.rate) - bi(BIG.fee);
      expect(await tick(call, 600_000, bin.c)).toMatchObject({
        balance: Number(bal1),
        secLeft: Number(bal1 / bi(BIG.rate)),
      });
      expect((await idFields(h, id)).bal).toBe(bal1.toString());

      const bal2 = bal1 - bi(4800) * bi(BIG.rate);
      const cost = bi(face) - bal2;
      expect(await stop(call, 604_800, undefined, bin.c)).toMatchObject({
        billedSec: 604_800,
        cost: Number(cost),
        balance: Number(bal2),
      });
      const f = await idFields(h, id);
      expect(f.bal).toBe(bal2.toString());
      const [rec] = await cdrsOf(h, id, call);
      expect(rec).toMatchObject({
        sec: '604800',
        rate: String(BIG.rate),
        fee: String(BIG.fee),
        cost: cost.toString(),
        short: '0',
        bal: bal2.toString(),
      });
      expect(await h.r.hget(sessionKey(h, id, bin.name, call), 'bal0')).toBe('100000000000000');
      for (const [k, v] of Object.entries(rec!))
        if (/^(start|answer|end|sec|rate|fee|cost|short|bal)$/.test(k)) expect(v, k).toMatch(/^\d+$/);
    } finally {
      await bin.c.close();
    }
  });

  it('a face of 1e15 at 1e10/s (the highest rate): no exponent form anywhere, down to zero', async () => {
    const face = 1_000_000_000_000_000;
    const { id, call, started } = await begin(talkProduct({ face, plan: 'huge' }));
    expect(started).toMatchObject({ maxSec: 100_000, balance: face, rate: HUGE.rate, fee: 0 });
    expect(await h.r.hget(sessionKey(h, id, sw, call), 'bal0')).toBe('1000000000000000');
    expect(await tick(call, 99_999)).toMatchObject({ balance: 10_000_000_000, secLeft: 1 });
    expect((await idFields(h, id)).bal).toBe('10000000000');
    // The cost is derived at close; mid-call the session holds the seconds billed.
    expect(await h.r.hget(sessionKey(h, id, sw, call), 'used')).toBe('99999');
    expect(alertsOf(call)).toEqual([
      [300, 1, 10_000_000_000],
      [60, 1, 10_000_000_000],
      [10, 1, 10_000_000_000],
    ]);
    expect(await tick(call, 100_000)).toMatchObject({ balance: 0, secLeft: 0 });
    expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'exhausted', action: 'terminate' }]);
    expect(await stop(call, 100_002)).toMatchObject({ billedSec: 100_002, cost: face, balance: 0 });
    const [rec] = await cdrsOf(h, id, call);
    expect(rec).toMatchObject({ cost: '1000000000000000', short: '20000000000', bal: '0', rate: '10000000000' });
    expect(await idFields(h, id)).toMatchObject({ bal: '0', st: 'exhausted', face: '1000000000000000' });
  });

  it('a week-long call at the highest rate: cost and short add up to the exact charge', async () => {
    const face = 1_000_000_000_000_000;
    const { id, call } = await begin(talkProduct({ face, plan: 'huge' }));
    await tick(call, 604_800);
    await stop(call, 604_800);
    const [rec] = await cdrsOf(h, id, call);
    // 6,048,000,000,000,000 is past what the ID could pay: 10^15 paid, the rest short, to the unit.
    expect(BigInt(rec!.cost!) + BigInt(rec!.short!)).toBe(604_800n * 10_000_000_000n);
  });
});

describe('answer time', () => {
  it('is never before the start, even when the first tick claims more seconds than have passed', async () => {
    const { id, call, started } = await begin(talkProduct());
    expect(started.op).toBe('started');
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 100 })).toMatchObject({
      op: 'ticked',
      balance: 990_000,
    });
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 100 })).toMatchObject({ billedSec: 100, cost: 10_000 });
    const [rec] = await cdrsOf(h, id, call);
    expect(rec).toBeDefined();
    const start = Number(rec!.start);
    const answer = Number(rec!.answer);
    expect(start).toBeGreaterThan(0);
    expect(answer).toBeGreaterThanOrEqual(start);
    // now - 100 s is long before the start: the answer is clamped to the start itself.
    expect(answer).toBe(start);
    expect(Number(rec!.end)).toBeGreaterThanOrEqual(answer);
  });
});

describe('a call that ran short', () => {
  // A gateway of its own: its log is read back and its counters hold this test's calls alone.
  const logged = captureLog();
  let g: Gateway;
  let sc: Client;
  let name: string;
  beforeAll(async () => {
    g = await gateway(h, { staleAfterMs: 300, ringTimeoutMs: 300, reapIntervalMs: 600_000 }, logged.log);
    ({ c: sc, name } = await connectSwitch(h, g.port));
  });
  afterAll(async () => {
    await sc?.close();
    await g?.close();
  });
  const shortLines = (): Record<string, unknown>[] =>
    logged.lines.filter((l) => l.msg === 'call ran short: it talked past what its ID could pay');
  const counted = async (close: string): Promise<number | undefined> =>
    sample(await metricsText(g.port), 'tessera_short_calls_total', { close });

  it('is logged at warn with its keys, never the ID, and counted once, by how it closed', async () => {
    // Paid in full: neither logged nor counted.
    const paid = await begin(talkProduct(), DEST, sc);
    expect(await stop(paid.call, 5, undefined, sc)).toMatchObject({ op: 'stopped', cost: 500 });
    expect(shortLines()).toEqual([]);

    const { id, call } = await begin(talkProduct({ face: 10_000 }), DEST, sc);
    expect(await stop(call, 250, undefined, sc)).toMatchObject({ billedSec: 250, cost: 10_000, balance: 0 });
    // A repeated stop answers the first: the same record, not a second shortfall.
    expect(await stop(call, 250, undefined, sc)).toMatchObject({ billedSec: 250, cost: 10_000 });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ short: '15000' }]);
    const lines = shortLines();
    expect(lines).toEqual([
      expect.objectContaining({
        level: 40,
        session: sessionKey(h, id, name, call),
        record: expect.stringMatching(/^\d+-\d+$/),
        close: 'stop',
        billedSec: 250,
        cost: 10_000,
        short: 15_000,
        balance: 0,
      }),
    ]);
    expect(JSON.stringify(lines)).not.toContain(id);
    expect(await counted('stop')).toBe(1);
  });

  it('a reaped call short of its ticks, and its late stop short of more, count as stale and stop', async () => {
    const before = (await counted('stop')) ?? 0;
    const { id, call } = await begin(talkProduct({ face: 10_000 }), DEST, sc);
    expect(await tick(call, 150, sc)).toMatchObject({ balance: 0 });
    await sleep(350);
    expect(await g.reaper.sweep()).toBe(1);
    expect(await counted('stale')).toBe(1);
    // The switch talked on through 50 s the reaper never saw: billed late, all of it short.
    expect(await stop(call, 200, undefined, sc)).toMatchObject({ op: 'stopped' });
    expect(await cdrsOf(h, id, call)).toMatchObject([
      { cause: 'stale', short: '5000' },
      { cause: 'late', short: '5000' },
    ]);
    expect(shortLines().slice(-2)).toEqual([
      expect.objectContaining({ level: 40, close: 'stale', short: 5000 }),
      expect.objectContaining({ level: 40, close: 'stop', short: 5000 }),
    ]);
    expect(await counted('stop')).toBe(before + 1);
  });
});

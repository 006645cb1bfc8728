/**
 * A stop never overtakes the ticks a switch sent before it: in one frame, in
 * the next frame, over many calls at once, and through a gateway that never
 * saw the start. Both answers exact, each second billed once. Nor does a tick
 * sent after the stop overtake it: it finds the call ended.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  gateway,
  keepEvents,
  seedCatalog,
  soldIds,
  startHarness,
  talkProduct,
  token,
  type Harness,
} from '../support/harness';
import { bucketOf, idFields } from '../support/redis';
import { Client, type Msg } from '../support/ws-client';
import { cdrsOf, connectSwitch, msgs, newCall, range } from './fixtures';
import type { Gateway } from '../../src/gateway/server';
import { keys } from '../../src/redis/keys';

let h: Harness;
let gw: Gateway;
let c: Client;
let sw: string;
let refs = 0;
const ref = (): number => ++refs;
/** The `stopped` of a call at 100 micro-units a second, billed `sec`, leaving `balance`. */
const stoppedAt = (r: number, call: string, sec: number, balance: number): Msg => ({
  op: 'stopped',
  ref: r,
  call,
  billedSec: sec,
  cost: sec * 100,
  balance,
});

/** plan std: 100 micro/s, no fee */
const DEST = '4912345';
const P_STD = talkProduct();

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [P_STD]);
  // stopThenTick counts the bucket's events: a webhook worker deleting them would hide a new one.
  gw = await keepEvents(await gateway(h));
  ({ c, name: sw } = await connectSwitch(h, gw.port));
});
afterAll(async () => {
  await c?.close();
  await gw?.close();
  await h?.stop();
});

/**
 * Starts a call on `c`, sends `frames` (ticks, with `tr` on the last tick to
 * answer) and then the stop at `sec` through `via`, and checks that the stop
 * did not overtake the ticks: both answers exact, balance down by sec × 100.
 */
async function tickThenStop(
  via: Client,
  id: string,
  tag: string,
  sec: number,
  bal: number,
  oneFrame: boolean,
): Promise<{ call: string; bal: number }> {
  const call = newCall(tag);
  expect(await c.request({ op: 'start', ref: ref(), call, id, dest: DEST })).toMatchObject({
    op: 'started',
    balance: bal,
  });
  const tr = ref();
  const sr = ref();
  const ticks: Msg[] = oneFrame
    ? [{ op: 'tick', call, sec, ref: tr }]
    : range(1, sec).map((s) => ({ op: 'tick', call, sec: s }));
  ticks[ticks.length - 1]!.ref = tr;
  const stop = { op: 'stop', call, sec, ref: sr };
  if (oneFrame) via.send([...ticks, stop]);
  else {
    via.send(ticks);
    via.send(stop);
  }
  const stopped = await via.waitFor((m) => m.ref === sr);
  const ticked = await via.waitFor((m) => m.ref === tr);
  const after = bal - sec * 100;
  expect(ticked).toMatchObject({ op: 'ticked', ref: tr, call, balance: after, secLeft: after / 100 });
  expect(stopped).toEqual(stoppedAt(sr, call, sec, after));
  return { call, bal: after };
}

describe('a stop never overtakes ticks sent before it', () => {
  it('tick and stop in one frame, 20 times on one ID', async () => {
    const [id] = await soldIds(h, P_STD);
    let bal = 1_000_000;
    for (let i = 0; i < 20; i++) {
      const r = await tickThenStop(c, id!, 'ord', 5, bal, true);
      bal = r.bal;
      expect(msgs(c, r.call, 'error')).toEqual([]);
      expect(await cdrsOf(h, id!, r.call)).toMatchObject([{ sec: '5', cost: '500', cause: 'normal' }]);
    }
    expect(await idFields(h, id!)).toMatchObject({ act: '0', bal: String(bal) });
  });

  it('20 calls, all ticks and stops interleaved in one frame', async () => {
    const ids = await soldIds(h, P_STD, 20);
    const calls: string[] = [];
    for (const id of ids) {
      const call = newCall('mix');
      expect(await c.request({ op: 'start', ref: ref(), call, id, dest: DEST })).toMatchObject({ op: 'started' });
      calls.push(call);
    }
    const frame: Msg[] = [];
    const tr = calls.map(() => ref());
    const sr = calls.map(() => ref());
    calls.forEach((call, i) =>
      frame.push({ op: 'tick', call, sec: 3 + i, ref: tr[i] }, { op: 'stop', call, sec: 3 + i, ref: sr[i] }),
    );
    c.send(frame);
    for (let i = 0; i < calls.length; i++) {
      const sec = 3 + i;
      const bal = 1_000_000 - sec * 100;
      expect(await c.waitFor((m) => m.ref === sr[i])).toEqual(stoppedAt(sr[i]!, calls[i]!, sec, bal));
      expect(await c.waitFor((m) => m.ref === tr[i])).toMatchObject({
        op: 'ticked',
        ref: tr[i],
        call: calls[i],
        balance: bal,
        secLeft: bal / 100,
      });
      expect(msgs(c, calls[i]!, 'error')).toEqual([]);
    }
  });

  it('ticks in one frame and the stop in the next frame right after, 20 times', async () => {
    const [id] = await soldIds(h, P_STD);
    let bal = 1_000_000;
    for (let i = 0; i < 20; i++) {
      const r = await tickThenStop(c, id!, 'ord2', 10, bal, false);
      bal = r.bal;
      expect(msgs(c, r.call, 'error')).toEqual([]);
    }
    expect(await idFields(h, id!)).toMatchObject({ act: '0', bal: String(bal) });
  });

  it('also on a gateway that never saw the start (the call is looked up in Redis), 20 times', async () => {
    const other = await keepEvents(await gateway(h));
    try {
      // The same switch (token name) starts on one gateway and ticks and stops through another.
      const oc = await Client.connect(other.port, await token(h, 'switch', sw));
      try {
        const [id] = await soldIds(h, P_STD);
        let bal = 1_000_000;
        for (let i = 0; i < 20; i++) bal = (await tickThenStop(oc, id!, 'cold', 5, bal, true)).bal;
        expect(await idFields(h, id!)).toMatchObject({ act: '0', bal: String(bal) });
      } finally {
        await oc.close();
      }
    } finally {
      await other.close();
    }
  });
});

describe('ticks and stops sent right behind the start wait for it', () => {
  it('start, ticks and a stop naming ID and destination in one frame: billed in that order, not as a lost call', async () => {
    for (let i = 0; i < 5; i++) {
      const [id] = await soldIds(h, P_STD);
      const call = newCall('behind');
      const [st, t0, t2, sr] = [ref(), ref(), ref(), ref()];
      c.send([
        { op: 'start', ref: st, call, id, dest: DEST },
        { op: 'tick', ref: t0, call, sec: 0 },
        { op: 'tick', ref: t2, call, sec: 2 },
        { op: 'stop', ref: sr, call, sec: 3, id, dest: DEST },
      ]);
      expect(await c.waitFor((m) => m.ref === st)).toMatchObject({ op: 'started', balance: 1_000_000 });
      expect(await c.waitFor((m) => m.ref === t0)).toMatchObject({ op: 'ticked', balance: 1_000_000 });
      expect(await c.waitFor((m) => m.ref === t2)).toMatchObject({ op: 'ticked', balance: 999_800 });
      expect(await c.waitFor((m) => m.ref === sr)).toEqual(stoppedAt(sr, call, 3, 999_700));
      expect(msgs(c, call, 'error')).toEqual([]);
      expect(await cdrsOf(h, id!, call)).toMatchObject([{ sec: '3', cost: '300', cause: 'normal' }]);
    }
  });

  it('a start and its stop in one frame: the call is started and then stopped, not unknown', async () => {
    const [id] = await soldIds(h, P_STD);
    const call = newCall('cancel');
    const [st, sr] = [ref(), ref()];
    c.send([
      { op: 'start', ref: st, call, id, dest: DEST },
      { op: 'stop', ref: sr, call, sec: 0, cause: 'cancel' },
    ]);
    expect(await c.waitFor((m) => m.ref === st)).toMatchObject({ op: 'started' });
    expect(await c.waitFor((m) => m.ref === sr)).toMatchObject({ op: 'stopped', billedSec: 0, cost: 0 });
    expect(await idFields(h, id!)).toMatchObject({ act: '0', bal: '1000000' });
  });
});

describe('a tick sent after the stop does not overtake it', () => {
  /**
   * A stop at 3 s and then, in the same frame, a tick far past the balance: the
   * tick must find the call ended, not bill it to zero and cut it off (with its
   * alerts and an exhausted ID) before the stop gives the money back.
   */
  async function stopThenTick(via: Client, tag: string): Promise<void> {
    const [id] = await soldIds(h, P_STD);
    const call = newCall(tag);
    expect(await c.request({ op: 'start', ref: ref(), call, id, dest: DEST })).toMatchObject({ op: 'started' });
    const events = await h.r.xlen(keys.events(bucketOf(h, id!)));
    const [sr, tr] = [ref(), ref()];
    via.send([
      { op: 'stop', call, sec: 3, ref: sr },
      { op: 'tick', call, sec: 100_000, ref: tr },
      { op: 'tick', call, sec: 100_001 },
    ]);
    expect(await via.waitFor((m) => m.ref === sr)).toEqual(stoppedAt(sr, call, 3, 999_700));
    expect(await via.waitFor((m) => m.ref === tr)).toMatchObject({ op: 'error', ref: tr, reason: 'call_ended' });
    // The tick without a ref is answered nothing; a `ticked`, an alert or a cutoff would be here by now.
    expect(await via.request({ op: 'stop', call, sec: 3, ref: ref() })).toMatchObject({ billedSec: 3 });
    expect(msgs(via, call, 'ticked')).toEqual([]);
    expect(msgs(via, call, 'alert')).toEqual([]);
    expect(msgs(via, call, 'cutoff')).toEqual([]);
    expect(await idFields(h, id!)).toMatchObject({ act: '0', bal: '999700', st: 'sold' });
    expect(await h.r.xlen(keys.events(bucketOf(h, id!)))).toBe(events);
    expect(await cdrsOf(h, id!, call)).toMatchObject([{ sec: '3', cost: '300', cause: 'normal' }]);
  }

  it('on the gateway that started the call', async () => {
    for (let i = 0; i < 5; i++) await stopThenTick(c, 'st-warm');
  });

  it('on a gateway that never saw the start', async () => {
    const other = await keepEvents(await gateway(h));
    try {
      const oc = await Client.connect(other.port, await token(h, 'switch', sw));
      try {
        for (let i = 0; i < 5; i++) await stopThenTick(oc, 'st-cold');
      } finally {
        await oc.close();
      }
    } finally {
      await other.close();
    }
  });
});

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pack } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, sameBucketIds, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { sample } from '../support/metrics';
import { bucketOf, idFields, idKeyOf } from '../support/redis';
import { sleep, until } from '../support/wait';
import { Client, Wire, type Msg } from '../support/ws-client';
import { cdrsOf, connectSwitch, msgs, newCall, range, sessionKey } from './fixtures';
import type { Gateway } from '../../src/gateway/server';
import type { Product } from '../../src/catalog/schema';
import { setIdState } from '../../src/admin/ids';
import { resolveSecret } from '../../src/app/secret';
import { loadConfig } from '../../src/config/config';
import { keys } from '../../src/redis/keys';

/**
 * Follow-ups to the metering core: ring grace before reaping, cut-off for ticks
 * on reaped calls, stops that never overtake queued ticks, cut-offs counted once,
 * cut-off as soon as a second can no longer be paid, answer never before start,
 * int64 on the wire, the secret fallback, and embedded Redis ending with its parent.
 * Real Redis, real sockets.
 */
let h: Harness;
let refs = 0;
const ref = (): string => `f${++refs}`;

/** plan std: 100 micro/s, no fee */
const DEST = '4912345';

const P_STD = talkProduct();
/** Enough for 10 s and a half at 100/s; no thresholds, so only cut-offs come back. */
const P_1050 = talkProduct({ name: 'talk1050', face: 1050, price: 1050, thresholds: [], maxCalls: 2 });
/** Exactly 10 s at 100/s. */
const P_1000 = talkProduct({ name: 'talk1000', face: 1000, price: 1000, thresholds: [] });
/** A balance beyond 32 bits. */
const BIG_FACE = 10_000_000_000;
const P_BIG = talkProduct({ name: 'talkbig', face: BIG_FACE, price: 1000, thresholds: [] });

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [P_STD, P_1050, P_1000, P_BIG]);
});
afterAll(async () => {
  await h?.stop();
});

async function begin(c: Client, product: Product = P_STD, dest = DEST): Promise<{ id: string; call: string; started: Msg }> {
  const [id] = await soldIds(h, product);
  const call = newCall();
  const started = await c.request({ op: 'start', ref: ref(), call, id: id!, dest });
  expect(started.op).toBe('started');
  return { id: id!, call, started };
}

const liveScore = (id: string, sw: string, call: string): Promise<string | null> => h.r.zscore(keys.live(bucketOf(h, id)), sessionKey(h, id, sw, call));

/** Every message of a call that arrived at index >= from. */
const callMsgsFrom = (c: Client, call: string, from: number): Msg[] => c.received.slice(from).filter((m) => m.call === call);

// ---------------------------------------------------------------------------------------------
describe('ring grace and reaped calls (stale after 300 ms, ring timeout 1500 ms, sweep every 100 ms)', () => {
  let gw: Gateway;
  let c: Client;
  let sw: string;
  beforeAll(async () => {
    gw = await gateway(h, { staleAfterMs: 300, ringTimeoutMs: 1500, reapIntervalMs: 100 });
    ({ c, name: sw } = await connectSwitch(h, gw.port));
  });
  afterAll(async () => {
    await c?.close();
    await gw?.close();
  });

  it('a ringing call (never ticked) lives until the ring timeout; an answered one is reaped after staleAfterMs', async () => {
    const t0 = Date.now();
    const ringing = await begin(c);
    const answered = await begin(c);
    const tickAt = Date.now();
    expect(await c.request({ op: 'tick', ref: ref(), call: answered.call, sec: 1 })).toMatchObject({ op: 'ticked', balance: 999_900 });

    // The answered call goes stale 300 ms after its tick, long before the ring timeout.
    await until(async () => (await cdrsOf(h, answered.id, answered.call)).length > 0, 1400, 20);
    const ans = await cdrsOf(h, answered.id, answered.call);
    expect(ans).toHaveLength(1);
    expect(ans[0]).toMatchObject({ switch: sw, call: answered.call, sec: '1', cost: '100', bal: '999900', cause: 'stale' });
    expect(Number(ans[0]!.end) - tickAt).toBeGreaterThanOrEqual(300);
    expect(await idFields(h, answered.id)).toMatchObject({ act: '0', bal: '999900', st: 'sold' });

    // ~800 ms after the start the ringing call is still live: no record, slot held.
    const wait = t0 + 800 - Date.now();
    if (wait > 0) await sleep(wait);
    expect(Date.now() - t0).toBeLessThan(1400);
    expect(await cdrsOf(h, ringing.id, ringing.call)).toEqual([]);
    expect(await h.r.hget(sessionKey(h, ringing.id, sw, ringing.call), 'st')).toBe('live');
    expect(await liveScore(ringing.id, sw, ringing.call)).not.toBeNull();
    expect(await idFields(h, ringing.id)).toMatchObject({ act: '1', bal: '1000000' });

    // After the ring timeout it is closed at zero cost.
    await until(async () => (await cdrsOf(h, ringing.id, ringing.call)).length > 0, 3000, 20);
    const rec = await cdrsOf(h, ringing.id, ringing.call);
    expect(rec).toHaveLength(1);
    expect(rec[0]).toMatchObject({ switch: sw, call: ringing.call, sec: '0', cost: '0', short: '0', answer: '', bal: '1000000', cause: 'stale' });
    const rang = Number(rec[0]!.end) - Number(rec[0]!.start);
    expect(rang).toBeGreaterThanOrEqual(1500);
    expect(rang).toBeLessThan(3000);
    expect(await liveScore(ringing.id, sw, ringing.call)).toBeNull();
    expect(await idFields(h, ringing.id)).toMatchObject({ act: '0', bal: '1000000', st: 'sold' });
  });

  it('a tick without ref on a call the reaper closed gets cutoff stale; nothing is billed', async () => {
    const { id, call } = await begin(c);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 2 })).toMatchObject({ op: 'ticked', balance: 999_800 });
    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000, 20);

    const from = c.received.length;
    const barrier = ref();
    // One frame: the bare tick, then a tick with ref whose answer comes after the first one's.
    c.send([
      { op: 'tick', call, sec: 3 },
      { op: 'tick', call, sec: 4, ref: barrier },
    ]);
    await c.waitFor((m) => m.ref === barrier);
    expect(callMsgsFrom(c, call, from)).toEqual([
      { op: 'cutoff', call, reason: 'stale' },
      { op: 'error', ref: barrier, call, reason: 'call_ended', message: expect.any(String) },
    ]);
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '999800' });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '2', cost: '200', cause: 'stale' }]);
  });

  it('a tick without ref on a call the switch stopped normally gets nothing', async () => {
    const { id, call } = await begin(c);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 2 })).toMatchObject({ op: 'ticked' });
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 2 })).toMatchObject({ op: 'stopped', billedSec: 2, cost: 200, balance: 999_800 });

    const from = c.received.length;
    const barrier = ref();
    c.send([
      { op: 'tick', call, sec: 3 },
      { op: 'tick', call, sec: 4, ref: barrier },
    ]);
    await c.waitFor((m) => m.ref === barrier);
    expect(callMsgsFrom(c, call, from)).toEqual([{ op: 'error', ref: barrier, call, reason: 'call_ended', message: expect.any(String) }]);
    expect(msgs(c, call, 'cutoff')).toEqual([]);
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '999800' });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '2', cost: '200', cause: 'normal' }]);
  });
});

// ---------------------------------------------------------------------------------------------
describe('on a gateway with default timers', () => {
  let gw: Gateway;
  let c: Client;
  let sw: string;
  beforeAll(async () => {
    gw = await gateway(h);
    ({ c, name: sw } = await connectSwitch(h, gw.port));
  });
  afterAll(async () => {
    await c?.close();
    await gw?.close();
  });

  /**
   * Starts a call on `c`, sends `frames` (ticks, with `tr` on the last tick to
   * answer) and then the stop at `sec` through `via`, and checks that the stop
   * did not overtake the ticks: both answers exact, balance down by sec × 100.
   */
  async function tickThenStop(via: Client, id: string, tag: string, sec: number, bal: number, oneFrame: boolean): Promise<{ call: string; bal: number }> {
    const call = newCall(tag);
    expect(await c.request({ op: 'start', ref: ref(), call, id, dest: DEST })).toMatchObject({ op: 'started', balance: bal });
    const tr = ref();
    const sr = ref();
    const ticks: Msg[] = oneFrame ? [{ op: 'tick', call, sec, ref: tr }] : range(1, sec).map((s) => ({ op: 'tick', call, sec: s }));
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
    expect(ticked).toEqual({ op: 'ticked', ref: tr, call, balance: after, secLeft: after / 100 });
    expect(stopped).toEqual({ op: 'stopped', ref: sr, call, billedSec: sec, cost: sec * 100, balance: after });
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
      calls.forEach((call, i) => frame.push({ op: 'tick', call, sec: 3 + i, ref: tr[i] }, { op: 'stop', call, sec: 3 + i, ref: sr[i] }));
      c.send(frame);
      for (let i = 0; i < calls.length; i++) {
        const sec = 3 + i;
        const bal = 1_000_000 - sec * 100;
        expect(await c.waitFor((m) => m.ref === sr[i])).toEqual({ op: 'stopped', ref: sr[i], call: calls[i], billedSec: sec, cost: sec * 100, balance: bal });
        expect(await c.waitFor((m) => m.ref === tr[i])).toEqual({ op: 'ticked', ref: tr[i], call: calls[i], balance: bal, secLeft: bal / 100 });
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
      const other = await gateway(h);
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

  it('group commit: ticks that reach a bucket while its call_tick is in flight go in one next call, and a stop behind them waits for them', async () => {
    // Five calls in one bucket (64 buckets: among 300 IDs one bucket has five).
    const ids = await soldIds(h, P_STD, 300);
    const same = sameBucketIds(h, ids, 5);
    expect(same).toHaveLength(5);
    const calls: string[] = [];
    for (const id of same) {
      const call = newCall('gc');
      expect(await c.request({ op: 'start', ref: ref(), call, id, dest: DEST })).toMatchObject({ op: 'started' });
      calls.push(call);
    }
    const tickScripts = async (): Promise<number> => (await gw.metrics.scriptSeconds.get()).values.find((v) => v.metricName?.endsWith('_count') && v.labels.script === 'call_tick')?.value ?? 0;
    const before = await tickScripts();

    // Redis holds scripts back for a moment: the first tick's call_tick stays in flight.
    await h.r.client('PAUSE', 400, 'WRITE');
    const tr = calls.map(() => ref());
    c.send({ op: 'tick', call: calls[0], sec: 2, ref: tr[0] });
    await sleep(60);
    // Each in its own frame and event-loop turn: without group commit, four more scripts.
    for (let i = 1; i < 5; i++) {
      c.send({ op: 'tick', call: calls[i], sec: 2 + i, ref: tr[i] });
      await sleep(15);
    }
    const sr = ref();
    c.send({ op: 'stop', call: calls[4], sec: 6, ref: sr });

    for (let i = 0; i < 5; i++) {
      const bal = 1_000_000 - (2 + i) * 100;
      expect(await c.waitFor((m) => m.ref === tr[i])).toEqual({ op: 'ticked', ref: tr[i], call: calls[i], balance: bal, secLeft: bal / 100 });
    }
    expect(await c.waitFor((m) => m.ref === sr)).toEqual({ op: 'stopped', ref: sr, call: calls[4], billedSec: 6, cost: 600, balance: 1_000_000 - 600 });
    expect((await tickScripts()) - before).toBe(2);
    for (const call of calls.slice(0, 4)) await c.request({ op: 'stop', ref: ref(), call, sec: 10 });
  });

  it('a call that fails in call_tick (a damaged ID key) fails alone: the call billed in the same script goes on', async () => {
    const ids = await soldIds(h, P_STD, 300);
    const [bad, good] = sameBucketIds(h, ids, 2);
    const calls = [newCall('bad'), newCall('good')];
    for (const [i, id] of [bad!, good!].entries()) {
      expect(await c.request({ op: 'start', ref: ref(), call: calls[i], id, dest: DEST })).toMatchObject({ op: 'started' });
    }
    // Damaged beyond reading: the ID's key holds a string, so call_tick's HMGET on it fails.
    await h.r.del(idKeyOf(h, bad!));
    await h.r.set(idKeyOf(h, bad!), 'damaged');
    const [rb, rg] = [ref(), ref()];
    // One frame: both ticks reach their bucket in one event-loop turn, so one call_tick bills both.
    c.send([
      { op: 'tick', call: calls[0], sec: 3, ref: rb },
      { op: 'tick', call: calls[1], sec: 3, ref: rg },
    ]);
    expect(await c.waitFor((m) => m.ref === rb)).toMatchObject({ op: 'error', reason: 'internal' });
    expect(await c.waitFor((m) => m.ref === rg)).toEqual({ op: 'ticked', ref: rg, call: calls[1], balance: 1_000_000 - 300, secLeft: (1_000_000 - 300) / 100 });
    await c.request({ op: 'stop', ref: ref(), call: calls[1], sec: 3 });
  });

  describe('cut-offs are counted once', () => {
    const cutoffs = async (reason: string): Promise<number> => {
      const text = await (await fetch(`http://127.0.0.1:${gw.port}/metrics`)).text();
      return sample(text, 'tessera_cutoffs_total', { reason }) ?? 0;
    };

    it('an exhausted call that keeps ticking is told to cut on each tick, counted once', async () => {
      const before = await cutoffs('exhausted');
      const { id, call, started } = await begin(c, P_1000);
      expect(started).toMatchObject({ maxSec: 10, balance: 1000, rate: 100 });
      const r10 = ref();
      const ticks: Msg[] = range(1, 10).map((sec) => ({ op: 'tick', call, sec }));
      ticks[9]!.ref = r10;
      c.send(ticks);
      expect(await c.waitFor((m) => m.ref === r10)).toEqual({ op: 'ticked', ref: r10, call, balance: 0, secLeft: 0 });
      expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'exhausted' }]);
      expect(await idFields(h, id)).toMatchObject({ st: 'exhausted', bal: '0' });
      expect(await cutoffs('exhausted')).toBe(before + 1);

      // The switch talks on: every further tick (new seconds, or a repeat) repeats the order.
      for (const sec of [11, 12, 13, 13]) {
        expect(await c.request({ op: 'tick', ref: ref(), call, sec })).toMatchObject({ op: 'ticked', balance: 0, secLeft: 0 });
      }
      expect(msgs(c, call, 'cutoff')).toEqual(Array.from({ length: 5 }, () => ({ op: 'cutoff', call, reason: 'exhausted' })));
      expect(await cutoffs('exhausted')).toBe(before + 1);
      expect(await c.request({ op: 'stop', ref: ref(), call, sec: 13 })).toMatchObject({ op: 'stopped', billedSec: 13, cost: 1000, balance: 0 });
      expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '13', cost: '1000', short: '300', bal: '0' }]);
      expect(await cutoffs('exhausted')).toBe(before + 1);
    });

    it('a blocked ID gets cutoff blocked on each later tick, counted once', async () => {
      const beforeB = await cutoffs('blocked');
      const beforeE = await cutoffs('exhausted');
      const { id, call } = await begin(c);
      expect(await c.request({ op: 'tick', ref: ref(), call, sec: 1 })).toMatchObject({ balance: 999_900 });
      expect(await setIdState(h.ctx, id, 'block', 'test')).toEqual({ ok: true, state: 'blocked' });
      for (const sec of [2, 3, 3, 4]) {
        expect(await c.request({ op: 'tick', ref: ref(), call, sec })).toMatchObject({ op: 'ticked' });
      }
      expect(msgs(c, call, 'cutoff')).toEqual(Array.from({ length: 4 }, () => ({ op: 'cutoff', call, reason: 'blocked' })));
      expect(await cutoffs('blocked')).toBe(beforeB + 1);
      expect(await cutoffs('exhausted')).toBe(beforeE);
      await c.request({ op: 'stop', ref: ref(), call, sec: 4 });
      expect(await cutoffs('blocked')).toBe(beforeB + 1);
    });
  });

  describe('cut as soon as a second can no longer be paid', () => {
    it('face 1050 at 100/s: cut at 10 s with 50 left; the ID stays sold; sec 11 takes the 50 and exhausts it', async () => {
      const { id, call, started } = await begin(c, P_1050);
      expect(started).toMatchObject({ maxSec: 10, balance: 1050, rate: 100, fee: 0 });
      const r9 = ref();
      c.send(range(1, 9).map((sec) => ({ op: 'tick', call, sec, ...(sec === 9 ? { ref: r9 } : {}) })));
      expect(await c.waitFor((m) => m.ref === r9)).toEqual({ op: 'ticked', ref: r9, call, balance: 150, secLeft: 1 });
      expect(msgs(c, call, 'cutoff')).toEqual([]);

      expect(await c.request({ op: 'tick', ref: ref(), call, sec: 10 })).toMatchObject({ op: 'ticked', balance: 50, secLeft: 0 });
      expect(msgs(c, call, 'cutoff')).toEqual([{ op: 'cutoff', call, reason: 'exhausted' }]);
      expect(await idFields(h, id)).toMatchObject({ st: 'sold', bal: '50', act: '1' });

      // 50 cannot pay a second at 100/s: a new call on this (two-call) ID is refused.
      const other = newCall();
      expect(await c.request({ op: 'start', ref: ref(), call: other, id, dest: DEST })).toMatchObject({ op: 'error', call: other, reason: 'insufficient_balance' });
      expect(await idFields(h, id)).toMatchObject({ st: 'sold', bal: '50', act: '1' });

      // The switch talks on: second 11 takes the last 50, 50 short, and the ID is exhausted.
      expect(await c.request({ op: 'tick', ref: ref(), call, sec: 11 })).toMatchObject({ op: 'ticked', balance: 0, secLeft: 0 });
      expect(msgs(c, call, 'cutoff')).toEqual([
        { op: 'cutoff', call, reason: 'exhausted' },
        { op: 'cutoff', call, reason: 'exhausted' },
      ]);
      expect(await idFields(h, id)).toMatchObject({ st: 'exhausted', bal: '0' });
      expect(await c.request({ op: 'stop', ref: ref(), call, sec: 11 })).toMatchObject({ op: 'stopped', billedSec: 11, cost: 1050, balance: 0 });
      expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '11', cost: '1050', short: '50', bal: '0' }]);
      expect(await idFields(h, id)).toMatchObject({ st: 'exhausted', bal: '0', act: '0' });
      expect(await c.request({ op: 'start', ref: ref(), call: newCall(), id, dest: DEST })).toMatchObject({ op: 'error', reason: 'exhausted' });
    });
  });

  describe('answer time', () => {
    it('is never before the start, even when the first tick claims more seconds than have passed', async () => {
      const { id, call } = await begin(c);
      expect(await c.request({ op: 'tick', ref: ref(), call, sec: 100 })).toMatchObject({ op: 'ticked', balance: 990_000 });
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
});

// ---------------------------------------------------------------------------------------------
describe('int64 on the wire', () => {
  let gw: Gateway;
  let w: Wire;
  beforeAll(async () => {
    gw = await gateway(h);
    const { c, name } = await connectSwitch(h, gw.port);
    await c.close();
    w = await Wire.connect(gw.port, await token(h, 'switch', name));
  });
  afterAll(async () => {
    await w?.close();
    await gw?.close();
  });

  /** The integer stored under `key` in a raw MessagePack frame, with its type byte. */
  function rawInt(raw: Buffer, key: string): { type: number; value: bigint } {
    const k = Buffer.concat([Buffer.from([0xa0 | key.length]), Buffer.from(key, 'utf8')]);
    const at = raw.indexOf(k);
    if (at < 0) throw new Error(`no ${key} in ${raw.toString('hex')}`);
    const p = at + k.length;
    const type = raw[p]!;
    if (type === 0xcf) return { type, value: raw.readBigUInt64BE(p + 1) };
    if (type === 0xd3) return { type, value: raw.readBigInt64BE(p + 1) };
    return { type, value: -1n };
  }

  it('a tick whose sec is an int64 (0xd3) or uint64 (0xcf) is read as a number; a balance beyond 2^32 goes out as int64', async () => {
    const [id] = await soldIds(h, P_BIG);
    const call = newCall('i64');
    const sref = ref();
    const started = await w.request({ op: 'start', ref: sref, call, id: id!, dest: DEST }, true);
    expect(started.binary).toBe(true);
    expect(started.msg).toEqual({ op: 'started', ref: sref, call, maxSec: BIG_FACE / 100, balance: BIG_FACE, rate: 100, fee: 0 });
    const sraw = w.frames[started.frame]!.raw;
    const sb = rawInt(sraw, 'balance');
    expect([0xcf, 0xd3]).toContain(sb.type);
    expect(sb.value).toBe(BigInt(BIG_FACE));

    // sec = 7 as int64: a3 'sec' d3 00 00 00 00 00 00 00 07
    const tref = ref();
    const bytes = Buffer.from(pack({ op: 'tick', ref: tref, call, sec: 7n }));
    const secI64 = Buffer.from('a3736563d30000000000000007', 'hex');
    expect(bytes.includes(secI64)).toBe(true);
    let from = w.got.length;
    w.raw(bytes, true);
    const t1 = await w.waitFor((m) => m.ref === tref, from);
    expect(t1.msg).toEqual({ op: 'ticked', ref: tref, call, balance: BIG_FACE - 700, secLeft: (BIG_FACE - 700) / 100 });
    const tb = rawInt(w.frames[t1.frame]!.raw, 'balance');
    expect([0xcf, 0xd3]).toContain(tb.type);
    expect(tb.value).toBe(BigInt(BIG_FACE - 700));

    // The same with uint64 (0xcf), as some switches send it.
    const uref = ref();
    const ubytes = Buffer.from(pack({ op: 'tick', ref: uref, call, sec: 9n }));
    const at = ubytes.indexOf(Buffer.from('a3736563d3', 'hex'));
    expect(at).toBeGreaterThanOrEqual(0);
    ubytes[at + 4] = 0xcf;
    expect(ubytes.includes(Buffer.from('a3736563cf0000000000000009', 'hex'))).toBe(true);
    from = w.got.length;
    w.raw(ubytes, true);
    expect((await w.waitFor((m) => m.ref === uref, from)).msg).toEqual({ op: 'ticked', ref: uref, call, balance: BIG_FACE - 900, secLeft: (BIG_FACE - 900) / 100 });

    // An int64 too large for a double-exact number is refused, and the connection stays up.
    const bref = ref();
    from = w.got.length;
    w.raw(Buffer.from(pack({ op: 'tick', ref: bref, call, sec: 2n ** 60n })), true);
    expect((await w.waitFor((m) => m.ref === bref, from)).msg).toMatchObject({ op: 'error', ref: bref, reason: 'bad_type' });

    const stop = await w.request({ op: 'stop', ref: ref(), call, sec: 9 }, true);
    expect(stop.msg).toMatchObject({ op: 'stopped', billedSec: 9, cost: 900, balance: BIG_FACE - 900 });
    expect(await idFields(h, id!)).toMatchObject({ bal: String(BIG_FACE - 900), act: '0' });
  });
});

// ---------------------------------------------------------------------------------------------
describe('resolveSecret', () => {
  const dirs: string[] = [];
  const tmp = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'tessera-secret-'));
    dirs.push(d);
    return d;
  };
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('with REDIS_URL (or REDIS_CLUSTER), no TESSERA_SECRET and no secret file: refuses, naming TESSERA_SECRET, and writes nothing', () => {
    const dir = tmp();
    const warned: string[] = [];
    const cfg = loadConfig({ DATA_DIR: dir, REDIS_URL: 'redis://127.0.0.1:6399' });
    expect(cfg.secret).toBeUndefined();
    expect(() => resolveSecret(cfg, (m) => warned.push(m))).toThrow(/TESSERA_SECRET/);
    expect(existsSync(join(dir, 'secret'))).toBe(false);
    expect(warned).toEqual([]);

    const cl = loadConfig({ DATA_DIR: dir, REDIS_CLUSTER: '127.0.0.1:7000,127.0.0.1:7001' });
    expect(() => resolveSecret(cl)).toThrow(/TESSERA_SECRET/);
    expect(existsSync(join(dir, 'secret'))).toBe(false);
  });

  it('without REDIS_URL: creates DATA_DIR/secret (mode 0600) once and returns the same secret next time', () => {
    const dir = join(tmp(), 'nested', 'data');
    const cfg = loadConfig({ DATA_DIR: dir });
    const warned: string[] = [];
    const s1 = resolveSecret(cfg, (m) => warned.push(m));
    const file = join(dir, 'secret');
    expect(existsSync(file)).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(s1.length).toBe(32);
    expect(readFileSync(file, 'utf8')).toBe(`${s1.toString('hex')}\n`);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toContain('TESSERA_SECRET');
    expect(warned[0]).toContain(file);

    const s2 = resolveSecret(loadConfig({ DATA_DIR: dir }), (m) => warned.push(m));
    expect(s2.equals(s1)).toBe(true);
    expect(warned).toHaveLength(1);
  });

  it('an existing secret file is used even with REDIS_URL set; TESSERA_SECRET wins over the file', () => {
    const dir = tmp();
    const hex = 'cd'.repeat(32);
    writeFileSync(join(dir, 'secret'), `${hex}\n`, { mode: 0o600 });
    const s = resolveSecret(loadConfig({ DATA_DIR: dir, REDIS_URL: 'redis://127.0.0.1:6399' }));
    expect(s.toString('hex')).toBe(hex);
    const env = 'ef'.repeat(32);
    expect(resolveSecret(loadConfig({ DATA_DIR: dir, REDIS_URL: 'redis://127.0.0.1:6399', TESSERA_SECRET: env })).toString('hex')).toBe(env);
    expect(readFileSync(join(dir, 'secret'), 'utf8')).toBe(`${hex}\n`);
  });
});

// ---------------------------------------------------------------------------------------------
describe('embedded Redis ends with its parent', () => {
  /** PONG from a raw socket, or false when nothing answers. */
  function ping(port: number, cmd = 'PING'): Promise<boolean> {
    return new Promise((resolveP) => {
      const s = connect({ host: '127.0.0.1', port });
      let buf = '';
      const done = (v: boolean): void => {
        s.destroy();
        resolveP(v);
      };
      s.setTimeout(1000, () => done(false));
      s.on('error', () => done(false));
      s.on('connect', () => s.write(`${cmd}\r\n`));
      s.on('data', (d) => {
        buf += d.toString();
        if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
      });
      s.on('close', () => done(false));
    });
  }

  it('a gateway process killed with SIGKILL takes its redis-server down with it', async () => {
    const root = resolve(__dirname, '..', '..');
    const dir = mkdtempSync(join(tmpdir(), 'tessera-emb-'));
    const script = join(dir, 'parent.ts');
    writeFileSync(
      script,
      [
        `import { startEmbeddedRedis } from ${JSON.stringify(join(root, 'src', 'redis', 'embedded.ts'))};`,
        `void startEmbeddedRedis({ dir: ${JSON.stringify(join(dir, 'redis'))}, persist: false }).then((r) => console.log('PORT ' + r.port));`,
        'setInterval(() => undefined, 1000);',
        '',
      ].join('\n'),
    );
    // node --import tsx runs the script in this very process (the tsx CLI would add a wrapper process).
    const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let port = 0;
    try {
      let out = '';
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      port = await new Promise<number>((res, rej) => {
        const t = setTimeout(() => rej(new Error(`no port from child: ${out} ${err}`)), 15_000);
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /PORT (\d+)/.exec(out);
          if (m) {
            clearTimeout(t);
            res(Number(m[1]));
          }
        });
        child.once('exit', (code) => {
          clearTimeout(t);
          rej(new Error(`child exited ${code}: ${err}`));
        });
      });
      expect(await ping(port)).toBe(true);

      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      expect(child.kill('SIGKILL')).toBe(true);
      await exited;
      await until(async () => !(await ping(port)), 5000, 50);
      expect(await ping(port)).toBe(false);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      // Should the watchdog have failed, do not leave the orphan running.
      if (port && (await ping(port))) await ping(port, 'SHUTDOWN NOSAVE');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * Script calls per bucket: ticks that reach a bucket while its script is in
 * flight go together in the next call, a stop behind them waits for them, and
 * a call that fails inside a shared script fails alone. Starts and stops run
 * the same way: a burst of calls costs a few scripts, each call gets its own
 * answer, and a start repeated in one batch is applied in order (it answers as
 * a repeat, its conflict is seen).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  gateway,
  sameBucketIds,
  seedCatalog,
  soldIds,
  startHarness,
  STD_RATES,
  talkProduct,
  type Harness,
} from '../support/harness';
import { idFields, idKeyOf } from '../support/redis';
import { sleep } from '../support/wait';
import type { Client } from '../support/ws-client';
import { connectSwitch, newCall } from './fixtures';
import type { Gateway } from '../../src/gateway/server';
import { PlanTariff } from '../../src/catalog/tariff';
import { callKeyOf, callKeysFor } from '../../src/metering/call-keys';
import { callStarts, callStops, type StartItem, type StartResult, type StopResult } from '../../src/metering/scripts';
import { keys } from '../../src/redis/keys';

let h: Harness;
let gw: Gateway;
let c: Client;
let refs = 0;
const ref = (): number => ++refs;

/** plan std: 100 micro/s, no fee */
const DEST = '4912345';
const P_STD = talkProduct();

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [P_STD]);
  gw = await gateway(h);
  ({ c } = await connectSwitch(h, gw.port));
});
afterAll(async () => {
  await c?.close();
  await gw?.close();
  await h?.stop();
});

/** How many times the gateway has called a script so far. */
const scriptCalls = async (script: string): Promise<number> =>
  (await gw.metrics.scriptSeconds.get()).values.find(
    (v) => v.metricName?.endsWith('_count') && v.labels.script === script,
  )?.value ?? 0;

describe('call_tick batched per bucket', () => {
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
    const before = await scriptCalls('call_tick');

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
      expect(await c.waitFor((m) => m.ref === tr[i])).toMatchObject({
        op: 'ticked',
        ref: tr[i],
        call: calls[i],
        balance: bal,
        secLeft: bal / 100,
      });
    }
    expect(await c.waitFor((m) => m.ref === sr)).toEqual({
      op: 'stopped',
      ref: sr,
      call: calls[4],
      billedSec: 6,
      cost: 600,
      balance: 1_000_000 - 600,
    });
    expect((await scriptCalls('call_tick')) - before).toBe(2);
    for (const call of calls.slice(0, 4)) await c.request({ op: 'stop', ref: ref(), call, sec: 10 });
  });

  it('a call that fails in call_tick (a damaged ID key) fails alone: the call billed in the same script goes on', async () => {
    const ids = await soldIds(h, P_STD, 300);
    const [bad, good] = sameBucketIds(h, ids, 2);
    const calls = [newCall('bad'), newCall('good')];
    for (const [i, id] of [bad!, good!].entries()) {
      expect(await c.request({ op: 'start', ref: ref(), call: calls[i], id, dest: DEST })).toMatchObject({
        op: 'started',
      });
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
    expect(await c.waitFor((m) => m.ref === rg)).toMatchObject({
      op: 'ticked',
      ref: rg,
      call: calls[1],
      balance: 1_000_000 - 300,
      secLeft: (1_000_000 - 300) / 100,
    });
    await c.request({ op: 'stop', ref: ref(), call: calls[1], sec: 3 });
  });
});

describe('starts and stops batched per bucket', () => {
  it('eight calls of one bucket started and stopped in one frame each cost fewer scripts than calls, each billed alone', async () => {
    const ids = sameBucketIds(h, await soldIds(h, P_STD, 600), 8);
    expect(ids).toHaveLength(8);
    const calls = ids.map(() => newCall('burst'));
    const starts0 = await scriptCalls('call_start');
    const stops0 = await scriptCalls('call_stop');
    const sr = calls.map(() => ref());
    c.send(calls.map((call, i) => ({ op: 'start', ref: sr[i], call, id: ids[i], dest: DEST })));
    for (const [i, call] of calls.entries()) {
      expect(await c.waitFor((m) => m.ref === sr[i])).toMatchObject({ op: 'started', call, balance: 1_000_000 });
    }
    const tr = calls.map(() => ref());
    c.send(calls.map((call, i) => ({ op: 'stop', ref: tr[i], call, sec: i + 1 })));
    for (const [i, call] of calls.entries()) {
      expect(await c.waitFor((m) => m.ref === tr[i])).toMatchObject({
        op: 'stopped',
        call,
        billedSec: i + 1,
        cost: (i + 1) * 100,
        balance: 1_000_000 - (i + 1) * 100,
      });
    }
    // One call each when the frame reaches its bucket in one turn; never one per call.
    expect((await scriptCalls('call_start')) - starts0).toBeLessThan(8);
    expect((await scriptCalls('call_stop')) - stops0).toBeLessThan(8);
    for (const [i, id] of ids.entries()) {
      expect(await idFields(h, id)).toMatchObject({ bal: String(1_000_000 - (i + 1) * 100), act: '0' });
    }
  });
});

describe('call_start and call_stop with several calls in one script', () => {
  /** What the gateway sends for a start on plan std to DEST. */
  function item(id: string, call: string, answers: (StartResult | Error)[]): StartItem {
    const { hash, bucket } = h.ctx.ids.hash(id);
    const desc = new PlanTariff([{ name: 'std', rates: STD_RATES }]).descriptor(DEST, Date.now())!;
    return {
      ck: callKeysFor(keys.id(bucket, hash), callKeyOf('batch-switch', call)),
      args: { dest: DEST, sw: 'batch-switch', call, idHash: hash, mode: 'tick', aniHash: '', rates: ['std', desc] },
      done: (err, r) => answers.push(err ?? r!),
    };
  }

  function startAll(batch: StartItem[]): Promise<void> {
    return new Promise((resolve) => callStarts(h.ctx.scripts, batch, { now: Date.now(), ringGraceMs: 0 }, resolve));
  }

  it('a damaged ID fails its own start; a repeat in the batch answers as a repeat; a call id on another ID conflicts', async () => {
    const [bad, good, other] = sameBucketIds(h, await soldIds(h, P_STD, 600), 3);
    // Damaged beyond reading: the ID's key holds a string, so call_start's HMGET on it fails.
    await h.r.del(idKeyOf(h, bad!));
    await h.r.set(idKeyOf(h, bad!), 'damaged');
    const answers: (StartResult | Error)[] = [];
    const call = newCall('b');
    await startAll([
      item(bad!, newCall('b'), answers),
      item(good!, call, answers),
      item(good!, call, answers),
      item(other!, call, answers),
    ]);
    // settled runs before the answers: they are all in by the next turn.
    await new Promise((r) => setImmediate(r));
    expect(answers).toHaveLength(4);
    expect(answers[0]).toBeInstanceOf(Error);
    expect((answers[0] as Error).message).toMatch(/call_start failed: .*WRONGTYPE/);
    expect(answers[1]).toMatchObject({ ok: true, duplicate: false, balance: 1_000_000 });
    expect(answers[2]).toMatchObject({ ok: true, duplicate: true, balance: 1_000_000 });
    expect(answers[3]).toEqual({ ok: false, reason: 'call_conflict' });
    expect(await idFields(h, good!)).toMatchObject({ act: '1' });
    expect(await idFields(h, other!)).toMatchObject({ act: '0' });

    // Stops likewise: the first closes the call, the repeat behind it answers it again.
    const ck = callKeysFor(idKeyOf(h, good!), callKeyOf('batch-switch', call));
    const stops: (StopResult | Error)[] = [];
    const stopItem = {
      ck,
      sec: 4,
      cause: 'normal',
      dest: '',
      done: (err: Error | null, r?: StopResult) => stops.push(err ?? r!),
    };
    await new Promise<void>((resolve) => callStops(h.ctx.scripts, [stopItem, stopItem], Date.now(), 60, resolve));
    await new Promise((r) => setImmediate(r));
    expect(stops[0]).toMatchObject({ ok: true, billedSec: 4, cost: 400, duplicate: false });
    expect(stops[1]).toMatchObject({ ok: true, billedSec: 4, cost: 400, duplicate: true });
    expect(await idFields(h, good!)).toMatchObject({ bal: String(1_000_000 - 400), act: '0' });
  });
});

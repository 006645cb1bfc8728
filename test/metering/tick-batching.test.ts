/**
 * call_tick per bucket: ticks that reach a bucket while its script is in
 * flight go together in the next call, a stop behind them waits for them, and
 * a call that fails inside a shared script fails alone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  gateway,
  sameBucketIds,
  seedCatalog,
  soldIds,
  startHarness,
  talkProduct,
  type Harness,
} from '../support/harness';
import { idKeyOf } from '../support/redis';
import { sleep } from '../support/wait';
import type { Client } from '../support/ws-client';
import { connectSwitch, newCall } from './fixtures';
import type { Gateway } from '../../src/gateway/server';

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
    const tickScripts = async (): Promise<number> =>
      (await gw.metrics.scriptSeconds.get()).values.find(
        (v) => v.metricName?.endsWith('_count') && v.labels.script === 'call_tick',
      )?.value ?? 0;
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
    expect((await tickScripts()) - before).toBe(2);
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

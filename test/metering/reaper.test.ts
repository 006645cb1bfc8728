import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { bucketOf, idFields } from '../support/redis';
import { sleep, until } from '../support/wait';
import { Client, type Msg } from '../support/ws-client';
import { cdrsOf, connectSwitch, newCall, sessionKey } from './fixtures';
import type { Gateway } from '../../src/gateway/server';
import { keys } from '../../src/redis/keys';

/**
 * Stale calls: a switch that goes quiet has its calls closed by the reaper,
 * billed up to the last tick, with the concurrency slot freed and a record
 * written; a later stop from the switch answers that same record.
 */
let h: Harness;
const DEST = '4912345'; // 100 micro/s, no fee
const DEST449 = '4491234'; // 1000 micro/s + 5000 fee
let refs = 0;
const ref = (): number => ++refs;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
});
afterAll(async () => {
  await h?.stop();
});

const liveScore = (id: string, sw: string, call: string): Promise<string | null> => h.r.zscore(keys.live(bucketOf(h, id)), sessionKey(h, id, sw, call));

async function begin(c: Client, dest = DEST, maxCalls = 1): Promise<{ id: string; call: string; started: Msg }> {
  const [id] = await soldIds(h, talkProduct({ maxCalls }));
  const call = newCall();
  const started = await c.request({ op: 'start', ref: ref(), call, id: id!, dest });
  expect(started.op).toBe('started');
  return { id: id!, call, started };
}

describe('the reaper on its timer (stale after 300 ms, sweep every 100 ms)', () => {
  let gw: Gateway;
  let c: Client;
  let sw: string;
  beforeAll(async () => {
    gw = await gateway(h, { staleAfterMs: 300, ringTimeoutMs: 300, reapIntervalMs: 100 });
    ({ c, name: sw } = await connectSwitch(h, gw.port));
  });
  afterAll(async () => {
    await c?.close();
    await gw?.close();
  });

  it('closes a silent call billed up to its last tick, frees the slot, and a later stop gets the same record', async () => {
    const { id, call } = await begin(c);
    c.send([1, 2].map((sec) => ({ op: 'tick', call, sec })));
    const lastTickAt = Date.now();
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 3 })).toMatchObject({ op: 'ticked', balance: 999_700, secLeft: 9997 });
    expect(await liveScore(id, sw, call)).not.toBeNull();

    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000);
    const recs = await cdrsOf(h, id, call);
    expect(recs).toHaveLength(1);
    const rec = recs[0]!;
    expect(rec).toMatchObject({ switch: sw, call, sec: '3', rate: '100', cost: '300', short: '0', bal: '999700', cause: 'stale' });
    expect(Number(rec.end) - lastTickAt).toBeGreaterThanOrEqual(300);
    expect(await liveScore(id, sw, call)).toBeNull();
    expect(await h.r.zcard(keys.live(bucketOf(h, id)))).toBe(0);
    expect(await h.r.hmget(sessionKey(h, id, sw, call), 'st', 'cause')).toEqual(['closed', 'stale']);
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '999700', st: 'sold' });

    // The slot is free: a new call on this one-call ID is admitted.
    const next = newCall();
    expect(await c.request({ op: 'start', ref: ref(), call: next, id, dest: DEST })).toMatchObject({ op: 'started', maxSec: 9997, balance: 999_700 });
    expect(await c.request({ op: 'stop', ref: ref(), call: next, sec: 1 })).toMatchObject({ billedSec: 1, cost: 100, balance: 999_600 });

    // The switch wakes up: its tick is refused, its stop gets the reaper's record and charges nothing.
    const r = ref();
    expect(await c.request({ op: 'tick', ref: r, call, sec: 9 })).toMatchObject({ op: 'error', ref: r, reason: 'call_ended' });
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 9 })).toMatchObject({ op: 'stopped', call, billedSec: 3, cost: 300, balance: 999_700 });
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '999600' });
    expect(await cdrsOf(h, id, call)).toHaveLength(1);
  });

  it('leaves a call that keeps ticking alone', async () => {
    const quiet = await begin(c);
    const busy = await begin(c);
    let sec = 0;
    const deadline = Date.now() + 3000;
    while ((await cdrsOf(h, quiet.id, quiet.call)).length === 0) {
      if (Date.now() > deadline) throw new Error('quiet call never reaped');
      sec++;
      expect(await c.request({ op: 'tick', ref: ref(), call: busy.call, sec })).toMatchObject({ op: 'ticked', balance: 1_000_000 - sec * 100 });
      await sleep(50);
    }
    // Keep ticking a while longer: still live.
    for (let i = 0; i < 8; i++) {
      sec++;
      expect(await c.request({ op: 'tick', ref: ref(), call: busy.call, sec })).toMatchObject({ op: 'ticked' });
      await sleep(50);
    }
    expect(await liveScore(busy.id, sw, busy.call)).not.toBeNull();
    expect(await h.r.hget(sessionKey(h, busy.id, sw, busy.call), 'st')).toBe('live');
    expect(await cdrsOf(h, busy.id, busy.call)).toEqual([]);
    expect(await c.request({ op: 'stop', ref: ref(), call: busy.call, sec })).toMatchObject({ billedSec: sec, cost: sec * 100, balance: 1_000_000 - sec * 100 });
    expect(await cdrsOf(h, busy.id, busy.call)).toMatchObject([{ cause: 'normal', sec: String(sec) }]);
    expect(await cdrsOf(h, quiet.id, quiet.call)).toMatchObject([{ cause: 'stale', sec: '0', cost: '0' }]);
  });

  it('a call never ticked is closed at zero cost, connection fee not charged', async () => {
    const { id, call } = await begin(c, DEST449);
    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000);
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '0', cost: '0', fee: '5000', bal: '1000000', answer: '', cause: 'stale' }]);
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '1000000' });
  });
});

describe('the reaper swept by hand (stale after 300 ms, timer idle)', () => {
  let gw: Gateway;
  let c: Client;
  let sw: string;
  beforeAll(async () => {
    gw = await gateway(h, { staleAfterMs: 300, ringTimeoutMs: 300, reapIntervalMs: 600_000 });
    ({ c, name: sw } = await connectSwitch(h, gw.port));
  });
  afterAll(async () => {
    await c?.close();
    await gw?.close();
  });

  it('sweep closes exactly the stale call, once', async () => {
    const { id, call } = await begin(c);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 2 })).toMatchObject({ balance: 999_800 });
    expect(await gw.reaper.sweep()).toBe(0);
    expect(await liveScore(id, sw, call)).not.toBeNull();

    await sleep(350);
    expect(await gw.reaper.sweep()).toBe(1);
    expect(await gw.reaper.sweep()).toBe(0);
    expect(await liveScore(id, sw, call)).toBeNull();
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '2', cost: '200', bal: '999800', cause: 'stale' }]);
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '999800' });
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 5 })).toMatchObject({ billedSec: 2, cost: 200, balance: 999_800 });
    expect(await cdrsOf(h, id, call)).toHaveLength(1);
  });

  it('a tick that arrives before the sweep keeps the call alive', async () => {
    const { id, call } = await begin(c);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 1 })).toMatchObject({ balance: 999_900 });
    await sleep(350);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 2 })).toMatchObject({ balance: 999_800 });
    expect(await gw.reaper.sweep()).toBe(0);
    expect(await h.r.hget(sessionKey(h, id, sw, call), 'st')).toBe('live');
    // A repeated tick (nothing new to bill) is still a sign of life.
    await sleep(200);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 2 })).toMatchObject({ balance: 999_800 });
    await sleep(200);
    expect(await gw.reaper.sweep()).toBe(0);
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 4 })).toMatchObject({ billedSec: 4, cost: 400, balance: 999_600 });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ cause: 'normal', sec: '4' }]);
  });

  it('reaps a call whose gateway is gone, from another gateway', async () => {
    const name = `sw-gone-${refs}`;
    const tok = await token(h, 'switch', name);
    const other = await gateway(h, { reapIntervalMs: 600_000 });
    const oc = await Client.connect(other.port, tok);
    const [id] = await soldIds(h, talkProduct());
    const call = newCall();
    expect(await oc.request({ op: 'start', ref: 1, call, id, dest: DEST })).toMatchObject({ op: 'started' });
    expect(await oc.request({ op: 'tick', ref: 2, call, sec: 7 })).toMatchObject({ balance: 999_300 });
    await oc.close();
    await other.close();

    await sleep(350);
    expect(await gw.reaper.sweep()).toBe(1);
    expect(await cdrsOf(h, id!, call)).toMatchObject([{ switch: name, sec: '7', cost: '700', bal: '999300', cause: 'stale' }]);
    expect(await idFields(h, id!)).toMatchObject({ act: '0', bal: '999300' });
    // The switch reconnects to the surviving gateway and stops: the same record.
    const c2 = await Client.connect(gw.port, tok);
    try {
      expect(await c2.request({ op: 'stop', ref: 3, call, sec: 12 })).toMatchObject({ op: 'stopped', billedSec: 7, cost: 700, balance: 999_300 });
    } finally {
      await c2.close();
    }
  });
});

/**
 * Stale calls: a switch that goes quiet has its calls closed by the reaper,
 * billed up to the last tick, with the concurrency slot freed and a record
 * written; a later stop from the switch answers that same record. A call
 * still ringing (never ticked) is left until the ring timeout, and a tick on a
 * reaped call is told to cut off.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  gateway,
  sameBucketIds,
  seedCatalog,
  soldIds,
  startHarness,
  talkProduct,
  token,
  withGateway,
  type Harness,
} from '../support/harness';
import { bucketOf, idFields, idKeyOf } from '../support/redis';
import { sleep, until } from '../support/wait';
import { Client, type Msg } from '../support/ws-client';
import { cdrsOf, connectSwitch, msgs, newCall, sessionKey, tickAt } from './fixtures';
import { callKeyOf, callKeysFor } from '../../src/metering/call-keys';
import { callTick } from '../../src/metering/scripts';
import type { Gateway } from '../../src/gateway/server';
import { keys } from '../../src/redis/keys';
import { MAX_CALL_SEC } from '../../src/protocol/switch';
import { putPlans } from '../../src/catalog/store';
import { audit } from '../../src/ledger/audit';
import { redisTimeMs } from '../../src/redis/clock';

let h: Harness;
const DEST = '4912345'; // 100 micro/s, no fee
const DEST449 = '4491234'; // 1000 micro/s + 5000 fee
/** plan minimums: 400 micro/s, 20000 fee, 30/6 blocks, 60 s and 50000 at least, 10000 disconnect charge */
const MINIMUMS = talkProduct({ name: 'talk-minimums', plan: 'minimums', thresholds: [] });
let refs = 0;
const ref = (): number => ++refs;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  await putPlans(h.ctx.redis, [
    {
      name: 'minimums',
      rates: [
        { prefix: '', rate: 400, fee: 20_000, initial: 30, next: 6, minSec: 60, minCost: 50_000, disconnect: 10_000 },
      ],
    },
  ]);
});
afterAll(async () => {
  await h?.stop();
});

const liveScore = (id: string, sw: string, call: string): Promise<string | null> =>
  h.r.zscore(keys.live(bucketOf(h, id)), sessionKey(h, id, sw, call));

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
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 3 })).toMatchObject({
      op: 'ticked',
      balance: 999_700,
      secLeft: 9997,
    });
    expect(await liveScore(id, sw, call)).not.toBeNull();

    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000);
    const recs = await cdrsOf(h, id, call);
    expect(recs).toHaveLength(1);
    const rec = recs[0]!;
    expect(rec).toMatchObject({
      switch: sw,
      call,
      sec: '3',
      rate: '100',
      cost: '300',
      short: '0',
      bal: '999700',
      cause: 'stale',
    });
    expect(Number(rec.end) - lastTickAt).toBeGreaterThanOrEqual(300);
    expect(await liveScore(id, sw, call)).toBeNull();
    expect(await h.r.zcard(keys.live(bucketOf(h, id)))).toBe(0);
    expect(await h.r.hmget(sessionKey(h, id, sw, call), 'st', 'cause')).toEqual(['closed', 'stale']);
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '999700', st: 'sold' });

    // The slot is free: a new call on this one-call ID is admitted.
    const next = newCall();
    expect(await c.request({ op: 'start', ref: ref(), call: next, id, dest: DEST })).toMatchObject({
      op: 'started',
      maxSec: 9997,
      balance: 999_700,
    });
    expect(await c.request({ op: 'stop', ref: ref(), call: next, sec: 1 })).toMatchObject({
      billedSec: 1,
      cost: 100,
      balance: 999_600,
    });

    // The switch wakes up: its tick is refused; its stop reports seconds the reaper could not know
    // of (the call went on while the switch could not reach Tessera): billed in a `late` record.
    const r = ref();
    expect(await c.request({ op: 'tick', ref: r, call, sec: 9 })).toMatchObject({
      op: 'error',
      ref: r,
      reason: 'call_ended',
    });
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 9 })).toMatchObject({
      op: 'stopped',
      call,
      billedSec: 9,
      cost: 900,
      balance: 999_000,
    });
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '999000' });
    expect(await cdrsOf(h, id, call)).toMatchObject([
      { cause: 'stale', sec: '3', cost: '300' },
      { cause: 'late', sec: '6', cost: '600', short: '0' },
    ]);
    // Said again, the stop changes nothing, whatever seconds the repeat reports.
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 9 })).toMatchObject({ billedSec: 9, cost: 900 });
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 30 })).toMatchObject({ billedSec: 9, cost: 900 });
    expect(await idFields(h, id)).toMatchObject({ bal: '999000' });
    expect(await cdrsOf(h, id, call)).toHaveLength(2);
  });

  it("bills only the switch's first stop after the reaper's: a later one with more seconds is a repeat", async () => {
    const { id, call } = await begin(c);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 3 })).toMatchObject({ balance: 999_700 });
    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000);
    // The switch's stop reports what the reaper billed: nothing late to bill, and that is its answer.
    const first = { op: 'stopped', call, billedSec: 3, cost: 300, balance: 999_700 };
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 3 })).toMatchObject(first);
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 1 })).toMatchObject(first);
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 30 })).toMatchObject(first);
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 604_800 })).toMatchObject(first);
    expect(await idFields(h, id)).toMatchObject({ bal: '999700', st: 'sold' });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ cause: 'stale', sec: '3' }]);
  });

  it('a late stop with fewer seconds than the reaper billed gets the difference back, once', async () => {
    const { id, call } = await begin(c, DEST449);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 3 })).toMatchObject({ balance: 992_000 });
    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000);
    // The last tick raced the hang-up at 1 s: billed as an ordinary stop of 1 s would have been.
    const first = { op: 'stopped', call, billedSec: 1, cost: 6000, balance: 994_000 };
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 1 })).toMatchObject(first);
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 0 })).toMatchObject(first);
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 3 })).toMatchObject(first);
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '994000', free: '994000', st: 'sold' });
    expect(await cdrsOf(h, id, call)).toMatchObject([
      { cause: 'stale', sec: '3', cost: '8000' },
      { cause: 'late', sec: '-2', used: '-2', cost: '-2000', short: '0', bal: '994000' },
    ]);
    // The give-back is a record like any: the books balance.
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('a late stop of 0 s after a reaped answered call gives back all of it, fee and disconnect charge', async () => {
    const id = (await soldIds(h, MINIMUMS))[0]!;
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ref(), call, id, dest: DEST })).toMatchObject({ op: 'started' });
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 5 })).toMatchObject({ op: 'ticked' });
    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000);
    // Never answered after all: an ordinary stop of 0 s costs nothing.
    const first = { op: 'stopped', call, billedSec: 0, cost: 0, balance: 1_000_000 };
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 0 })).toMatchObject(first);
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 5 })).toMatchObject(first);
    expect(await cdrsOf(h, id, call)).toMatchObject([
      { cause: 'stale', sec: '60', cost: '60000', disc: '10000' },
      { cause: 'late', sec: '-60', fee: '-20000', disc: '-10000', cost: '-60000' },
    ]);
    expect(await idFields(h, id)).toMatchObject({ bal: '1000000', free: '1000000' });
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('a late stop of a call reaped before its first billed second records the fee and answer it charges', async () => {
    const { id, call } = await begin(c, DEST449);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 0 })).toMatchObject({ op: 'ticked' });
    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000);
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 5 })).toMatchObject({ billedSec: 5, cost: 10_000 });
    const [reaped, late] = await cdrsOf(h, id, call);
    expect(reaped).toMatchObject({ cause: 'stale', sec: '0', cost: '0' });
    expect(late).toMatchObject({ cause: 'late', sec: '5', rate: '1000', fee: '5000', cost: '10000' });
    // Rated from this answer time: the stop's time less its seconds, never before the start.
    expect(Number(late!.answer)).toBeGreaterThanOrEqual(Number(late!.start));
    expect(Number(late!.answer)).toBeLessThanOrEqual(Number(late!.end));
  });

  it('a late stop of a call reaped while ringing bills what its stop would have, disconnect charge included', async () => {
    const start = async (): Promise<{ id: string; call: string }> => {
      const [id] = await soldIds(h, MINIMUMS);
      const call = newCall();
      expect(await c.request({ op: 'start', ref: ref(), call, id, dest: DEST })).toMatchObject({ op: 'started' });
      return { id: id!, call };
    };
    // The same call stopped while live: 10 s charged as 60 (minSec), 44000 raised to minCost 50000, and 10000.
    const ordinary = await start();
    const stopped = await c.request({ op: 'stop', ref: ref(), call: ordinary.call, sec: 10 });
    expect(stopped).toMatchObject({ billedSec: 60, cost: 60_000, balance: 940_000 });
    // Never ticked, reaped at no cost (and no disconnect charge); its stop then comes.
    const { id, call } = await start();
    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000);
    expect(await cdrsOf(h, id, call)).toMatchObject([{ cause: 'stale', sec: '0', cost: '0', disc: '0' }]);
    const { ref: _r, call: _c, ...same } = stopped;
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 10 })).toMatchObject(same);
    // The fee is in the record that takes it, as the disconnect charge is: the two records'
    // fees add up to the one fee charged, not two.
    expect(await cdrsOf(h, id, call)).toMatchObject([
      { cause: 'stale', cost: '0', fee: '0', disc: '0' },
      { cause: 'late', sec: '60', fee: '20000', disc: '10000', cost: '60000', short: '0' },
    ]);
    // A repeat takes nothing more.
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 10 })).toMatchObject(same);
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '940000', free: '940000' });
  });

  it('a late stop of a call reaped after its first billed second takes no second disconnect charge', async () => {
    const id = (await soldIds(h, MINIMUMS))[0]!;
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ref(), call, id, dest: DEST })).toMatchObject({ op: 'started' });
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 5 })).toMatchObject({ op: 'ticked' });
    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000);
    expect(await cdrsOf(h, id, call)).toMatchObject([{ cause: 'stale', sec: '60', cost: '60000', disc: '10000' }]);
    // 100 s: 30 + 12 × 6 = 102 s charged, 20000 + 40800 = 60800, and the 10000 the reaper took.
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 100 })).toMatchObject({ billedSec: 102, cost: 70_800 });
    expect(await cdrsOf(h, id, call)).toMatchObject([
      { cause: 'stale' },
      { cause: 'late', sec: '42', disc: '0', cost: '10800', short: '0' },
    ]);
    expect(await idFields(h, id)).toMatchObject({ bal: '929200' });
  });

  it('a stop under another token name after the reaping: billed as the late stop of that call, once', async () => {
    const { c: b } = await connectSwitch(h, gw.port);
    try {
      const { id, call } = await begin(c, DEST449, 2);
      expect(await c.request({ op: 'tick', ref: ref(), call, sec: 3 })).toMatchObject({ balance: 992_000 });
      await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000);
      // The switch came back under another name; the call went on to 5 s. Not a lost call: 5 s once.
      const first = { op: 'stopped', call, billedSec: 5, cost: 10_000, balance: 990_000 };
      expect(await b.request({ op: 'stop', ref: ref(), call, sec: 5, id, dest: DEST449 })).toMatchObject(first);
      expect(await b.request({ op: 'stop', ref: ref(), call, sec: 8 })).toMatchObject(first);
      expect(await c.request({ op: 'stop', ref: ref(), call, sec: 8 })).toMatchObject(first);
      expect(await cdrsOf(h, id, call)).toMatchObject([
        { switch: sw, cause: 'stale', sec: '3', cost: '8000' },
        { switch: sw, cause: 'late', sec: '2', cost: '2000' },
      ]);
      expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '990000' });
      expect((await audit(h.ctx)).problems).toEqual([]);
    } finally {
      await b.close();
    }
  });

  it('a call never ticked is closed at zero cost, connection fee not charged', async () => {
    const { id, call } = await begin(c, DEST449);
    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000);
    expect(await cdrsOf(h, id, call)).toMatchObject([
      { sec: '0', cost: '0', fee: '0', disc: '0', bal: '1000000', answer: '', cause: 'stale' },
    ]);
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '1000000' });
  });
});

describe('the reaper swept by hand (stale after 1.5 s, timer idle)', () => {
  // A sweep that must find a call still live comes within STALE_MS of its last tick, however slow
  // the machine; one that must find it silent waits for Redis' clock to pass its place.
  const STALE_MS = 1500;
  let gw: Gateway;
  let c: Client;
  let sw: string;
  beforeAll(async () => {
    gw = await gateway(h, { staleAfterMs: STALE_MS, ringTimeoutMs: 300, reapIntervalMs: 600_000 });
    ({ c, name: sw } = await connectSwitch(h, gw.port));
  });
  afterAll(async () => {
    await c?.close();
    await gw?.close();
  });

  /** Waits until Redis' clock is `ms` past the call's place in the live set (STALE_MS: the sweep's stale). */
  async function quietFor(id: string, name: string, call: string, ms = STALE_MS): Promise<void> {
    const score = Number(await liveScore(id, name, call));
    await until(async () => (await redisTimeMs(h.r)) > score + ms, 10_000, 20, 'the call quiet long enough');
  }

  it('sweep closes exactly the stale call, once', async () => {
    const { id, call } = await begin(c);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 2 })).toMatchObject({ balance: 999_800 });
    expect(await gw.reaper.sweep()).toBe(0);
    expect(await liveScore(id, sw, call)).not.toBeNull();

    await quietFor(id, sw, call);
    expect(await gw.reaper.sweep()).toBe(1);
    expect(await gw.reaper.sweep()).toBe(0);
    expect(await liveScore(id, sw, call)).toBeNull();
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '2', cost: '200', bal: '999800', cause: 'stale' }]);
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '999800' });
    // Its stop bills the 3 s the reaper could not know of, once.
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 5 })).toMatchObject({
      billedSec: 5,
      cost: 500,
      balance: 999_500,
    });
    expect(await cdrsOf(h, id, call)).toHaveLength(2);
  });

  it('keeps a reaped call as long as the call may still last, however short SESSION_TTL_SEC', async () => {
    // A reaped call may talk on for as long as a call may last: its own stop must still find it,
    // or the stop (with its ID and destination) would bill every second again as a lost call's.
    await withGateway(h, { staleAfterMs: 300, reapIntervalMs: 600_000, sessionTtlSec: 60 }, async (g) => {
      const { c: c2, name } = await connectSwitch(h, g.port);
      try {
        const { id, call } = await begin(c2);
        expect(await c2.request({ op: 'tick', ref: ref(), call, sec: 10 })).toMatchObject({ op: 'ticked' });
        await until(async () => (await g.reaper.sweep()) === 1, 3000);
        const session = sessionKey(h, id, name, call);
        const byId = keys.idCall(bucketOf(h, id), h.ctx.ids.hash(id).hash, call);
        for (const key of [session, byId]) expect(await h.r.ttl(key)).toBeGreaterThanOrEqual(MAX_CALL_SEC);
        // Its stop, come when it may, bills the 10 s past the reaping, once.
        expect(await c2.request({ op: 'stop', ref: ref(), call, sec: 20, id, dest: DEST })).toMatchObject({
          op: 'stopped',
          billedSec: 20,
          balance: 1_000_000 - 2000,
        });
        expect(await cdrsOf(h, id, call)).toMatchObject([
          { cause: 'stale', sec: '10' },
          { cause: 'late', sec: '10' },
        ]);
      } finally {
        await c2.close();
      }
    });
  });

  it('a late stop whose give-back is all forgiven answers the balance as it is now, not as reaped', async () => {
    // The seeded product: 1,000,000 at 100/s is 10,000 s, top-ups allowed.
    const { id, call } = await begin(c);
    // Past its final grant: the 10,000 s paid, 200 short.
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 10_002 })).toMatchObject({ balance: 0 });
    await until(async () => (await gw.reaper.sweep()) === 1, 10_000);
    expect(await gw.topups.operator(id, 500, 'goodwill')).toMatchObject({ ok: true, balance: 500 });
    // Its last tick raced the hang-up by a second: the 100 given back is forgiven, the top-up untouched.
    const first = { op: 'stopped', call, billedSec: 10_001, cost: 1_000_000, balance: 500 };
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 10_001 })).toMatchObject(first);
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 10_001 })).toMatchObject(first);
    expect(await cdrsOf(h, id, call)).toMatchObject([
      { cause: 'stale', sec: '10002', cost: '1000000', short: '200', bal: '0' },
      { cause: 'late', sec: '-1', cost: '0', short: '-100', bal: '500' },
    ]);
    expect(await idFields(h, id)).toMatchObject({ bal: '500', free: '500' });
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it("gateways' clocks a minute apart neither reap a ticking call nor keep a silent one", async () => {
    // Ticks billed by a gateway whose clock is a minute slow (every tick refreshes the live set)…
    const { id, call } = await begin(c);
    const ck = callKeysFor(idKeyOf(h, id), callKeyOf(sw, call));
    expect(await tickAt(h, ck, 1, Date.now() - 60_000, 0)).toMatchObject({ code: 'ok', balance: 999_900 });
    // …and a reaper on a gateway whose clock is a minute fast: the call ticked a moment ago.
    expect(await gw.reaper.sweep()).toBe(0);
    expect(await gw.reaper.sweep(Date.now() + 60_000)).toBe(0);
    expect(await h.r.hget(sessionKey(h, id, sw, call), 'st')).toBe('live');
    // Silent for STALE_AFTER_MS by any clock: a minute-slow reaper closes it all the same.
    await quietFor(id, sw, call);
    expect(await gw.reaper.sweep(Date.now() - 60_000)).toBe(1);
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '1', cost: '100', cause: 'stale' }]);
  });

  it("one batch of ticks reads Redis' clock once, however many calls it rescores", async () => {
    const ids = sameBucketIds(h, await soldIds(h, talkProduct(), 150), 3);
    const calls = ids.map(() => newCall());
    for (const [i, call] of calls.entries())
      expect((await c.request({ op: 'start', ref: ref(), call, id: ids[i]!, dest: DEST })).op).toBe('started');
    await h.r.config('RESETSTAT');
    const done = await new Promise<unknown[]>((resolve) => {
      const got: unknown[] = [];
      const items = calls.map((call, i) => ({
        ck: callKeysFor(idKeyOf(h, ids[i]!), callKeyOf(sw, call)),
        sec: 1,
        heard: false,
        done: (err: unknown) => got.push(err),
      }));
      callTick(h.ctx.scripts, items, Date.now(), 0, () => setImmediate(() => resolve(got)));
    });
    expect(done).toEqual([null, null, null]);
    // Every call rescored in the live set, by one reading of TIME.
    const stats = await h.r.info('commandstats');
    for (const call of calls) expect((await c.request({ op: 'stop', ref: ref(), call, sec: 1 })).op).toBe('stopped');
    expect(stats.match(/cmdstat_time:calls=(\d+)/)?.[1]).toBe('1');
  });

  it('a tick that arrives before the sweep keeps the call alive', async () => {
    const { id, call } = await begin(c);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 1 })).toMatchObject({ balance: 999_900 });
    await quietFor(id, sw, call);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 2 })).toMatchObject({ balance: 999_800 });
    expect(await gw.reaper.sweep()).toBe(0);
    expect(await h.r.hget(sessionKey(h, id, sw, call), 'st')).toBe('live');
    // A repeated tick (nothing new to bill) is still a sign of life: half the stale time after the
    // last (past the gateway's refresh interval, a third of it), it moves the call's place on…
    const ticked = Number(await liveScore(id, sw, call));
    await quietFor(id, sw, call, STALE_MS / 2);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 2 })).toMatchObject({ balance: 999_800 });
    expect(Number(await liveScore(id, sw, call))).toBeGreaterThan(ticked);
    // …so a sweep once the call would be stale by the tick before it leaves it alone.
    await until(async () => (await redisTimeMs(h.r)) > ticked + STALE_MS, 10_000, 20, 'the tick before it stale');
    expect(await gw.reaper.sweep()).toBe(0);
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 4 })).toMatchObject({
      billedSec: 4,
      cost: 400,
      balance: 999_600,
    });
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

    await quietFor(id!, name, call);
    expect(await gw.reaper.sweep()).toBe(1);
    expect(await cdrsOf(h, id!, call)).toMatchObject([
      { switch: name, sec: '7', cost: '700', bal: '999300', cause: 'stale' },
    ]);
    expect(await idFields(h, id!)).toMatchObject({ act: '0', bal: '999300' });
    // The switch reconnects to the surviving gateway and stops: the 5 s it talked meanwhile are billed too.
    const c2 = await Client.connect(gw.port, tok);
    try {
      expect(await c2.request({ op: 'stop', ref: 3, call, sec: 12 })).toMatchObject({
        op: 'stopped',
        billedSec: 12,
        cost: 1200,
        balance: 998_800,
      });
    } finally {
      await c2.close();
    }
  });
});

describe("a call's place in the live set (stale after 6 s: refreshed every 2 s)", () => {
  let gw: Gateway;
  let c: Client;
  let sw: string;
  beforeAll(async () => {
    gw = await gateway(h, { staleAfterMs: 6000, reapIntervalMs: 600_000 });
    ({ c, name: sw } = await connectSwitch(h, gw.port));
  });
  afterAll(async () => {
    await c?.close();
    await gw?.close();
  });

  it('is refreshed by the clock, not by the seconds reported: catch-up ticks cost no ZADD each', async () => {
    const { id, call } = await begin(c);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 1 })).toMatchObject({ op: 'ticked' });
    const first = Number(await liveScore(id, sw, call));
    // Seconds reported faster than the clock (a switch catching up): they cross the 2 s mark
    // four times, but no 2 s have passed, so the score stays the first report's.
    for (let sec = 2; sec <= 9; sec++) {
      expect(await c.request({ op: 'tick', ref: ref(), call, sec })).toMatchObject({ balance: 1_000_000 - sec * 100 });
      await sleep(20);
    }
    expect(Number(await liveScore(id, sw, call))).toBe(first);
    await sleep(2100);
    const before = Date.now();
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 10 })).toMatchObject({ balance: 999_000 });
    expect(Number(await liveScore(id, sw, call))).toBeGreaterThanOrEqual(before);
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 10 })).toMatchObject({ billedSec: 10, cost: 1000 });
  });

  it('a tick of 0 at answer refreshes it; the first billed second soon after does not again', async () => {
    const { id, call } = await begin(c);
    const ringing = Number(await liveScore(id, sw, call));
    await sleep(20);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 0 })).toMatchObject({ op: 'ticked' });
    const answered = Number(await liveScore(id, sw, call));
    // The ring grace is over: the score is the answer's time, not the start's plus the grace.
    expect(answered).toBeLessThan(ringing);
    await sleep(20);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 1 })).toMatchObject({ balance: 1_000_000 - 100 });
    expect(Number(await liveScore(id, sw, call))).toBe(answered);
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 1 })).toMatchObject({ billedSec: 1, cost: 100 });
  });
});

describe('a call ticked through another gateway (stale after 1.5 s, sweep every 100 ms)', () => {
  let gw1: Gateway;
  let gw2: Gateway;
  let c1: Client;
  let c2: Client;
  let sw: string;
  beforeAll(async () => {
    const cfg = { staleAfterMs: 1500, reapIntervalMs: 100 };
    [gw1, gw2] = [await gateway(h, cfg), await gateway(h, cfg)];
    sw = newCall('sw');
    const t = await token(h, 'switch', sw);
    [c1, c2] = [await Client.connect(gw1.port, t), await Client.connect(gw2.port, t)];
  });
  afterAll(async () => {
    await Promise.all([c1?.close(), c2?.close()]);
    await Promise.all([gw1?.close(), gw2?.close()]);
  });

  it('leaves a call that keeps ticking alone', async () => {
    // Stale after 1.5 s, not 300 ms: a tick every 50 ms keeps a call live however slow the
    // machine, where a pause of 300 ms between two (a busy 2-core box) had it reaped.
    const quiet = await begin(c1);
    const busy = await begin(c1);
    // Answered (a tick of 0 ends its ring grace, RING_TIMEOUT_MS here), then silent.
    expect(await c1.request({ op: 'tick', ref: ref(), call: quiet.call, sec: 0 })).toMatchObject({ op: 'ticked' });
    let sec = 0;
    const deadline = Date.now() + 10_000;
    while ((await cdrsOf(h, quiet.id, quiet.call)).length === 0) {
      if (Date.now() > deadline) throw new Error('quiet call never reaped');
      sec++;
      expect(await c1.request({ op: 'tick', ref: ref(), call: busy.call, sec })).toMatchObject({
        op: 'ticked',
        balance: 1_000_000 - sec * 100,
      });
      await sleep(50);
    }
    // Keep ticking a while longer: still live.
    for (let i = 0; i < 8; i++) {
      sec++;
      expect(await c1.request({ op: 'tick', ref: ref(), call: busy.call, sec })).toMatchObject({ op: 'ticked' });
      await sleep(50);
    }
    expect(await liveScore(busy.id, sw, busy.call)).not.toBeNull();
    expect(await h.r.hget(sessionKey(h, busy.id, sw, busy.call), 'st')).toBe('live');
    expect(await cdrsOf(h, busy.id, busy.call)).toEqual([]);
    expect(await c1.request({ op: 'stop', ref: ref(), call: busy.call, sec })).toMatchObject({
      billedSec: sec,
      cost: sec * 100,
      balance: 1_000_000 - sec * 100,
    });
    expect(await cdrsOf(h, busy.id, busy.call)).toMatchObject([{ cause: 'normal', sec: String(sec) }]);
    expect(await cdrsOf(h, quiet.id, quiet.call)).toMatchObject([{ cause: 'stale', sec: '0', cost: '0' }]);
  });

  it('is kept live by the gateway its ticks now reach, which refreshes its place itself', async () => {
    // Each gateway decides from its own memory when a call's place in the live set is due:
    // one that never ticked the call must refresh it, however recently another did.
    const { id, call } = await begin(c1);
    expect(await c1.request({ op: 'tick', ref: ref(), call, sec: 1 })).toMatchObject({ op: 'ticked' });
    for (let sec = 2; sec <= 26; sec++) {
      expect(await c2.request({ op: 'tick', ref: ref(), call, sec })).toMatchObject({ op: 'ticked' });
      await sleep(100);
    }
    // 2.5 s on the second gateway alone, the reaper sweeping every 100 ms: still live.
    expect(msgs(c2, call, 'cutoff')).toEqual([]);
    expect(Number(await liveScore(id, sw, call))).toBeGreaterThan(Date.now() - 1500);
    expect(await c2.request({ op: 'stop', ref: ref(), call, sec: 26 })).toMatchObject({ billedSec: 26, cost: 2600 });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ cause: 'normal' }]);
  });
});

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

  /** A call on `c` whose start was answered `started`. */
  async function startedCall(client: Client): Promise<{ id: string; call: string; started: Msg }> {
    const b = await begin(client);
    expect(b.started.op).toBe('started');
    return b;
  }

  /** Every message of a call that arrived at index >= from. */
  const callMsgsFrom = (client: Client, call: string, from: number): Msg[] =>
    client.received.slice(from).filter((m) => m.call === call);

  it('a ringing call (never ticked) lives until the ring timeout; an answered one is reaped after staleAfterMs', async () => {
    const t0 = Date.now();
    const ringing = await startedCall(c);
    const answered = await startedCall(c);
    const tickAt = Date.now();
    expect(await c.request({ op: 'tick', ref: ref(), call: answered.call, sec: 1 })).toMatchObject({
      op: 'ticked',
      balance: 999_900,
    });

    // The answered call goes stale 300 ms after its tick, long before the ring timeout.
    await until(async () => (await cdrsOf(h, answered.id, answered.call)).length > 0, 1400, 20);
    const ans = await cdrsOf(h, answered.id, answered.call);
    expect(ans).toHaveLength(1);
    expect(ans[0]).toMatchObject({
      switch: sw,
      call: answered.call,
      sec: '1',
      cost: '100',
      bal: '999900',
      cause: 'stale',
    });
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
    expect(rec[0]).toMatchObject({
      switch: sw,
      call: ringing.call,
      sec: '0',
      cost: '0',
      short: '0',
      answer: '',
      bal: '1000000',
      cause: 'stale',
    });
    const rang = Number(rec[0]!.end) - Number(rec[0]!.start);
    expect(rang).toBeGreaterThanOrEqual(1500);
    expect(rang).toBeLessThan(3000);
    expect(await liveScore(ringing.id, sw, ringing.call)).toBeNull();
    expect(await idFields(h, ringing.id)).toMatchObject({ act: '0', bal: '1000000', st: 'sold' });
  });

  it('a call reaped at its ring timeout by a sweep that began before it is dated when it was reaped', async () => {
    // Sweeps only when told, and a ring timeout of 1 s.
    await withGateway(h, { staleAfterMs: 300, ringTimeoutMs: 1000, reapIntervalMs: 3_600_000 }, async (g) => {
      const { c: sc } = await connectSwitch(h, g.port);
      try {
        const { id, call } = await startedCall(sc);
        // Redis answers nothing for 1.3 s (less than REDIS_TIMEOUT_MS): the sweep begins now, and
        // finds the call stale only then (it, or that of another gateway of this file).
        await h.r.call('CLIENT', 'PAUSE', '1300', 'ALL');
        await g.reaper.sweep();
        await until(async () => (await cdrsOf(h, id, call)).length > 0, 5000, 20, 'the call reaped');
        const [rec] = await cdrsOf(h, id, call);
        expect(rec).toMatchObject({ sec: '0', cost: '0', cause: 'stale' });
        expect(Number(rec!.end) - Number(rec!.start)).toBeGreaterThanOrEqual(1000);
      } finally {
        await sc.close();
      }
    });
  });

  it('a tick of 0 at answer ends the ring grace: a switch gone right after it is reaped after staleAfterMs', async () => {
    const { id, call } = await startedCall(c);
    const tickAt = Date.now();
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 0 })).toMatchObject({
      op: 'ticked',
      balance: 1_000_000,
    });
    await until(async () => (await cdrsOf(h, id, call)).length > 0, 3000, 20);
    const [rec] = await cdrsOf(h, id, call);
    expect(rec).toMatchObject({ sec: '0', cost: '0', cause: 'stale' });
    // Answered, so not given the ring timeout (1500 ms): stale 300 ms after the tick, plus a sweep.
    expect(Number(rec!.end) - tickAt).toBeLessThan(1200);
  });

  it('a tick without ref on a call the reaper closed gets cutoff stale; nothing is billed', async () => {
    const { id, call } = await startedCall(c);
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
      { op: 'cutoff', call, reason: 'stale', action: 'terminate' },
      { op: 'error', ref: barrier, call, reason: 'call_ended', message: expect.any(String) },
    ]);
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '999800' });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '2', cost: '200', cause: 'stale' }]);
  });

  it('a tick without ref on a call the switch stopped normally gets nothing', async () => {
    const { id, call } = await startedCall(c);
    expect(await c.request({ op: 'tick', ref: ref(), call, sec: 2 })).toMatchObject({ op: 'ticked' });
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 2 })).toMatchObject({
      op: 'stopped',
      billedSec: 2,
      cost: 200,
      balance: 999_800,
    });

    const from = c.received.length;
    const barrier = ref();
    c.send([
      { op: 'tick', call, sec: 3 },
      { op: 'tick', call, sec: 4, ref: barrier },
    ]);
    await c.waitFor((m) => m.ref === barrier);
    expect(callMsgsFrom(c, call, from)).toEqual([
      { op: 'error', ref: barrier, call, reason: 'call_ended', message: expect.any(String) },
    ]);
    expect(msgs(c, call, 'cutoff')).toEqual([]);
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '999800' });
    expect(await cdrsOf(h, id, call)).toMatchObject([{ sec: '2', cost: '200', cause: 'normal' }]);
  });
});

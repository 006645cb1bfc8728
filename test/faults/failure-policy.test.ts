/**
 * The failure policy a product declares (RFC 4006's CCFH), tried for real:
 * Redis frozen mid-call (SIGSTOP) past the reaper's stale time, the switch
 * doing what `started` told it to, and the billing checked once Redis is back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, type Harness } from '../support/harness';
import { idFields } from '../support/redis';
import { sleep, until } from '../support/wait';
import { type Client, type Msg } from '../support/ws-client';
import { cdrsOf, connectSwitch, newCall, sessionKey } from '../metering/fixtures';
import type { Gateway } from '../../src/gateway/server';
import type { TalkProduct } from '../../src/catalog/schema';
import { audit } from '../../src/ledger/audit';

let h: Harness;
let gw: Gateway;
let c: Client;
let sw: string;
let refs = 0;
const ref = (): number => ++refs;
const DEST = '4912345'; // 100 micro-units a second

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  // Stale after 300 ms: the reaper is sure to find the call stale the moment Redis is back.
  gw = await gateway(h, {
    staleAfterMs: 300,
    reapIntervalMs: 100,
    redis: { ...h.cfg.redis, timeoutMs: 300, acks: { ...h.cfg.redis.acks, timeoutMs: 150 } },
  });
  ({ c, name: sw } = await connectSwitch(h, gw.port));
});
afterAll(async () => {
  await c?.close();
  await gw?.close();
  await h?.stop();
});

/** Freezes Redis for `ms` while `during` runs (the switch's side of the outage). */
async function outage(ms: number, during: () => Promise<void>): Promise<void> {
  const pid = Number(/process_id:(\d+)/.exec(await h.r.info('server'))![1]);
  process.kill(pid, 'SIGSTOP');
  const until = Date.now() + ms;
  try {
    await during();
    await sleep(Math.max(0, until - Date.now()));
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

/**
 * Sends the switch's stop once Redis is back. The reaper gets there first (the
 * call was silent far longer than the stale time): the stop must still bill
 * what the switch reports.
 */
async function stopWhenBack(id: string, call: string, sec: number): Promise<Msg> {
  await until(async () => (await h.r.hget(sessionKey(h, id, sw, call), 'cause')) === 'stale', 5000);
  for (let i = 0; i < 100; i++) {
    const r = await c.request({ op: 'stop', ref: ref(), call, sec }, 5000);
    if (r.op === 'stopped') return r;
    expect(r).toMatchObject({ op: 'error', reason: 'unavailable' });
    await sleep(100);
  }
  throw new Error('stop never answered');
}

async function begin(p: TalkProduct): Promise<{ id: string; call: string; started: Msg }> {
  const [id] = await soldIds(h, p);
  const call = newCall('fp');
  const started = await c.request({ op: 'start', ref: ref(), call, id, dest: DEST });
  expect(started.op).toBe('started');
  for (let sec = 1; sec <= 5; sec++)
    expect(await c.request({ op: 'tick', ref: ref(), call, sec })).toMatchObject({ op: 'ticked' });
  return { id: id!, call, started };
}

describe('failure policy: Redis frozen mid-call', () => {
  it('terminate: the switch ends the call at the end of its grant; exactly the granted seconds are billed', async () => {
    const p = talkProduct({ name: 'fp-term', face: 100_000, maxCalls: 2, grantSec: 20, thresholds: [] });
    const { id, call, started } = await begin(p);
    expect(started).toMatchObject({ onFailure: 'terminate', failureSec: 0, grant: 20 });
    await outage(1500, async () => {
      // Ticks go unanswered (unavailable): the switch lets the call run to its grant, then cuts.
      expect(await c.request({ op: 'tick', ref: ref(), call, sec: 6 }, 5000)).toMatchObject({
        reason: 'unavailable',
      });
    });
    expect(await stopWhenBack(id, call, 20)).toMatchObject({ billedSec: 20, cost: 2000, balance: 98_000 });
    const recs = await cdrsOf(h, id, call);
    expect(recs.reduce((s, r) => s + Number(r.cost), 0)).toBe(2000);
    expect(recs.every((r) => r.short === '0')).toBe(true);
    expect(await idFields(h, id)).toMatchObject({ bal: '98000', free: '98000', act: '0' });
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('continue: the outage seconds past the grant are billed when Redis is back', async () => {
    const p = talkProduct({
      name: 'fp-cont',
      face: 100_000,
      maxCalls: 2,
      grantSec: 20,
      thresholds: [],
      onFailure: 'continue',
      failureSec: 60,
    });
    const { id, call, started } = await begin(p);
    expect(started).toMatchObject({ onFailure: 'continue', failureSec: 60, grant: 20 });
    await outage(1500, async () => {
      expect(await c.request({ op: 'tick', ref: ref(), call, sec: 6 }, 5000)).toMatchObject({
        reason: 'unavailable',
      });
    });
    // The grant (20 s) plus up to 60 s more: the call went on to 75 s.
    expect(await stopWhenBack(id, call, 75)).toMatchObject({ billedSec: 75, cost: 7500, balance: 92_500 });
    expect(await idFields(h, id)).toMatchObject({ bal: '92500', free: '92500', act: '0' });
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('continue: what the balance cannot pay is short, never below zero', async () => {
    const p = talkProduct({
      name: 'fp-cont-low',
      face: 3000,
      maxCalls: 2,
      grantSec: 20,
      thresholds: [],
      onFailure: 'continue',
      failureSec: 60,
    });
    const { id, call } = await begin(p);
    await outage(1500, async () => {
      await c.request({ op: 'tick', ref: ref(), call, sec: 6 }, 5000);
    });
    expect(await stopWhenBack(id, call, 50)).toMatchObject({ billedSec: 50, cost: 3000, balance: 0 });
    const recs = await cdrsOf(h, id, call);
    expect(recs.reduce((s, r) => s + Number(r.short), 0)).toBe(2000);
    expect(await idFields(h, id)).toMatchObject({ bal: '0', free: '0', act: '0', st: 'exhausted' });
    expect((await audit(h.ctx)).problems).toEqual([]);
  });
});

/**
 * A stop for a call Tessera has no session of (its start was lost with a
 * failed primary) that names the call's ID and destination is billed from the
 * stop: the destination's rate and fee for the seconds reported (each second
 * at the rate in force for it, from the answer `sec` before the stop), no more than
 * the balance (the rest kept as `short`), a call detail record with cause
 * `recovered`, and `stopped`. A stop without them is `unknown_call`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config';
import { startGateway, type Gateway } from '../../src/gateway/server';
import {
  gateway,
  mint,
  seedCatalog,
  soldIds,
  startHarness,
  talkProduct,
  token,
  withGateway,
  type Harness,
} from '../support/harness';
import { balanceOf, bucketOf, idFields, idKeyOf } from '../support/redis';
import { putPlans } from '../../src/catalog/store';
import { Client } from '../support/ws-client';
import { metricsText, sample } from '../support/metrics';
import { audit } from '../../src/ledger/audit';
import { callIndexKey, cdrsOf, connectSwitch, newCall, sessionKey, startAt } from './fixtures';
import { MAX_CALL_SEC } from '../../src/protocol/switch';
import { callKeyOf, callKeysFor } from '../../src/metering/call-keys';
import { callRecover } from '../../src/metering/scripts';
import { createLogger } from '../../src/observability/log';
import { keys } from '../../src/redis/keys';
import { HoldProxy } from '../support/hold-proxy';
import { until } from '../support/wait';
import { aniPlace } from '../../src/ledger/anis';
import { generateId } from '../../src/ids/idnum';

let h: Harness;
let gw: Gateway;
let c: Client;
/** The token name `c` logs in with. */
let swName: string;
let refs = 0;

const TALK = talkProduct();
const SMALL = talkProduct({ name: 'talk-small', face: 1000, price: 1000 });
/** Two calls at once: a call holds a slice of the balance, so a second charge would find money free. */
const DUO = talkProduct({ name: 'talk-duo', maxCalls: 2 });
/** plan nowhere: rates only 999…, so no call to DEST or DEST449 */
const NOWHERE = talkProduct({ name: 'talk-nowhere', plan: 'nowhere' });
/** plan dated: 100 micro/s everywhere, 300 from `changeAt` on (a version in force since just before the suite) */
const DATED = talkProduct({ name: 'talk-dated', plan: 'dated' });
/** plan young: 200 micro/s, its only version in force since `changeAt` (what came before is gone) */
const YOUNG = talkProduct({ name: 'talk-young', plan: 'young' });
let changeAt: number;
/** plan std: '449' prefix, 1000 micro/s plus 5000 connection fee */
const DEST449 = '4491234';
/** plan std: '' prefix, 100 micro/s, no fee */
const DEST = '4912345';

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK, SMALL, DATED, YOUNG, DUO, NOWHERE]);
  changeAt = Date.now() - 1000;
  // Loaded as it was before the change, so the version it supersedes is still kept.
  await putPlans(
    h.ctx.redis,
    [
      { name: 'dated', rates: [{ prefix: '', rate: 100, fee: 0 }] },
      { name: 'dated', activeFrom: changeAt, rates: [{ prefix: '', rate: 300, fee: 0 }] },
      { name: 'young', activeFrom: changeAt, rates: [{ prefix: '', rate: 200, fee: 0 }] },
    ],
    changeAt - 1,
  );
  gw = await gateway(h);
  ({ c, name: swName } = await connectSwitch(h, gw.port));
});
afterAll(async () => {
  await c?.close();
  await gw?.close();
  await h?.stop();
});

const stop = (m: Record<string, unknown>): Promise<Record<string, unknown>> =>
  c.request({ op: 'stop', ref: ++refs, ...m });

/**
 * Runs `fn` with two gateways on this Redis for one switch name, each through a proxy that can hold
 * a script's answer back (as under load). Closes what it opened.
 */
async function racingGateways(
  fn: (g: { proxy: HoldProxy; proxyB: HoldProxy; a: Client; b: Client; name: string }) => Promise<void>,
  cfg: Config = h.cfg,
): Promise<void> {
  const proxy = new HoldProxy(Number(new URL(h.redis.url).port));
  const proxyB = new HoldProxy(Number(new URL(h.redis.url).port));
  const gwA = await startGateway(cfg, createLogger('silent'), await proxy.listen());
  const gwB = await startGateway(cfg, createLogger('silent'), await proxyB.listen());
  const name = newCall('sw');
  const tok = await token(h, 'switch', name);
  const a = await Client.connect(gwA.port, tok);
  const b = await Client.connect(gwB.port, tok);
  try {
    await fn({ proxy, proxyB, a, b, name });
  } finally {
    proxy.release();
    proxyB.release();
    await a.close();
    await b.close();
    await gwA.close();
    await gwB.close();
    await proxy.close();
    await proxyB.close();
  }
}

/**
 * A's start of `call` on `id` to DEST449, held once it has run in Redis: `answer` comes when
 * `proxy` lets it through (refused: the IDs of these races pay no first second there).
 */
async function startHeldOnA(
  g: { proxy: HoldProxy; a: Client },
  call: string,
  id: string,
): Promise<{ answer: Promise<Record<string, unknown>> }> {
  g.proxy.holdAfter('call_start_');
  const answer = g.a.request({ op: 'start', ref: 1, call, id, dest: DEST449 });
  await until(async () => g.proxy.holds, 10_000, 10, "A's start ran in Redis");
  return { answer };
}

describe('a stop for a call whose session is gone', () => {
  it('with its ID and destination: rated from the stop, recorded as recovered, answered stopped; a repeat answers the same', async () => {
    const [id] = await soldIds(h, TALK);
    const call = newCall();
    const recoveredBefore = sample(await metricsText(gw.port), 'tessera_recovered_stops_total') ?? 0;
    const first = await stop({ call, sec: 30, id, dest: DEST449 });
    expect(first).toEqual({
      op: 'stopped',
      ref: refs,
      call,
      billedSec: 30,
      cost: 30 * 1000 + 5000,
      balance: TALK.face - 35_000,
    });
    const [cdr] = await cdrsOf(h, id!, call);
    expect(cdr).toMatchObject({ cause: 'recovered', sec: '30', rate: '1000', fee: '5000', cost: '35000', short: '0' });
    expect(await cdrsOf(h, id!, call)).toHaveLength(1);
    // Repeated with its ID, or without it (a switch that no longer has it): the first answer, nothing billed twice.
    const { ref: _r1, ...same } = first;
    expect(await stop({ call, sec: 31, id, dest: DEST449 })).toMatchObject(same);
    expect(await stop({ call, sec: 31 })).toMatchObject(same);
    expect(await balanceOf(h, id!)).toBe(TALK.face - 35_000);
    // Counted once, for the on-call engineer: the repeats billed nothing.
    expect(sample(await metricsText(gw.port), 'tessera_recovered_stops_total')).toBe(recoveredBefore + 1);
    expect(await cdrsOf(h, id!, call)).toHaveLength(1);
    // The concurrency slot the lost start took is free again: the ID can call.
    expect(await c.request({ op: 'start', ref: ++refs, call: newCall(), id, dest: DEST })).toMatchObject({
      op: 'started',
    });
  });

  it('resent in the same frame naming another destination: call_conflict, as once the first is answered', async () => {
    const [id] = await soldIds(h, TALK);
    const call = newCall();
    // Both miss the call and go to be recovered; the second finds the session the first wrote.
    const [first, other] = await c.requestAll([
      { op: 'stop', ref: ++refs, call, sec: 30, id, dest: DEST449 },
      { op: 'stop', ref: ++refs, call, sec: 30, id, dest: DEST },
    ]);
    expect(first).toMatchObject({ op: 'stopped', billedSec: 30, cost: 35_000 });
    expect(other).toMatchObject({ op: 'error', reason: 'call_conflict' });
    expect(await stop({ call, sec: 30, id, dest: DEST })).toMatchObject({ op: 'error', reason: 'call_conflict' });
    expect(await cdrsOf(h, id!, call)).toHaveLength(1);
    expect(await balanceOf(h, id!)).toBe(TALK.face - 35_000);
  });

  it('a stop that missed the session its script then finds: another destination is call_conflict', async () => {
    // What a stop that raced another (on another gateway) sees: call_recover finds the session.
    const [id] = await soldIds(h, TALK);
    const { hash } = h.ctx.ids.hash(id!);
    const sw = newCall('sw');
    const call = newCall();
    const ck = callKeysFor(idKeyOf(h, id!), callKeyOf(sw, call));
    const recover = (dest: string, desc: string): ReturnType<typeof callRecover> =>
      callRecover(h.ctx.scripts, ck, {
        now: Date.now(),
        sec: 30,
        cause: 'normal',
        ttlSec: 60,
        talkOnTtlSec: 60,
        sw,
        call,
        idHash: hash,
        dest,
        aniHash: '',
        rates: [TALK.plan, desc],
      });
    expect(await recover(DEST449, '1000 5000 1 1 0 0 0')).toMatchObject({ ok: true, cost: 35_000, duplicate: false });
    expect(await recover(DEST, '100 0 1 1 0 0 0')).toEqual({ ok: false, reason: 'call_conflict' });
    expect(await recover(DEST449, '1000 5000 1 1 0 0 0')).toMatchObject({ ok: true, cost: 35_000, duplicate: true });
    expect(await balanceOf(h, id!)).toBe(TALK.face - 35_000);
  });

  it('resent in the same frame naming another ID: call_conflict, that ID not billed for a lost call', async () => {
    // Two IDs whose calls live in different buckets: the second stop's own recovery would find
    // no session of this call where it looks.
    const ids = await soldIds(h, TALK, 8);
    const id = ids[0]!;
    const other = ids.find((x) => h.ctx.ids.hash(x).bucket !== h.ctx.ids.hash(id).bucket)!;
    expect(other).toBeDefined();
    const call = newCall();
    const [first, second] = await c.requestAll([
      { op: 'stop', ref: ++refs, call, sec: 30, id, dest: DEST449 },
      { op: 'stop', ref: ++refs, call, sec: 30, id: other, dest: DEST449 },
    ]);
    expect(first).toMatchObject({ op: 'stopped', billedSec: 30, cost: 35_000 });
    expect(second).toMatchObject({ op: 'error', reason: 'call_conflict' });
    // Resent on its own, the same answer: the call id is this name's call of the first ID.
    expect(await stop({ call, sec: 30, id: other, dest: DEST449 })).toMatchObject({ reason: 'call_conflict' });
    expect(await balanceOf(h, other)).toBe(TALK.face);
    expect(await cdrsOf(h, other, call)).toEqual([]);
    expect(await cdrsOf(h, id, call)).toHaveLength(1);
  });

  it('racing on another gateway naming another ID: call_conflict, that ID not billed for a lost call', async () => {
    // Gateway A's recovery runs in Redis but its answer is held back (as under load): A has not
    // answered yet when the same name's stop naming another ID, in another bucket, reaches B.
    const ids = await soldIds(h, TALK, 8);
    const id = ids[0]!;
    const other = ids.find((x) => h.ctx.ids.hash(x).bucket !== h.ctx.ids.hash(id).bucket)!;
    await racingGateways(async ({ proxy, a, b }) => {
      const call = newCall();
      proxy.holdAfter('call_recover_');
      const first = a.request({ op: 'stop', ref: 1, call, sec: 30, id, dest: DEST449 });
      await until(async () => (await cdrsOf(h, id, call)).length === 1, 10_000, 10, 'A recovered the call');
      expect(await b.request({ op: 'stop', ref: 2, call, sec: 30, id: other, dest: DEST449 })).toMatchObject({
        op: 'error',
        reason: 'call_conflict',
      });
      proxy.release();
      expect(await first).toMatchObject({ op: 'stopped', billedSec: 30, cost: 35_000 });
      expect(await balanceOf(h, other)).toBe(TALK.face);
      expect(await cdrsOf(h, other, call)).toEqual([]);
    });
  });

  // A start refused on gateway A (its answer held back, as under load) claimed the call id first: the
  // call's recovered stop on B found that claim and billed the call under it. A's refusal must not
  // then give the call id back, or the stop repeated without its ID finds no call (unknown_call).
  it('racing a refused start of the call on another gateway: billed, and a repeat without the ID answers the same', async () => {
    // Its balance pays no first second to DEST449 (fee and all): the start is refused.
    const [id] = (await soldIds(h, SMALL)) as [string];
    await racingGateways(async (g) => {
      const { proxy, a, b } = g;
      const call = newCall();
      const start = (await startHeldOnA(g, call, id)).answer;
      const first = await b.request({ op: 'stop', ref: 2, call, sec: 30, id, dest: DEST449 });
      expect(first).toMatchObject({ op: 'stopped', billedSec: 30, cost: SMALL.face, balance: 0 });
      proxy.release();
      expect(await start).toMatchObject({ op: 'error', reason: 'insufficient_balance' });
      const { ref: _r, ...same } = first;
      expect(await b.request({ op: 'stop', ref: 3, call, sec: 30 })).toMatchObject(same);
      expect(await a.request({ op: 'stop', ref: 4, call, sec: 30 })).toMatchObject(same);
      expect(await cdrsOf(h, id, call)).toHaveLength(1);
    });
  });

  it('racing a refused start, with a short SESSION_TTL_SEC: the call id is kept no longer than its closed session', async () => {
    // B's recovered stop closed the call (its index cut to the closed session's time) before A's
    // refusal gave the claim back and, finding the session, put the index back: for as long.
    const [id] = (await soldIds(h, SMALL)) as [string];
    await racingGateways(
      async (g) => {
        const { proxy, b, name } = g;
        const call = newCall();
        const index = callIndexKey(h, name, call);
        const start = (await startHeldOnA(g, call, id)).answer;
        expect(await b.request({ op: 'stop', ref: 2, call, sec: 30, id, dest: DEST449 })).toMatchObject({
          op: 'stopped',
        });
        proxy.release();
        expect(await start).toMatchObject({ op: 'error', reason: 'insufficient_balance' });
        const sessionTtl = await h.r.ttl(sessionKey(h, id, name, call));
        expect(sessionTtl).toBeGreaterThan(0);
        expect(sessionTtl).toBeLessThanOrEqual(600);
        const indexTtl = await h.r.ttl(index);
        expect(indexTtl).toBeGreaterThan(0);
        expect(indexTtl).toBeLessThanOrEqual(sessionTtl + 1);
      },
      { ...h.cfg, sessionTtlSec: 600 },
    );
  });

  it('racing a refused start that gives the call id back before the stop bills under it: the same', async () => {
    // B's stop found A's claim and missed the session (its answer held); A's refusal gave the
    // claim back before B's recovery wrote the call: B must put the call id's index back itself.
    const [id] = (await soldIds(h, SMALL)) as [string];
    await racingGateways(async (g) => {
      const { proxy, proxyB, a, b, name } = g;
      const call = newCall();
      const index = callIndexKey(h, name, call);
      const start = (await startHeldOnA(g, call, id)).answer;
      proxyB.holdAfter('call_stop_');
      const stopped = b.request({ op: 'stop', ref: 2, call, sec: 30, id, dest: DEST449 });
      await until(async () => proxyB.holds, 10_000, 10, "B's stop missed the session");
      proxy.release();
      expect(await start).toMatchObject({ op: 'error', reason: 'insufficient_balance' });
      expect(await h.r.exists(index)).toBe(0);
      proxyB.release();
      const first = await stopped;
      expect(first).toMatchObject({ op: 'stopped', billedSec: 30, cost: SMALL.face, balance: 0 });
      const { ref: _r, ...same } = first;
      expect(await b.request({ op: 'stop', ref: 3, call, sec: 30 })).toMatchObject(same);
      expect(await a.request({ op: 'stop', ref: 4, call, sec: 30 })).toMatchObject(same);
      expect(await cdrsOf(h, id, call)).toHaveLength(1);
    });
  });

  /** Bogus stops of a call, each naming what no recovery bills: refused with `reason`. */
  const bogus: { what: string; reason: string; lost: () => Promise<Record<string, unknown>> }[] = [
    { what: 'an unsold ID', reason: 'not_active', lost: async () => ({ id: (await mint(h, TALK))[0] }) },
    {
      what: 'an ID whose plan has no rate there',
      reason: 'no_rate',
      lost: async () => ({ id: (await soldIds(h, NOWHERE))[0] }),
    },
    {
      what: 'a caller number its ID no longer lists',
      reason: 'unknown_ani',
      lost: async () => {
        // The number's index still names the ID, which dropped it just now (moved, removed).
        const ani = `+4915${String(Date.now()).slice(-8)}`;
        const [id] = (await soldIds(h, TALK)) as [string];
        await h.r.set(aniPlace(h.ctx.ids, ani)!.key, idKeyOf(h, id));
        return { ani };
      },
    },
  ];
  it.each(bogus)(
    "racing one naming $what on another gateway: the call's own stop is billed, not call_conflict",
    async ({ reason, lost }) => {
      // Gateway A's stop names what no recovery bills; its answer is held back (as under load). The
      // call's own stop, naming its sold ID, reaches B meanwhile: A must not hold the call id for a
      // stop it will refuse, or B answers call_conflict and the call is billed to nobody.
      const named = await lost();
      const [id] = (await soldIds(h, TALK)) as [string];
      await racingGateways(async ({ proxy, a, b, name }) => {
        const call = newCall();
        const index = callIndexKey(h, name, call);
        proxy.holdAfter('call_recover_');
        let answered = false;
        const first = a.request({ op: 'stop', ref: 1, call, sec: 30, ...named, dest: DEST449 }).finally(() => {
          answered = true;
        });
        // A has claimed the call id (and its recovery is held), or has answered without claiming it.
        await until(async () => answered || (await h.r.exists(index)) === 1, 10_000, 10, 'A judged its stop');
        expect(await b.request({ op: 'stop', ref: 2, call, sec: 30, id, dest: DEST449 })).toMatchObject({
          op: 'stopped',
          billedSec: 30,
          cost: 35_000,
        });
        proxy.release();
        expect(await first).toMatchObject({ op: 'error', reason });
        expect(await h.r.get(index)).toBe(idKeyOf(h, id));
        expect(await cdrsOf(h, id, call)).toHaveLength(1);
      });
    },
  );

  it('its destination read as a start reads it: +449… and 00449… are rated as 449…, a trunk 0 is refused', async () => {
    for (const dest of ['+' + DEST449, '00' + DEST449]) {
      const [id] = await soldIds(h, TALK);
      const call = newCall();
      expect(await stop({ call, sec: 10, id, dest })).toMatchObject({ op: 'stopped', billedSec: 10, cost: 15_000 });
      expect(await cdrsOf(h, id!, call)).toEqual([expect.objectContaining({ cause: 'recovered', rate: '1000' })]);
    }
    const [id] = await soldIds(h, TALK);
    const call = newCall();
    expect(await stop({ call, sec: 10, id, dest: '0' + DEST449 })).toMatchObject({ op: 'error', reason: 'bad_value' });
    expect(await cdrsOf(h, id!, call)).toEqual([]);
  });

  it('answered before any version of its plan still kept: priced as the plan stands now, not refused', async () => {
    const [id] = await soldIds(h, YOUNG);
    const call = newCall();
    const sec = Math.ceil((Date.now() - changeAt) / 1000) + 60;
    expect(await stop({ call, sec, id, dest: DEST })).toMatchObject({ op: 'stopped', billedSec: sec, cost: sec * 200 });
    expect(await cdrsOf(h, id!, call)).toEqual([expect.objectContaining({ cause: 'recovered', rate: '200' })]);
  });

  it('priced second by second from its answer: a rate change during the call applies from its instant', async () => {
    const [id] = await soldIds(h, DATED);
    const call = newCall();
    // Answered a minute before the change, stopped after it.
    const sec = Math.ceil((Date.now() - changeAt) / 1000) + 60;
    const stopped = await stop({ call, sec, id, dest: DEST });
    const [cdr] = await cdrsOf(h, id!, call);
    const ans = Number(cdr!.answer);
    let expected = 0;
    for (let i = 0; i < sec; i++) expected += ans + i * 1000 >= changeAt ? 300 : 100;
    expect(expected).toBeLessThan(sec * 300);
    expect(stopped).toMatchObject({ op: 'stopped', billedSec: sec, cost: expected });
    expect(cdr).toMatchObject({ cause: 'recovered', rate: '100', cost: String(expected), short: '0' });
  });

  it("starts the ID's expiry clock, as a start would have: the call was its first use", async () => {
    const [id] = await soldIds(h, TALK);
    expect(await idFields(h, id!)).toMatchObject({ exp: '0' });
    const before = Date.now();
    // Sold a day ago: the call began after the sale.
    await h.r.hset(idKeyOf(h, id!), 'sold', String(before - 86_400_000));
    expect(await stop({ call: newCall(), sec: 60, id, dest: DEST })).toMatchObject({ op: 'stopped', billedSec: 60 });
    const { first, exp } = await idFields(h, id!);
    // The call began 60 s before its stop.
    expect(Number(first)).toBeGreaterThanOrEqual(before - 61_000);
    expect(Number(first)).toBeLessThanOrEqual(Date.now() - 59_000);
    expect(Number(exp) - Number(first)).toBe(TALK.expiryDays * 86_400_000);
  });

  it('never starts the expiry clock before the sale, whatever seconds the stop reports', async () => {
    const [id] = await soldIds(h, TALK);
    const { sold } = await idFields(h, id!);
    // An hour long, on an ID sold a moment ago.
    expect(await stop({ call: newCall(), sec: 3600, id, dest: DEST })).toMatchObject({
      op: 'stopped',
      billedSec: 3600,
    });
    const { first, exp } = await idFields(h, id!);
    expect(first).toBe(sold);
    expect(Number(exp) - Number(sold)).toBe(TALK.expiryDays * 86_400_000);
  });

  it('more than the balance: the balance goes to zero and the rest is kept as short', async () => {
    const [id] = await soldIds(h, SMALL);
    const call = newCall();
    expect(await stop({ call, sec: 30, id, dest: DEST })).toMatchObject({
      op: 'stopped',
      billedSec: 30,
      cost: 1000,
      balance: 0,
    });
    expect(await cdrsOf(h, id!, call)).toEqual([
      expect.objectContaining({ cause: 'recovered', sec: '30', cost: '1000', short: '2000', bal: '0' }),
    ]);
    expect(await idFields(h, id!)).toMatchObject({ bal: '0', st: 'exhausted' });
  });

  it('without its ID and destination: unknown_call, and nothing is written', async () => {
    const [id] = await soldIds(h, TALK);
    const call = newCall();
    expect(await stop({ call, sec: 30 })).toMatchObject({ op: 'error', reason: 'unknown_call' });
    expect(await stop({ call, sec: 30, id })).toMatchObject({ op: 'error', reason: 'unknown_call' });
    expect(await stop({ call, sec: 30, dest: DEST })).toMatchObject({ op: 'error', reason: 'unknown_call' });
    expect(await cdrsOf(h, id!, call)).toEqual([]);
    expect(await balanceOf(h, id!)).toBe(TALK.face);
  });

  it('naming an ID that is not a sold talk ID: refused with its reason, nothing billed', async () => {
    const call = newCall();
    expect(await stop({ call, sec: 5, id: '1234', dest: DEST })).toMatchObject({ op: 'error' });
    const [unsold] = await mint(h, TALK);
    expect(await stop({ call, sec: 5, id: unsold, dest: DEST })).toMatchObject({ op: 'error', reason: 'not_active' });
    // Nor is the call id kept for that ID: the call's stop naming its own ID is billed.
    expect(await h.r.exists(callIndexKey(h, swName, call))).toBe(0);
    const [id] = await soldIds(h, TALK);
    expect(await stop({ call, sec: 5, id, dest: DEST })).toMatchObject({ op: 'stopped', billedSec: 5 });
  });

  it('for a call that is still live: an ordinary stop, with its own cause', async () => {
    const [id] = await soldIds(h, TALK);
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ++refs, call, id, dest: DEST })).toMatchObject({ op: 'started' });
    expect(await stop({ call, sec: 12, id, dest: DEST, cause: 'normal' })).toMatchObject({
      op: 'stopped',
      billedSec: 12,
      cost: 1200,
    });
    expect(await cdrsOf(h, id!, call)).toEqual([expect.objectContaining({ cause: 'normal', sec: '12' })]);
  });

  it('for a live call, naming another ID or destination: call_conflict, and the call stays live', async () => {
    const [id, other] = await soldIds(h, TALK, 2);
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ++refs, call, id, dest: DEST })).toMatchObject({ op: 'started' });
    for (const wrong of [
      { id: other, dest: DEST },
      { id, dest: DEST449 },
      { id: ` ${id!.slice(0, 4)}-${id!.slice(4)} `, dest: '+' + DEST449 },
    ])
      expect(await stop({ call, sec: 3, ...wrong })).toMatchObject({ op: 'error', reason: 'call_conflict' });
    expect(await stop({ call, sec: 3, id: '123', dest: DEST })).toMatchObject({ op: 'error', reason: 'bad_format' });
    expect(await stop({ call, sec: 3, id, dest: '0' + DEST })).toMatchObject({ op: 'error', reason: 'bad_value' });
    expect(await cdrsOf(h, id!, call)).toEqual([]);
    expect(await c.request({ op: 'tick', ref: ++refs, call, sec: 2 })).toMatchObject({ op: 'ticked' });
    // Its own ID, written as a person would, and its destination with the international prefix: its stop.
    const spaced = `${id!.slice(0, 4)} ${id!.slice(4)}`;
    expect(await stop({ call, sec: 3, id: spaced, dest: '00' + DEST })).toMatchObject({ op: 'stopped', billedSec: 3 });
    expect(await balanceOf(h, other!)).toBe(TALK.face);
  });
});

/** Lets the keys go as their TTL would have them go: each must have one, of at most `ttlSec`. */
async function expireNow(ttlSec: number, ...gone: string[]): Promise<void> {
  for (const key of gone) {
    const ttl = await h.r.ttl(key);
    expect(ttl, key).toBeGreaterThan(0);
    expect(ttl, key).toBeLessThanOrEqual(ttlSec);
    await h.r.pexpire(key, 1);
  }
  await until(async () => (await h.r.exists(...gone)) === 0, 5000, 5, 'keys expired');
}

describe('a stop resent after its closed session has gone (a short SESSION_TTL_SEC)', () => {
  const TTL = 60;
  /** Runs `fn` on a gateway keeping closed sessions TTL s, with two switches of their own names. */
  const shortLived = (fn: (s: { g: Gateway; a: Client; aName: string; b: Client }) => Promise<void>): Promise<void> =>
    withGateway(h, { sessionTtlSec: TTL }, async (g) => {
      const { c: a, name: aName } = await connectSwitch(h, g.port);
      const { c: b } = await connectSwitch(h, g.port);
      try {
        await fn({ g, a, aName, b });
      } finally {
        await a.close();
        await b.close();
      }
    });
  /** The call's session and index under `name`: what SESSION_TTL_SEC lets go. */
  const closedKeys = (id: string, name: string, call: string): string[] => [
    sessionKey(h, id, name, call),
    callIndexKey(h, name, call),
  ];
  const byId = (id: string, call: string): string => keys.idCall(bucketOf(h, id), h.ctx.ids.hash(id).hash, call);

  /**
   * The closed call's record by ID and call id outlives its session by a week; once the session and
   * index are gone (SESSION_TTL_SEC), its stop resent under each of `on` names finds nothing to bill.
   */
  const resentAfterTtl = async (id: string, call: string, name: string, on: Client[]): Promise<void> => {
    expect(await h.r.ttl(byId(id, call))).toBeGreaterThanOrEqual(MAX_CALL_SEC - 60);
    await expireNow(TTL, ...closedKeys(id, name, call));
    for (const c of on)
      expect(await c.request({ op: 'stop', ref: ++refs, call, sec: 30, id, dest: DEST449 })).toMatchObject({
        op: 'error',
        reason: 'unknown_call',
      });
  };

  it('of a call stopped: not billed again as a lost call, under its name or another', async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    await shortLived(async ({ a, aName, b }) => {
      const call = newCall();
      expect(await a.request({ op: 'start', ref: ++refs, call, id, dest: DEST449 })).toMatchObject({ op: 'started' });
      expect(await a.request({ op: 'stop', ref: ++refs, call, sec: 30, id, dest: DEST449 })).toMatchObject({
        op: 'stopped',
        billedSec: 30,
        cost: 35_000,
      });
      // The record that it was stopped outlives the session: a week after the stop.
      await resentAfterTtl(id, call, aName, [a, b]);
      expect(await cdrsOf(h, id, call)).toHaveLength(1);
      expect(await balanceOf(h, id)).toBe(TALK.face - 35_000);
      // Nothing is left claimed for the refused stops: the call id is free for a new call of the ID.
      expect(await h.r.exists(callIndexKey(h, aName, call))).toBe(0);
    });
  });

  it('of a call recovered from its stop: a repeat, however late, bills nothing', async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    await shortLived(async ({ a, aName, b }) => {
      const call = newCall();
      expect(await a.request({ op: 'stop', ref: ++refs, call, sec: 30, id, dest: DEST449 })).toMatchObject({
        op: 'stopped',
        billedSec: 30,
        cost: 35_000,
      });
      await resentAfterTtl(id, call, aName, [a, b]);
      expect((await cdrsOf(h, id, call)).map((r) => r.cause)).toEqual(['recovered']);
      expect(await balanceOf(h, id)).toBe(TALK.face - 35_000);
    });
  });

  it('of a call lost while live (its session gone, never closed): billed from the stop, as ever', async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    await shortLived(async ({ a, aName }) => {
      const call = newCall();
      expect(await a.request({ op: 'start', ref: ++refs, call, id, dest: DEST449 })).toMatchObject({ op: 'started' });
      // Its start's writes lost but for its listing by ID and call id: its session never closed.
      const session = sessionKey(h, id, aName, call);
      await h.r.del(session);
      await h.r.zrem(keys.live(bucketOf(h, id)), session);
      await h.r.hset(idKeyOf(h, id), 'act', '0', 'free', String(TALK.face));
      expect(await a.request({ op: 'stop', ref: ++refs, call, sec: 30, id, dest: DEST449 })).toMatchObject({
        op: 'stopped',
        billedSec: 30,
        cost: 35_000,
      });
      expect((await cdrsOf(h, id, call)).map((r) => r.cause)).toEqual(['recovered']);
    });
  });

  it('is judged per ID: a lost call of another ID under that call id is still billed from its stop', async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    await shortLived(async ({ a, aName }) => {
      const call = newCall();
      expect(await a.request({ op: 'start', ref: ++refs, call, id, dest: DEST })).toMatchObject({ op: 'started' });
      expect(await a.request({ op: 'stop', ref: ++refs, call, sec: 5 })).toMatchObject({ op: 'stopped', cost: 500 });
      await expireNow(TTL, ...closedKeys(id, aName, call));
      // Another ID's call under the same call id is another call: recovered as ever.
      const [other] = (await soldIds(h, TALK)) as [string];
      const { c: fresh } = await connectSwitch(h, gw.port);
      expect(await fresh.request({ op: 'stop', ref: ++refs, call, sec: 5, id: other, dest: DEST })).toMatchObject({
        op: 'stopped',
        billedSec: 5,
      });
      await fresh.close();
      expect(await a.request({ op: 'stop', ref: ++refs, call, sec: 5, id, dest: DEST })).toMatchObject({
        reason: 'unknown_call',
      });
      expect(await balanceOf(h, id)).toBe(TALK.face - 500);
    });
  });
});

describe('a stop under another token name than its start (a switch back under a new name)', () => {
  let b: Client;
  beforeAll(async () => {
    ({ c: b } = await connectSwitch(h, gw.port));
  });
  afterAll(async () => {
    await b?.close();
  });
  const stopB = (m: Record<string, unknown>): Promise<Record<string, unknown>> =>
    b.request({ op: 'stop', ref: ++refs, ...m });

  it('of a call still live under the old name: that call is stopped, billed once, never also reaped', async () => {
    const [id] = await soldIds(h, DUO);
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ++refs, call, id, dest: DEST449 })).toMatchObject({ op: 'started' });
    expect(await c.request({ op: 'tick', ref: ++refs, call, sec: 3 })).toMatchObject({ op: 'ticked' });
    // 5 s at 1000 and the 5000 fee: what the call's own stop would bill.
    const first = { op: 'stopped', call, billedSec: 5, cost: 10_000, balance: DUO.face - 10_000 };
    expect(await stopB({ call, sec: 5, id, dest: DEST449, cause: 'normal' })).toMatchObject(first);
    expect(await cdrsOf(h, id!, call)).toEqual([expect.objectContaining({ cause: 'normal', sec: '5', cost: '10000' })]);
    expect(await idFields(h, id!)).toMatchObject({ act: '0', bal: String(DUO.face - 10_000) });
    // The call is closed: no reaper, no second record. Repeats under either name answer the same.
    expect(await c.request({ op: 'tick', ref: ++refs, call, sec: 6 })).toMatchObject({ reason: 'call_ended' });
    expect(await stopB({ call, sec: 9, id, dest: DEST449 })).toMatchObject(first);
    expect(await stopB({ call, sec: 9 })).toMatchObject(first);
    // The old name's own stop of the same seconds too (one of more is billed: the next test).
    expect(await stop({ call, sec: 5 })).toMatchObject(first);
    expect(await cdrsOf(h, id!, call)).toHaveLength(1);
    expect(await balanceOf(h, id!)).toBe(DUO.face - 10_000);
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('naming a caller number its ID dropped since the call started: that call is stopped all the same', async () => {
    // The old name started it by ID; the new name's stop names the caller number, which the ID no
    // longer lists (its index not yet cleared). The call was admitted: it is found, not refused.
    const [id] = (await soldIds(h, DUO)) as [string];
    const ani = `+4916${String(Date.now()).slice(-8)}`;
    await h.r.set(aniPlace(h.ctx.ids, ani)!.key, idKeyOf(h, id));
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ++refs, call, id, dest: DEST449 })).toMatchObject({ op: 'started' });
    expect(await stopB({ call, sec: 5, ani, dest: DEST449 })).toMatchObject({ op: 'stopped', billedSec: 5 });
    expect(await cdrsOf(h, id, call)).toEqual([expect.objectContaining({ cause: 'normal', sec: '5' })]);
  });

  it("tells the old name's switch to hang up: its ticks without ref get cutoff stopped, not silence", async () => {
    const [id] = await soldIds(h, DUO);
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ++refs, call, id, dest: DEST449 })).toMatchObject({ op: 'started' });
    expect(await c.request({ op: 'tick', ref: ++refs, call, sec: 3 })).toMatchObject({ op: 'ticked' });
    expect(await stopB({ call, sec: 5, id, dest: DEST449 })).toMatchObject({ op: 'stopped', billedSec: 5 });
    // The switch that started the call never saw that stop: silence would let its call run on unmetered.
    c.send({ op: 'tick', call, sec: 6 });
    expect(await c.waitFor((m) => m.op === 'cutoff' && m.call === call)).toMatchObject({
      reason: 'stopped',
      action: 'terminate',
    });
    // The name that stopped it knows: its own ticks of the call still get nothing. A tick with ref
    // in the same frame is billed with (after) the one without, so its error comes after any cutoff;
    // a ping would be answered before the batched tick.
    b.send([
      { op: 'tick', call, sec: 6 },
      { op: 'tick', call, sec: 6, ref: ++refs },
    ]);
    expect(await b.waitFor((m) => m.ref === refs)).toMatchObject({ reason: 'call_ended' });
    expect(b.received.filter((m) => m.op === 'cutoff' && m.call === call)).toEqual([]);
  });

  it("bills the seconds the old name's switch talked on past that stop, once, at its own stop", async () => {
    const [id] = await soldIds(h, DUO);
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ++refs, call, id, dest: DEST449 })).toMatchObject({ op: 'started' });
    expect(await c.request({ op: 'tick', ref: ++refs, call, sec: 3 })).toMatchObject({ op: 'ticked' });
    const { ref: _r, ...first } = await stopB({ call, sec: 5, id, dest: DEST449 });
    expect(first).toMatchObject({ op: 'stopped', billedSec: 5, cost: 10_000 });
    // Its switch talked on to 21 s, until its tick was told to hang up: 16 s at 1000 more.
    c.send({ op: 'tick', call, sec: 20 });
    expect(await c.waitFor((m) => m.op === 'cutoff' && m.call === call)).toMatchObject({ reason: 'stopped' });
    const own = { op: 'stopped', call, billedSec: 21, cost: 26_000, balance: DUO.face - 26_000 };
    expect(await stop({ call, sec: 21, cause: 'cutoff' })).toMatchObject(own);
    expect((await cdrsOf(h, id!, call)).map((r) => [r.cause, r.sec, r.cost])).toEqual([
      ['normal', '5', '10000'],
      ['late', '16', '16000'],
    ]);
    // Its repeats, and the other name's, bill nothing more.
    expect(await stop({ call, sec: 30 })).toMatchObject(own);
    expect(await stopB({ call, sec: 30, id, dest: DEST449 })).toMatchObject(first);
    const { c: third } = await connectSwitch(h, gw.port);
    expect(await third.request({ op: 'stop', ref: ++refs, call, sec: 5, id, dest: DEST449 })).toMatchObject({
      billedSec: 21,
      cost: 26_000,
    });
    await third.close();
    expect(await cdrsOf(h, id!, call)).toHaveLength(2);
    expect(await balanceOf(h, id!)).toBe(DUO.face - 26_000);
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it("keeps the call it stopped live as long as a call may last, for the old name's own stop", async () => {
    // The old name's switch may talk on, unaware (a quota call's next update may be minutes away):
    // its own stop, come when it may, must find the call and bill only the seconds past this stop.
    // Kept SESSION_TTL_SEC (60 s), the call was gone by then and that stop billed every second again.
    const [id] = await soldIds(h, DUO);
    await withGateway(h, { sessionTtlSec: 60 }, async (g) => {
      const { c: old, name } = await connectSwitch(h, g.port);
      const { c: now } = await connectSwitch(h, g.port);
      try {
        const call = newCall();
        expect(await old.request({ op: 'start', ref: ++refs, call, id, dest: DEST, mode: 'quota' })).toMatchObject({
          op: 'started',
        });
        expect(await now.request({ op: 'stop', ref: ++refs, call, sec: 3, id, dest: DEST })).toMatchObject({
          op: 'stopped',
          billedSec: 3,
          cost: 300,
        });
        const byId = keys.idCall(bucketOf(h, id!), h.ctx.ids.hash(id!).hash, call);
        for (const key of [sessionKey(h, id!, name, call), byId])
          expect(await h.r.ttl(key)).toBeGreaterThanOrEqual(MAX_CALL_SEC);
        expect(await old.request({ op: 'stop', ref: ++refs, call, sec: 70, id, dest: DEST })).toMatchObject({
          op: 'stopped',
          billedSec: 70,
          cost: 7000,
        });
        expect((await cdrsOf(h, id!, call)).map((r) => [r.cause, r.sec])).toEqual([
          ['normal', '3'],
          ['late', '67'],
        ]);
        expect((await audit(h.ctx)).problems).toEqual([]);
      } finally {
        await old.close();
        await now.close();
      }
    });
  });

  it("a name whose stop repeated another name's is not told to hang up either: it stopped the call", async () => {
    const [id] = await soldIds(h, DUO);
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ++refs, call, id, dest: DEST449 })).toMatchObject({ op: 'started' });
    expect(await stopB({ call, sec: 2, id, dest: DEST449 })).toMatchObject({ op: 'stopped', billedSec: 2 });
    const { c: third } = await connectSwitch(h, gw.port);
    expect(await third.request({ op: 'stop', ref: ++refs, call, sec: 2, id, dest: DEST449 })).toMatchObject({
      op: 'stopped',
      billedSec: 2,
    });
    // A tick with ref, billed with (after) the one without: its error comes after any cutoff.
    third.send([
      { op: 'tick', call, sec: 3 },
      { op: 'tick', call, sec: 3, ref: ++refs },
    ]);
    expect(await third.waitFor((m) => m.ref === refs)).toMatchObject({ reason: 'call_ended' });
    expect(third.received.filter((m) => m.op === 'cutoff')).toEqual([]);
    await third.close();
  });

  it('resent under the new name after its stop under the old one was answered but the answer lost: a repeat', async () => {
    const [id] = await soldIds(h, DUO);
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ++refs, call, id, dest: DEST449 })).toMatchObject({ op: 'started' });
    const { ref: _r, ...first } = await stop({ call, sec: 5, id, dest: DEST449 });
    expect(first).toMatchObject({ op: 'stopped', billedSec: 5, cost: 10_000 });
    expect(await stopB({ call, sec: 5, id, dest: DEST449 })).toMatchObject(first);
    expect(await cdrsOf(h, id!, call)).toHaveLength(1);
    expect(await balanceOf(h, id!)).toBe(DUO.face - 10_000);
  });

  it('a recovered stop resent under the new name after its answer was lost: a repeat, billed once', async () => {
    const [id] = await soldIds(h, TALK);
    const call = newCall();
    // Its start was lost with a failed primary: the old name's stop is billed as a recovered call.
    const { ref: _r, ...first } = await stop({ call, sec: 30, id, dest: DEST449 });
    expect(first).toMatchObject({ op: 'stopped', billedSec: 30, cost: 35_000, balance: TALK.face - 35_000 });
    expect(await stopB({ call, sec: 30, id, dest: DEST449 })).toMatchObject(first);
    expect(await stopB({ call, sec: 31 })).toMatchObject(first);
    expect(await cdrsOf(h, id!, call)).toHaveLength(1);
    expect(await balanceOf(h, id!)).toBe(TALK.face - 35_000);
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('finds a call by its ID for as long as its closed session answers repeats, no longer', async () => {
    const [id] = await soldIds(h, DUO);
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ++refs, call, id, dest: DEST449 })).toMatchObject({ op: 'started' });
    const [ic] = await h.r.keys(`ts:*:ic:*:${call}`);
    // Live: past the longest call a switch may report (a week).
    expect(await h.r.ttl(ic!)).toBeGreaterThan(7 * 86_400);
    expect(await stop({ call, sec: 5 })).toMatchObject({ op: 'stopped' });
    // Closed: kept as long as the session, which answers repeats under either name.
    const [sessionTtl, icTtl] = [await h.r.ttl((await h.r.keys(`ts:*:call:*:${call}`))[0]!), await h.r.ttl(ic!)];
    expect(icTtl).toBeLessThanOrEqual(h.cfg.sessionTtlSec);
    expect(Math.abs(icTtl - sessionTtl)).toBeLessThanOrEqual(1);
    expect(await stopB({ call, sec: 5, id, dest: DEST449 })).toMatchObject({ op: 'stopped', billedSec: 5 });
  });

  it('naming another destination, or a call answered before that one started: a lost call of its own', async () => {
    const [id] = await soldIds(h, DUO);
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ++refs, call, id, dest: DEST449 })).toMatchObject({ op: 'started' });
    expect(await stopB({ call, sec: 5, id, dest: DEST })).toMatchObject({ op: 'stopped', billedSec: 5, cost: 500 });
    const other = newCall();
    expect(await c.request({ op: 'start', ref: ++refs, call: other, id, dest: DEST })).toMatchObject({
      op: 'started',
    });
    // An hour long: answered long before the old name's call started, so not that call.
    expect(await stopB({ call: other, sec: 3600, id, dest: DEST })).toMatchObject({ billedSec: 3600, cost: 360_000 });
    expect((await cdrsOf(h, id!, call)).map((r) => r.cause)).toEqual(['recovered']);
    expect((await cdrsOf(h, id!, other)).map((r) => r.cause)).toEqual(['recovered']);
    // The old name's calls are still live and theirs to stop.
    expect(await stop({ call, sec: 2 })).toMatchObject({ op: 'stopped', billedSec: 2 });
    expect(await stop({ call: other, sec: 2 })).toMatchObject({ op: 'stopped', billedSec: 2 });
  });

  it('a lost call of its own, resent under yet other names: a repeat each time, billed once', async () => {
    const [id] = await soldIds(h, DUO);
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ++refs, call, id, dest: DEST449 })).toMatchObject({ op: 'started' });
    // Another destination than the old name's call: a lost call of its own, billed from the stop.
    const { ref: _r, ...first } = await stopB({ call, sec: 5, id, dest: DEST });
    expect(first).toMatchObject({ op: 'stopped', billedSec: 5, cost: 500 });
    for (let i = 0; i < 2; i++) {
      const { c: other } = await connectSwitch(h, gw.port);
      expect(await other.request({ op: 'stop', ref: ++refs, call, sec: 5, id, dest: DEST })).toMatchObject(first);
      await other.close();
    }
    expect((await cdrsOf(h, id!, call)).map((r) => r.cause)).toEqual(['recovered']);
    expect(await balanceOf(h, id!)).toBe(DUO.face - 500);
    // The old name's call is still found by its own destination, under any name.
    const { c: later } = await connectSwitch(h, gw.port);
    expect(await later.request({ op: 'stop', ref: ++refs, call, sec: 2, id, dest: DEST449 })).toMatchObject({
      op: 'stopped',
      billedSec: 2,
      cost: 7000,
    });
    await later.close();
    expect((await cdrsOf(h, id!, call)).map((r) => r.cause)).toEqual(['recovered', 'normal']);
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it("the call's own start under the old name, landing after its recovered stop: call_ended, the ID free", async () => {
    const [id] = await soldIds(h, TALK);
    const call = newCall();
    const sentAt = Date.now();
    // Its start, sent under the old name, is held back (a failover) while the switch, back under
    // a new name, stops the call 30 s after: billed from the stop, as a lost call.
    const { ref: _r, ...first } = await stopB({ call, sec: 30, id, dest: DEST449 });
    expect(first).toMatchObject({ op: 'stopped', billedSec: 30, cost: 35_000 });
    const late = { id: id!, sw: 'sw-old-name', call, dest: DEST449 };
    expect(await startAt(h, gw.catalog, late, sentAt - 30_000)).toEqual({ ok: false, reason: 'call_ended' });
    expect(await idFields(h, id!)).toMatchObject({ act: '0', bal: String(TALK.face - 35_000) });
    // The ID is free at once: a new call on it is admitted.
    const next = newCall();
    expect(await c.request({ op: 'start', ref: ++refs, call: next, id, dest: DEST })).toMatchObject({ op: 'started' });
    expect(await stop({ call: next, sec: 0 })).toMatchObject({ op: 'stopped', billedSec: 0 });
    expect((await cdrsOf(h, id!, call)).map((r) => r.cause)).toEqual(['recovered']);
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('a start of the same call id under another name sent after that call was answered: another call', async () => {
    const [id] = await soldIds(h, TALK);
    const call = newCall();
    expect(await stopB({ call, sec: 30, id, dest: DEST449 })).toMatchObject({ op: 'stopped', billedSec: 30 });
    const other = { id: id!, sw: 'sw-other-name', call, dest: DEST449 };
    expect(await startAt(h, gw.catalog, other, Date.now())).toMatchObject({ ok: true, duplicate: false });
    expect(await idFields(h, id!)).toMatchObject({ act: '1' });
    expect((await audit(h.ctx)).problems).toEqual([]);
  });
});

describe('stops that name an ID Tessera does not know', () => {
  it('count as guesses, once per call: past the limit a recovered stop is throttled before its ID is looked up, and billed once the window is over', async () => {
    const LIMIT = 2;
    const g = await gateway(h, { guessLimit: LIMIT, guessWindowSec: 2 });
    try {
      const [id] = await soldIds(h, TALK);
      const { c: s } = await connectSwitch(h, g.port);
      const guess = (call: string): Promise<Record<string, unknown>> =>
        s.request({ op: 'stop', ref: ++refs, call, sec: 0, id: generateId(h.cfg.idLength), dest: DEST });
      const first = newCall();
      const firstId = generateId(h.cfg.idLength);
      expect(await s.request({ op: 'stop', ref: ++refs, call: first, sec: 0, id: firstId, dest: DEST })).toMatchObject({
        reason: 'unknown_id',
      });
      // Resent: the same guess, not another one.
      expect(await s.request({ op: 'stop', ref: ++refs, call: first, sec: 0, id: firstId, dest: DEST })).toMatchObject({
        reason: 'unknown_id',
      });
      for (let i = 1; i <= LIMIT; i++) expect(await guess(newCall())).toMatchObject({ reason: 'unknown_id' });
      // A stop of sec 0 for a real ID would bill nothing and tell its balance: a guess that hit.
      const call = newCall();
      const hit = await s.request({ op: 'stop', ref: ++refs, call, sec: 7, id, dest: DEST });
      expect(hit).toEqual({
        op: 'error',
        ref: refs,
        call,
        reason: 'throttled',
        message: 'stop refused: throttled',
        retryAfter: expect.any(Number),
      });
      expect(await cdrsOf(h, id!, call)).toEqual([]);
      expect(await balanceOf(h, id!)).toBe(TALK.face);
      // The metric counts answers: the resent copy's too.
      expect(sample(await metricsText(g.port), 'tessera_unknown_id_starts_total')).toBe(LIMIT + 2);
      // Starts of the token name are throttled alike: one count.
      expect(await s.request({ op: 'start', ref: ++refs, call: newCall(), id, dest: DEST })).toMatchObject({
        reason: 'throttled',
      });
      // Nothing is lost: the stop, retried once the window is over, bills the call.
      await until(
        async () => (await s.request({ op: 'stop', ref: ++refs, call, sec: 7, id, dest: DEST })).op === 'stopped',
        5000,
        200,
      );
      expect(await balanceOf(h, id!)).toBe(TALK.face - 700);
      expect(await cdrsOf(h, id!, call)).toHaveLength(1);
      await s.close();
    } finally {
      await g.close();
    }
  });
});

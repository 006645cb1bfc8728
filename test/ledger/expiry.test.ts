/**
 * Breakage: the value left on an ID past its expiry is forfeited by the expiry
 * sweep with one `expiry` record in the ID's bucket (lua/expire.lua), and the
 * conservation audit, the export, the archive's checkpoint and the `expired`
 * balance event all carry it. Expiry is judged by Redis' clock: the tests move
 * an ID's `exp` behind Redis' TIME rather than waiting for it.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { audit } from '../../src/ledger/audit';
import { ExpirySweep } from '../../src/ledger/expiry-sweep';
import { archiveRecords } from '../../src/ledger/retention';
import { CALLS_END_MS, expireId, setState } from '../../src/ledger/scripts';
import { putProducts } from '../../src/catalog/store';
import { eventBody } from '../../src/hooks/payload';
import { createLogger } from '../../src/observability/log';
import { keys } from '../../src/redis/keys';
import { redisTimeMs } from '../../src/redis/clock';
import { connectRedis } from '../../src/redis/connect';
import { scanIdKeys } from '../../src/redis/scan';
import { Scripts } from '../../src/redis/scripts';
import { startGateway, type Gateway } from '../../src/gateway/server';
import { runCliIn } from '../support/cli';
import { captureLog } from '../support/log';
import { until } from '../support/wait';
import {
  gateway,
  keepEvents,
  seedCatalog,
  soldIds,
  startHarness,
  talkProduct,
  uniq,
  type Harness,
} from '../support/harness';
import { jsonCall, type JsonAnswer } from '../support/http';
import { bucketOf, hashOf, idFields, idKeyOf, streamFields } from '../support/redis';
import type { Client } from '../support/ws-client';
import { connectSwitch, newCall, sessionKey } from '../metering/fixtures';
import { topupId } from '../../src/sales/scripts';
import { loadRedemptionCatalog, PRICE, scannerToken, WALLET_FACE, type Catalog } from '../redemption/fixtures';

let h: Harness;
let gw: Gateway;
let sw: Client;
let swName: string;
let cat: Catalog;
const TALK = talkProduct({ name: 'talk-exp', face: 1_000_000, price: 1_000_000 });
const DEST = '4912345'; // plan std: 100 micro-units a second
const GRACE_MS = 60_000;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK]);
  cat = await loadRedemptionCatalog(h);
  gw = await keepEvents(await gateway(h)); // a test reads its `expired` event from the stream
  ({ c: sw, name: swName } = await connectSwitch(h, gw.port));
});
afterAll(async () => {
  await sw?.close();
  await gw?.close();
  await h?.stop();
});

/** A sweep as a gateway runs it, on the harness' own connection (a second gateway beside `gw`). */
const sweeper = (graceMs = GRACE_MS): ExpirySweep =>
  new ExpirySweep(h.ctx.redis, h.ctx.scripts, createLogger('silent'), 3_600_000, graceMs);

/** Moves the ID's expiry to `agoMs` before Redis' clock: it expired that long ago. */
async function expiredAgo(id: string, agoMs: number): Promise<number> {
  const exp = (await redisTimeMs(h.r)) - agoMs;
  await h.r.hset(idKeyOf(h, id), 'exp', String(exp));
  return exp;
}

/** A call of `sec` seconds on a talk ID, started and stopped: its first use, which sets its expiry. */
async function callOn(id: string, sec: number): Promise<void> {
  const call = newCall('exp');
  expect(await sw.request({ op: 'start', ref: uniq('r'), call, id, dest: DEST })).toMatchObject({ op: 'started' });
  expect(await sw.request({ op: 'stop', ref: uniq('r'), call, sec })).toMatchObject({ op: 'stopped' });
}

/** The ID's expiry records, as the sales stream of its bucket holds them. */
async function expiryRecords(id: string): Promise<Record<string, string>[]> {
  const rows = await h.r.xrange(keys.sales(bucketOf(h, id)), '-', '+');
  return rows
    .map(([record, flat]): Record<string, string> => ({ record, ...streamFields(flat) }))
    .filter((r) => r.type === 'expiry' && r.id === hashOf(h, id));
}

/** An operator's top-up of 5,000 that does not move the expiry, applied as a gateway at `now` sends it. */
function operatorTopup(id: string, now: number): ReturnType<typeof topupId> {
  return topupId(
    h.ctx.scripts,
    {
      loc: { key: idKeyOf(h, id), bucket: bucketOf(h, id) },
      source: 'operator',
      ref: uniq('topup'),
      amount: 5000,
      currency: 'EUR',
      product: TALK.name,
      allowed: true,
      extendsDays: 0,
      maxBalance: 10 * TALK.face,
      into: '',
      note: '',
    },
    'apply',
    now,
  );
}

async function expectBalanced(): Promise<Awaited<ReturnType<typeof audit>>> {
  const r = await audit(h.ctx);
  expect(r.problems).toEqual([]);
  return r;
}

describe('expiry sweep', () => {
  it('forfeits what an expired talk ID has left with one record, its balance 0, and the audit balances', async () => {
    const [spent, current, unused] = (await soldIds(h, TALK, 3)) as [string, string, string];
    await callOn(spent, 10); // 1000 billed, 999000 left
    await callOn(current, 1);
    const before = await expectBalanced();
    expect(before.expired).toBe(0);
    const exp = await expiredAgo(spent, 1000);

    expect(await sweeper().sweep()).toEqual({ expired: 1, amount: 999_000, waiting: 0, failed: 0 });

    const recs = await expiryRecords(spent);
    expect(recs).toEqual([
      expect.objectContaining({
        type: 'expiry',
        product: TALK.name,
        currency: 'EUR',
        face: '1000000',
        amount: '999000',
        bal: '0',
        exp: String(exp),
      }),
    ]);
    expect(Number(recs[0]!.time)).toBeGreaterThanOrEqual(exp);
    expect(await idFields(h, spent)).toMatchObject({ st: 'expired', bal: '0', free: '0', xrec: recs[0]!.record });
    // Not yet expired (30 days from its call), and never used (no expiry yet): untouched.
    expect(await idFields(h, current)).toMatchObject({ st: 'sold', bal: '999900' });
    expect(await idFields(h, unused)).toMatchObject({ st: 'sold', bal: '1000000', exp: '0' });
    expect(await expiryRecords(current)).toEqual([]);
    expect(await expiryRecords(unused)).toEqual([]);
    for (const id of [current, unused]) {
      const { bucket, hash } = h.ctx.ids.hash(id);
      expect(await expireId(h.ctx.scripts, bucket, hash, GRACE_MS)).toEqual({ forfeited: false, why: 'not_due' });
    }

    const after = await expectBalanced();
    expect(after.expired).toBe(999_000);
    expect(after.balances).toBe(before.balances - 999_000);
    const text = await runCliIn(h, 'audit');
    expect(text.out).toContain('+ vouchers sent 0 + expired 999,000\n');
    expect(text.out).toContain('audit: ok, every ID balances');
    expect((await runCliIn(h, 'help', 'audit')).out).toMatch(/\+ vouchers sent \+ expired \(value left at expiry/);

    // The CRM hears of it: an `expired` balance event, with what was forfeited and when it expired.
    const events = await h.r.xrange(keys.events(bucketOf(h, spent)), '-', '+');
    const ev = events.find(([, flat]) => {
      const f = streamFields(flat);
      return f.type === 'expired' && f.idh === hashOf(h, spent);
    });
    expect(ev).toBeDefined();
    expect(JSON.parse(eventBody(bucketOf(h, spent), ev![0], streamFields(ev![1])))).toMatchObject({
      type: 'expired',
      product: TALK.name,
      idHash: hashOf(h, spent),
      balance: 0,
      data: { amount: 999_000, expires: exp },
    });
  });

  it('records an expiry once: swept again, by two gateways at once, or the script called again', async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    await callOn(id, 5);
    await expiredAgo(id, 1000);
    const { bucket, hash } = h.ctx.ids.hash(id);

    const [a, b, again] = await Promise.all([
      gw.expiry.sweep(),
      sweeper().sweep(),
      expireId(h.ctx.scripts, bucket, hash, GRACE_MS),
    ]);
    expect(a.expired + b.expired + (again.forfeited ? 1 : 0)).toBe(1);
    expect(await sweeper().sweep()).toMatchObject({ expired: 0 });
    expect(await expireId(h.ctx.scripts, bucket, hash, GRACE_MS)).toEqual({ forfeited: false, why: 'done' });
    expect(await expiryRecords(id)).toHaveLength(1);
    expect((await expiryRecords(id))[0]!.amount).toBe(String(1_000_000 - 500));
    await expectBalanced();
  });

  it('runs on its own in a gateway, every EXPIRY_SWEEP_MS', async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    await callOn(id, 2);
    await expiredAgo(id, 1000);
    // startGateway itself: the harness' gateway() leaves the sweep to the tests.
    const own = await startGateway({ ...h.cfg, expirySweepMs: 1000 }, createLogger('silent'), h.redis.url);
    try {
      await until(async () => (await expiryRecords(id)).length > 0, 10_000, 50, 'the expiry record');
    } finally {
      await own.close();
    }
    expect((await expiryRecords(id)).map((r) => r.amount)).toEqual([String(1_000_000 - 200)]);
  });
  it('waits for a call live at the expiry to end, then forfeits what it left', async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    const call = newCall('live');
    expect(await sw.request({ op: 'start', ref: uniq('r'), call, id, dest: DEST })).toMatchObject({ op: 'started' });
    expect(await sw.request({ op: 'tick', ref: uniq('r'), call, sec: 5 })).toMatchObject({ op: 'ticked' });
    await expiredAgo(id, 1000);

    expect(await sweeper().sweep()).toMatchObject({ expired: 0, waiting: 1 });
    expect(await expiryRecords(id)).toEqual([]);
    expect(await idFields(h, id)).toMatchObject({ st: 'sold', bal: '999500', act: '1' });
    await expectBalanced();

    // The call runs on past the expiry and is billed in full.
    expect(await sw.request({ op: 'stop', ref: uniq('r'), call, sec: 20 })).toMatchObject({
      op: 'stopped',
      cost: 2000,
    });
    expect(await sweeper().sweep()).toMatchObject({ expired: 1, amount: 998_000 });
    expect(await expiryRecords(id)).toEqual([expect.objectContaining({ amount: '998000' })]);
    expect(await idFields(h, id)).toMatchObject({ st: 'expired', bal: '0', act: '0', free: '0' });
    await expectBalanced();
  });

  it('forfeits an ID whose live-call count and hold a lost call session left, once no call can be live', async () => {
    const [lost, live] = (await soldIds(h, TALK, 2)) as [string, string];
    // A call whose session a failover lost: its count and its reservation stay on the ID, and no stop
    // or reap will ever take them back (the reaper drops a live-set entry whose session is gone).
    const call = newCall('lost');
    expect(await sw.request({ op: 'start', ref: uniq('r'), call, id: lost, dest: DEST })).toMatchObject({
      op: 'started',
    });
    const skey = sessionKey(h, lost, swName, call);
    await h.r.del(skey);
    await h.r.zrem(keys.live(bucketOf(h, lost)), skey);
    expect(await idFields(h, lost)).toMatchObject({ act: '1', bal: '1000000', free: '0' });
    // And a call that is live, on an ID as long past its expiry.
    const other = newCall('live');
    expect(await sw.request({ op: 'start', ref: uniq('r'), call: other, id: live, dest: DEST })).toMatchObject({
      op: 'started',
    });

    // Within the time a call admitted before the expiry may still run, both are taken at their word.
    await expiredAgo(lost, 1000);
    await expiredAgo(live, 1000);
    expect(await sweeper().sweep()).toMatchObject({ expired: 0, waiting: 2 });
    // Past it, only the one whose call is in the live set waits.
    await expiredAgo(lost, CALLS_END_MS + 1000);
    await expiredAgo(live, CALLS_END_MS + 1000);
    expect(await sweeper().sweep()).toMatchObject({ expired: 1, amount: 1_000_000, waiting: 1 });
    expect(await idFields(h, lost)).toMatchObject({ st: 'expired', bal: '0', act: '0', free: '0' });
    expect(await idFields(h, live)).toMatchObject({ st: 'sold', act: '1' });
    expect(await sw.request({ op: 'stop', ref: uniq('r'), call: other, sec: 3 })).toMatchObject({ cost: 300 });
    expect(await sweeper().sweep()).toMatchObject({ expired: 1, amount: 999_700, waiting: 0 });
    await expectBalanced();
  });

  it('forfeits an ID whose `free` a damaged hash puts above its balance, as every script reads it', async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    await callOn(id, 1);
    await h.r.hset(idKeyOf(h, id), 'free', '1000000');
    await expiredAgo(id, 1000);
    expect(await sweeper().sweep()).toMatchObject({ expired: 1, amount: 999_900 });
    expect(await idFields(h, id)).toMatchObject({ st: 'expired', bal: '0', free: '0' });
    await expectBalanced();
  });

  it('leaves a blocked ID as it is, and forfeits it once the block is lifted', async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    await callOn(id, 1);
    await expiredAgo(id, 1000);
    const place = { key: idKeyOf(h, id), bucket: bucketOf(h, id) };
    expect(await setState(h.ctx.scripts, place, TALK.name, 'block', 'lost')).toEqual({ ok: true, state: 'blocked' });

    expect(await sweeper().sweep()).toMatchObject({ expired: 0, waiting: 1 });
    expect(await idFields(h, id)).toMatchObject({ st: 'blocked', bal: '999900' });

    expect(await setState(h.ctx.scripts, place, TALK.name, 'unblock', '')).toEqual({ ok: true, state: 'sold' });
    expect(await sweeper().sweep()).toMatchObject({ expired: 1, amount: 999_900 });
    await expectBalanced();
  });

  it('gives stored value its offline-scan grace past the expiry, and forfeits value a reversal brings back', async () => {
    const [wallet] = (await soldIds(h, cat.wallet)) as [string];
    const { tok } = await scannerToken(h);
    const beer = uniq();
    expect(
      (await jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { scan: beer, id: wallet, item: 'beer' } })).status,
    ).toBe(200);
    const left = Number((await idFields(h, wallet)).bal);
    expect(left).toBeLessThan(WALLET_FACE);

    await expiredAgo(wallet, 1000);
    expect(await sweeper().sweep()).toMatchObject({ expired: 0 });
    expect(await expiryRecords(wallet)).toEqual([]);

    await expiredAgo(wallet, GRACE_MS + 1000);
    expect(await sweeper().sweep()).toMatchObject({ expired: 1, amount: left });
    expect(await idFields(h, wallet)).toMatchObject({ st: 'expired', bal: '0', xamt: String(left) });
    await expectBalanced();

    // The beer reversed after the forfeiture: its value comes back to the expired ID, and is forfeited in turn.
    expect((await jsonCall(gw, 'POST', '/v1/reverse', { token: tok, body: { scan: beer } })).status).toBe(200);
    expect(await idFields(h, wallet)).toMatchObject({ st: 'expired', bal: String(PRICE.beer) });
    await expectBalanced();
    expect(await sweeper().sweep()).toMatchObject({ expired: 1, amount: PRICE.beer });
    expect(await sweeper().sweep()).toMatchObject({ expired: 0 });
    expect((await expiryRecords(wallet)).map((r) => Number(r.amount))).toEqual([left, PRICE.beer]);
    expect(await idFields(h, wallet)).toMatchObject({ bal: '0', xamt: String(WALLET_FACE) });
    await expectBalanced();
  });

  it('still lets out whoever an expired ticket let in, and nobody else', async () => {
    const [ticket, other] = (await soldIds(h, cat.ticket3, 2)) as [string, string];
    const { tok } = await scannerToken(h);
    const scan = (id: string, body: Record<string, unknown> = {}, scanId = uniq()): Promise<JsonAnswer> =>
      jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { scan: scanId, id, ...body } });
    expect((await scan(ticket)).status).toBe(200); // one of three entries used
    const entry = uniq();
    expect((await scan(other, {}, entry)).status).toBe(200);
    await expiredAgo(ticket, 1000);
    await expiredAgo(other, 1000);
    expect(await sweeper(0).sweep()).toMatchObject({ expired: 2, amount: 4 });

    expect(await scan(ticket, { dir: 'out' })).toMatchObject({ status: 200 });
    expect(await scan(ticket, { dir: 'out' })).toMatchObject({ status: 410, json: { error: { reason: 'expired' } } });
    expect(await scan(ticket)).toMatchObject({ status: 410, json: { error: { reason: 'expired' } } });

    // The entry reversed (nobody went in after all): nobody is inside to let out, and the entry
    // given back is forfeited in turn.
    expect((await jsonCall(gw, 'POST', '/v1/reverse', { token: tok, body: { scan: entry } })).status).toBe(200);
    expect(await scan(other, { dir: 'out' })).toMatchObject({ status: 410, json: { error: { reason: 'expired' } } });
    expect(await sweeper(0).sweep()).toMatchObject({ expired: 1, amount: 1 });
    expect(await idFields(h, other)).toMatchObject({ bal: '0', xamt: '3' });
    await expectBalanced();
  });

  it("counts a forfeited ticket's entries as never used when a scan on it is reversed", async () => {
    const [ticket] = (await soldIds(h, cat.ticket3)) as [string];
    const { tok } = await scannerToken(h);
    const first = uniq();
    for (const body of [{ scan: first }, { scan: uniq() }, { scan: uniq(), dir: 'out', qty: 2 }])
      expect((await jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { id: ticket, ...body } })).status).toBe(
        200,
      );
    await expiredAgo(ticket, 1000);
    expect(await sweeper(0).sweep()).toMatchObject({ expired: 1, amount: 1 });

    // Two went in and out; the first entry reversed, one did: one is out, not two.
    expect((await jsonCall(gw, 'POST', '/v1/reverse', { token: tok, body: { scan: first } })).status).toBe(200);
    expect(await idFields(h, ticket)).toMatchObject({ st: 'expired', bal: '1', inside: '0', outq: '1' });
    expect(await sweeper(0).sweep()).toMatchObject({ expired: 1, amount: 1 });
    await expectBalanced();
  });

  it("forfeits a ticket's entries once its validUntil is past, with no expiry of its own, used or not", async () => {
    // Valid until yesterday, no expiryDays: never used (bought, nobody came), and one used once.
    const [unused] = (await soldIds(h, cat.past)) as [string];
    const [used, open] = (await soldIds(h, cat.ticket3, 2)) as [string, string];
    const { tok } = await scannerToken(h);
    expect((await jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { scan: uniq(), id: used } })).status).toBe(
      200,
    );
    // `used`'s window (its own, as an operator may set one for one ID) ended a second ago; `open`'s ends in a minute.
    const now = await redisTimeMs(h.r);
    await h.r.hset(idKeyOf(h, used), 'until', String(now - 1000));
    await h.r.hset(idKeyOf(h, open), 'until', String(now + 60_000));
    expect(await idFields(h, unused)).toMatchObject({ exp: '0', bal: '1' });

    // The offline grace first: a scan made before the window closed may still arrive.
    expect(await sweeper().sweep()).toMatchObject({ expired: 1, amount: 1 });
    expect(await expiryRecords(unused)).toEqual([
      expect.objectContaining({ amount: '1', exp: String(cat.past.validUntil) }),
    ]);
    expect(await sweeper(0).sweep()).toMatchObject({ expired: 1, amount: 2 });
    expect(await expiryRecords(used)).toEqual([expect.objectContaining({ amount: '2', exp: String(now - 1000) })]);
    expect(await idFields(h, used)).toMatchObject({ st: 'expired', bal: '0', xamt: '2' });
    expect(await idFields(h, open)).toMatchObject({ st: 'sold', bal: '3' });
    // Whoever the used ticket let in is still let out.
    expect(
      (await jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { scan: uniq(), id: used, dir: 'out' } })).status,
    ).toBe(200);
    await h.r.hdel(idKeyOf(h, open), 'until');
    await expectBalanced();
  });

  it("refuses a top-up from a gateway whose clock is behind Redis' once the ID is past its expiry by Redis'", async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    await callOn(id, 1);
    const exp = await expiredAgo(id, 1000);
    // A gateway whose clock runs a second behind Redis' still reads the ID as valid. Accepted, the
    // top-up (one that does not move the expiry) would be forfeited by the next sweep: the buyer's
    // money booked as breakage moments after it was paid.
    const r = await operatorTopup(id, exp - 500);
    expect(r).toEqual({ ok: false, reason: 'expired' });
    expect(await idFields(h, id)).toMatchObject({ bal: '999900' });
    expect(await sweeper().sweep()).toMatchObject({ expired: 1, amount: 999_900 });
    await expectBalanced();
  });

  it('goes on past an ID its script fails on: the IDs after it are still forfeited', async () => {
    const [x, y] = (await soldIds(h, TALK, 2)) as [string, string];
    await callOn(x, 1);
    await callOn(y, 1);
    await expiredAgo(x, 1000);
    await expiredAgo(y, 1000);
    // The one the sweep reaches first is damaged (its terms version gone): expire.lua fails on it.
    const order: string[] = [];
    for await (const k of scanIdKeys(h.ctx.redis)) order.push(k.hash);
    const [broken, fine] = order.indexOf(hashOf(h, x)) < order.indexOf(hashOf(h, y)) ? [x, y] : [y, x];
    const pt = (await idFields(h, broken)).pt!;
    await h.r.hset(idKeyOf(h, broken), 'pt', 'gone');
    try {
      expect(await sweeper().sweep()).toMatchObject({ expired: 1, amount: 999_900, failed: 1 });
      expect(await expiryRecords(fine)).toHaveLength(1);
      expect(await expiryRecords(broken)).toEqual([]);
    } finally {
      await h.r.hset(idKeyOf(h, broken), 'pt', pt);
    }
    expect(await sweeper().sweep()).toMatchObject({ expired: 1, amount: 999_900 });
    await expectBalanced();
  });

  it('ends a pass at the first ID Redis cannot take, with one warning, and forfeits at the next', async () => {
    const ids = await soldIds(h, TALK, 3);
    for (const id of ids) {
      await callOn(id, 1);
      await expiredAgo(id, 1000);
    }
    // Its scripts' connection is down (never opened, no offline queue): every call fails `unavailable`.
    const down = connectRedis(h.cfg, h.redis.url);
    const { log, lines } = captureLog('warn');
    try {
      const pass = new ExpirySweep(h.ctx.redis, new Scripts(down), log, 3_600_000, GRACE_MS);
      expect(await pass.sweep()).toMatchObject({ expired: 0, failed: 0 });
      expect(lines.map((l) => l.msg)).toEqual(['expiry sweep failed']);
    } finally {
      down.disconnect();
    }
    await sweeper().sweep();
    for (const id of ids) expect(await expiryRecords(id)).toHaveLength(1);
  });

  it('lets a webhook ask for `expired`', async () => {
    const hooked = { ...TALK, name: 'talk-exp-hooked' };
    const hook = { url: 'https://crm.example.com/tessera', secret: 'x'.repeat(32) };
    await expect(
      putProducts(h.ctx.redis, [{ ...hooked, webhooks: [{ ...hook, events: ['expired'] }] }]),
    ).resolves.toEqual([expect.objectContaining({ name: hooked.name })]);
  });
});

describe("a gateway whose clock is off judges expiry by Redis' clock, as the sweep does", () => {
  /** How far off the gateway's clock is: the IDs' expiries are a third of it from Redis' now. */
  const SKEW_MS = 15 * 60_000;
  /** Runs `fn` with the gateway's clock (Date.now, which it dates and sends its scripts by) `skewMs` off. */
  async function skewed<T>(skewMs: number, fn: () => Promise<T>): Promise<T> {
    const real = Date.now.bind(Date);
    vi.spyOn(Date, 'now').mockImplementation(() => real() + skewMs);
    try {
      return await fn();
    } finally {
      vi.restoreAllMocks();
    }
  }
  /** Moves the ID's expiry to `inMs` after Redis' clock. */
  async function expiresIn(id: string, inMs: number): Promise<void> {
    await h.r.hset(idKeyOf(h, id), 'exp', String((await redisTimeMs(h.r)) + inMs));
  }
  const redeem = async (id: string, body: Record<string, unknown> = {}): Promise<JsonAnswer> => {
    const { tok } = await scannerToken(h);
    return jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { scan: uniq(), id, ...body } });
  };

  it("refuses a call on an ID past its expiry by Redis' clock from a gateway 15 minutes behind", async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    await callOn(id, 1);
    await expiredAgo(id, 1000);
    const call = newCall('late');
    const [quote, start] = await skewed(-SKEW_MS, async () => [
      await sw.request({ op: 'quote', ref: uniq('r'), id, dest: DEST }),
      await sw.request({ op: 'start', ref: uniq('r'), call, id, dest: DEST }),
    ]);
    expect(quote).toMatchObject({ op: 'error', reason: 'expired' });
    expect(start).toMatchObject({ op: 'error', reason: 'expired' });
    expect(await idFields(h, id)).toMatchObject({ act: '0', bal: '999900' });
    expect(await sweeper().sweep()).toMatchObject({ expired: 1, amount: 999_900 });
  });

  it("admits a call on an ID still valid by Redis' clock from a gateway 15 minutes ahead, and marks nothing", async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    await callOn(id, 1);
    await expiresIn(id, SKEW_MS / 3);
    const call = newCall('early');
    const [quote, start] = await skewed(SKEW_MS, async () => [
      await sw.request({ op: 'quote', ref: uniq('r'), id, dest: DEST }),
      await sw.request({ op: 'start', ref: uniq('r'), call, id, dest: DEST }),
    ]);
    expect(quote).toMatchObject({ op: 'quoted' });
    expect(start).toMatchObject({ op: 'started' });
    expect(await sw.request({ op: 'stop', ref: uniq('r'), call, sec: 2 })).toMatchObject({ op: 'stopped', cost: 200 });
    expect(await idFields(h, id)).toMatchObject({ st: 'sold', bal: '999700' });
  });

  it("credits a top-up on an ID still valid by Redis' clock from a gateway 15 minutes ahead", async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    await callOn(id, 1);
    await expiresIn(id, SKEW_MS / 3);
    const r = await skewed(SKEW_MS, () => operatorTopup(id, Date.now()));
    // Calls and scans may still use the ID (Redis' clock says so): so may the money that tops it up.
    expect(r).toMatchObject({ ok: true });
    expect(await idFields(h, id)).toMatchObject({ st: 'sold', bal: '1004900' });
    await expectBalanced();
  });

  it("redeems by Redis' clock: past the expiry or window refused behind it, inside them granted ahead of it", async () => {
    const [late, valid] = (await soldIds(h, cat.wallet, 2)) as [string, string];
    const [ticket, open] = (await soldIds(h, cat.ticket, 2)) as [string, string];
    for (const id of [late, valid]) expect((await redeem(id, { item: 'beer' })).status).toBe(200);
    await expiredAgo(late, 1000);
    await expiresIn(valid, SKEW_MS / 3);
    // A ticket's window, as its own hash may set it for one ID: closed a second ago, or opening in 5 minutes.
    const now = await redisTimeMs(h.r);
    await h.r.hset(idKeyOf(h, ticket), 'until', String(now - 1000));
    await h.r.hset(idKeyOf(h, open), 'from', String(now + SKEW_MS / 3));
    const { tok } = await scannerToken(h);
    const validate = (id: string): Promise<JsonAnswer> =>
      jsonCall(gw, 'POST', '/v1/validate', { token: tok, body: { id, item: 'beer' } });
    const behind = await skewed(-SKEW_MS, async () => [
      await validate(late),
      await redeem(late, { item: 'beer' }),
      await redeem(ticket),
    ]);
    const ahead = await skewed(SKEW_MS, async () => [
      await validate(valid),
      await redeem(valid, { item: 'beer' }),
      await redeem(open),
    ]);
    const reason = (r: JsonAnswer): string | undefined => (r.json as { error?: { reason?: string } }).error?.reason;
    expect(behind.map((r) => [r.status, reason(r)])).toEqual([
      [410, 'expired'],
      [410, 'expired'],
      [410, 'expired'],
    ]);
    expect(ahead.map((r) => [r.status, reason(r)])).toEqual([
      [200, undefined],
      [200, undefined],
      [422, 'not_yet_valid'],
    ]);
    expect(await idFields(h, valid)).toMatchObject({ st: 'sold', bal: String(WALLET_FACE - 2 * PRICE.beer) });
    expect(await idFields(h, late)).toMatchObject({ bal: String(WALLET_FACE - PRICE.beer) });
    await expectBalanced();
    // Their windows as the product has them again (none), so no later sweep here forfeits them.
    await h.r.hdel(idKeyOf(h, ticket), 'until');
    await h.r.hdel(idKeyOf(h, open), 'from');
    // And the sweep, by the same clock, forfeits what the refused wallet has left.
    expect(await sweeper(0).sweep()).toMatchObject({ expired: 1, amount: WALLET_FACE - PRICE.beer });
  });
});

describe('expiry records in export and archive', () => {
  it('are exported with the sales, archived, and counted by the checkpoint', async () => {
    const [id] = (await soldIds(h, TALK)) as [string];
    await callOn(id, 3);
    const exp = await expiredAgo(id, 1000);
    expect(await sweeper().sweep()).toMatchObject({ expired: 1, amount: 999_700 });
    const [rec] = await expiryRecords(id);

    const out = await runCliIn(h, 'export', 'sales', '--format', 'ndjson');
    expect(out.code).toBe(0);
    const rows = out.out
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, string>);
    expect(rows.filter((r) => r.type === 'expiry' && r.id === hashOf(h, id))).toEqual([
      expect.objectContaining({
        record: `${bucketOf(h, id)}/${rec!.record}`,
        amount: '999700',
        bal: '0',
        exp: String(exp),
      }),
    ]);
    const csv = await runCliIn(h, 'export', 'sales', '--format', 'csv');
    expect(csv.out).toContain(`,${hashOf(h, id)},${TALK.name},1000000,EUR,,,,expiry,999700,`);

    const before = await expectBalanced();
    await archiveRecords(h.ctx, `${h.dir}/archive`, Date.now() + 1000);
    expect(await expiryRecords(id)).toEqual([]);
    const ckpt = (await h.r.hget(keys.checkpoint(bucketOf(h, id)), hashOf(h, id)))!.split(' ');
    expect(ckpt[7]).toBe('999700');
    const after = await expectBalanced();
    expect(after.expired).toBe(before.expired);
  });
});

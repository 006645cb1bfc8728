/**
 * call_start admission against real Redis: every refusal reason,
 * duplicate starts, and call id conflicts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, mint, seedCatalog, soldIds, startHarness, talkProduct, type Harness } from '../support/harness';
import { bucketOf, idFields, idKeyOf } from '../support/redis';
import { Client, type Msg } from '../support/ws-client';
import { connectSwitch, newCall, sessionKey } from './fixtures';
import type { Gateway } from '../../src/gateway/server';
import { generateId } from '../../src/ids/idnum';
import { activateId, setIdState } from '../../src/ledger/ids';
import { productTerms, TERM_FIELDS, termsVersion } from '../../src/catalog/terms';
import { keys } from '../../src/redis/keys';
import { putPlans } from '../../src/catalog/store';

let h: Harness;
let gw: Gateway;
let c: Client;
let sw: string;
let refs = 0;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  // A block tariff: 60/6 with a fee, a minimum cost and a disconnect charge.
  await putPlans(h.ctx.redis, [
    {
      name: 'blocks',
      rates: [{ prefix: '', rate: 100, fee: 1000, initial: 60, next: 6, minCost: 8000, disconnect: 500 }],
    },
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
/** Default dest: falls to plan std's '' prefix, 100 micro/s, no fee. */
const DEST = '4912345';

function start(id: string, call = newCall(), dest = DEST): Promise<Msg> {
  return c.request({ op: 'start', ref: ref(), call, id, dest });
}
function stop(call: string, sec: number): Promise<Msg> {
  return c.request({ op: 'stop', ref: ref(), call, sec });
}

describe('call_start refusals', () => {
  it('unknown_id: a valid Luhn number that was never minted', async () => {
    const id = generateId(h.cfg.idLength);
    const call = newCall();
    const r = await start(id, call);
    expect(r).toMatchObject({ op: 'error', call, reason: 'unknown_id' });
    expect(await h.r.exists(idKeyOf(h, id))).toBe(0);
  });

  it('bad_checksum: a sold ID with its last digit changed, refused before Redis', async () => {
    const [id] = await soldIds(h, talkProduct());
    const last = Number(id!.at(-1));
    const typo = id!.slice(0, -1) + String((last + 1) % 10);
    const r = await start(typo);
    expect(r).toMatchObject({ op: 'error', reason: 'bad_checksum' });
    // The real ID is untouched and still works.
    expect((await idFields(h, id!)).act).toBe('0');
  });

  it('bad_format: wrong length or non-digits', async () => {
    for (const bad of ['1234', '12345678901234567', 'abcdefghijklmnop', '']) {
      const r = await start(bad);
      expect(r, bad).toMatchObject({ op: 'error', reason: 'bad_format' });
    }
  });

  it('accepts spaces and dashes in a typed ID', async () => {
    const [id] = await soldIds(h, talkProduct());
    const typed = `${id!.slice(0, 4)} ${id!.slice(4, 8)}-${id!.slice(8)}`;
    const call = newCall();
    expect(await start(typed, call)).toMatchObject({ op: 'started', maxSec: 10000, balance: 1_000_000 });
    expect(await stop(call, 0)).toMatchObject({ op: 'stopped', billedSec: 0, cost: 0, balance: 1_000_000 });
  });

  it('not_active: minted but never sold', async () => {
    const [id] = await mint(h, talkProduct());
    const r = await start(id!);
    expect(r).toMatchObject({ op: 'error', reason: 'not_active' });
    expect(await idFields(h, id!)).toMatchObject({ st: 'minted', act: '0' });
  });

  it('blocked: refused while blocked, admitted again once unblocked', async () => {
    const [id] = await soldIds(h, talkProduct());
    expect(await setIdState(h.ctx, id!, 'block', 'lost card')).toEqual({ ok: true, state: 'blocked' });
    expect(await start(id!)).toMatchObject({ op: 'error', reason: 'blocked' });
    expect((await idFields(h, id!)).act).toBe('0');
    expect(await setIdState(h.ctx, id!, 'unblock')).toEqual({ ok: true, state: 'sold' });
    const call = newCall();
    expect(await start(id!, call)).toMatchObject({ op: 'started', maxSec: 10000 });
    await stop(call, 0);
  });

  it('expired: exp in the past before any use', async () => {
    const [id] = await soldIds(h, talkProduct({ expiryDays: 1 }));
    await h.r.hset(idKeyOf(h, id!), 'exp', String(Date.now() - 1000));
    expect(await start(id!)).toMatchObject({ op: 'error', reason: 'expired' });
    const f = await idFields(h, id!);
    expect(f.st).toBe('expired');
    expect(f.act).toBe('0');
    expect(f.bal).toBe('1000000');
    // Stays expired even if exp were moved: the state is what counts now.
    expect(await start(id!)).toMatchObject({ op: 'error', reason: 'expired' });
  });

  it('expired: expiry counts from first use, then refuses once past', async () => {
    const [id] = await soldIds(h, talkProduct({ expiryDays: 2 }));
    expect((await idFields(h, id!)).exp).toBe('0');
    const call = newCall();
    const before = Date.now();
    expect(await start(id!, call)).toMatchObject({ op: 'started' });
    const after = Date.now();
    const f = await idFields(h, id!);
    const first = Number(f.first);
    expect(first).toBeGreaterThanOrEqual(before);
    expect(first).toBeLessThanOrEqual(after);
    expect(Number(f.exp) - first).toBe(2 * 86_400_000);
    expect(await stop(call, 3)).toMatchObject({ billedSec: 3, cost: 300, balance: 999_700 });
    // A second call does not move the expiry.
    const call2 = newCall();
    await start(id!, call2);
    expect((await idFields(h, id!)).exp).toBe(f.exp);
    await stop(call2, 0);

    await h.r.hset(idKeyOf(h, id!), 'exp', String(Date.now() - 1));
    expect(await start(id!)).toMatchObject({ op: 'error', reason: 'expired' });
    expect(await idFields(h, id!)).toMatchObject({ st: 'expired', bal: '999700', act: '0' });
  });

  it('exhausted: a sold ID whose balance is 0', async () => {
    const [id] = await soldIds(h, talkProduct());
    await h.r.hset(idKeyOf(h, id!), 'bal', '0');
    expect(await start(id!)).toMatchObject({ op: 'error', reason: 'exhausted' });
    expect((await idFields(h, id!)).act).toBe('0');
  });

  it('exhausted: an ID in state exhausted', async () => {
    const [id] = await soldIds(h, talkProduct());
    await h.r.hset(idKeyOf(h, id!), 'st', 'exhausted');
    expect(await start(id!)).toMatchObject({ op: 'error', reason: 'exhausted' });
  });

  it('concurrent_limit: a second call on a one-call ID, free again after stop', async () => {
    const [id] = await soldIds(h, talkProduct({ maxCalls: 1 }));
    const a = newCall();
    expect(await start(id!, a)).toMatchObject({ op: 'started', maxSec: 10000 });
    const b = newCall();
    expect(await start(id!, b)).toMatchObject({ op: 'error', call: b, reason: 'concurrent_limit' });
    expect((await idFields(h, id!)).act).toBe('1');
    expect(await stop(a, 2)).toMatchObject({ billedSec: 2, cost: 200, balance: 999_800 });
    expect((await idFields(h, id!)).act).toBe('0');
    const d = newCall();
    expect(await start(id!, d)).toMatchObject({ op: 'started', maxSec: 9998, balance: 999_800 });
    await stop(d, 0);
  });

  it('an ID keeps no copy of its terms: its bucket keeps the version it names, and calls keep to it after a change', async () => {
    const one = talkProduct({ name: 'terms-kept', maxCalls: 1 });
    // The same product after the catalog changed it: IDs minted since get another version.
    const two = { ...one, maxCalls: 2 };
    const [a] = await soldIds(h, one);
    const [b] = await soldIds(h, two);
    const own = await h.r.hgetall(idKeyOf(h, a!));
    for (const f of TERM_FIELDS) expect(own, f).not.toHaveProperty(f);
    expect(own.pt).toBe(termsVersion(productTerms(one)));
    expect(await h.r.hgetall(keys.productTerms(bucketOf(h, a!), own.pt!))).toEqual(
      Object.fromEntries(
        productTerms(one)
          .map(String)
          .flatMap((v, i, all) => (i % 2 ? [] : [[v, all[i + 1]]])),
      ),
    );
    expect((await h.r.hgetall(idKeyOf(h, b!))).pt).toBe(termsVersion(productTerms(two)));
    // A second call is past a's limit and within b's.
    const [a1, b1, b2] = [newCall(), newCall(), newCall()];
    expect(await start(a!, a1)).toMatchObject({ op: 'started' });
    expect(await start(a!)).toMatchObject({ op: 'error', reason: 'concurrent_limit' });
    expect(await start(b!, b1)).toMatchObject({ op: 'started' });
    expect(await start(b!, b2)).toMatchObject({ op: 'started' });
    for (const call of [a1, b1, b2]) expect(await stop(call, 0)).toMatchObject({ op: 'stopped' });
  });

  it('an ID minted with its terms in its own hash, before they moved out, calls under them', async () => {
    const p = talkProduct({ name: 'terms-own', maxCalls: 1 });
    const [id] = await soldIds(h, p);
    const key = idKeyOf(h, id!);
    await h.r.hdel(key, 'pt');
    await h.r.hset(key, ...productTerms(p).map(String));
    const call = newCall();
    expect(await start(id!, call)).toMatchObject({ op: 'started', maxSec: 10000, balance: 1_000_000 });
    expect(await start(id!)).toMatchObject({ op: 'error', reason: 'concurrent_limit' });
    expect(await stop(call, 5)).toMatchObject({ op: 'stopped', billedSec: 5, cost: 500 });
  });

  it('concurrent_limit with maxCalls 2: the third call is refused', async () => {
    const [id] = await soldIds(h, talkProduct({ maxCalls: 2 }));
    const a = newCall();
    const b = newCall();
    const x = newCall();
    expect(await start(id!, a)).toMatchObject({ op: 'started' });
    expect(await start(id!, b)).toMatchObject({ op: 'started' });
    expect(await start(id!, x)).toMatchObject({ op: 'error', reason: 'concurrent_limit' });
    expect((await idFields(h, id!)).act).toBe('2');
    await stop(a, 0);
    await stop(b, 0);
    expect((await idFields(h, id!)).act).toBe('0');
  });

  it("concurrent_limit counts the calls themselves: a lost call's count and hold are given back at once", async () => {
    const [id] = await soldIds(h, talkProduct({ maxCalls: 1 }));
    const lost = newCall();
    expect(await start(id!, lost)).toMatchObject({ op: 'started', maxSec: 10000 });
    // Its session lost (a failover's lost write): the ID's count and hold stay, and no stop or reap
    // gives them back (the live set still names the session, the reaper finds nothing to close).
    await h.r.del(sessionKey(h, id!, sw, lost));
    expect(await idFields(h, id!)).toMatchObject({ act: '1', free: '0' });
    const next = newCall();
    expect(await start(id!, next)).toMatchObject({ op: 'started', maxSec: 10000, balance: 1_000_000 });
    expect(await idFields(h, id!)).toMatchObject({ act: '1' });
    // Counted right now: a further call is refused as the limit says, its count untouched.
    expect(await start(id!)).toMatchObject({ op: 'error', reason: 'concurrent_limit' });
    expect(await stop(next, 3)).toMatchObject({ op: 'stopped', billedSec: 3, cost: 300, balance: 999_700 });
    expect(await idFields(h, id!)).toMatchObject({ act: '0', free: '999700' });
  });

  it("a refusal counts an ID's calls at most once a minute: each would read the whole bucket", async () => {
    const [id] = await soldIds(h, talkProduct({ maxCalls: 1 }));
    const lost = newCall();
    expect(await start(id!, lost)).toMatchObject({ op: 'started' });
    // Refused while the call is live: its calls were counted just now.
    expect(await start(id!)).toMatchObject({ op: 'error', reason: 'concurrent_limit' });
    const checked = Number((await idFields(h, id!)).actchk);
    expect(checked).toBeGreaterThan(0);
    await h.r.del(sessionKey(h, id!, sw, lost));
    // Within the minute a refusal takes the count as it stands, without reading the bucket again.
    expect(await start(id!)).toMatchObject({ op: 'error', reason: 'concurrent_limit' });
    expect(Number((await idFields(h, id!)).actchk)).toBe(checked);
    // A minute on, the next start counts again and finds the lost call gone.
    await h.r.hset(idKeyOf(h, id!), 'actchk', String(checked - 60_000));
    const next = newCall();
    expect(await start(id!, next)).toMatchObject({ op: 'started', balance: 1_000_000 });
    expect(await stop(next, 0)).toMatchObject({ op: 'stopped' });
  });

  it('concurrent_limit with maxCalls 2 and one call lost: the live one keeps its hold, the lost one gives its back', async () => {
    const [id] = await soldIds(h, talkProduct({ maxCalls: 2 }));
    const [live, lost] = [newCall(), newCall()];
    expect(await start(id!, live)).toMatchObject({ op: 'started' });
    const held = 1_000_000 - Number((await idFields(h, id!)).free);
    expect(held).toBeGreaterThan(0);
    expect(await start(id!, lost)).toMatchObject({ op: 'started' });
    await h.r.del(sessionKey(h, id!, sw, lost));
    const third = newCall();
    expect(await start(id!, third)).toMatchObject({ op: 'started' });
    expect((await idFields(h, id!)).act).toBe('2');
    // What the two live calls hold, and nothing for the lost one: each holds its first grant.
    expect(1_000_000 - Number((await idFields(h, id!)).free)).toBe(2 * held);
    await stop(live, 0);
    await stop(third, 0);
    expect(await idFields(h, id!)).toMatchObject({ act: '0', free: '1000000' });
  });

  it("insufficient_balance with calls counted counts them too: a lost call's hold is given back", async () => {
    // 70 s at 100/s, two calls at a time: each call holds a 60 s grant slice.
    const [id] = await soldIds(h, talkProduct({ name: 'talk-2x70s', face: 7000, price: 7000, maxCalls: 2 }));
    const lost = newCall();
    expect(await start(id!, lost)).toMatchObject({ op: 'started', maxSec: 70 });
    expect(await idFields(h, id!)).toMatchObject({ act: '1', free: '1000' });
    // Its session lost (a failover's lost write): its count and its 6,000 held stay behind.
    await h.r.del(sessionKey(h, id!, sw, lost));
    const next = newCall();
    expect(await start(id!, next)).toMatchObject({ op: 'started', maxSec: 10 });
    expect(await stop(next, 10)).toMatchObject({ op: 'stopped', billedSec: 10, cost: 1000, balance: 6000 });
    // Nothing else is free, and the ID is under its limit: counted as it stands, it was refused
    // every call, its 6,000 held by a call that no longer exists, until it expired.
    const after = newCall();
    expect(await start(id!, after)).toMatchObject({ op: 'started', maxSec: 60, balance: 6000 });
    expect(await stop(after, 0)).toMatchObject({ op: 'stopped' });
    expect(await idFields(h, id!)).toMatchObject({ act: '0', free: '6000' });
  });

  it('no_rate: the ID plan has no rate for the destination', async () => {
    const [id] = await soldIds(h, talkProduct({ plan: 'nowhere' }));
    expect(await start(id!, newCall(), '4912345')).toMatchObject({ op: 'error', reason: 'no_rate' });
    expect((await idFields(h, id!)).act).toBe('0');
    // The same ID does have a rate to 999...
    const call = newCall();
    expect(await start(id!, call, '9991234')).toMatchObject({ op: 'started', rate: 1, fee: 0, maxSec: 1_000_000 });
    await stop(call, 0);
  });

  it('insufficient_balance: balance above zero but below fee + one second', async () => {
    // dest 449...: 1000 micro/s plus a 5000 connection fee.
    const [id] = await soldIds(h, talkProduct({ face: 5999 }));
    expect(await start(id!, newCall(), '4491234')).toMatchObject({ op: 'error', reason: 'insufficient_balance' });
    expect(await idFields(h, id!)).toMatchObject({ st: 'sold', bal: '5999', act: '0' });
    // One micro-unit more buys exactly one second.
    const [id2] = await soldIds(h, talkProduct({ face: 6000 }));
    const call = newCall();
    expect(await start(id2!, call, '4491234')).toMatchObject({
      op: 'started',
      maxSec: 1,
      balance: 6000,
      rate: 1000,
      fee: 5000,
    });
    await stop(call, 0);
  });

  it('insufficient_balance: on a block tariff, below the whole first block, minimum cost and disconnect charge', async () => {
    // The fee and one second (1100) are far from enough: the first block is
    // max(1000 + 60 × 100, 8000) = 8000, plus the disconnect charge 500.
    const [id] = await soldIds(h, talkProduct({ plan: 'blocks', face: 8499 }));
    expect(await start(id!)).toMatchObject({ op: 'error', reason: 'insufficient_balance' });
    const [id2] = await soldIds(h, talkProduct({ plan: 'blocks', face: 8500 }));
    const call = newCall();
    // 66 s cost 1000 + 6600 = 7600, which the minimum cost raises to 8000: still paid.
    expect(await start(id2!, call)).toMatchObject({ op: 'started', maxSec: 66, fee: 1000 });
    expect(await stop(call, 1)).toMatchObject({ op: 'stopped', billedSec: 60, cost: 8500, balance: 0 });
  });

  it('insufficient_balance: balance below one second at the rate', async () => {
    const [id] = await soldIds(h, talkProduct({ face: 99 }));
    expect(await start(id!)).toMatchObject({ op: 'error', reason: 'insufficient_balance' });
  });

  it('started answers maxSec = floor((balance - fee) / rate) with the longest prefix', async () => {
    const [id] = await soldIds(h, talkProduct({ face: 1_234_567 }));
    const cases: [string, number, number, number][] = [
      ['4912345', 100, 0, 12345], // '' prefix
      ['4420000', 200, 0, 6172], // '44'
      ['+4491234', 1000, 5000, 1229], // '449', leading + stripped
    ];
    for (const [dest, rate, fee, maxSec] of cases) {
      const call = newCall();
      expect(await start(id!, call, dest), dest).toMatchObject({
        op: 'started',
        call,
        rate,
        fee,
        maxSec,
        balance: 1_234_567,
      });
      await stop(call, 0);
    }
  });
});

describe('the dialled number', () => {
  it('the international prefix + or 00 is taken off: both rate like the bare country code', async () => {
    const [id] = await soldIds(h, talkProduct({ face: 1_234_567 }));
    for (const dest of ['4491234', '+4491234', '004491234']) {
      const call = newCall();
      expect(await start(id!, call, dest), dest).toMatchObject({ op: 'started', rate: 1000, fee: 5000, maxSec: 1229 });
      await stop(call, 0);
    }
  });

  it('a national trunk 0, or nothing after the prefix, is refused as bad_value, never rated at the catch-all', async () => {
    const [id] = await soldIds(h, talkProduct({ face: 1_234_567 }));
    for (const dest of ['04491234', '+04491234', '0004491234', '00', '0', '+0']) {
      const call = newCall();
      expect(await start(id!, call, dest), dest).toMatchObject({
        op: 'error',
        call,
        reason: 'bad_value',
        message: expect.stringContaining('international format') as unknown,
      });
      // Nothing was kept for the refused call: the same call id starts once dialled right.
      expect(await start(id!, call, '4491234')).toMatchObject({ op: 'started', call, rate: 1000 });
      await stop(call, 0);
    }
  });
});

describe('duplicate start and call id conflicts', () => {
  it('a repeated start returns the first answer and takes no second slot', async () => {
    const [id] = await soldIds(h, talkProduct({ maxCalls: 1 }));
    const call = newCall();
    const first = await start(id!, call);
    expect(first).toMatchObject({ op: 'started', call, maxSec: 10000, balance: 1_000_000, rate: 100, fee: 0 });
    const again = await start(id!, call);
    expect(again).toMatchObject({ op: 'started', call, maxSec: 10000, balance: 1_000_000, rate: 100, fee: 0 });
    expect((await idFields(h, id!)).act).toBe('1');
    expect(await h.r.zcard(`ts:{b${bucketOf(h, id!)}}:live`)).toBeGreaterThanOrEqual(1);

    // Even after billing, a retry answers what the first start said.
    const t = await c.request({ op: 'tick', ref: ref(), call, sec: 10 });
    expect(t).toMatchObject({ op: 'ticked', balance: 999_000, secLeft: 9990 });
    expect(await start(id!, call)).toMatchObject({ op: 'started', maxSec: 10000, balance: 1_000_000 });
    expect(await idFields(h, id!)).toMatchObject({ act: '1', bal: '999000' });

    // Only one slot is held: another call is refused, so the limit still counts one.
    expect(await start(id!, newCall())).toMatchObject({ op: 'error', reason: 'concurrent_limit' });
    expect(await stop(call, 10)).toMatchObject({ billedSec: 10, cost: 1000, balance: 999_000 });
    expect((await idFields(h, id!)).act).toBe('0');
  });

  it('a start repeated after the stop is refused as call_ended and changes nothing', async () => {
    const [id] = await soldIds(h, talkProduct());
    const call = newCall();
    await start(id!, call);
    await stop(call, 4);
    expect(await start(id!, call)).toMatchObject({ op: 'error', call, reason: 'call_ended' });
    expect(await idFields(h, id!)).toMatchObject({ act: '0', bal: '999600' });
  });

  it('same call id, same ID, other destination -> call_conflict', async () => {
    const [id] = await soldIds(h, talkProduct());
    const call = newCall();
    await start(id!, call, '4912345');
    expect(await start(id!, call, '4420000')).toMatchObject({ op: 'error', call, reason: 'call_conflict' });
    expect((await idFields(h, id!)).act).toBe('1');
    await stop(call, 0);
  });

  it('same call id, other mode -> call_conflict; the replay of the first answers in its own mode', async () => {
    const [id] = await soldIds(h, talkProduct());
    const [tickCall, quotaCall] = [newCall(), newCall()];
    const startIn = (call: string, mode?: string): Promise<Msg> =>
      c.request({ op: 'start', ref: ref(), call, id, dest: DEST, ...(mode ? { mode } : {}) });
    expect(await startIn(tickCall)).toMatchObject({ op: 'started' });
    expect(await startIn(tickCall, 'quota')).toMatchObject({ op: 'error', reason: 'call_conflict' });
    expect((await startIn(tickCall, 'tick')).validity).toBeUndefined();
    await stop(tickCall, 0);
    expect(await startIn(quotaCall, 'quota')).toMatchObject({ op: 'started', validity: 600 });
    expect(await startIn(quotaCall)).toMatchObject({ op: 'error', reason: 'call_conflict' });
    expect(await startIn(quotaCall, 'quota')).toMatchObject({ op: 'started', validity: 600 });
    await stop(quotaCall, 0);
  });

  /** Two sold IDs of a fresh mint: in the same bucket or in different ones. */
  async function pair(sameBucket: boolean): Promise<[string, string]> {
    const product = talkProduct();
    const ids = await mint(h, product, 200);
    let found: [string, string] | undefined;
    for (let i = 0; i < ids.length && !found; i++) {
      for (let j = i + 1; j < ids.length && !found; j++) {
        if ((bucketOf(h, ids[i]!) === bucketOf(h, ids[j]!)) === sameBucket) found = [ids[i]!, ids[j]!];
      }
    }
    if (!found) throw new Error('no pair found');
    for (const id of found) expect(await activateId(h.ctx, id, { price: product.price })).toMatchObject({ ok: true });
    return found;
  }

  async function conflictCase(sameBucket: boolean): Promise<void> {
    const [idA, idB] = await pair(sameBucket);
    const call = newCall();
    expect(await start(idA, call)).toMatchObject({ op: 'started', balance: 1_000_000 });
    expect(await start(idB, call)).toMatchObject({ op: 'error', call, reason: 'call_conflict' });
    // B was not admitted, and the call still belongs to A.
    expect(await idFields(h, idB)).toMatchObject({ act: '0', bal: '1000000' });
    // Session keys are named by bucket, switch and call: in another bucket, B must not have one.
    if (!sameBucket) expect(await h.r.exists(sessionKey(h, idB, sw, call))).toBe(0);
    expect(await h.r.hget(sessionKey(h, idA, sw, call), 'id')).toBe(idKeyOf(h, idA));
    const t = await c.request({ op: 'tick', ref: ref(), call, sec: 5 });
    expect(t).toMatchObject({ op: 'ticked', call, balance: 999_500, secLeft: 9995 });
    expect(await stop(call, 5)).toMatchObject({ op: 'stopped', billedSec: 5, cost: 500, balance: 999_500 });
    expect(await idFields(h, idA)).toMatchObject({ act: '0', bal: '999500' });
    expect(await idFields(h, idB)).toMatchObject({ act: '0', bal: '1000000' });
  }

  it('same call id, other ID in the same bucket -> call_conflict', async () => {
    await conflictCase(true);
  });

  it('same call id, other ID in another bucket -> call_conflict', async () => {
    await conflictCase(false);
  });

  it('call ids are per switch: another switch may use the same call id', async () => {
    const [idA, idB] = await soldIds(h, talkProduct(), 2);
    const { c: other } = await connectSwitch(h, gw.port);
    try {
      const call = newCall();
      expect(await start(idA!, call)).toMatchObject({ op: 'started' });
      expect(await other.request({ op: 'start', ref: 1, call, id: idB, dest: DEST })).toMatchObject({
        op: 'started',
        balance: 1_000_000,
      });
      expect(await other.request({ op: 'stop', ref: 2, call, sec: 7 })).toMatchObject({
        billedSec: 7,
        cost: 700,
        balance: 999_300,
      });
      expect(await stop(call, 3)).toMatchObject({ billedSec: 3, cost: 300, balance: 999_700 });
    } finally {
      await other.close();
    }
  });
});

/**
 * Price enquiry over the switch WebSocket: `quote` answers what a start would
 * grant (rate, fee, maxSec) without starting anything, refuses as a start
 * would, writes nothing, and counts unknown IDs as guesses.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, mint, seedCatalog, soldIds, startHarness, talkProduct, type Harness } from '../support/harness';
import { metricsText, sample } from '../support/metrics';
import { idFields, idKeyOf } from '../support/redis';
import { Client, type Msg } from '../support/ws-client';
import { connectSwitch, newCall } from './fixtures';
import type { Gateway } from '../../src/gateway/server';
import { generateId } from '../../src/ids/idnum';
import { setIdState } from '../../src/ledger/ids';

let h: Harness;
let gw: Gateway;
let c: Client;
let refs = 0;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  gw = await gateway(h);
  ({ c } = await connectSwitch(h, gw.port));
});
afterAll(async () => {
  await c?.close();
  await gw?.close();
  await h?.stop();
});

const ref = (): number => ++refs;

function quote(id: string, dest: string, on = c): Promise<Msg> {
  return on.request({ op: 'quote', ref: ref(), id, dest });
}

/** Every key Redis holds, with its whole value: what "nothing was written" is checked against. */
async function dump(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const k of (await h.r.keys('*')).sort()) {
    const type = await h.r.type(k);
    const v =
      type === 'hash'
        ? JSON.stringify(Object.entries(await h.r.hgetall(k)).sort())
        : type === 'string'
          ? ((await h.r.get(k)) ?? '')
          : type === 'zset'
            ? JSON.stringify(await h.r.zrange(k, '0', '-1', 'WITHSCORES'))
            : type === 'set'
              ? JSON.stringify((await h.r.smembers(k)).sort())
              : type === 'stream'
                ? String(await h.r.xlen(k))
                : type;
    out.set(k, v);
  }
  return out;
}

describe('quote', () => {
  it('answers rate, fee, maxSec, balance and currency, and a start right after is granted the same maxSec', async () => {
    // dest 449...: 1000 micro/s plus a 5000 connection fee; 1,000,000 buys (1,000,000 - 5000) / 1000 = 995 s.
    const [id] = await soldIds(h, talkProduct());
    const q = await quote(id!, '+4491234');
    expect(q).toEqual({
      op: 'quoted',
      ref: q.ref,
      rate: 1000,
      fee: 5000,
      maxSec: 995,
      balance: 1_000_000,
      currency: 'EUR',
    });
    const call = newCall();
    const s = await c.request({ op: 'start', ref: ref(), call, id: id!, dest: '004491234' });
    expect(s).toMatchObject({ op: 'started', maxSec: q.maxSec, rate: q.rate, fee: q.fee, balance: q.balance });
    await c.request({ op: 'stop', ref: ref(), call, sec: 7 });
    // After a call, the quote follows the balance: 1,000,000 - 5000 - 7000 = 988,000 -> 983 s.
    expect(await quote(id!, '4491234')).toMatchObject({ op: 'quoted', balance: 988_000, maxSec: 983 });
    // A cheaper destination of the same ID: 100 micro/s, no fee.
    expect(await quote(id!, '4912345')).toMatchObject({ op: 'quoted', rate: 100, fee: 0, maxSec: 9880 });
    // The same answer over MessagePack.
    const { c: bin } = await connectSwitch(h, gw.port, { binary: true });
    const qb = await quote(id!, '4912345', bin);
    expect(qb).toEqual({
      op: 'quoted',
      ref: qb.ref,
      rate: 100,
      fee: 0,
      maxSec: 9880,
      balance: 988_000,
      currency: 'EUR',
    });
    await bin.close();
  });

  it('a balance that does not buy one second is quoted maxSec 0, where a start is refused', async () => {
    const [id] = await soldIds(h, talkProduct({ face: 5999 }));
    expect(await quote(id!, '4491234')).toMatchObject({
      op: 'quoted',
      maxSec: 0,
      balance: 5999,
      rate: 1000,
      fee: 5000,
    });
    expect(await c.request({ op: 'start', ref: ref(), call: newCall(), id: id!, dest: '4491234' })).toMatchObject({
      op: 'error',
      reason: 'insufficient_balance',
    });
    await h.r.hset(idKeyOf(h, id!), 'bal', '0', 'st', 'exhausted');
    expect(await quote(id!, '4912345')).toMatchObject({ op: 'quoted', maxSec: 0, balance: 0 });
  });

  it('refuses as a start would, and a quote changes nothing in Redis', async () => {
    const [sold, blocked, expired, ticket] = await soldIds(h, talkProduct({ expiryDays: 1 }), 4);
    const [minted] = await mint(h, talkProduct());
    const [nowhere] = await soldIds(h, talkProduct({ plan: 'nowhere' }));
    expect(await setIdState(h.ctx, blocked!, 'block', 'lost card')).toEqual({ ok: true, state: 'blocked' });
    await h.r.hset(idKeyOf(h, expired!), 'exp', String(Date.now() - 1000));
    await h.r.hset(idKeyOf(h, ticket!), 'kind', 'entry');
    const last = Number(sold!.at(-1));
    const typo = sold!.slice(0, -1) + String((last + 1) % 10);

    const before = await dump();
    const cases: [string, string, string][] = [
      [generateId(h.cfg.idLength), '4912345', 'unknown_id'],
      ['1234', '4912345', 'bad_format'],
      [typo, '4912345', 'bad_checksum'],
      [minted!, '4912345', 'not_active'],
      [blocked!, '4912345', 'blocked'],
      [expired!, '4912345', 'expired'],
      [ticket!, '4912345', 'wrong_kind'],
      [nowhere!, '4912345', 'no_rate'],
      [sold!, '0612345678', 'bad_value'],
    ];
    for (const [id, dest, reason] of cases) {
      const r = await quote(id, dest);
      expect(r, reason).toEqual({ op: 'error', ref: r.ref, reason, message: expect.any(String) });
    }
    expect((await quote(sold!, '0612345678')).message).toMatch(/international format/);
    // A quote of a sold ID, even the first one of an ID whose expiry counts from first use, writes nothing.
    expect(await quote(sold!, '4912345')).toMatchObject({ op: 'quoted', maxSec: 10_000 });
    expect((await idFields(h, sold!)).exp).toBe('0');
    // The one key a quote may write: the guess counter of the unknown_id above. Nothing else moved.
    const after = await dump();
    const guessKeys = [...after.keys()].filter((k) => !before.has(k));
    expect(guessKeys).toHaveLength(1);
    expect(guessKeys[0]).toMatch(/^ts:\{b\d+\}:guess:sw:/);
    for (const k of guessKeys) after.delete(k);
    expect(after).toEqual(before);
    // The expired ID is refused, but (read-only) still says sold until a start finds it expired.
    expect((await idFields(h, expired!)).st).toBe('sold');
  });

  it('unknown IDs asked by quote count as guesses: past the limit quotes and starts are throttled', async () => {
    const LIMIT = 2;
    const g = await gateway(h, { guessLimit: LIMIT, guessWindowSec: 60 });
    try {
      const [id] = await soldIds(h, talkProduct());
      const { c: s } = await connectSwitch(h, g.port);
      for (let i = 0; i <= LIMIT; i++)
        expect(await quote(generateId(h.cfg.idLength), '4912345', s)).toMatchObject({ reason: 'unknown_id' });
      const q = await quote(id!, '4912345', s);
      expect(q).toEqual({
        op: 'error',
        ref: q.ref,
        reason: 'throttled',
        message: 'quote refused: throttled',
        retryAfter: expect.any(Number),
      });
      expect(await s.request({ op: 'start', ref: 's', call: newCall(), id: id!, dest: '4912345' })).toMatchObject({
        op: 'error',
        reason: 'throttled',
      });
      const m = await metricsText(g.port);
      expect(sample(m, 'tessera_unknown_id_starts_total')).toBe(LIMIT + 1);
      expect(sample(m, 'tessera_switch_throttled_total')).toBe(1);
      await s.close();
    } finally {
      await g.close();
    }
  });

  it('a burst of guesses in one frame does not answer an ID hidden behind the limit', async () => {
    const LIMIT = 2;
    const g = await gateway(h, { guessLimit: LIMIT, guessWindowSec: 60 });
    try {
      const [id] = await soldIds(h, talkProduct());
      const { c: s } = await connectSwitch(h, g.port);
      // Sent together, all at once: a quote answered for the real ID would tell a guesser it exists.
      const burst: Msg[] = Array.from({ length: 40 }, (_, i) => ({
        op: 'quote',
        ref: `g${i}`,
        id: generateId(h.cfg.idLength),
        dest: '4912345',
      }));
      burst.push({ op: 'quote', ref: 'hit', id: id!, dest: '4912345' });
      const answers = await s.requestAll(burst);
      expect(answers.filter((a) => a.reason === 'unknown_id')).toHaveLength(LIMIT + 1);
      expect(answers.find((a) => a.ref === 'hit')).toMatchObject({ op: 'error', reason: 'throttled' });
      await s.close();
    } finally {
      await g.close();
    }
  });
});

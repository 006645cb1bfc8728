/**
 * Buying an ID over the sales API against real Redis and the sandbox card
 * company over HTTP: the catalog, approvals, every decline, idempotent retries
 * and who may call.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { putPlans, tokenHash } from '../../src/catalog/store';
import type { EntryProduct, GoodsProduct, ServiceProduct } from '../../src/catalog/schema';
import type { Gateway } from '../../src/gateway/server';
import { luhnValid } from '../../src/ids/luhn';
import { messageOf } from '../../src/protocol/reasons';
import { keys } from '../../src/redis/keys';
import { HAND_BACK_RETRY_MS } from '../../src/sales/hand-backs';
import {
  gateway,
  mint,
  seedCatalog,
  soldIds,
  startHarness,
  token,
  withGateway,
  type Harness,
} from '../support/harness';
import { Client } from '../support/ws-client';
import { formSession, http, jsonCall, postPageForm } from '../support/http';
import { metricsText, sample } from '../support/metrics';
import { hashOf, idFields } from '../support/redis';
import { sleep, until } from '../support/wait';
import {
  addMember,
  addProducts,
  badLuhn,
  buy,
  callWith,
  buyForm,
  cardNumber,
  commissionOf,
  newKey,
  NO_FAULTS,
  payment,
  PIN,
  product,
  purchaseBody,
  purchaseRef,
  recordsOf,
  reservations,
  saleRecords,
  setFaults,
  stock,
  usedCredit,
  type Buyer,
} from './fixtures';

let h: Harness;
let gw: Gateway;
const SALES = 'shop-1';
let salesTok: string;

const TALK = product('talk-5', { title: 'Talk 5', face: 5_000_000, price: 5_500_000 });
/** Price above face and not a round number, so commission rounding shows. */
const SOLD = product('talk-a', { face: 1_000_000, price: 1_234_567 });
const DECL = product('talk-d', { face: 2_000_000, price: 2_000_000 });
const IDEM = product('talk-i', { face: 1_000_000, price: 1_000_000 });
const GOODS: GoodsProduct = {
  name: 'wallet',
  kind: 'goods',
  currency: 'EUR',
  face: 10_000_000,
  price: 9_000_000,
  venues: [],
  expiryDays: 365,
  webShop: true,
};
const TICKET: EntryProduct = {
  name: 'ticket',
  kind: 'entry',
  currency: 'EUR',
  price: 30_000_000,
  entries: 2,
  venues: ['arena'],
  gates: [],
  reentry: false,
  expiryDays: 0,
  webShop: true,
};
const SAUNA: ServiceProduct = {
  name: 'sauna',
  kind: 'service',
  currency: 'USD',
  price: 12_000_000,
  service: 'sauna',
  uses: 5,
  venues: [],
  expiryDays: 365,
  webShop: true,
};

/** The sandbox's reference for a purchase made with this token name and key. */
const refOf = (tokName: string, key: string): string => purchaseRef(h, tokName, key);

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK, SOLD, DECL, IDEM, GOODS, TICKET, SAUNA]);
  await mint(h, TALK, 7);
  await mint(h, SOLD, 3);
  await mint(h, DECL, 5);
  await mint(h, IDEM, 18);
  await mint(h, GOODS, 2);
  await mint(h, SAUNA, 1);
  gw = await gateway(h);
  salesTok = await token(h, 'sales', SALES);
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});
beforeEach(async () => {
  await setFaults(h, NO_FAULTS);
});

describe('GET /v1/products', () => {
  it('lists every product on public sale with kind, face, price, currency, talk time and stock; no token needed', async () => {
    const r = await http(gw, 'GET', '/v1/products');
    expect(r.status).toBe(200);
    const byName = new Map((r.json.products as { name: string }[]).map((p) => [p.name, p]));
    expect(byName.size).toBe(7);
    // Plan std's catch-all rate is 100 micro/s: 5.00 EUR buys 50 000 s.
    expect(byName.get('talk-5')).toEqual({
      name: 'talk-5',
      title: 'Talk 5',
      kind: 'talk',
      face: 5_000_000,
      price: 5_500_000,
      currency: 'EUR',
      talkTimeSec: 50_000,
      available: 7,
    });
    expect(byName.get('talk-a')).toEqual({
      name: 'talk-a',
      title: 'talk-a',
      kind: 'talk',
      face: 1_000_000,
      price: 1_234_567,
      currency: 'EUR',
      talkTimeSec: 10_000,
      available: 3,
    });
    expect(byName.get('wallet')).toEqual({
      name: 'wallet',
      title: 'wallet',
      kind: 'goods',
      face: 10_000_000,
      price: 9_000_000,
      currency: 'EUR',
      available: 2,
    });
    expect(byName.get('ticket')).toEqual({
      name: 'ticket',
      title: 'ticket',
      kind: 'entry',
      entries: 2,
      price: 30_000_000,
      currency: 'EUR',
      available: 0,
    });
    expect(byName.get('sauna')).toEqual({
      name: 'sauna',
      title: 'sauna',
      kind: 'service',
      service: 'sauna',
      uses: 5,
      price: 12_000_000,
      currency: 'USD',
      available: 1,
    });
  });

  it("talkTimeSec is what a call at the plan's catch-all rate is granted: fee, blocks and disconnect charge included", async () => {
    await putPlans(h.ctx.redis, [
      {
        name: 'card-blocks',
        rates: [
          { prefix: '', rate: 100, fee: 5000, initial: 60, next: 60, disconnect: 1000 },
          { prefix: '44', rate: 1, fee: 0 },
        ],
      },
    ]);
    const card = product('talk-blocks', { face: 1_000_000, plan: 'card-blocks' });
    await addProducts(h, gw, [card]);
    await mint(h, card, 1);
    const listed = (await http(gw, 'GET', '/v1/products')).json.products.find(
      (p: { name: string }) => p.name === 'talk-blocks',
    );
    // 1 000 000 less the 1000 disconnect charge and the 5000 fee pays 9940 s at 100 a second: in
    // 60-second blocks, 9900 (the face over the rate alone would say 10 000).
    expect(listed).toMatchObject({ face: 1_000_000, talkTimeSec: 9900 });
    // What the buyer then gets: a call to a destination at the catch-all rate is granted as much.
    const [id] = await soldIds(h, card);
    const c = await Client.connect(gw.port, await token(h, 'switch'));
    try {
      const started = await c.request({ op: 'start', ref: 1, call: newKey('c'), id, dest: '4912345' });
      expect(started).toMatchObject({ op: 'started', maxSec: 9900 });
    } finally {
      await c.close();
    }
  });

  it('the product list and the buy page price talk times in Redis at most once a while, not per request', async () => {
    await withGateway(h, {}, async (g) => {
      let priced = 0;
      const run = g.ctx.scripts.run.bind(g.ctx.scripts);
      vi.spyOn(g.ctx.scripts, 'run').mockImplementation((name, k, a) => {
        if (name === 'call_talk_time') priced++;
        return run(name, k, a);
      });
      const first = (await http(g, 'GET', '/v1/products')).json.products;
      expect(first.some((p: { talkTimeSec?: number }) => p.talkTimeSec !== undefined)).toBe(true);
      // Anyone may ask, as often as they like: Redis prices once in TALK_TIME_MAX_AGE_MS.
      for (let i = 0; i < 4; i++) expect((await http(g, 'GET', '/v1/products')).json.products).toEqual(first);
      expect((await http(g, 'GET', '/buy')).status).toBe(200);
      expect(priced).toBe(1);
    });
  });

  it('available follows the stock: a sale takes one off', async () => {
    const buyer = await addMember(h, 100_000_000);
    const before = (await http(gw, 'GET', '/v1/products')).json.products.find(
      (p: { name: string }) => p.name === 'talk-5',
    ).available;
    expect(before).toBe(await stock(h, 'talk-5'));
    expect((await buy(gw, salesTok, newKey(), 'talk-5', buyer)).status).toBe(200);
    const after = (await http(gw, 'GET', '/v1/products')).json.products.find(
      (p: { name: string }) => p.name === 'talk-5',
    ).available;
    expect(after).toBe(before - 1);
    expect(after).toBe(await stock(h, 'talk-5'));
  });
});

describe('approval', () => {
  it('answers the ID and its links, sells it with the PIN, records the sale, charges the member, and the ID calls', async () => {
    const buyer = await addMember(h, 10_000_000);
    const key = newKey('ok');
    const stockBefore = await stock(h, 'talk-a');
    const r = await buy(gw, salesTok, key, 'talk-a', buyer);
    expect(r.status).toBe(200);
    expect(r.type).toBe('application/json');
    expect(r.json).toEqual({
      id: expect.stringMatching(/^[1-9][0-9]{15}$/),
      checkUrl: expect.stringMatching(new RegExp(`^http://localhost:${gw.port}/check/[0-9]+/[0-9a-f]{64}$`)),
      accessUrl: `http://localhost:${gw.port}/access`,
      product: 'talk-a',
      price: 1_234_567,
      currency: 'EUR',
    });
    const id: string = r.json.id;
    expect(luhnValid(id)).toBe(true);
    const { hash, bucket } = h.ctx.ids.hash(id);
    expect(r.json.checkUrl.split('/')[4]).toBe(String(bucket));

    // Sold in Redis with its face value, a scrypt PIN hash and the purchase reference.
    const ref = refOf(SALES, key);
    const f = await idFields(h, id);
    expect(f).toMatchObject({
      st: 'sold',
      prod: 'talk-a',
      bal: '1000000',
      face: '1000000',
      pref: ref,
      pinfail: '0',
      act: '0',
      exp: '0',
    });
    expect(f.pin).toMatch(/^s\$14\$8\$1\$/);
    expect(Object.values(f).join(' ')).not.toContain(id);
    expect(await stock(h, 'talk-a')).toBe(stockBefore - 1);
    expect((await reservations(h)).has(hash)).toBe(false);

    // One sale record in the ID's bucket stream: price, provider reference, commission, net.
    const commission = commissionOf(1_234_567);
    expect(commission).toBe(30_864);
    const recs = await recordsOf(h, hash);
    expect(recs).toEqual([
      {
        stream: `${bucket}/${f.srec}`,
        id: hash,
        product: 'talk-a',
        face: '1000000',
        currency: 'EUR',
        price: '1234567',
        channel: `api:${SALES}`,
        ref,
        provider: ref,
        commission: String(commission),
        net: String(1_234_567 - commission),
        time: expect.stringMatching(/^\d{13}$/),
      },
    ]);
    expect(recs[0]!.stream.startsWith(`${bucket}/`)).toBe(true);

    // The card company captured the price and charged the member once.
    expect(await payment(h, ref)).toEqual({
      status: 200,
      body: { state: 'captured', authId: expect.stringMatching(/^auth_/), commission },
    });
    expect(await usedCredit(h, buyer.card)).toBe(1_234_567);

    // The new ID makes a call through the switch protocol: 10 s at 100 micro/s.
    const { started, stopped } = await callWith(h, gw, id, 10);
    expect(started).toMatchObject({ op: 'started', balance: 1_000_000, maxSec: 10_000 });
    expect(stopped).toMatchObject({ op: 'stopped', billedSec: 10, cost: 1000, balance: 999_000 });
    expect((await idFields(h, id)).bal).toBe('999000');
  });

  it('card numbers may be typed with spaces', async () => {
    const buyer = await addMember(h, 10_000_000);
    const spaced = { ...buyer, card: buyer.card.replace(/(\d{4})(?=\d)/g, '$1 ') };
    const r = await buy(gw, salesTok, newKey(), 'talk-a', spaced);
    expect(r.status).toBe(200);
    expect(await usedCredit(h, buyer.card)).toBe(1_234_567);
  });

  it('two purchases by the same member get two different IDs and two charges', async () => {
    const buyer = await addMember(h, 10_000_000);
    const a = await buy(gw, salesTok, newKey(), 'talk-i', buyer);
    const b = await buy(gw, salesTok, newKey(), 'talk-i', buyer);
    expect([a.status, b.status]).toEqual([200, 200]);
    expect(a.json.id).not.toBe(b.json.id);
    expect(a.json.checkUrl).not.toBe(b.json.checkUrl);
    expect(await usedCredit(h, buyer.card)).toBe(2_000_000);
  });
});

describe('declines: 402 with the reason, nothing sold', () => {
  const cases: {
    reason: string;
    message: string;
    buyer: () => Promise<{ card: string; cardPin: string; member?: string }>;
  }[] = [
    {
      reason: 'not_member',
      message: 'the card company does not know this card holder',
      buyer: async () => ({ card: cardNumber(), cardPin: '2468' }),
    },
    {
      reason: 'insufficient_funds',
      message: 'not enough credit on the card',
      // 1.99 EUR of credit for a 2.00 EUR product.
      buyer: async () => {
        const m = await addMember(h, 1_990_000);
        return { ...m, member: m.card };
      },
    },
    {
      reason: 'card_invalid',
      message: 'the card number is not valid',
      buyer: async () => {
        const m = await addMember(h, 100_000_000);
        return { card: badLuhn(m.card), cardPin: m.cardPin, member: m.card };
      },
    },
    {
      reason: 'wrong_card_pin',
      message: 'the card PIN is wrong',
      buyer: async () => {
        const m = await addMember(h, 100_000_000, '1111');
        return { card: m.card, cardPin: '2222', member: m.card };
      },
    },
  ];

  for (const c of cases) {
    it(c.reason, async () => {
      const b = await c.buyer();
      const stockBefore = await stock(h, 'talk-d');
      const inventoryBefore = await h.r.sunion(
        ...Array.from({ length: h.cfg.buckets }, (_, i) => keys.inventory(i, 'talk-d')),
      );
      const recordsBefore = (await saleRecords(h)).length;
      const key = newKey(c.reason);
      const r = await buy(gw, salesTok, key, 'talk-d', b);
      expect(r.status).toBe(402);
      expect(r.json).toEqual({ error: { reason: c.reason, message: c.message } });

      // Nothing sold: the reserved ID is back in inventory, no hold, no sale record.
      expect(await stock(h, 'talk-d')).toBe(stockBefore);
      const inventoryAfter = await h.r.sunion(
        ...Array.from({ length: h.cfg.buckets }, (_, i) => keys.inventory(i, 'talk-d')),
      );
      expect(new Set(inventoryAfter)).toEqual(new Set(inventoryBefore));
      expect((await reservations(h)).size).toBe(0);
      expect((await saleRecords(h)).length).toBe(recordsBefore);
      // The card company declined (a number failing its check digit: was never asked), and nothing is
      // held on the member's card.
      expect(await payment(h, refOf(SALES, key))).toEqual(
        c.reason === 'card_invalid'
          ? { status: 404, body: { state: 'none' } }
          : { status: 200, body: { state: 'declined', reason: c.reason } },
      );
      if (b.member) expect(await usedCredit(h, b.member)).toBe(0);

      // A retry with the same key gets the same decline without asking the card company again.
      const again = await buy(gw, salesTok, key, 'talk-d', b);
      expect(again.status).toBe(402);
      expect(again.json).toEqual(r.json);
      expect(await stock(h, 'talk-d')).toBe(stockBefore);
    });
  }

  it('a card company reason named like one of ours (expired, blocked, abandoned) is still its decline: 402', async () => {
    const orig = h.sandbox.authorize.bind(h.sandbox);
    try {
      for (const reason of ['expired', 'blocked', 'unavailable', 'in_progress', 'abandoned']) {
        h.sandbox.authorize = (b) => {
          const p = { ...b, state: 'declined' as const, reason };
          h.sandbox.payments.set(b.reference, p);
          return p;
        };
        const key = newKey(reason.replace('_', ''));
        const m = await addMember(h, 100_000_000);
        const r = await buy(gw, salesTok, key, 'talk-d', m);
        const declined = { error: { reason, message: `declined by the card company: ${reason}` } };
        expect([r.status, r.json], reason).toEqual([402, declined]);
        // Answered from its record on a retry: the same.
        const again = await buy(gw, salesTok, key, 'talk-d', m);
        expect([again.status, again.json], reason).toEqual([402, declined]);
      }
    } finally {
      h.sandbox.authorize = orig;
    }
  });

  it('a declined purchase stays declined for its key even once the card would pass', async () => {
    const m = await addMember(h, 1_000_000);
    const key = newKey('poor');
    expect((await buy(gw, salesTok, key, 'talk-d', m)).json.error.reason).toBe('insufficient_funds');
    // The member's credit is raised; the same key still answers the first decline, a new key buys.
    await fetch(`${h.cfg.provider.url}/_sandbox/members`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'rich now', card: m.card, pin: m.cardPin, limit: 100_000_000 }),
    });
    const again = await buy(gw, salesTok, key, 'talk-d', m);
    expect(again.status).toBe(402);
    expect(again.json.error.reason).toBe('insufficient_funds');
    expect(await usedCredit(h, m.card)).toBe(0);
    const fresh = await buy(gw, salesTok, newKey(), 'talk-d', m);
    expect(fresh.status).toBe(200);
    expect(await usedCredit(h, m.card)).toBe(2_000_000);
  });

  it('an unknown product: 404 unknown_product, nothing reserved, the card company is not asked', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey();
    const r = await buy(gw, salesTok, key, 'no-such-product', m);
    expect(r.status).toBe(404);
    expect(r.json).toEqual({ error: { reason: 'unknown_product', message: 'no such product' } });
    expect((await reservations(h)).size).toBe(0);
    expect((await payment(h, refOf(SALES, key))).status).toBe(404);
    expect(await usedCredit(h, m.card)).toBe(0);
  });
});

/** The purchase record of a purchase made with this suite's sales token and Idempotency-Key. */
function purchaseRecord(key: string): string {
  const hash = h.ctx.ids.mac(`purchase:${SALES}/${key}`).slice(0, 32);
  return keys.purchase(h.ctx.ids.bucketOf(hash), hash);
}

describe('idempotent retries', () => {
  it('the same Idempotency-Key returns the first answer and charges once', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('same');
    const stockBefore = await stock(h, 'talk-i');
    const first = await buy(gw, salesTok, key, 'talk-i', m);
    expect(first.status).toBe(200);
    for (let i = 0; i < 3; i++) {
      const again = await buy(gw, salesTok, key, 'talk-i', m);
      expect(again.status).toBe(200);
      expect(again.json).toEqual(first.json);
    }
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
    expect(await stock(h, 'talk-i')).toBe(stockBefore - 1);
    expect(await recordsOf(h, hashOf(h, first.json.id))).toHaveLength(1);
    expect((await saleRecords(h)).filter((x) => x.ref === refOf(SALES, key))).toHaveLength(1);
  });

  it('a retry while the first attempt is still at the card company: 409 in_progress, then the first answer', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('busy');
    await setFaults(h, { latencyMs: 400 });
    const first = buy(gw, salesTok, key, 'talk-i', m);
    await sleep(100);
    const during = await buy(gw, salesTok, key, 'talk-i', m);
    expect(during.status).toBe(409);
    expect(during.json).toEqual({
      error: { reason: 'in_progress', message: 'this purchase is being processed; retry shortly' },
    });
    const done = await first;
    expect(done.status).toBe(200);
    const after = await buy(gw, salesTok, key, 'talk-i', m);
    expect(after.json).toEqual(done.json);
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
  });

  it('an attempt slower than its lease keeps it while it works: a retry meanwhile is 409 in_progress', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('renew');
    await setFaults(h, { latencyMs: 2500 });
    try {
      await withGateway(h, { purchaseLeaseMs: 600 }, async (g) => {
        const record = purchaseRecord(key);
        const first = buy(g, salesTok, key, 'talk-i', m);
        await until(async () => (await h.r.hget(record, 'st')) === 'authorizing');
        // Two leases later, the first attempt still at the card company.
        await sleep(1200);
        const during = await buy(g, salesTok, key, 'talk-i', m);
        expect([during.status, during.json.error?.reason]).toEqual([409, 'in_progress']);
        const done = await first;
        expect(done.status).toBe(200);
        // Handed back at its end: the retry answers at once.
        expect((await buy(g, salesTok, key, 'talk-i', m)).json).toEqual(done.json);
      });
    } finally {
      await setFaults(h, NO_FAULTS);
    }
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
  });

  it('an attempt that could not hand its lease back at its end (Redis refused the write) hands it back later', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('handback');
    await setFaults(h, { latencyMs: 1500 });
    try {
      // A lease that outlasts the test: only its attempt can end it, or every retry is in_progress.
      await withGateway(h, { purchaseLeaseMs: 600_000 }, async (g) => {
        const record = purchaseRecord(key);
        const first = buy(g, salesTok, key, 'talk-i', m);
        await until(async () => (await h.r.hget(record, 'st')) === 'authorizing');
        // Memory full while the card company answers: neither the authorization nor the hand-back
        // of the lease can be written (as in a failover, or while the record's slot is moved).
        await h.r.config('SET', 'maxmemory', '1');
        try {
          expect((await first).status).toBe(503);
        } finally {
          await h.r.config('SET', 'maxmemory', '0');
        }
        await setFaults(h, NO_FAULTS);
        let retry = await buy(g, salesTok, key, 'talk-i', m);
        await until(async () => (retry = await buy(g, salesTok, key, 'talk-i', m)).status !== 409, 20_000, 50);
        expect(retry.status).toBe(200);
      });
    } finally {
      await setFaults(h, NO_FAULTS);
    }
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
  });

  it('a closed gateway offers a lease it could not hand back no more: no timer of it touches Redis after close', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('handback-close');
    await setFaults(h, { latencyMs: 1500 });
    const g = await gateway(h, { purchaseLeaseMs: 600_000 });
    let closed = false;
    try {
      const record = purchaseRecord(key);
      const first = buy(g, salesTok, key, 'talk-i', m);
      await until(async () => (await h.r.hget(record, 'st')) === 'authorizing');
      await h.r.config('SET', 'maxmemory', '1');
      let leaseCalls = 0;
      const run = g.ctx.scripts.run.bind(g.ctx.scripts);
      vi.spyOn(g.ctx.scripts, 'run').mockImplementation((name, k, a) => {
        if (name === 'purchase_lease') leaseCalls++;
        return run(name, k, a);
      });
      expect((await first).status).toBe(503);
      // Its hand-back is being offered again, and refused while memory is full.
      const offered = leaseCalls;
      await until(() => Promise.resolve(leaseCalls > offered), 10_000, 10, 'the hand-back offered again');
      await g.close();
      closed = true;
      const atClose = leaseCalls;
      // Timers fire in the order they are due: any hand-back due within two retry intervals of the
      // close (each is set one interval ahead) has run before this one.
      await new Promise((resolve) => setTimeout(resolve, 2 * HAND_BACK_RETRY_MS));
      expect(leaseCalls).toBe(atClose);
    } finally {
      await h.r.config('SET', 'maxmemory', '0');
      await setFaults(h, NO_FAULTS);
      if (!closed) await g.close();
    }
  });

  /**
   * The purchase `key` of `name`, whose first attempt stalls past its lease while the card company
   * authorizes (each call takes long enough for both attempts to be at work at once), and the retry
   * that takes over: both answered 200, with the same ID.
   */
  async function retryOverStalled(key: string, name: string, m: Buyer): Promise<void> {
    await setFaults(h, { latencyMs: 1500 });
    try {
      const record = purchaseRecord(key);
      const first = buy(gw, salesTok, key, name, m);
      await until(async () => (await h.r.hget(record, 'st')) === 'authorizing');
      // As if its process stalled past its lease: the lease is over and no longer its own to renew.
      await h.r.hset(record, 'lease', '0', 'owner', 'stalled');
      const second = await buy(gw, salesTok, key, name, m);
      const done = await first;
      expect([done.status, second.status]).toEqual([200, 200]);
      expect(second.json.id).toBe(done.json.id);
    } finally {
      await setFaults(h, NO_FAULTS);
    }
  }

  it('a retry that takes over from a stalled attempt (its lease lapsed) sells the same ID: one payment, one ID', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('lease');
    const stockBefore = await stock(h, 'talk-i');
    await retryOverStalled(key, 'talk-i', m);
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
    expect(await stock(h, 'talk-i')).toBe(stockBefore - 1);
    expect((await saleRecords(h)).filter((x) => x.ref === refOf(SALES, key))).toHaveLength(1);
  });

  it('a retry that takes over from a stalled attempt and finds no stock left sells the ID the stalled attempt bound', async () => {
    const LAST = product('talk-last', { face: 1_000_000, price: 1_000_000 });
    await addProducts(h, gw, [LAST]);
    await mint(h, LAST, 1);
    const m = await addMember(h, 100_000_000);
    const key = newKey('last');
    // The retry's own authorisation ends after the stalled attempt took the last ID and bound it.
    await retryOverStalled(key, LAST.name, m);
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
    expect(await stock(h, LAST.name)).toBe(0);
    expect((await saleRecords(h)).filter((x) => x.ref === refOf(SALES, key))).toHaveLength(1);
  });

  it('the same key with a different body: 422 idempotency_conflict, nothing charged', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('conf');
    const first = await buy(gw, salesTok, key, 'talk-i', m);
    expect(first.status).toBe(200);
    const variants = [
      purchaseBody('talk-i', m, '9999'),
      purchaseBody('talk-5', m),
      purchaseBody('talk-i', { card: m.card, cardPin: '0000' }),
      purchaseBody('talk-i', { card: cardNumber(), cardPin: m.cardPin }),
    ];
    for (const body of variants) {
      const r = await http(gw, 'POST', '/v1/purchases', { token: salesTok, idem: key, body });
      expect(r.status, JSON.stringify(body)).toBe(422);
      expect(r.json).toEqual({
        error: { reason: 'idempotency_conflict', message: 'this Idempotency-Key was used for another request' },
      });
    }
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
    expect((await buy(gw, salesTok, key, 'talk-i', m)).json).toEqual(first.json);
  });

  it('an Idempotency-Key is the sales client’s own: another token with the same key makes another purchase', async () => {
    const other = await token(h, 'sales', 'shop-2');
    const m = await addMember(h, 100_000_000);
    const key = newKey('shared');
    const a = await buy(gw, salesTok, key, 'talk-i', m);
    const b = await buy(gw, other, key, 'talk-i', m);
    expect([a.status, b.status]).toEqual([200, 200]);
    expect(a.json.id).not.toBe(b.json.id);
    expect(await usedCredit(h, m.card)).toBe(2_000_000);
  });

  it('the buy page of a purchase not answered yet is filled in for it: same nonce, same product selected', async () => {
    const m = await addMember(h, 100_000_000);
    const fields = buyForm(TALK.name, m);
    await withGateway(h, { provider: { ...h.cfg.provider, timeoutMs: 300 } }, async (g) => {
      const session = await formSession(g);
      await setFaults(h, { hangNext: 1 });
      const pending = await postPageForm(g, '/buy', fields, session);
      await setFaults(h, NO_FAULTS);
      expect(pending.status).toBe(503);
      expect(pending.text).toContain(`name="nonce" value="${fields.nonce}"`);
      // Not the list's first product (the cheapest): the one paid for, and only it.
      expect(pending.text.match(/<option [^>]*selected/g)).toEqual([`<option value="${TALK.name}" selected`]);
      const done = await postPageForm(g, '/buy', fields, session);
      expect(done.status).toBe(200);
    });
    expect(await usedCredit(h, m.card)).toBe(TALK.price);
  });

  it('a declined buy form comes back with the buyer’s product chosen, a new nonce, and titles isolated', async () => {
    const fields = buyForm(TALK.name, { card: cardNumber(), cardPin: '1234' });
    const declined = await postPageForm(gw, '/buy', fields, await formSession(gw));
    expect(declined.status).toBe(402);
    expect(declined.text.match(/<option [^>]*selected/g)).toEqual([`<option value="${TALK.name}" selected`]);
    expect(declined.text).not.toContain(fields.nonce);
    // A right-to-left title cannot turn the price after it around.
    expect(declined.text).toContain(`>\u2068${TALK.title}\u2069: `);
  });

  it('the buy form sent twice (a double tap) while the card company is slow: the second page shows the ID', async () => {
    const m = await addMember(h, 100_000_000);
    const fields = buyForm('talk-i', m);
    const session = await formSession(gw);
    await setFaults(h, { latencyMs: 400 });
    try {
      // The browser drops the first request's answer and shows the second's: that one must have the ID.
      const first = postPageForm(gw, '/buy', fields, session);
      await sleep(100);
      const second = await postPageForm(gw, '/buy', fields, session);
      const done = await first;
      expect(done.status).toBe(200);
      expect(second.status).toBe(200);
      expect(second.text).toBe(done.text);
    } finally {
      await setFaults(h, NO_FAULTS);
    }
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
  });

  it('copies of one buy form at work together hold one in-flight place: a double tap cannot eat MAX_INFLIGHT_TOTAL', async () => {
    const m = await addMember(h, 100_000_000);
    const fields = buyForm('talk-i', m);
    await setFaults(h, { latencyMs: 600 });
    try {
      await withGateway(h, { maxInflightTotal: 2 }, async (g) => {
        const session = await formSession(g);
        // Three taps: each copy waits for the first one's answer, which the slow card company holds up.
        const copies = [postPageForm(g, '/buy', fields, session)];
        for (let i = 0; i < 2; i++) {
          await sleep(100);
          copies.push(postPageForm(g, '/buy', fields, session));
        }
        await sleep(100);
        // One place left for everyone else while they wait.
        expect((await http(g, 'GET', '/buy')).status).toBe(200);
        const pages = await Promise.all(copies);
        expect(pages.map((p) => p.status)).toEqual([200, 200, 200]);
        expect(new Set(pages.map((p) => p.text)).size).toBe(1);
      });
    } finally {
      await setFaults(h, NO_FAULTS);
    }
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
  });

  it('copies of one buy form waiting on its slow card company share one poll: twenty copies ask Redis about as often as two', async () => {
    const m = await addMember(h, 100_000_000);
    const fields = buyForm('talk-i', m);
    // The card company answers authorize and capture 800 ms late each: each copy waits about 1.6 s.
    await setFaults(h, { latencyMs: 800 });
    try {
      await withGateway(h, {}, async (g) => {
        const claims = async (): Promise<number> =>
          sample(await metricsText(g.port), 'tessera_script_duration_seconds_count', { script: 'purchase_claim' }) ?? 0;
        const session = await formSession(g);
        const first = postPageForm(g, '/buy', fields, session);
        // The first copy holds the purchase (it is with the card company) before the others come.
        await until(async () => (await claims()) >= 1, 5000, 20, 'the first copy claimed its purchase');
        const copies = await Promise.all(Array.from({ length: 20 }, () => postPageForm(g, '/buy', fields, session)));
        const done = await first;
        expect(done.status).toBe(200);
        expect(new Set(copies.map((c) => c.text))).toEqual(new Set([done.text]));
        // Each copy asks once, and one of them again every 150 ms for them all (about 11 times in 1.6 s).
        // Polling each on its own, the twenty asked over two hundred times.
        expect(await claims()).toBeLessThanOrEqual(1 + 20 + 20);
      });
    } finally {
      await setFaults(h, NO_FAULTS);
    }
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
  });

  it('copies sharing one poll each wait up to their own deadline: a short one gives up, a long one gets the ID', async () => {
    const m = await addMember(h, 100_000_000);
    const req = { product: 'talk-i', pin: '2468', card: m.card, cardPin: m.cardPin };
    // The card company answers authorize and capture 800 ms late each: the first copy ends after about 1.6 s.
    await setFaults(h, { latencyMs: 800 });
    try {
      await withGateway(h, {}, async (g) => {
        const claims = async (): Promise<number> =>
          sample(await metricsText(g.port), 'tessera_script_duration_seconds_count', { script: 'purchase_claim' }) ?? 0;
        const key = newKey();
        const copy = (waitMs: number): ReturnType<Gateway['purchases']['purchase']> =>
          g.purchases.purchase('test', key, req, undefined, waitMs);
        const first = copy(0);
        await until(async () => (await claims()) >= 1, 5000, 20, 'the first copy claimed its purchase');
        // Whichever of the two starts the poll, the other joins it.
        const [short, long] = await Promise.all([copy(300), copy(10_000)]);
        const done = await first;
        expect(done).toMatchObject({ ok: true });
        expect(short).toMatchObject({ ok: false, reason: 'in_progress' });
        expect(long).toEqual(done);
      });
    } finally {
      await setFaults(h, NO_FAULTS);
    }
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
  });

  it('the buy page and check link read digits typed in another script (Arabic, full width) as the digits they are', async () => {
    const m = await addMember(h, 100_000_000);
    const wide = (s: string): string => s.replace(/\d/g, (c) => String.fromCharCode(0xff10 + Number(c)));
    const arabic = (s: string): string => s.replace(/\d/g, (c) => String.fromCharCode(0x0660 + Number(c)));
    const buyPage = await http(gw, 'GET', '/buy');
    // The browser must let such a PIN through to the server: no ASCII-only pattern on the field.
    expect(buyPage.text).not.toMatch(/id="pin"[^>]*pattern=/);
    const fields = { ...buyForm('talk-i', m), pin: arabic(PIN), card: wide(m.card), cardPin: arabic(m.cardPin) };
    const sold = await postPageForm(gw, '/buy', fields);
    expect(sold.status).toBe(200);
    const id = /id="id-number">([^<]+)/.exec(sold.text)![1]!;
    const checkPath = new URL(/id="check-url" class="url" href="([^"]+)"/.exec(sold.text)![1]!).pathname;
    // The PIN chosen in Arabic digits is the PIN 4711, typed now in full width.
    const shown = await postPageForm(gw, checkPath, { pin: wide(PIN) });
    expect(shown.status).toBe(200);
    expect(shown.text).toContain(id);
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
  });

  it('the buy form sent again with a changed field: 422 telling the buyer the first purchase stands, not to pay again', async () => {
    const m = await addMember(h, 100_000_000);
    const fields = buyForm('talk-i', m);
    const session = await formSession(gw);
    const first = await postPageForm(gw, '/buy', fields, session);
    expect(first.status).toBe(200);
    const changed = await postPageForm(gw, '/buy', { ...fields, pin: '9753' }, session);
    expect(changed.status).toBe(422);
    expect(changed.text).toContain('This form was already used');
    expect(changed.text).toContain('That purchase is the one that counts, and nothing more was charged now');
    // A buyer whose first page said the payment was not completed learns how to finish it.
    expect(changed.text).toContain('fill in the form below with the details you gave that time');
    // That form is this one again (its nonce): sent with the first details, it finishes the first purchase.
    expect(changed.text).toContain(`name="nonce" value="${fields.nonce}"`);
    expect(changed.text).toContain('<a href="/buy">Buy another</a>: start again from the product page.');
    for (const misleading of ['Nothing was sold', 'Payment not completed', 'Idempotency-Key'])
      expect(changed.text).not.toContain(misleading);
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
    // The form as it was first sent still answers its purchase.
    const again = await postPageForm(gw, '/buy', fields, session);
    expect(again.status).toBe(200);
    expect(again.text).toBe(first.text);
  });

  it("the form sent again for another product: the form-used page holds the first purchase's product", async () => {
    const m = await addMember(h, 100_000_000);
    const fields = buyForm('talk-i', m);
    const session = await formSession(gw);
    expect((await postPageForm(gw, '/buy', fields, session)).status).toBe(200);
    const changed = await postPageForm(gw, '/buy', { ...fields, product: 'wallet' }, session);
    expect(changed.status).toBe(422);
    // The page asks for the details given that time: its form must not offer the product changed since.
    expect(changed.text).toMatch(/<option value="talk-i" selected>/);
    expect(changed.text).not.toMatch(/<option value="wallet" selected>/);
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
  });

  it('a sales token named web, made before that name was refused, never gets or makes a buy-page purchase', async () => {
    // Written as token-create wrote it then: the API's key `web/<key>` is the buy page's `web/<nonce>`.
    const web = `tsk_${randomBytes(32).toString('base64url')}`;
    await h.r.hset(keys.tokens, tokenHash(web), JSON.stringify({ name: 'web', role: 'sales', created: Date.now() }));
    const m = await addMember(h, 100_000_000);
    const nonce = randomBytes(16).toString('hex');
    const fields = { product: 'talk-i', pin: PIN, card: m.card, cardPin: m.cardPin, nonce };
    const page = await postPageForm(gw, '/buy', fields);
    expect(page.status).toBe(200);
    const refused = {
      status: 403,
      json: { error: { reason: 'reserved_name', message: messageOf('reserved_name') } },
    };
    // The buy page's purchase does not come back through the API, nor does an API purchase start.
    expect(
      await jsonCall(gw, 'POST', '/v1/purchases', { token: web, idem: nonce, body: purchaseBody('talk-i', m) }),
    ).toEqual(refused);
    const key = randomBytes(16).toString('hex');
    expect(
      await jsonCall(gw, 'POST', '/v1/purchases', { token: web, idem: key, body: purchaseBody('talk-i', m) }),
    ).toEqual(refused);
    expect(await usedCredit(h, m.card)).toBe(1_000_000);
  });

  it('a missing or malformed Idempotency-Key: 400, nothing reserved or charged', async () => {
    const m = await addMember(h, 100_000_000);
    const stockBefore = await stock(h, 'talk-i');
    const none = await http(gw, 'POST', '/v1/purchases', { token: salesTok, body: purchaseBody('talk-i', m) });
    expect(none.status).toBe(400);
    expect(none.json.error.reason).toBe('missing_idempotency_key');
    for (const bad of ['short', 'has space in it', 'x'.repeat(129), 'semi;colon!']) {
      const r = await http(gw, 'POST', '/v1/purchases', {
        token: salesTok,
        idem: bad,
        body: purchaseBody('talk-i', m),
      });
      expect(r.status, bad).toBe(400);
      expect(r.json.error.reason).toBe('missing_idempotency_key');
    }
    expect(await stock(h, 'talk-i')).toBe(stockBefore);
    expect((await reservations(h)).size).toBe(0);
    expect(await usedCredit(h, m.card)).toBe(0);
  });

  it('no token → 401, an unknown token → 401, a token of another role → 403; nothing charged', async () => {
    const m = await addMember(h, 100_000_000);
    const body = purchaseBody('talk-i', m);
    const noTok = await http(gw, 'POST', '/v1/purchases', { idem: newKey(), body });
    expect(noTok.status).toBe(401);
    expect(noTok.json.error.reason).toBe('unauthorized');
    const unknown = await http(gw, 'POST', '/v1/purchases', { token: 'tsk_not-a-token', idem: newKey(), body });
    expect(unknown.status).toBe(401);
    expect(unknown.json.error.reason).toBe('unauthorized');
    for (const role of ['switch', 'scanner', 'admin'] as const) {
      const r = await http(gw, 'POST', '/v1/purchases', { token: await token(h, role), idem: newKey(), body });
      expect(r.status, role).toBe(403);
      expect(r.json.error.reason).toBe('forbidden');
    }
    expect(await usedCredit(h, m.card)).toBe(0);
  });

  it('a malformed body: 400 with the field at fault, nothing charged', async () => {
    const m = await addMember(h, 100_000_000);
    const bad: [unknown, string][] = [
      [{ ...purchaseBody('talk-i', m), pin: '12' }, 'bad_value'],
      [{ ...purchaseBody('talk-i', m), pin: 'abcd' }, 'bad_value'],
      [{ product: 'talk-i', pin: PIN }, 'missing_field'],
      [{ ...purchaseBody('talk-i', m), payment: { card: 'x', cardPin: '1' } }, 'bad_value'],
    ];
    for (const [body, reason] of bad) {
      const r = await http(gw, 'POST', '/v1/purchases', { token: salesTok, idem: newKey(), body });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.json.error.reason).toBe(reason);
    }
    expect(await usedCredit(h, m.card)).toBe(0);
  });
});

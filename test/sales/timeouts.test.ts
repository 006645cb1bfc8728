/**
 * The card company does not answer: the purchase says payment_pending (503),
 * and a retry with the same Idempotency-Key finds out what happened by asking
 * the card company, then finishes the sale or releases the ID, never charging
 * twice. The sandbox's hangNext makes a call do its work and never answer.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { gateway, mint, seedCatalog, startHarness, token, type Harness } from '../support/harness';
import { hashOf } from '../support/redis';
import { formSession, postPageForm } from '../support/http';
import { putProducts } from '../../src/catalog/store';
import { keys } from '../../src/redis/keys';
import { sleep, until } from '../support/wait';
import { captureLog } from '../support/log';
import { HttpProvider, type PaymentProvider } from '../../src/sales/provider';
import { PaymentRecords, sweepLateAuthorizations } from '../../src/sales/payment-record';
import { claimLate } from '../../src/sales/scripts';
import {
  addMember,
  buy,
  buyForm,
  commissionOf,
  inventoryHashes,
  newKey,
  NO_FAULTS,
  payment,
  product,
  purchaseRef,
  recordsOf,
  reservations,
  saleRecords,
  setFaults,
  stock,
  usedCredit,
} from './fixtures';

let h: Harness;
let gw: Gateway;
const SALES = 'shop-t';
let salesTok: string;
const PRICE = 3_000_000;
const P = product('talk-t', { face: 2_500_000, price: PRICE });
/** Its price changes while a purchase of it is pending. */
const REPRICED = product('talk-repriced', { face: 2_500_000, price: 4_000_000 });
/** One unit only: for a buyer who comes back after the last ID went to someone else. */
const LAST = product('talk-last', { face: 1_000_000, price: 1_500_000 });
/** One unit only, bought on the buy page: held by its own purchase while the card company is silent. */
const ONE = product('talk-one', { face: 1_000_000, price: 1_600_000 });
/** One unit only: held by one purchase after another's hold on it ran out. */
const OWNED = product('talk-owned', { face: 1_000_000, price: 1_700_000 });
let ownedId: string | undefined;
const PENDING = {
  error: { reason: 'payment_pending', message: 'the card company did not answer; retry with the same Idempotency-Key' },
};

const refOf = (key: string): string => purchaseRef(h, SALES, key);

/** Whether `ref` is listed to be asked after (its member is `<first seen>:<ref>`). */
const lateListed = async (bucket: number, ref: string): Promise<boolean> =>
  (await h.r.zrange(keys.lateAuthorizations(bucket), '0', '-1')).some((m) => m.endsWith(`:${ref}`));

/** Counts the sandbox's authorize and capture calls (the methods its HTTP handler runs). */
const calls = { authorize: 0, capture: 0 };
const orig = {
  authorize: undefined as unknown as Harness['sandbox']['authorize'],
  capture: undefined as unknown as Harness['sandbox']['capture'],
};

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [P, LAST, REPRICED, ONE, OWNED]);
  await mint(h, REPRICED, 2);
  await mint(h, P, 20);
  await mint(h, LAST, 1);
  await mint(h, ONE, 1);
  [ownedId] = await mint(h, OWNED, 1);
  gw = await gateway(h, { provider: { ...h.cfg.provider, timeoutMs: 300 } });
  salesTok = await token(h, 'sales', SALES);
  orig.authorize = h.sandbox.authorize.bind(h.sandbox);
  orig.capture = h.sandbox.capture.bind(h.sandbox);
  h.sandbox.authorize = (b) => (calls.authorize++, orig.authorize(b));
  h.sandbox.capture = (ref) => (calls.capture++, orig.capture(ref));
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});
beforeEach(async () => {
  calls.authorize = 0;
  calls.capture = 0;
  await setFaults(h, NO_FAULTS);
});
afterEach(async () => {
  h.sandbox.authorize = (b) => (calls.authorize++, orig.authorize(b));
});

/** Authorize answers; the capture after it does its work and never answers: the purchase stops holding an ID. */
function hangAtCapture(): void {
  h.sandbox.authorize = (b) => {
    calls.authorize++;
    h.sandbox.authorize = (b2) => (calls.authorize++, orig.authorize(b2));
    const p = orig.authorize(b);
    h.sandbox.faults.hangNext = 1;
    return p;
  };
}

/** Waits until every hold has run out (holds are taken after the card company authorized, so not at a known time). */
async function holdsRunOut(): Promise<void> {
  const untils = [...(await reservations(h)).values()];
  await sleep(Math.max(0, ...untils) + 100 - Date.now());
}

describe('unknown outcome at authorize', () => {
  it('503 payment_pending; the retry asks the card company, captures and sells, charging once', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('hang-auth');
    const stockBefore = await stock(h, 'talk-t');
    await setFaults(h, { hangNext: 1 });
    const t0 = Date.now();
    const first = await buy(gw, salesTok, key, 'talk-t', m);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    expect(first.status).toBe(503);
    expect(first.json).toEqual(PENDING);

    // The card company did authorize (the answer was lost); no ID is held yet: stock is taken once authorized.
    const ref = refOf(key);
    expect(await payment(h, ref)).toEqual({
      status: 200,
      body: { state: 'authorized', authId: expect.stringMatching(/^auth_/) },
    });
    expect(await usedCredit(h, m.card)).toBe(PRICE);
    expect(await stock(h, 'talk-t')).toBe(stockBefore);
    expect((await reservations(h)).size).toBe(0);
    expect((await saleRecords(h)).filter((r) => r.ref === ref)).toHaveLength(0);
    expect(calls).toEqual({ authorize: 1, capture: 0 });

    const second = await buy(gw, salesTok, key, 'talk-t', m);
    expect(second.status).toBe(200);
    expect(second.json).toMatchObject({ product: 'talk-t', price: PRICE, currency: 'EUR' });
    // Resolved by asking for the payment's status: no second authorize.
    expect(calls).toEqual({ authorize: 1, capture: 1 });
    expect(await usedCredit(h, m.card)).toBe(PRICE);
    expect(await payment(h, ref)).toMatchObject({
      status: 200,
      body: { state: 'captured', commission: commissionOf(PRICE) },
    });
    expect(await stock(h, 'talk-t')).toBe(stockBefore - 1);
    expect((await reservations(h)).size).toBe(0);
    const recs = await recordsOf(h, hashOf(h, second.json.id));
    expect(recs).toHaveLength(1);
    expect(recs[0]).toMatchObject({
      ref,
      provider: ref,
      price: String(PRICE),
      commission: String(commissionOf(PRICE)),
      net: String(PRICE - commissionOf(PRICE)),
    });

    // And from then on the same answer, with nothing more asked of the card company.
    const third = await buy(gw, salesTok, key, 'talk-t', m);
    expect(third.json).toEqual(second.json);
    expect(calls).toEqual({ authorize: 1, capture: 1 });
  });

  it('a decline discovered on the retry: 402 with the card company’s reason, no ID was held', async () => {
    const m = await addMember(h, PRICE - 1);
    const key = newKey('hang-decl');
    const stockBefore = await stock(h, 'talk-t');
    await setFaults(h, { hangNext: 1 });
    const first = await buy(gw, salesTok, key, 'talk-t', m);
    expect(first.status).toBe(503);
    expect(first.json).toEqual(PENDING);
    expect(await stock(h, 'talk-t')).toBe(stockBefore);
    expect((await reservations(h)).size).toBe(0);
    expect(await payment(h, refOf(key))).toEqual({
      status: 200,
      body: { state: 'declined', reason: 'insufficient_funds' },
    });

    const second = await buy(gw, salesTok, key, 'talk-t', m);
    expect(second.status).toBe(402);
    expect(second.json).toEqual({ error: { reason: 'insufficient_funds', message: 'not enough credit on the card' } });
    expect(calls).toEqual({ authorize: 1, capture: 0 });
    expect(await stock(h, 'talk-t')).toBe(stockBefore);
    expect((await reservations(h)).size).toBe(0);
    expect((await saleRecords(h)).filter((r) => r.ref === refOf(key))).toHaveLength(0);
    expect(await usedCredit(h, m.card)).toBe(0);
    expect((await buy(gw, salesTok, key, 'talk-t', m)).json).toEqual(second.json);
  });

  it('the request never reached the card company (503s): pending while it is down, a plain purchase once it is back', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('down');
    const stockBefore = await stock(h, 'talk-t');
    await setFaults(h, { failRate: 1 });
    const first = await buy(gw, salesTok, key, 'talk-t', m);
    expect(first.status).toBe(503);
    expect(first.json).toEqual(PENDING);
    // Still down: the status question fails too, so it is still pending.
    const second = await buy(gw, salesTok, key, 'talk-t', m);
    expect(second.status).toBe(503);
    expect(second.json).toEqual(PENDING);
    expect(calls).toEqual({ authorize: 0, capture: 0 });
    expect(h.sandbox.payments.has(refOf(key))).toBe(false);
    expect(await usedCredit(h, m.card)).toBe(0);
    expect(await stock(h, 'talk-t')).toBe(stockBefore);

    await setFaults(h, { failRate: 0 });
    const third = await buy(gw, salesTok, key, 'talk-t', m);
    expect(third.status).toBe(200);
    expect(calls).toEqual({ authorize: 1, capture: 1 });
    expect(await usedCredit(h, m.card)).toBe(PRICE);
    expect(await stock(h, 'talk-t')).toBe(stockBefore - 1);
    expect((await reservations(h)).size).toBe(0);
    expect(await recordsOf(h, hashOf(h, third.json.id))).toHaveLength(1);
  });
});

describe('unknown outcome at capture', () => {
  it('503 payment_pending; the retry finds the payment captured and sells with its commission, charging once', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('hang-cap');
    const stockBefore = await stock(h, 'talk-t');
    hangAtCapture();
    const first = await buy(gw, salesTok, key, 'talk-t', m);
    expect(first.status).toBe(503);
    expect(first.json).toEqual(PENDING);
    expect(calls).toEqual({ authorize: 1, capture: 1 });
    const ref = refOf(key);
    expect(await payment(h, ref)).toMatchObject({
      status: 200,
      body: { state: 'captured', commission: commissionOf(PRICE) },
    });
    expect(await stock(h, 'talk-t')).toBe(stockBefore - 1);
    expect((await saleRecords(h)).filter((r) => r.ref === ref)).toHaveLength(0);

    const second = await buy(gw, salesTok, key, 'talk-t', m);
    expect(second.status).toBe(200);
    expect(calls).toEqual({ authorize: 1, capture: 1 });
    expect(await usedCredit(h, m.card)).toBe(PRICE);
    const recs = await recordsOf(h, hashOf(h, second.json.id));
    expect(recs).toHaveLength(1);
    expect(recs[0]).toMatchObject({
      ref,
      price: String(PRICE),
      commission: String(commissionOf(PRICE)),
      net: String(PRICE - commissionOf(PRICE)),
    });
    expect(await stock(h, 'talk-t')).toBe(stockBefore - 1);
    expect((await reservations(h)).size).toBe(0);
  });
});

describe('answers that cannot be read are no answer', () => {
  it('a capture with a commission that is not an amount: pending, nothing booked; sold once it reads right', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('bad-comm');
    h.sandbox.capture = (ref) => {
      calls.capture++;
      const p = orig.capture(ref);
      if (p) p.commission = 'abc' as never;
      return p;
    };
    try {
      const first = await buy(gw, salesTok, key, 'talk-t', m);
      expect([first.status, first.json]).toEqual([503, PENDING]);
      expect((await saleRecords(h)).filter((r) => r.ref === refOf(key))).toHaveLength(0);
    } finally {
      h.sandbox.capture = (ref) => (calls.capture++, orig.capture(ref));
    }
    h.sandbox.payments.get(refOf(key))!.commission = commissionOf(PRICE);
    const second = await buy(gw, salesTok, key, 'talk-t', m);
    expect(second.status).toBe(200);
    expect(await recordsOf(h, hashOf(h, second.json.id))).toEqual([
      expect.objectContaining({ commission: String(commissionOf(PRICE)), net: String(PRICE - commissionOf(PRICE)) }),
    ]);
  });

  it('a commission larger than the price: the payment is voided, 402 capture_failed, no negative net booked', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('over-comm');
    const stockBefore = await stock(h, 'talk-t');
    const logged = captureLog('error');
    const g = await gateway(h, {}, logged.log);
    const bp = h.sandbox.commissionBp;
    h.sandbox.commissionBp = 10_001;
    try {
      const r = await buy(g, salesTok, key, 'talk-t', m);
      expect([r.status, r.json.error.reason]).toEqual([402, 'capture_failed']);
    } finally {
      h.sandbox.commissionBp = bp;
      await g.close();
    }
    expect((await payment(h, refOf(key))).body.state).toBe('voided');
    expect(await usedCredit(h, m.card)).toBe(0);
    expect((await saleRecords(h)).filter((x) => x.ref === refOf(key))).toHaveLength(0);
    expect(await stock(h, 'talk-t')).toBe(stockBefore);
    expect(logged.lines).toContainEqual(expect.objectContaining({ level: 50, ref: refOf(key) }));
  });

  it('a commission equal to the price is booked: net 0, never below', async () => {
    const m = await addMember(h, 100_000_000);
    const bp = h.sandbox.commissionBp;
    h.sandbox.commissionBp = 10_000;
    try {
      const r = await buy(gw, salesTok, newKey('all-comm'), 'talk-t', m);
      expect(r.status).toBe(200);
      expect(await recordsOf(h, hashOf(h, r.json.id))).toEqual([
        expect.objectContaining({ commission: String(PRICE), net: '0' }),
      ]);
    } finally {
      h.sandbox.commissionBp = bp;
    }
  });

  it('a payment in a state the card company never documented: pending (503), not a server error', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('odd-state');
    await setFaults(h, { hangNext: 1 });
    expect((await buy(gw, salesTok, key, 'talk-t', m)).json).toEqual(PENDING);
    const p = h.sandbox.payments.get(refOf(key))!;
    p.state = 'pending' as never;
    const second = await buy(gw, salesTok, key, 'talk-t', m);
    expect([second.status, second.json]).toEqual([503, PENDING]);
    p.state = 'authorized';
    expect((await buy(gw, salesTok, key, 'talk-t', m)).status).toBe(200);
    expect(await usedCredit(h, m.card)).toBe(PRICE);
  });
});

describe('a void the card company refuses', () => {
  it('while it holds the money the purchase stays open (503 payment_pending), never declined with the money kept', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('void-refused');
    const ref = refOf(key);
    // Capture is refused, and so is the void that should follow it: the authorization stays held.
    const origVoid = h.sandbox.void.bind(h.sandbox);
    h.sandbox.capture = (r) => (calls.capture++, h.sandbox.payments.get(r));
    h.sandbox.void = (r) => h.sandbox.payments.get(r);
    try {
      const first = await buy(gw, salesTok, key, 'talk-t', m);
      expect([first.status, first.json]).toEqual([503, PENDING]);
      expect((await payment(h, ref)).body.state).toBe('authorized');
      expect(await usedCredit(h, m.card)).toBe(PRICE);
      expect(calls.capture).toBe(1);
      // The card company would capture now, but its decline was answered: a retry only asks the void again.
      h.sandbox.capture = (r) => (calls.capture++, orig.capture(r));
      const second = await buy(gw, salesTok, key, 'talk-t', m);
      expect([second.status, second.json]).toEqual([503, PENDING]);
      expect(calls.capture).toBe(1);
      expect((await payment(h, ref)).body.state).toBe('authorized');
    } finally {
      h.sandbox.capture = (r) => (calls.capture++, orig.capture(r));
      h.sandbox.void = origVoid;
    }
    // Once the void goes through the retry answers the capture's decline: nothing charged, nothing sold.
    const third = await buy(gw, salesTok, key, 'talk-t', m);
    expect([third.status, third.json.error.reason]).toEqual([402, 'payment_authorized']);
    expect(calls.capture).toBe(1);
    expect(await usedCredit(h, m.card)).toBe(0);
    expect((await payment(h, ref)).body.state).toBe('voided');
    expect((await saleRecords(h)).filter((r) => r.ref === ref)).toHaveLength(0);
  });

  it('a purchase left voiding is voided by the sweep with its own reason, never captured', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('void-swept');
    const ref = refOf(key);
    const origVoid = h.sandbox.void.bind(h.sandbox);
    h.sandbox.capture = (r) => (calls.capture++, h.sandbox.payments.get(r));
    h.sandbox.void = (r) => h.sandbox.payments.get(r);
    try {
      expect((await buy(gw, salesTok, key, 'talk-t', m)).status).toBe(503);
    } finally {
      h.sandbox.capture = (r) => (calls.capture++, orig.capture(r));
      h.sandbox.void = origVoid;
    }
    expect(await gw.purchases.sweepAbandoned(Date.now() + h.cfg.abandonAfterMs + 1000)).toBeGreaterThanOrEqual(1);
    expect(calls.capture).toBe(1);
    expect((await payment(h, ref)).body.state).toBe('voided');
    expect(await usedCredit(h, m.card)).toBe(0);
    const late = await buy(gw, salesTok, key, 'talk-t', m);
    expect([late.status, late.json.error.reason]).toEqual([402, 'payment_authorized']);
  });

  it('the sweep settles a purchase as it stands when claimed, not as it read it before', async () => {
    // The sweep reads the record, then claims it. A retry that ended in between, refusing the payment
    // (`voiding`, its void unanswered), moved it on: settled from the `capturing` read before, it ended
    // `abandoned`, not with the refusal a retry had already been answered.
    const m = await addMember(h, 100_000_000);
    const key = newKey('sweep-reread');
    const hash = refOf(key).slice('tsp_'.length);
    const rec = keys.purchase(h.ctx.ids.bucketOf(hash), hash);
    hangAtCapture();
    expect((await buy(gw, salesTok, key, 'talk-t', m)).status).toBe(503);
    expect(await h.r.hget(rec, 'st')).toBe('capturing');
    const records = (gw.purchases as unknown as { records: { claim: (...a: unknown[]) => Promise<unknown> } }).records;
    const claim = records.claim.bind(records);
    records.claim = async (...a: unknown[]) => {
      if (a[0] === rec) await h.r.hset(rec, { st: 'voiding', reason: 'out_of_stock' });
      return claim(...a);
    };
    try {
      expect(await gw.purchases.sweepAbandoned(Date.now() + h.cfg.abandonAfterMs + 1000)).toBeGreaterThanOrEqual(1);
    } finally {
      records.claim = claim;
    }
    expect(await h.r.hmget(rec, 'st', 'reason')).toEqual(['declined', 'out_of_stock']);
    expect((await payment(h, refOf(key))).body.state).toBe('voided');
    expect(await usedCredit(h, m.card)).toBe(0);
    const late = await buy(gw, salesTok, key, 'talk-t', m);
    expect([late.status, late.json.error.reason]).toEqual([409, 'out_of_stock']);
  });
});

describe('the buy page while the card company is silent', () => {
  it('keeps the product chosen even when its last ID is the one the purchase holds: the same form finishes it', async () => {
    const m = await addMember(h, 100_000_000);
    const fields = buyForm(ONE.name, m, '4711');
    const session = await formSession(gw);
    hangAtCapture();
    const pending = await postPageForm(gw, '/buy', fields, session);
    expect(pending.status).toBe(503);
    expect(await stock(h, ONE.name)).toBe(0);
    // Selected and not disabled: a browser sends it again.
    expect(/<option value="talk-one"[^>]*>/.exec(pending.text)?.[0]).toBe('<option value="talk-one" selected>');
    const done = await postPageForm(gw, '/buy', fields, session);
    expect(done.status).toBe(200);
    expect(await usedCredit(h, m.card)).toBe(ONE.price);
  });
});

describe('expired holds', () => {
  it('a reservation left by an attempt that never came back returns to inventory once its hold runs out', async () => {
    const g = await gateway(h, { holdMs: 60_000, provider: { ...h.cfg.provider, timeoutMs: 300 } });
    try {
      const m = await addMember(h, 100_000_000);
      const before = await inventoryHashes(h, 'talk-t');
      hangAtCapture();
      const t0 = Date.now();
      expect((await buy(g, salesTok, newKey('gone'), 'talk-t', m)).status).toBe(503);
      const held = await reservations(h);
      expect(held.size).toBe(1);
      const [idHash, until] = [...held][0]!;
      expect(before.has(idHash)).toBe(true);
      expect((await inventoryHashes(h, 'talk-t')).has(idHash)).toBe(false);
      expect(until).toBeGreaterThanOrEqual(t0 + 60_000);
      expect(until).toBeLessThanOrEqual(Date.now() + 60_000);

      // Before the hold runs out the sweep leaves it alone; after, it puts it back, once.
      expect(await g.inventory.sweepHolds(until - 1)).toBe(0);
      expect((await reservations(h)).size).toBe(1);
      expect(await g.inventory.sweepHolds(until + 1)).toBe(1);
      expect(await g.inventory.sweepHolds(until + 1)).toBe(0);
      expect((await reservations(h)).size).toBe(0);
      expect(await inventoryHashes(h, 'talk-t')).toEqual(before);
    } finally {
      await g.close();
    }
  });

  it('with a short hold, the buyer who comes back after the sweep still gets an ID and is charged once', async () => {
    const g = await gateway(h, { holdMs: 800, provider: { ...h.cfg.provider, timeoutMs: 300 } });
    try {
      const m = await addMember(h, 100_000_000);
      const key = newKey('late');
      const stockBefore = await stock(h, 'talk-t');
      hangAtCapture();
      expect((await buy(g, salesTok, key, 'talk-t', m)).status).toBe(503);
      expect(await stock(h, 'talk-t')).toBe(stockBefore - 1);
      await holdsRunOut();
      // The gateway sweeps on its own every holdMs; whichever sweep ran, the hold is gone.
      await g.inventory.sweepHolds();
      expect((await reservations(h)).size).toBe(0);
      expect(await stock(h, 'talk-t')).toBe(stockBefore);

      const r = await buy(g, salesTok, key, 'talk-t', m);
      expect(r.status).toBe(200);
      expect(await usedCredit(h, m.card)).toBe(PRICE);
      expect(await stock(h, 'talk-t')).toBe(stockBefore - 1);
      expect((await reservations(h)).size).toBe(0);
      expect(await recordsOf(h, hashOf(h, r.json.id))).toHaveLength(1);
    } finally {
      await g.close();
    }
  });

  it('paid, but the held ID ran out and another purchase holds it now: that one keeps it, this one is voided', async () => {
    const g = await gateway(h, { holdMs: 800, provider: { ...h.cfg.provider, timeoutMs: 300 } });
    const g2 = await gateway(h, { holdMs: 60_000, provider: { ...h.cfg.provider, timeoutMs: 300 } });
    try {
      const [late, other] = [await addMember(h, 100_000_000), await addMember(h, 100_000_000)];
      const [lateKey, otherKey] = [newKey('owned-late'), newKey('owned-other')];
      hangAtCapture();
      expect((await buy(g, salesTok, lateKey, OWNED.name, late)).status).toBe(503);
      const idHash = hashOf(h, ownedId!);
      const heldUntil = (await reservations(h)).get(idHash);
      expect(heldUntil).toBeDefined();
      await sleep(heldUntil! + 100 - Date.now());
      await g.inventory.sweepHolds();
      expect(await stock(h, OWNED.name)).toBe(1);
      // The next buyer holds the same ID, mid-payment.
      hangAtCapture();
      expect((await buy(g2, salesTok, otherKey, OWNED.name, other)).status).toBe(503);
      expect((await reservations(h)).has(idHash)).toBe(true);

      // The first buyer comes back, paid: the ID is the other purchase's now, and none is left.
      const r = await buy(g, salesTok, lateKey, OWNED.name, late);
      expect(r.status).toBe(409);
      expect(r.json).toEqual({ error: { reason: 'out_of_stock', message: 'sold out' } });
      expect(await payment(h, refOf(lateKey))).toMatchObject({ status: 200, body: { state: 'voided' } });
      expect(await usedCredit(h, late.card)).toBe(0);
      expect((await reservations(h)).has(idHash)).toBe(true);

      const sold = await buy(g2, salesTok, otherKey, OWNED.name, other);
      expect(sold.status).toBe(200);
      expect(hashOf(h, sold.json.id)).toBe(idHash);
      expect(await usedCredit(h, other.card)).toBe(OWNED.price);
      expect((await saleRecords(h)).filter((x) => x.product === OWNED.name).map((x) => x.ref)).toEqual([
        refOf(otherKey),
      ]);
    } finally {
      await g.close();
      await g2.close();
    }
  });

  it('paid, but the held ID ran out and was sold to someone else meanwhile: the payment is voided, 409 out_of_stock', async () => {
    const g = await gateway(h, { holdMs: 800, provider: { ...h.cfg.provider, timeoutMs: 300 } });
    try {
      const late = await addMember(h, 100_000_000);
      const other = await addMember(h, 100_000_000);
      const key = newKey('late-last');
      hangAtCapture();
      expect((await buy(g, salesTok, key, 'talk-last', late)).status).toBe(503);
      expect(await stock(h, 'talk-last')).toBe(0);
      await holdsRunOut();
      await g.inventory.sweepHolds();
      expect(await stock(h, 'talk-last')).toBe(1);
      const sold = await buy(g, salesTok, newKey('other'), 'talk-last', other);
      expect(sold.status).toBe(200);

      const r = await buy(g, salesTok, key, 'talk-last', late);
      expect(r.status).toBe(409);
      expect(r.json).toEqual({ error: { reason: 'out_of_stock', message: 'sold out' } });
      expect(await payment(h, refOf(key))).toMatchObject({ status: 200, body: { state: 'voided' } });
      expect(await usedCredit(h, late.card)).toBe(0);
      expect(await usedCredit(h, other.card)).toBe(1_500_000);
      expect((await saleRecords(h)).filter((x) => x.product === 'talk-last').map((x) => x.id)).toEqual([
        hashOf(h, sold.json.id),
      ]);
      expect((await buy(g, salesTok, key, 'talk-last', late)).json).toEqual(r.json);
    } finally {
      await g.close();
    }
  });
});

describe('a buyer who never comes back', () => {
  it('an abandoned purchase is settled after ABANDON_AFTER_MS, not at the end of its hold: payment voided, credit released, ID back in stock, retry says abandoned', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('abandon');
    const stockBefore = await stock(h, 'talk-t');
    hangAtCapture();
    expect((await buy(gw, salesTok, key, 'talk-t', m)).status).toBe(503);
    const ref = refOf(key);
    expect(await usedCredit(h, m.card)).toBe(PRICE);
    expect(await stock(h, 'talk-t')).toBe(stockBefore - 1);

    // Not yet, not even once the hold ran out: the buyer still has until ABANDON_AFTER_MS to retry.
    expect(h.cfg.abandonAfterMs).toBeGreaterThan(h.cfg.holdMs + 1000);
    expect(await gw.purchases.sweepAbandoned()).toBe(0);
    expect(await gw.purchases.sweepAbandoned(Date.now() + h.cfg.holdMs + 1000)).toBe(0);
    expect(await usedCredit(h, m.card)).toBe(PRICE);

    // Nobody retried within the window: settled once, from the card company's side.
    const later = Date.now() + h.cfg.abandonAfterMs + 1000;
    // Earlier tests in this file may leave purchases of their own open: at least ours.
    expect(await gw.purchases.sweepAbandoned(later)).toBeGreaterThanOrEqual(1);
    expect(await gw.purchases.sweepAbandoned(later)).toBe(0);
    expect((await payment(h, ref)).body.state).toBe('voided');
    expect(await usedCredit(h, m.card)).toBe(0);
    expect(await stock(h, 'talk-t')).toBe(stockBefore);
    expect((await reservations(h)).size).toBe(0);
    expect((await saleRecords(h)).filter((r) => r.ref === ref)).toHaveLength(0);

    const late = await buy(gw, salesTok, key, 'talk-t', m);
    expect(late.status).toBe(402);
    expect(late.json.error.reason).toBe('abandoned');
    expect(await usedCredit(h, m.card)).toBe(0);
  });

  it('a sweep that reaches a purchase late still owns it while it settles it: a retry meanwhile waits', async () => {
    const g = await gateway(h, {
      abandonAfterMs: 1000,
      purchaseLeaseMs: 600,
      provider: { ...h.cfg.provider, timeoutMs: 1500 },
    });
    try {
      const m = await addMember(h, 100_000_000);
      const key = newKey('sweep-late');
      const ref = refOf(key);
      hangAtCapture();
      expect((await buy(g, salesTok, key, 'talk-t', m)).status).toBe(503);
      expect((await payment(h, ref)).body.state).toBe('captured');
      const hash = ref.slice('tsp_'.length);
      const rec = keys.purchase(h.ctx.ids.bucketOf(hash), hash);
      await sleep(3200);
      // A round that started 2 s ago (the card company slow on the attempts before this one) reaches it now.
      await setFaults(h, { latencyMs: 400 });
      const sweep = g.purchases.sweepAbandoned(Date.now() - 2000);
      await until(async () => (await h.ctx.redis.hget(rec, 'lease')) !== '0');
      const retry = await buy(g, salesTok, key, 'talk-t', m);
      await sweep;
      await setFaults(h, NO_FAULTS);
      expect([retry.status, retry.json.error?.reason]).toEqual([409, 'in_progress']);
      expect((await payment(h, ref)).body.state).toBe('voided');
      expect((await saleRecords(h)).filter((r) => r.ref === ref)).toHaveLength(0);
      expect((await buy(g, salesTok, key, 'talk-t', m)).json.error.reason).toBe('abandoned');
    } finally {
      await setFaults(h, NO_FAULTS);
      await g.close();
    }
  });
});

describe('an authorization the card company makes after the sweep gave up', () => {
  it('is found by asking after it for a day, and voided: nothing stays held on the card', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('late-auth');
    const ref = refOf(key);
    // The authorize got no answer and the card company had not made it yet (queued on its side).
    await setFaults(h, { failRate: 1 });
    expect((await buy(gw, salesTok, key, 'talk-t', m)).status).toBe(503);
    await setFaults(h, NO_FAULTS);
    const now = Date.now() + h.cfg.abandonAfterMs + 1000;
    expect(await gw.purchases.sweepAbandoned(now)).toBeGreaterThanOrEqual(1);
    expect((await buy(gw, salesTok, key, 'talk-t', m)).json.error.reason).toBe('abandoned');
    // Now it makes it: the buyer's credit is held for a purchase that ended.
    orig.authorize({ reference: ref, card: m.card, cardPin: m.cardPin, amount: PRICE, currency: 'EUR' });
    expect(await usedCredit(h, m.card)).toBe(PRICE);
    const provider = new HttpProvider(h.cfg.provider.url!, 2000);
    expect(await sweepLateAuthorizations(h.ctx, provider, now + 60_000)).toBe(1);
    expect((await payment(h, ref)).body.state).toBe('voided');
    expect(await usedCredit(h, m.card)).toBe(0);
    // Answered: no longer asked after.
    expect(await sweepLateAuthorizations(h.ctx, provider, now + 120_000)).toBe(0);
  });

  it('keeps the declined answer while the reference is asked after: a retry never starts a new payment under it', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('late-kept');
    const hash = refOf(key).slice('tsp_'.length);
    await setFaults(h, { failRate: 1 });
    expect((await buy(gw, salesTok, key, 'talk-t', m)).status).toBe(503);
    await setFaults(h, NO_FAULTS);
    expect(await gw.purchases.sweepAbandoned(Date.now() + h.cfg.abandonAfterMs + 1000)).toBeGreaterThanOrEqual(1);
    // Gone after PURCHASE_DECLINED_TTL_SEC (an hour), the same key would start a purchase under the same
    // reference: sold, then refunded by the watch.
    expect(await h.r.ttl(keys.purchase(h.ctx.ids.bucketOf(hash), hash))).toBeGreaterThan(86_400);
    expect((await buy(gw, salesTok, key, 'talk-t', m)).json.error.reason).toBe('abandoned');
  });

  it('lists the reference before it declines the attempt: a sweep cut short in between leaves it open, never unwatched', async () => {
    const key = newKey('late-first');
    await setFaults(h, { failRate: 1 });
    expect((await buy(gw, salesTok, key, 'talk-t', await addMember(h, 100_000_000))).status).toBe(503);
    await setFaults(h, NO_FAULTS);
    const hash = refOf(key).slice('tsp_'.length);
    const bucket = h.ctx.ids.bucketOf(hash);
    // The decline fails (Redis gone, the gateway killed): the reference must already be listed.
    const records = (gw.purchases as unknown as { records: PaymentRecords<{ st: string }> }).records;
    const set = records.set.bind(records);
    records.set = async (k, fields, watched) => {
      if (k === keys.purchase(bucket, hash) && fields.st === 'declined') throw new Error('cut short');
      return set(k, fields, watched);
    };
    try {
      await gw.purchases.sweepAbandoned(Date.now() + h.cfg.abandonAfterMs + 1000).catch(() => undefined);
    } finally {
      records.set = set;
    }
    expect(await lateListed(bucket, refOf(key))).toBe(true);
    expect(await h.r.hget(keys.purchase(bucket, hash), 'st')).not.toBe('declined');
  });

  it('a reference still unknown a day later is no longer asked after', async () => {
    const key = newKey('late-never');
    await setFaults(h, { failRate: 1 });
    expect((await buy(gw, salesTok, key, 'talk-t', await addMember(h, 100_000_000))).status).toBe(503);
    await setFaults(h, NO_FAULTS);
    const now = Date.now() + h.cfg.abandonAfterMs + 1000;
    expect(await gw.purchases.sweepAbandoned(now)).toBeGreaterThanOrEqual(1);
    const provider = new HttpProvider(h.cfg.provider.url!, 2000);
    const bucket = h.ctx.ids.bucketOf(refOf(key).slice('tsp_'.length));
    expect(await lateListed(bucket, refOf(key))).toBe(true);
    await sweepLateAuthorizations(h.ctx, provider, now + 86_400_000 + 1000);
    expect(await lateListed(bucket, refOf(key))).toBe(false);
  });

  /** Lists `n` references the card company never heard of in `bucket` at `at`, as the sweep does. */
  async function listLate(tag: string, bucket: number, n: number, at: number): Promise<string[]> {
    const records = new PaymentRecords(h.ctx, keys.openPurchases, 60, 'tsp_');
    const refs: string[] = [];
    for (let i = 0; i < n; i++) {
      const key = keys.purchase(bucket, `${tag}${i}`);
      await records.watchLate(key, at);
      refs.push(records.refOf(key));
    }
    return refs;
  }

  /** A card company that knows none of the payments asked after, and counts the asks of references starting with `tag`. */
  function counting(tag: string): { provider: PaymentProvider; asked: Map<string, number> } {
    const asked = new Map<string, number>();
    const unknown = async (): Promise<never> => Promise.reject(new Error('not asked in these tests'));
    const provider: PaymentProvider = {
      authorize: unknown,
      capture: unknown,
      void: unknown,
      status: async (ref) => {
        if (ref.startsWith(`tsp_${tag}`)) asked.set(ref, (asked.get(ref) ?? 0) + 1);
        await sleep(1);
        return { state: 'none' };
      },
    };
    return { provider, asked };
  }

  it('more than a round takes of one bucket are all asked after, the longest due first, each once', async () => {
    const { provider, asked } = counting('late-many-');
    const at = Date.now() + 10 * 86_400_000;
    const refs = await listLate('late-many-', 3, 150, at);
    // A round asks at most 100 of a bucket: the others are the first asked in the next.
    await sweepLateAuthorizations(h.ctx, provider, at + 60_000);
    expect(asked.size).toBe(100);
    await sweepLateAuthorizations(h.ctx, provider, at + 90_000);
    expect([...asked.keys()].sort()).toEqual([...refs].sort());
    expect([...asked.values()].every((n) => n === 1)).toBe(true);
  });

  it('a reference is asked when due, less often as it ages, not before', async () => {
    const { provider, asked } = counting('late-due-');
    const at = Date.now() + 20 * 86_400_000;
    const [ref] = await listLate('late-due-', 5, 1, at);
    const times = (): number => asked.get(ref!) ?? 0;
    await sweepLateAuthorizations(h.ctx, provider, at + 30_000);
    expect(times()).toBe(0);
    await sweepLateAuthorizations(h.ctx, provider, at + 60_000);
    expect(times()).toBe(1);
    // Then after as long as it has been listed: 2 minutes in, 4, 8 …
    await sweepLateAuthorizations(h.ctx, provider, at + 119_000);
    expect(times()).toBe(1);
    // (A round's clock moves on while it runs: a few ms later than the time it is given.)
    await sweepLateAuthorizations(h.ctx, provider, at + 121_000);
    expect(times()).toBe(2);
    await sweepLateAuthorizations(h.ctx, provider, at + 241_000);
    expect(times()).toBe(2);
    await sweepLateAuthorizations(h.ctx, provider, at + 245_000);
    expect(times()).toBe(3);
    // At most an hour apart, however old.
    await sweepLateAuthorizations(h.ctx, provider, at + 10 * 3_600_000);
    expect(times()).toBe(4);
    await sweepLateAuthorizations(h.ctx, provider, at + 11 * 3_600_000 + 5000);
    expect(times()).toBe(5);
  });

  it('the last check, due when its day ends, is made before the reference is dropped', async () => {
    const { provider, asked } = counting('late-last-');
    const at = Date.now() + 50 * 86_400_000;
    const [ref] = await listLate('late-last-', 6, 1, at);
    // First asked late in its day: the next check would be an hour on, past the day, so it is due at its end.
    await sweepLateAuthorizations(h.ctx, provider, at + 86_400_000 - 1_800_000);
    expect(asked.get(ref!)).toBe(1);
    expect(Number(await h.r.zscore(keys.lateAuthorizations(6), `${at}:${ref}`))).toBe(at + 86_400_000);
    await sweepLateAuthorizations(h.ctx, provider, at + 86_400_000);
    expect(asked.get(ref!)).toBe(2);
    expect(await lateListed(6, ref!)).toBe(false);
    await sweepLateAuthorizations(h.ctx, provider, at + 86_400_000 + 3_600_000);
    expect(asked.get(ref!)).toBe(2);
  });

  it('a last check the card company does not answer is made again, for at most the longest wait more', async () => {
    const { provider, asked } = counting('late-mute-');
    const mute: PaymentProvider = {
      ...provider,
      status: async (ref) => {
        await provider.status(ref);
        return { state: 'unknown', detail: 'timeout' };
      },
    };
    const at = Date.now() + 60 * 86_400_000;
    const [ref] = await listLate('late-mute-', 7, 1, at);
    const day = at + 86_400_000;
    await sweepLateAuthorizations(h.ctx, mute, day);
    expect(asked.get(ref!)).toBe(1);
    // Unanswered, the last check is due again a shortest wait (60 s) later, and made then. Each
    // sweep comes half a minute past that: listed again from when the claim was made, a few ms into
    // a sweep, it would not yet be due to a sweep starting exactly a minute on.
    expect(await lateListed(7, ref!)).toBe(true);
    await sweepLateAuthorizations(h.ctx, mute, day + 90_000);
    expect(asked.get(ref!)).toBe(2);
    await sweepLateAuthorizations(h.ctx, provider, day + 180_000);
    expect(asked.get(ref!)).toBe(3);
    expect(await lateListed(7, ref!)).toBe(false);
    // A gateway gone between its claim of the last check and the answer: another makes it.
    const [lost] = await listLate('late-mute-lost-', 7, 1, at);
    expect(
      (
        await claimLate(
          h.ctx.scripts,
          7,
          { shortestWaitMs: 60_000, longestWaitMs: 3_600_000, watchMs: 86_400_000 },
          day,
        )
      )?.ref,
    ).toBe(lost);
    await sweepLateAuthorizations(h.ctx, provider, day + 90_000);
    expect(asked.get(lost!)).toBe(1);
    expect(await lateListed(7, lost!)).toBe(false);
    // The card company silent past the grace: dropped all the same.
    const [late] = await listLate('late-mute-x', 7, 1, at);
    await sweepLateAuthorizations(h.ctx, mute, day + 3_600_000);
    expect(asked.get(late!)).toBe(1);
    expect(await lateListed(7, late!)).toBe(false);
  });

  it('a reference listed by an earlier version (the reference alone, scored when first seen) is asked after as the others', async () => {
    const { provider, asked } = counting('late-old-');
    const at = Date.now() + 40 * 86_400_000;
    await h.r.zadd(keys.lateAuthorizations(9), at, 'tsp_late-old-0');
    await sweepLateAuthorizations(h.ctx, provider, at + 60_000);
    expect(asked.get('tsp_late-old-0')).toBe(1);
    const next = Number(await h.r.zscore(keys.lateAuthorizations(9), `${at}:tsp_late-old-0`));
    expect(next - at).toBeGreaterThanOrEqual(120_000);
    expect(next - at).toBeLessThan(121_000);
    await sweepLateAuthorizations(h.ctx, provider, at + 86_400_000);
    expect(await lateListed(9, 'tsp_late-old-0')).toBe(false);
  });

  it('two gateways sweeping at once ask the card company once for a due reference', async () => {
    const { provider, asked } = counting('late-once-');
    const at = Date.now() + 30 * 86_400_000;
    const refs = await listLate('late-once-', 7, 3, at);
    const other = await gateway(h);
    try {
      await Promise.all([
        sweepLateAuthorizations(h.ctx, provider, at + 60_000),
        sweepLateAuthorizations(other.ctx, provider, at + 60_000),
      ]);
      await sweepLateAuthorizations(other.ctx, provider, at + 60_000);
    } finally {
      await other.close();
    }
    expect(refs.map((ref) => asked.get(ref))).toEqual([1, 1, 1]);
  });
});

describe('a purchase whose record expired unsettled', () => {
  it('is not dropped in silence: the sweep logs its card company reference at error', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('expired');
    hangAtCapture();
    expect((await buy(gw, salesTok, key, 'talk-t', m)).status).toBe(503);
    const ref = refOf(key);
    // Its card company never answered for a day past ABANDON_AFTER_MS: the record expired.
    const hash = ref.slice('tsp_'.length);
    await h.ctx.redis.del(keys.purchase(h.ctx.ids.bucketOf(hash), hash));
    const logged = captureLog('error');
    const g = await gateway(h, {}, logged.log);
    try {
      await g.purchases.sweepAbandoned(Date.now() + h.cfg.abandonAfterMs + 1000);
    } finally {
      await g.close();
    }
    expect(logged.lines).toContainEqual(expect.objectContaining({ level: 50, ref }));
    const bucket = h.ctx.ids.bucketOf(hash);
    expect(await h.r.zscore(keys.openPurchases(bucket), keys.purchase(bucket, hash))).toBeNull();
  });
});

describe('a purchase whose attempt stopped after selling its ID', () => {
  it('is finished by the abandoned-purchase sweep, not voided: the payment stays, a retry gets the ID', async () => {
    const m = await addMember(h, 100_000_000);
    const key = newKey('sold-then-stopped');
    const first = await buy(gw, salesTok, key, 'talk-t', m);
    expect(first.status).toBe(200);
    const ref = refOf(key);
    // What a gateway killed (or a Redis failing) between sell.lua and the purchase's `done` leaves behind.
    const hash = ref.slice('tsp_'.length);
    const rec = keys.purchase(h.ctx.ids.bucketOf(hash), hash);
    await h.ctx.redis.hset(rec, 'st', 'captured');
    await h.ctx.redis.hdel(rec, 'answer');
    await h.ctx.redis.zadd(keys.openPurchases(h.ctx.ids.bucketOf(hash)), Date.now(), rec);

    expect(await gw.purchases.sweepAbandoned(Date.now() + h.cfg.abandonAfterMs + 1000)).toBeGreaterThanOrEqual(1);
    expect((await payment(h, ref)).body.state).toBe('captured');
    expect(await usedCredit(h, m.card)).toBe(PRICE);
    expect((await saleRecords(h)).filter((r) => r.ref === ref)).toHaveLength(1);
    const retry = await buy(gw, salesTok, key, 'talk-t', m);
    expect([retry.status, retry.json]).toEqual([200, first.json]);
  });
});

describe('the price of a purchase', () => {
  it('is fixed when it starts: repriced while the card company hangs, the retry charges, records and answers the first price', async () => {
    const first = REPRICED.price;
    const next = 9_000_000;
    const m = await addMember(h, 100_000_000);
    const key = newKey('reprice');
    await setFaults(h, { hangNext: 1 });
    expect((await buy(gw, salesTok, key, REPRICED.name, m)).status).toBe(503);

    await putProducts(h.ctx.redis, [{ ...REPRICED, price: next }]);
    await until(() => gw.catalog.product(REPRICED.name)?.price === next, 10_000, 20, 'the new price');

    const r = await buy(gw, salesTok, key, REPRICED.name, m);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ product: REPRICED.name, price: first, currency: 'EUR' });
    expect(await usedCredit(h, m.card)).toBe(first);
    expect(await payment(h, refOf(key))).toMatchObject({
      status: 200,
      body: { state: 'captured', commission: commissionOf(first) },
    });
    const recs = await recordsOf(h, hashOf(h, r.json.id));
    expect(recs).toHaveLength(1);
    expect(recs[0]).toMatchObject({
      price: String(first),
      currency: 'EUR',
      commission: String(commissionOf(first)),
      net: String(first - commissionOf(first)),
    });
    // The same answer again; and a new purchase pays the new price.
    expect((await buy(gw, salesTok, key, REPRICED.name, m)).json).toEqual(r.json);
    const fresh = await buy(gw, salesTok, newKey('repriced-new'), REPRICED.name, m);
    expect(fresh.status).toBe(200);
    expect(fresh.json.price).toBe(next);
    expect(await usedCredit(h, m.card)).toBe(first + next);
  });
});

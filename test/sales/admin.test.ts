/**
 * The operator's side of sales: look a sale up, refund it (void at the card
 * company, block the ID if unused; refuse if used), export sales and refunds;
 * and the access numbers, as JSON and as pages.
 */
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { putAccess } from '../../src/catalog/store';
import type { AccessArea } from '../../src/catalog/schema';
import type { Gateway } from '../../src/gateway/server';
import { generateId } from '../../src/ids/idnum';
import { audit } from '../../src/ledger/audit';
import { sweepRefundVoids } from '../../src/sales/admin';
import { HttpProvider } from '../../src/sales/provider';
import { runCliIn } from '../support/cli';
import { gateway, mint, seedCatalog, soldIds, startHarness, token, type Harness } from '../support/harness';
import { http } from '../support/http';
import { keys } from '../../src/redis/keys';
import { bucketOf, hashOf, idFields, idKeyOf, streamFields } from '../support/redis';
import { sleep } from '../support/wait';
import { Client } from '../support/ws-client';
import {
  addMember,
  buy,
  callWith,
  commissionOf,
  newKey,
  NO_FAULTS,
  payment,
  product,
  purchaseRef,
  recordsOf,
  setFaults,
  usedCredit,
  type Buyer,
} from './fixtures';

let h: Harness;
let gw: Gateway;
const SALES = 'shop-adm';
const ADMIN = 'ops-anna';
let salesTok: string;
let adminTok: string;

const PRICE = 2_345_678;
const FACE = 2_000_000;
const P = product('talk-r', { face: FACE, price: PRICE });
/** No validity days: a call sets no first-use time on it. */
const P0 = product('talk-r0', { face: FACE, price: PRICE, expiryDays: 0 });

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [P, P0]);
  await mint(h, P, 20);
  gw = await gateway(h);
  salesTok = await token(h, 'sales', SALES);
  adminTok = await token(h, 'admin', ADMIN);
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});
beforeEach(async () => {
  await setFaults(h, NO_FAULTS);
});

interface Bought {
  id: string;
  ref: string;
  buyer: Buyer;
}

async function buyOne(): Promise<Bought> {
  const buyer = await addMember(h, 100_000_000);
  const key = newKey('adm');
  const r = await buy(gw, salesTok, key, 'talk-r', buyer);
  if (r.status !== 200) throw new Error(`buy: ${r.status} ${r.text}`);
  return { id: r.json.id, ref: purchaseRef(h, SALES, key), buyer };
}

const refund = (id: string, reason?: string, tok = adminTok) =>
  http(gw, 'POST', `/v1/admin/sales/${encodeURIComponent(id)}/refund`, {
    token: tok,
    body: reason === undefined ? {} : { reason },
  });
const lookup = (id: string, tok = adminTok) =>
  http(gw, 'GET', `/v1/admin/sales/${encodeURIComponent(id)}`, { token: tok });

describe('sale lookup', () => {
  it('GET /v1/admin/sales/:id shows the ID’s state and its sale record', async () => {
    const b = await buyOne();
    const r = await lookup(b.id);
    expect(r.status).toBe(200);
    const { hash, bucket } = h.ctx.ids.hash(b.id);
    const srec = (await idFields(h, b.id)).srec!;
    expect(r.json).toEqual({
      status: expect.objectContaining({
        state: 'sold',
        product: 'talk-r',
        kind: 'talk',
        currency: 'EUR',
        face: FACE,
        balance: FACE,
        activeCalls: 0,
      }),
      sale: {
        record: srec,
        id: hash,
        product: 'talk-r',
        face: String(FACE),
        currency: 'EUR',
        price: String(PRICE),
        channel: `api:${SALES}`,
        ref: b.ref,
        provider: b.ref,
        commission: String(commissionOf(PRICE)),
        net: String(PRICE - commissionOf(PRICE)),
        time: expect.stringMatching(/^\d{13}$/),
      },
    });
    expect(bucket).toBe(h.ctx.ids.hash(b.id).bucket);
  });

  it('an unknown ID → 404, a mistyped one → 400, a non-admin token → 403', async () => {
    expect((await lookup(generateId(16))).status).toBe(404);
    const b = await buyOne();
    const typo = b.id.slice(0, -1) + String((Number(b.id.slice(-1)) + 1) % 10);
    const r = await lookup(typo);
    expect(r.status).toBe(400);
    expect(r.json.error.reason).toBe('bad_checksum');
    expect((await lookup(b.id, salesTok)).status).toBe(403);
    expect((await lookup(b.id, '')).status).toBe(401);
  });
});

describe('refund', () => {
  it('an unused ID: 200, the ID blocked at zero, a refund record, the payment voided and the credit released', async () => {
    const b = await buyOne();
    expect(await usedCredit(h, b.buyer.card)).toBe(PRICE);
    const { hash, bucket } = h.ctx.ids.hash(b.id);

    const r = await refund(b.id, 'bought by mistake');
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      refunded: FACE,
      record: expect.stringMatching(/^\d+-\d+$/),
      provider: 'voided',
      duplicate: false,
    });

    const f = await idFields(h, b.id);
    expect(f).toMatchObject({ st: 'blocked', bal: '0', why: 'refunded: bought by mistake', refrec: r.json.record });
    const recs = await recordsOf(h, hash);
    expect(recs).toHaveLength(2);
    expect(recs[1]).toEqual({
      stream: `${bucket}/${r.json.record}`,
      type: 'refund',
      id: hash,
      product: 'talk-r',
      face: String(FACE),
      currency: 'EUR',
      amount: String(FACE),
      ref: b.ref,
      channel: ADMIN,
      reason: 'bought by mistake',
      time: expect.stringMatching(/^\d{13}$/),
    });
    expect(await payment(h, b.ref)).toMatchObject({ status: 200, body: { state: 'voided' } });
    expect(await usedCredit(h, b.buyer.card)).toBe(0);

    // The ID no longer calls.
    const c = await Client.connect(gw.port, await token(h, 'switch'));
    try {
      expect(await c.request({ op: 'start', ref: 1, call: 'after-refund', id: b.id, dest: '4912345' })).toMatchObject({
        op: 'error',
        reason: 'blocked',
      });
    } finally {
      await c.close();
    }

    // The lookup shows both records.
    const l = await lookup(b.id);
    expect(l.json.status).toMatchObject({ state: 'blocked', balance: 0, blockedWhy: 'refunded: bought by mistake' });
    expect(l.json.refund).toMatchObject({
      record: r.json.record,
      type: 'refund',
      amount: String(FACE),
      ref: b.ref,
      void: 'voided',
    });
    expect(l.json.sale).toMatchObject({ record: f.srec, price: String(PRICE) });
  });

  it('a second refund is idempotent: the same record, duplicate true, the credit released once', async () => {
    const b = await buyOne();
    const first = await refund(b.id, 'twice');
    expect(first.status).toBe(200);
    const second = await refund(b.id, 'twice again');
    expect(second.status).toBe(200);
    expect(second.json).toEqual({ refunded: FACE, record: first.json.record, provider: 'voided', duplicate: true });
    expect(await recordsOf(h, hashOf(h, b.id))).toHaveLength(2);
    expect((await idFields(h, b.id)).why).toBe('refunded: twice');
    expect(await usedCredit(h, b.buyer.card)).toBe(0);
  });

  it('a used ID (one call made) is refused already_used and nothing changes', async () => {
    const b = await buyOne();
    await callWith(h, gw, b.id, 10);
    const before = await idFields(h, b.id);
    expect(before.bal).toBe(String(FACE - 1000));

    const r = await refund(b.id, 'too late');
    expect(r.status).toBe(409);
    expect(r.json.error.reason).toBe('already_used');
    expect(await idFields(h, b.id)).toEqual(before);
    expect(await recordsOf(h, hashOf(h, b.id))).toHaveLength(1);
    expect(await payment(h, b.ref)).toMatchObject({ status: 200, body: { state: 'captured' } });
    expect(await usedCredit(h, b.buyer.card)).toBe(PRICE);
  });

  it('a used ID past its expiry, its value forfeited, is refused already_used, not not_sold', async () => {
    // Found by the redemption model fuzzer (a forfeited ticket): its state, expired, read as unsold.
    const b = await buyOne();
    await callWith(h, gw, b.id, 10);
    await h.r.hset(idKeyOf(h, b.id), 'exp', Date.now() - 2 * 86_400_000);
    await gw.expiry.sweep();
    const before = await idFields(h, b.id);
    expect(before).toMatchObject({ st: 'expired', bal: '0' });

    const r = await refund(b.id, 'too late');
    expect([r.status, r.json.error.reason]).toEqual([409, 'already_used']);
    expect(await idFields(h, b.id)).toEqual(before);
    expect(await payment(h, b.ref)).toMatchObject({ status: 200, body: { state: 'captured' } });
  });

  it('a call that never got billed still counts as use', async () => {
    const b = await buyOne();
    await callWith(h, gw, b.id, 0);
    expect((await idFields(h, b.id)).bal).toBe(String(FACE));
    const r = await refund(b.id);
    expect(r.status).toBe(409);
    expect(r.json.error.reason).toBe('already_used');
    expect(await usedCredit(h, b.buyer.card)).toBe(PRICE);
  });

  it('a call counts as use on a product with no validity days too: unbilled, or its cost recharged', async () => {
    const [unbilled, recharged] = await soldIds(h, P0, 2);
    await callWith(h, gw, unbilled!, 0);
    expect(await idFields(h, unbilled!)).toMatchObject({ bal: String(FACE), act: '0' });
    await callWith(h, gw, recharged!, 10);
    const top = await http(gw, 'POST', `/v1/admin/ids/${recharged}/topup`, { token: adminTok, body: { amount: 1000 } });
    expect(top.json).toMatchObject({ balance: FACE });
    for (const id of [unbilled!, recharged!]) {
      const before = await idFields(h, id);
      const r = await refund(id, 'used');
      expect([r.status, r.json.error?.reason]).toEqual([409, 'already_used']);
      expect(await idFields(h, id)).toEqual(before);
    }
    // Had one been refunded, its `free` (set by the call) would outlive the zeroed balance.
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('the card company down during a refund: the ID is blocked, and repeating the refund voids the payment', async () => {
    const b = await buyOne();
    await setFaults(h, { failRate: 1 });
    const r = await refund(b.id, 'outage');
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ refunded: FACE, duplicate: false });
    expect(r.json.provider).not.toBe('voided');
    expect((await idFields(h, b.id)).st).toBe('blocked');
    expect(await usedCredit(h, b.buyer.card)).toBe(PRICE);
    // Once that answer is gone, the lookup still says the money has not gone back.
    expect((await lookup(b.id)).json.refund).toMatchObject({ record: r.json.record, void: r.json.provider });

    await setFaults(h, { failRate: 0 });
    const again = await refund(b.id, 'outage');
    expect(again.json).toEqual({ refunded: FACE, record: r.json.record, provider: 'voided', duplicate: true });
    expect(await usedCredit(h, b.buyer.card)).toBe(0);
    expect(await recordsOf(h, hashOf(h, b.id))).toHaveLength(2);
    expect((await lookup(b.id)).json.refund).toMatchObject({ void: 'voided' });
    // A refund that failed after a confirmed void does not hide it.
    await setFaults(h, { failRate: 1 });
    expect((await refund(b.id, 'outage')).json.provider).not.toBe('voided');
    expect((await lookup(b.id)).json.refund).toMatchObject({ void: 'voided' });
  });

  it('a refund whose void got no answer is voided by the gateways’ sweep, once, without anyone asking again', async () => {
    const b = await buyOne();
    await setFaults(h, { failRate: 1 });
    const r = await refund(b.id, 'outage');
    expect([r.status, r.json.provider]).toEqual([200, 'unknown']);
    await setFaults(h, { failRate: 0 });
    const provider = new HttpProvider(h.cfg.provider.url!, h.cfg.provider.timeoutMs, h.cfg.provider.key);
    // Not before its refund has had its time to ask.
    expect(await sweepRefundVoids(h.ctx, provider, Date.now())).toBe(0);
    expect(await usedCredit(h, b.buyer.card)).toBe(PRICE);
    expect((await lookup(b.id)).json.refund).toMatchObject({ void: 'unknown' });
    const later = Date.now() + 10 * 60_000;
    expect(await sweepRefundVoids(h.ctx, provider, later)).toBe(1);
    expect(await usedCredit(h, b.buyer.card)).toBe(0);
    expect((await lookup(b.id)).json.refund).toMatchObject({ void: 'voided' });
    expect(await sweepRefundVoids(h.ctx, provider, later + 10 * 60_000)).toBe(0);
    expect(await h.r.zcard(keys.refundVoids(bucketOf(h, b.id)))).toBe(0);
  });

  it('a refund from before voids were kept says its void is not recorded, not that it is being asked', async () => {
    const b = await buyOne();
    await setFaults(h, { failRate: 1 });
    try {
      expect((await refund(b.id, 'outage')).json.provider).toBe('unknown');
    } finally {
      await setFaults(h, { failRate: 0 });
    }
    // As such a refund stands: no answer kept, not listed to be asked again.
    await h.r.zrem(keys.refundVoids(bucketOf(h, b.id)), hashOf(h, b.id));
    expect((await lookup(b.id)).json.refund).toMatchObject({ void: 'not_recorded' });
  });

  it('an ID sold by hand (no card payment) is refunded without asking the card company', async () => {
    const [id] = await soldIds(h, P);
    const r = await refund(id!, 'manual sale');
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      refunded: FACE,
      record: expect.any(String),
      provider: 'not_paid_through_a_provider',
      duplicate: false,
    });
  });

  it('a recharged, never used ID is refused recharged (not already_used) and nothing changes', async () => {
    const b = await buyOne();
    const topup = await http(gw, 'POST', `/v1/admin/ids/${b.id}/topup`, { token: adminTok, body: { amount: 1000 } });
    expect(topup.status).toBe(200);
    const r = await refund(b.id, 'changed mind');
    expect([r.status, r.json.error.reason]).toEqual([409, 'recharged']);
    expect(await idFields(h, b.id)).toMatchObject({ st: 'sold', bal: String(FACE + 1000) });
    expect((await payment(h, b.ref)).body.state).toBe('captured');
  });

  it('a hand sale whose note names a card payment refunds without voiding that payment', async () => {
    const b = await buyOne();
    const [id] = await mint(h, P, 1);
    expect((await runCliIn(h, 'activate', id!, '--ref', b.ref)).code).toBe(0);
    const r = await refund(id!, 'changed mind');
    expect([r.status, r.json.provider]).toEqual([200, 'not_paid_through_a_provider']);
    // The other buyer's payment and ID are as they were.
    expect((await payment(h, b.ref)).body.state).toBe('captured');
    expect(await usedCredit(h, b.buyer.card)).toBe(PRICE);
    expect(await idFields(h, b.id)).toMatchObject({ st: 'sold', bal: String(FACE) });
  });

  it('an unused ID blocked after its sale (lost, stolen) is refunded and stays blocked', async () => {
    const b = await buyOne();
    expect((await runCliIn(h, 'block', b.id, '--reason', 'reported stolen')).code).toBe(0);
    const r = await refund(b.id, 'stolen card');
    expect([r.status, r.json.refunded, r.json.provider]).toEqual([200, FACE, 'voided']);
    expect(await idFields(h, b.id)).toMatchObject({ st: 'blocked', bal: '0' });
    expect(await usedCredit(h, b.buyer.card)).toBe(0);
  });

  it('a refunded ID stays blocked: unblock refuses it, so it cannot be topped up and used again', async () => {
    const [id] = await mint(h, P, 1);
    expect((await runCliIn(h, 'activate', id!, '--ref', 'till-7 receipt 42')).code).toBe(0);
    expect((await refund(id!, 'changed mind')).status).toBe(200);
    // The refund record carries the hand sale's reference, kept only in its sale record.
    const [, fields] = (await h.r.xrevrange(keys.sales(bucketOf(h, id!)), '+', '-', 'COUNT', 1))[0]!;
    expect(streamFields(fields)).toMatchObject({ type: 'refund', ref: 'till-7 receipt 42' });
    const unblock = await runCliIn(h, 'unblock', id!);
    expect(unblock.code).not.toBe(0);
    expect(unblock.err).toContain('refunded');
    expect(await idFields(h, id!)).toMatchObject({ st: 'blocked', bal: '0' });
    const topup = await runCliIn(h, 'topup', id!, '--amount', '1000');
    expect(topup).toMatchObject({ code: 1, err: expect.stringContaining('refunded') });
    expect(await idFields(h, id!)).toMatchObject({ st: 'blocked', bal: '0' });
  });

  it('refusals: unknown ID 404, not sold 409, mistyped 400, not admin 403, no token 401', async () => {
    const unknown = await refund(generateId(16));
    expect(unknown.status).toBe(404);
    expect(unknown.json.error.reason).toBe('unknown_id');
    const [minted] = await mint(h, P, 1);
    const notSold = await refund(minted!);
    expect(notSold.status).toBe(409);
    expect(notSold.json.error.reason).toBe('not_sold');
    expect((await idFields(h, minted!)).st).toBe('minted');
    const b = await buyOne();
    expect((await refund(b.id.slice(0, -1) + String((Number(b.id.slice(-1)) + 1) % 10))).status).toBe(400);
    expect((await refund(b.id, 'x', salesTok)).status).toBe(403);
    expect((await refund(b.id, 'x', '')).status).toBe(401);
    expect((await idFields(h, b.id)).st).toBe('sold');
    expect(await usedCredit(h, b.buyer.card)).toBe(PRICE);
  });
});

describe('export sales (CLI)', () => {
  it('NDJSON holds every sale with price, commission and net, and every refund', async () => {
    const sold = await buyOne();
    const refunded = await buyOne();
    const rr = await refund(refunded.id, 'exported');
    expect(rr.status).toBe(200);

    const r = await runCliIn(h, 'export', 'sales', '--format', 'ndjson');
    expect(r.code).toBe(0);
    const rows = r.out
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, string>);
    expect(r.err).toBe(`exported ${rows.length} record(s)\n`);

    const saleOf = (b: Bought) => rows.filter((x) => x.id === hashOf(h, b.id) && x.type !== 'refund');
    for (const b of [sold, refunded]) {
      expect(saleOf(b)).toEqual([
        expect.objectContaining({
          id: hashOf(h, b.id),
          product: 'talk-r',
          price: String(PRICE),
          currency: 'EUR',
          channel: `api:${SALES}`,
          ref: b.ref,
          provider: b.ref,
          commission: String(commissionOf(PRICE)),
          net: String(PRICE - commissionOf(PRICE)),
        }),
      ]);
    }
    const refunds = rows.filter((x) => x.type === 'refund' && x.id === hashOf(h, refunded.id));
    expect(refunds).toEqual([
      expect.objectContaining({
        type: 'refund',
        amount: String(FACE),
        ref: refunded.ref,
        reason: 'exported',
        channel: ADMIN,
      }),
    ]);
    expect(rows.filter((x) => x.type === 'refund' && x.id === hashOf(h, sold.id))).toHaveLength(0);
  });

  it('CSV tells sales and refunds apart and carries commission and net', async () => {
    const b = await buyOne();
    expect((await refund(b.id, 'csv')).status).toBe(200);
    const r = await runCliIn(h, 'export', 'sales', '--format', 'csv');
    expect(r.code).toBe(0);
    const rows = parse<Record<string, string>>(r.out, { columns: true });
    const mine = rows.filter((x) => x.id === hashOf(h, b.id));
    expect(mine).toHaveLength(2);
    const [sale, back] = mine as [Record<string, string>, Record<string, string>];
    expect(sale).toMatchObject({
      price: String(PRICE),
      commission: String(commissionOf(PRICE)),
      net: String(PRICE - commissionOf(PRICE)),
      ref: b.ref,
    });
    expect(sale.type ?? '').not.toBe('refund');
    expect(back).toMatchObject({ type: 'refund', ref: b.ref });
  });
});

describe('access numbers', () => {
  const TOKYO: AccessArea = {
    area: 'jp-tokyo',
    name: 'Japan: Tokyo',
    countryCode: '81',
    numbers: [{ number: '+81 3 1234 5678', label: 'toll free' }, { number: '03-9876-5432' }],
    notes: 'Payphones need a <10 yen> coin & patience.',
  };
  const PARIS: AccessArea = {
    area: 'fr-paris',
    name: 'France: Paris',
    countryCode: '33',
    numbers: [{ number: '+33 1 23 45 67 89' }],
  };

  it('none published yet: an empty list and a page that says so', async () => {
    const j = await http(gw, 'GET', '/v1/access-numbers');
    expect(j.status).toBe(200);
    expect(j.json).toEqual({ areas: [] });
    const p = await http(gw, 'GET', '/access');
    expect(p.status).toBe(200);
    expect(p.text).toContain('No access numbers are published yet.');
  });

  it('loaded areas show as JSON (no token needed) and on the pages, with the dialling sequence', async () => {
    await putAccess(h.ctx.redis, [TOKYO, PARIS]);
    const end = Date.now() + 5000;
    while (!gw.catalog.area('fr-paris') && Date.now() < end) await sleep(20);

    const j = await http(gw, 'GET', '/v1/access-numbers');
    expect(j.status).toBe(200);
    // Sorted by name.
    expect(j.json).toEqual({ areas: [PARIS, TOKYO] });

    const list = await http(gw, 'GET', '/access');
    expect(list.status).toBe(200);
    expect(list.type).toBe('text/html; charset=utf-8');
    expect(list.text).toContain('Where are you now?');
    expect(list.text).toContain('<a href="/access/jp-tokyo">Japan: Tokyo</a>');
    expect(list.text).toContain('<a href="/access/fr-paris">France: Paris</a>');
    expect(list.text.indexOf('France: Paris')).toBeLessThan(list.text.indexOf('Japan: Tokyo'));

    const tokyo = await http(gw, 'GET', '/access/jp-tokyo');
    expect(tokyo.status).toBe(200);
    expect(tokyo.text).toContain('<h1>Japan: Tokyo</h1>');
    // Each number a link a phone dials with a tap.
    expect(tokyo.text).toContain(
      '<li><a href="tel:+81312345678"><strong>+81 3 1234 5678</strong></a> (toll free)</li>',
    );
    expect(tokyo.text).toContain('<li><a href="tel:0398765432"><strong>03-9876-5432</strong></a></li>');
    // The sequence: access number, then the ID, then country code, area code and number.
    const seq = [
      'dial the access number above',
      'enter your ID number',
      'dial the country code, the area code and the number',
    ];
    const at = seq.map((s) => tokyo.text.indexOf(s));
    expect(at.every((i) => i > 0)).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    expect(tokyo.text).toContain('81');
    // Notes are shown, escaped.
    expect(tokyo.text).toContain('Payphones need a &lt;10 yen&gt; coin &amp; patience.');
    expect(tokyo.text).not.toContain('<10 yen>');

    const paris = await http(gw, 'GET', '/access/fr-paris');
    expect(paris.status).toBe(200);
    expect(paris.text).toContain('<strong>+33 1 23 45 67 89</strong>');
    expect(paris.text).not.toContain('+81 3 1234 5678');
    // The same path percent-encoded is the same page (RFC 3986 §6.2.2.2).
    expect(await http(gw, 'GET', '/access/fr%2Dparis')).toMatchObject({ status: 200, text: paris.text });
  });

  it('an unknown area → 404 page pointing back to the list', async () => {
    for (const area of ['mars-base', 'JP-TOKYO', '%3Cscript%3E']) {
      const r = await http(gw, 'GET', `/access/${area}`);
      expect(r.status, area).toBe(404);
      expect(r.type).toBe('text/html; charset=utf-8');
      expect(r.text).toContain('Unknown area');
      expect(r.text).toContain('href="/access"');
      expect(r.text).not.toContain('<script>');
    }
  });

  it('an address with a slash added leads to its area or the list; any other under /access/ is an unknown area', async () => {
    await putAccess(h.ctx.redis, [TOKYO, PARIS]);
    const end = Date.now() + 5000;
    while (!gw.catalog.area('fr-paris') && Date.now() < end) await sleep(20);
    for (const [path, to] of [
      ['/access/', '/access'],
      ['/access/fr-paris/', '/access/fr-paris'],
      ['/access/fr%2Dparis/', '/access/fr-paris'],
    ]) {
      const r = await fetch(`http://127.0.0.1:${gw.port}${path!}`, { redirect: 'manual' });
      expect(r.status, path).toBe(302);
      expect(r.headers.get('location'), path).toBe(to);
      expect(r.headers.get('cache-control'), path).toBe('no-store');
    }
    for (const path of ['/access/mars-base/', '/access/fr-paris/x', '/access//fr-paris', '/access/%ZZ/']) {
      const r = await http(gw, 'GET', path);
      expect(r.status, path).toBe(404);
      expect(r.headers.get('tessera-reason'), path).toBe('unknown_area');
      expect(r.type, path).toBe('text/html; charset=utf-8');
      expect(r.text, path).toContain('href="/access"');
    }
  });

  it('a changed area shows its new number without a restart', async () => {
    await putAccess(h.ctx.redis, [{ ...PARIS, numbers: [{ number: '+33 9 99 99 99 99', label: 'new' }] }]);
    const end = Date.now() + 5000;
    while (gw.catalog.area('fr-paris')?.numbers[0]?.number !== '+33 9 99 99 99 99' && Date.now() < end) await sleep(20);
    const r = await http(gw, 'GET', '/access/fr-paris');
    expect(r.text).toContain('<strong>+33 9 99 99 99 99</strong></a> (new)');
    expect(r.text).not.toContain('+33 1 23 45 67 89');
    expect((await http(gw, 'GET', '/v1/access-numbers')).json.areas[0].numbers).toEqual([
      { number: '+33 9 99 99 99 99', label: 'new' },
    ]);
  });
});

/**
 * Top-up: a recharge voucher redeemed into a talk ID (over the HTTP API and
 * the check page), the operator's `tessera topup`, and the owner's online
 * recharge on the check page through the card company. Real Redis, real HTTP,
 * the sandbox card company; the conservation audit balances at the end.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_MICRO, type Product, type RechargeProduct } from '../../src/catalog/schema';
import type { Gateway } from '../../src/gateway/server';
import { generateId } from '../../src/ids/idnum';
import { tokenHash } from '../../src/catalog/store';
import { keys } from '../../src/redis/keys';
import { refundSale } from '../../src/sales/admin';
import { HttpProvider } from '../../src/sales/provider';
import { setIdState } from '../../src/ledger/ids';
import { claimPurchase, takeVoucher } from '../../src/sales/scripts';
import { runCliIn } from '../support/cli';
import { Client } from '../support/ws-client';
import { gateway, keepEvents, mint, seedCatalog, soldIds, startHarness, token, type Harness } from '../support/harness';
import { formSession, jsonCall, postPageForm, type Res } from '../support/http';
import { balanceOf, bucketOf, hashOf, idFields, idKeyOf, streamFields } from '../support/redis';
import {
  addMember,
  addProducts,
  buy,
  callWith,
  fieldOf,
  newKey,
  NO_FAULTS,
  ownedId,
  product,
  recordsOf,
  setFaults,
  usedCredit,
  type Buyer,
  type OwnedId,
} from './fixtures';

const DAY = 86_400_000;
const TALK = product('talk-t', {
  face: 1_000_000,
  price: 1_000_000,
  expiryDays: 30,
  topupExtendsDays: 60,
  topupAmounts: [500_000, 2_000_000],
  topupMaxBalance: 5_000_000,
});
const FIXED = product('talk-fixed', { topup: false });
const TALK_MAX = product('talk-max', { face: MAX_MICRO, price: MAX_MICRO });
const VOUCHER: RechargeProduct = {
  name: 'voucher-2',
  kind: 'recharge',
  currency: 'EUR',
  price: 2_000_000,
  face: 2_000_000,
  into: [],
};
const VOUCHER_USD: RechargeProduct = { ...VOUCHER, name: 'voucher-usd', currency: 'USD' };
const BIG_VOUCHER: RechargeProduct = { ...VOUCHER, name: 'voucher-big', face: 4_500_000, price: 4_500_000 };

let h: Harness;
let gw: Gateway;
let till: string;
let salesTok: string;
let buyer: Buyer;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK, FIXED, TALK_MAX, VOUCHER, VOUCHER_USD, BIG_VOUCHER] as Product[]);
  await mint(h, TALK, 16);
  await mint(h, FIXED, 2);
  await mint(h, TALK_MAX, 1);
  gw = await keepEvents(await gateway(h)); // topupEvents reads them
  till = await token(h, 'sales', 'till-1');
  salesTok = await token(h, 'sales', 'shop-t');
  buyer = await addMember(h, 100_000_000);
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

const redeem = (id: string, voucher: string): Promise<{ status: number; json: any }> =>
  jsonCall(gw, 'POST', '/v1/topups', { token: till, body: { id, voucher } });

/** The ID's bucket's balance events of type topup for this ID. */
async function topupEvents(id: string): Promise<Record<string, string>[]> {
  const all = await h.r.xrange(keys.events(bucketOf(h, id)), '-', '+');
  return all.map(([, f]) => streamFields(f)).filter((e) => e.type === 'topup' && e.idh === hashOf(h, id));
}

describe('recharge voucher into an ID', () => {
  it('credits the ID and consumes the voucher once, with one record each', async () => {
    const [id] = await soldIds(h, TALK);
    const [v] = await soldIds(h, VOUCHER);
    const r = await redeem(id!, v!);
    expect(r).toEqual({
      status: 200,
      json: { amount: 2_000_000, balance: 3_000_000, currency: 'EUR', record: expect.any(String), duplicate: false },
    });
    expect(await balanceOf(h, id!)).toBe(3_000_000);
    expect(await idFields(h, v!)).toMatchObject({ st: 'exhausted', bal: '0', tst: 'done' });
    const [into] = (await recordsOf(h, hashOf(h, id!))).filter((x) => x.type === 'topup');
    expect(into).toMatchObject({ amount: '2000000', source: 'voucher', note: hashOf(h, v!), bal: '3000000' });
    const out = (await recordsOf(h, hashOf(h, v!))).filter((x) => x.type === 'voucher');
    expect(out).toEqual([expect.objectContaining({ amount: '2000000', to: hashOf(h, id!) })]);
    expect(await topupEvents(id!)).toEqual([
      expect.objectContaining({ source: 'voucher', amount: '2000000', bal: '3000000', ref: hashOf(h, v!) }),
    ]);

    // The same request again answers the first redemption; the voucher into another ID is refused.
    expect((await redeem(id!, v!)).json).toMatchObject({ balance: 3_000_000, duplicate: true });
    const [other] = await soldIds(h, TALK);
    expect(await redeem(other!, v!)).toMatchObject({ status: 409, json: { error: { reason: 'already_redeemed' } } });
    expect(await balanceOf(h, id!)).toBe(3_000_000);
    expect(await balanceOf(h, other!)).toBe(1_000_000);
    expect((await recordsOf(h, hashOf(h, id!))).filter((x) => x.type === 'topup')).toHaveLength(1);
  });

  it('a transfer cut short after the voucher was taken is finished by a retry, once', async () => {
    const [id] = await soldIds(h, TALK);
    const [v] = await soldIds(h, VOUCHER);
    // The gateway died right after step 1: the voucher is taken, the ID not credited.
    const vloc = { key: idKeyOf(h, v!), bucket: bucketOf(h, v!) };
    expect(await takeVoucher(h.ctx.scripts, vloc, idKeyOf(h, id!), 'test')).toMatchObject({ ok: true, state: 'sent' });
    expect(await balanceOf(h, id!)).toBe(1_000_000);
    expect((await redeem(id!, v!)).json).toMatchObject({ amount: 2_000_000, balance: 3_000_000 });
    // The sweep, late, finds nothing left to do.
    await gw.topups.sweepTransfers(Date.now() + 3_600_000);
    expect((await redeem(id!, v!)).json).toMatchObject({ balance: 3_000_000, duplicate: true });
    expect(await balanceOf(h, id!)).toBe(3_000_000);
    expect(await h.r.zscore(keys.openTransfers(vloc.bucket), vloc.key)).toBeNull();
  });

  it('the transfer sweep finishes a transfer nobody retries, and a retry after it credits nothing more', async () => {
    const [id] = await soldIds(h, TALK);
    const [v] = await soldIds(h, VOUCHER);
    const vloc = { key: idKeyOf(h, v!), bucket: bucketOf(h, v!) };
    await takeVoucher(h.ctx.scripts, vloc, idKeyOf(h, id!), 'test');
    // Within its grace the sweep leaves it to the request.
    expect(await gw.topups.sweepTransfers()).toBe(0);
    expect(await gw.topups.sweepTransfers(Date.now() + 3_600_000)).toBe(1);
    expect(await balanceOf(h, id!)).toBe(3_000_000);
    expect(await idFields(h, v!)).toMatchObject({ tst: 'done', bal: '0' });
    expect((await redeem(id!, v!)).json).toMatchObject({ balance: 3_000_000, duplicate: true });
    expect(await balanceOf(h, id!)).toBe(3_000_000);
  });

  it('a target that refuses after the voucher was taken gives the voucher its value back', async () => {
    const [id, other] = await soldIds(h, TALK, 2);
    const [v] = await soldIds(h, VOUCHER);
    const vloc = { key: idKeyOf(h, v!), bucket: bucketOf(h, v!) };
    await takeVoucher(h.ctx.scripts, vloc, idKeyOf(h, id!), 'test');
    await setIdState(h.ctx, id!, 'block', 'lost');
    await gw.topups.sweepTransfers(Date.now() + 3_600_000);
    expect(await balanceOf(h, id!)).toBe(1_000_000);
    expect(await idFields(h, v!)).toMatchObject({ st: 'sold', bal: '2000000', tst: 'returned' });
    // Unblocked, the first target still never gets that transfer; the voucher goes into another ID.
    await setIdState(h.ctx, id!, 'unblock');
    await gw.topups.sweepTransfers(Date.now() + 3_600_000);
    expect(await balanceOf(h, id!)).toBe(1_000_000);
    expect((await redeem(other!, v!)).json).toMatchObject({ amount: 2_000_000, balance: 3_000_000 });
    const amounts = (await recordsOf(h, hashOf(h, v!))).filter((x) => x.type === 'voucher').map((x) => x.amount);
    expect(amounts).toEqual(['2000000', '-2000000', '2000000']);
  });

  it('a voucher blocked while its value was on its way stays blocked when the value comes back', async () => {
    const [id] = await soldIds(h, TALK);
    const [v] = await soldIds(h, VOUCHER);
    const vloc = { key: idKeyOf(h, v!), bucket: bucketOf(h, v!) };
    await takeVoucher(h.ctx.scripts, vloc, idKeyOf(h, id!), 'test');
    // Reported stolen mid-transfer, and the target refuses it.
    await setIdState(h.ctx, v!, 'block', 'stolen');
    await setIdState(h.ctx, id!, 'block', 'lost');
    await gw.topups.sweepTransfers(Date.now() + 3_600_000);
    expect(await idFields(h, v!)).toMatchObject({ st: 'blocked', prev: 'sold', bal: '2000000', tst: 'returned' });
    const [other] = await soldIds(h, TALK);
    expect((await redeem(other!, v!)).json).toMatchObject({ error: { reason: 'blocked' } });
    expect(await balanceOf(h, other!)).toBe(1_000_000);
    // Unblocked, it is a voucher with its value again.
    await setIdState(h.ctx, v!, 'unblock');
    expect((await redeem(other!, v!)).json).toMatchObject({ amount: 2_000_000, balance: 3_000_000 });
  });

  it('refuses with a catalogued reason and leaves the voucher whole', async () => {
    const [fixed] = await soldIds(h, FIXED);
    const [blocked, refunded, talkAsVoucher, full] = await soldIds(h, TALK, 4);
    const [v] = await soldIds(h, VOUCHER);
    const [usd] = await soldIds(h, VOUCHER_USD);
    const [big] = await soldIds(h, BIG_VOUCHER);
    await setIdState(h.ctx, blocked!, 'block', 'fraud');
    const provider = new HttpProvider(h.cfg.provider.url!, 2000);
    expect(await refundSale(h.ctx, provider, refunded!, 'changed mind', 'op')).toMatchObject({ ok: true });
    const cases: [string, string, number, string][] = [
      [fixed!, v!, 422, 'topup_forbidden'],
      [blocked!, v!, 403, 'blocked'],
      [refunded!, v!, 409, 'refunded'],
      [full!, usd!, 422, 'wrong_currency'],
      [full!, big!, 422, 'topup_limit'],
      [full!, talkAsVoucher!, 422, 'not_voucher'],
      [v!, v!, 422, 'not_voucher'],
    ];
    for (const [id, voucher, status, reason] of cases)
      expect(await redeem(id, voucher), reason).toMatchObject({ status, json: { error: { reason } } });
    expect(await idFields(h, v!)).toMatchObject({ st: 'sold', bal: '2000000' });
    expect(await idFields(h, big!)).toMatchObject({ st: 'sold', bal: '4500000' });
    expect(await recordsOf(h, hashOf(h, v!))).toHaveLength(1); // its sale alone

    // An expired ID: its validity ran out after first use.
    const [old] = await soldIds(h, TALK);
    await h.r.hset(idKeyOf(h, old!), 'exp', String(Date.now() - 1000), 'first', String(Date.now() - 31 * DAY));
    expect(await redeem(old!, v!)).toMatchObject({ status: 410, json: { error: { reason: 'expired' } } });
    expect(await idFields(h, v!)).toMatchObject({ st: 'sold', bal: '2000000' });
  });

  it('is open to IVRs (switch tokens) as to tills, not to scanners', async () => {
    const [id] = await soldIds(h, TALK);
    const [v, w] = await soldIds(h, VOUCHER, 2);
    const ivr = await token(h, 'switch', 'ivr-1');
    const viaIvr = await jsonCall(gw, 'POST', '/v1/topups', { token: ivr, body: { id, voucher: v } });
    expect(viaIvr).toMatchObject({ status: 200, json: { balance: 3_000_000 } });
    const scanner = await token(h, 'scanner', 'gate-t', { venue: 'arena' });
    const viaScanner = await jsonCall(gw, 'POST', '/v1/topups', { token: scanner, body: { id, voucher: w } });
    expect(viaScanner).toMatchObject({ status: 403, json: { error: { reason: 'forbidden' } } });
    expect(await balanceOf(h, w!)).toBe(2_000_000);
  });

  it('is listed with its face value when on public sale', async () => {
    const onSale: RechargeProduct = { ...VOUCHER, name: 'voucher-web', webShop: true };
    await addProducts(h, gw, [onSale]);
    const listed = (await jsonCall(gw, 'GET', '/v1/products')).json.products;
    expect(listed.find((p: { name: string }) => p.name === 'voucher-web')).toMatchObject({
      kind: 'recharge',
      face: 2_000_000,
      price: 2_000_000,
    });
  });

  it('is no ID to call or redeem with', async () => {
    const [v] = await soldIds(h, VOUCHER);
    const sw = await Client.connect(gw.port, await token(h, 'switch'));
    try {
      expect(await sw.request({ op: 'start', ref: 1, call: 'v-call', id: v!, dest: '4912345' })).toMatchObject({
        op: 'error',
        reason: 'wrong_kind',
      });
    } finally {
      await sw.close();
    }
    const scanner = await token(h, 'scanner', 'gate-v', { venue: 'arena' });
    const r = await jsonCall(gw, 'POST', '/v1/redeem', { token: scanner, body: { scan: 'v-scan-1', id: v! } });
    expect(r).toMatchObject({ status: 422, json: { error: { reason: 'wrong_kind' } } });
    expect(await idFields(h, v!)).toMatchObject({ st: 'sold', bal: '2000000' });
  });

  it('a voucher transferred into an ID cannot be refunded: already_used', async () => {
    const tok = await token(h, 'sales', 'till-refund');
    const admin = await token(h, 'admin', 'ops-refund');
    const [id] = await soldIds(h, TALK);
    const [v] = await soldIds(h, VOUCHER);
    expect((await jsonCall(gw, 'POST', '/v1/topups', { token: tok, body: { id: id!, voucher: v! } })).status).toBe(200);
    const r = await jsonCall(gw, 'POST', `/v1/admin/sales/${v}/refund`, { token: admin, body: {} });
    expect(r).toMatchObject({ status: 409, json: { error: { reason: 'already_used' } } });
  });

  it('throttles a client that sends voucher numbers that do not exist', async () => {
    const g = await gateway(h, { guessLimit: 3 });
    try {
      const tok = await token(h, 'sales', 'till-guess');
      const [id] = await soldIds(h, TALK);
      const [v] = await soldIds(h, VOUCHER);
      const unknown = generateId(h.cfg.idLength);
      const send = (voucher: string): Promise<{ status: number; json: any }> =>
        jsonCall(g, 'POST', '/v1/topups', { token: tok, body: { id: id!, voucher } });
      for (let i = 0; i < 3; i++) expect((await send(unknown)).json.error.reason).toBe('unknown_id');
      expect(await send(unknown)).toMatchObject({ status: 429, json: { error: { reason: 'throttled' } } });
      expect((await send(v!)).json.error.reason).toBe('throttled');
    } finally {
      await g.close();
    }
  });

  it('throttles a burst of unknown voucher numbers sent at once: a real one among them is not taken', async () => {
    const g = await gateway(h, { guessLimit: 3 });
    try {
      const tok = await token(h, 'sales', 'till-burst');
      const [id] = await soldIds(h, TALK);
      const [v] = await soldIds(h, VOUCHER);
      const vouchers = [...Array.from({ length: 40 }, () => generateId(h.cfg.idLength)), v!];
      const answers = await Promise.all(
        vouchers.map((voucher) => jsonCall(g, 'POST', '/v1/topups', { token: tok, body: { id: id!, voucher } })),
      );
      const reasons = answers.map((a) => (a.json as { error?: { reason: string } }).error?.reason ?? 'ok');
      // At most the limit's unknown_id answers; the rest, the real voucher (sent last) included, throttled.
      expect(reasons.filter((r) => r === 'unknown_id').length).toBeLessThanOrEqual(3);
      expect(reasons.filter((r) => r !== 'unknown_id')).toEqual(
        Array.from({ length: 41 - reasons.filter((r) => r === 'unknown_id').length }, () => 'throttled'),
      );
      expect(await idFields(h, v!)).toMatchObject({ st: 'sold', bal: String(VOUCHER.face) });
    } finally {
      await g.close();
    }
  });
});

describe('tessera topup', () => {
  it('its balance event says the new expiry, or 0 when the top-up did not move it', async () => {
    const [id] = await soldIds(h, TALK);
    await callWith(h, gw, id!, 10);
    const moved = JSON.parse((await runCliIn(h, 'topup', id!, '--amount', '1000')).out) as { expires: number };
    // Further off than the product's 60 days: the next top-up leaves it where it is.
    await h.r.hset(idKeyOf(h, id!), 'exp', String(Date.now() + 400 * DAY));
    expect((await runCliIn(h, 'topup', id!, '--amount', '1000')).code).toBe(0);
    expect((await topupEvents(id!)).map((e) => e.exp)).toEqual([String(moved.expires), '0']);
  });

  it('credits an ID with a record, once per --key, and an exhausted ID can call again', async () => {
    const [id] = await soldIds(h, TALK);
    // Use it all: 100 micro-units a second.
    await callWith(h, gw, id!, 20_000);
    expect(await idFields(h, id!)).toMatchObject({ st: 'exhausted', bal: '0' });
    const exp = Number((await idFields(h, id!)).exp);
    expect(exp).toBeGreaterThan(Date.now() + 29 * DAY);

    const run = await runCliIn(h, 'topup', id!, '--amount', '500000', '--note', 'goodwill', '--key', 'case-1234');
    expect(run.code).toBe(0);
    const out = JSON.parse(run.out);
    expect(out).toMatchObject({ amount: 500_000, balance: 500_000, currency: 'EUR', duplicate: false });
    // The expiry moved to 60 days from now (the product's topupExtendsDays).
    expect(out.expires).toBeGreaterThan(Date.now() + 59 * DAY);
    expect(await idFields(h, id!)).toMatchObject({ st: 'sold', bal: '500000' });
    const again = await runCliIn(h, 'topup', id!, '--amount', '500000', '--note', 'goodwill', '--key', 'case-1234');
    expect(JSON.parse(again.out)).toMatchObject({ balance: 500_000, duplicate: true });

    const [rec] = (await recordsOf(h, hashOf(h, id!))).filter((x) => x.type === 'topup');
    expect(rec).toMatchObject({ source: 'operator', note: 'goodwill', amount: '500000' });
    expect((await callWith(h, gw, id!, 10)).started.op).toBe('started');

    // Without a key each run is a top-up of its own; a forbidden product or a bad amount is refused.
    expect((await runCliIn(h, 'topup', id!, '--amount', '1000')).code).toBe(0);
    expect(await balanceOf(h, id!)).toBe(500_000 - 1000 + 1000);
    const [fixed] = await soldIds(h, FIXED);
    const no = await runCliIn(h, 'topup', fixed!, '--amount', '1000');
    expect(no).toMatchObject({ code: 1, err: expect.stringContaining('topup_forbidden') });
    expect((await runCliIn(h, 'topup', id!, '--amount', '1.5')).code).toBe(2);
  });

  it('never takes a balance past 10^15, where Lua and JSON would stop counting exactly', async () => {
    // Ten times this face (the default topupMaxBalance) is past 2^53: a balance there loses micro-units.
    const [id] = await soldIds(h, TALK_MAX);
    const no = await runCliIn(h, 'topup', id!, '--amount', '1');
    expect(no).toMatchObject({ code: 1, err: expect.stringContaining('topup_limit') });
    expect((await runCliIn(h, 'topup', id!, '--amount', String(8e15 + 1))).code).toBe(2);
    expect(await balanceOf(h, id!)).toBe(MAX_MICRO);
  });

  it('is offered to admins over HTTP, idempotent by Idempotency-Key', async () => {
    const admin = await token(h, 'admin', 'ops-t');
    const [id] = await soldIds(h, TALK);
    const post = (): Promise<{ status: number; json: any }> =>
      jsonCall(gw, 'POST', `/v1/admin/ids/${id}/topup`, {
        token: admin,
        idem: 'topup-0001',
        body: { amount: 250_000, note: 'apology' },
      });
    expect(await post()).toMatchObject({ status: 200, json: { amount: 250_000, balance: 1_250_000 } });
    expect(await post()).toMatchObject({ status: 200, json: { balance: 1_250_000, duplicate: true } });
    // The same key for another amount is no retry: refused, nothing credited (not "a repeat of 250,000").
    const other = await jsonCall(gw, 'POST', `/v1/admin/ids/${id}/topup`, {
      token: admin,
      idem: 'topup-0001',
      body: { amount: 600_000, note: 'apology' },
    });
    expect(other).toMatchObject({ status: 422, json: { error: { reason: 'idempotency_conflict' } } });
    expect(await balanceOf(h, id!)).toBe(1_250_000);
    expect(await jsonCall(gw, 'POST', `/v1/admin/ids/${id}/topup`, { token: till, body: { amount: 1 } })).toMatchObject(
      { status: 403 },
    );
  });

  it("refuses an admin token named cli, made before the name was refused: its keys are the command line's", async () => {
    const [id] = await soldIds(h, TALK);
    expect((await runCliIn(h, 'topup', id!, '--amount', '1000', '--key', 'shared-key-1')).code).toBe(0);
    // Written as token-create wrote it then.
    const cliTok = `tsk_${'c'.repeat(43)}`;
    await h.r.hset(keys.tokens, tokenHash(cliTok), JSON.stringify({ name: 'cli', role: 'admin', created: Date.now() }));
    const r = await jsonCall(gw, 'POST', `/v1/admin/ids/${id}/topup`, {
      token: cliTok,
      idem: 'shared-key-1',
      body: { amount: 1000 },
    });
    expect(r).toMatchObject({ status: 403, json: { error: { reason: 'reserved_name' } } });
    expect(await balanceOf(h, id!)).toBe(1_000_000 + 1000);
  });
});

describe('the check page', () => {
  const PIN = '8642';

  /** The card recharge form of an owner's check page: its grant and nonce, the amount, the payer's card. */
  const rechargeForm = (o: OwnedId, amount: string, payer: Buyer): Record<string, string> => ({
    grant: fieldOf(o.page.text, 'grant'),
    nonce: fieldOf(o.page.text, 'nonce'),
    amount,
    ...payer,
  });

  /** Buys an ID and opens its check link with the PIN, as its owner's browser would. */
  const owned = (g = gw): Promise<OwnedId> => ownedId(g, salesTok, TALK.name, buyer, PIN);

  it('recharges online: a declined card says so and charges nothing; a retry of the form charges once', async () => {
    const o = await owned();
    expect(o.page.text).toContain('Recharge this ID');
    const grant = fieldOf(o.page.text, 'grant');
    const poor = await addMember(h, 100_000);
    const declined = await postPageForm(
      gw,
      `${o.path}/recharge`,
      { grant, nonce: fieldOf(o.page.text, 'nonce'), amount: '2000000', card: poor.card, cardPin: poor.cardPin },
      o.session,
    );
    expect(declined.status).toBe(402);
    expect(declined.text).toContain('Not enough credit on the card.');
    expect(await balanceOf(h, o.id)).toBe(1_000_000);

    const payer = await addMember(h, 10_000_000);
    const form = { grant, nonce: fieldOf(declined.text, 'nonce'), amount: '2000000', ...payer };
    const ok = await postPageForm(gw, `${o.path}/recharge`, form, o.session);
    expect(ok.status).toBe(200);
    expect(ok.text).toContain('added to your ID');
    expect(await balanceOf(h, o.id)).toBe(3_000_000);
    // Submitted twice (a reload): the same recharge, charged and credited once.
    expect((await postPageForm(gw, `${o.path}/recharge`, form, o.session)).status).toBe(200);
    expect(await balanceOf(h, o.id)).toBe(3_000_000);
    expect(await usedCredit(h, payer.card)).toBe(2_000_000);
    const [rec] = (await recordsOf(h, hashOf(h, o.id))).filter((x) => x.type === 'topup');
    expect(rec).toMatchObject({ source: 'online', amount: '2000000', price: '2000000' });

    // Only the amounts on offer.
    const odd = await postPageForm(
      gw,
      `${o.path}/recharge`,
      { grant, nonce: 'ab'.repeat(16), amount: '1234', ...payer },
      o.session,
    );
    expect(odd.status).toBe(400);
    // A card number of the wrong length is mistyped (400), not declined.
    const short = await postPageForm(
      gw,
      `${o.path}/recharge`,
      { grant, nonce: 'cd'.repeat(16), amount: '2000000', card: '12345678', cardPin: payer.cardPin },
      o.session,
    );
    expect(short.status).toBe(400);
    expect(short.text).toContain('Please enter the card number: 12 to 19 digits.');
    expect(await usedCredit(h, payer.card)).toBe(2_000_000);
  });

  it('new recharges count against the limits of anonymous card payments: no guessing card PINs', async () => {
    const limited = await gateway(h, {
      trustProxy: true,
      buyLimit: { windowSec: 600, perClient: 3, perNetwork: 1000, total: 1000 },
    });
    try {
      const o = await owned(limited);
      const grant = fieldOf(o.page.text, 'grant');
      const payer = await addMember(h, 10_000_000);
      const from = { 'X-Forwarded-For': '198.51.100.41' };
      const recharge = (card: string, cardPin: string, nonce = randomBytes(16).toString('hex')): Promise<Res> =>
        postPageForm(
          limited,
          `${o.path}/recharge`,
          { grant, nonce, amount: '2000000', card, cardPin },
          o.session,
          from,
        );
      // A number that fails its check digit is refused before it is counted or sent to the card company.
      const typo = payer.card.slice(0, -1) + String((Number(payer.card.at(-1)) + 1) % 10);
      for (let i = 0; i < 4; i++) expect((await recharge(typo, payer.cardPin)).text).toContain('card number');
      const first = randomBytes(16).toString('hex');
      for (const pin of ['0000', '0001', '0002']) {
        const wrong = await recharge(payer.card, pin, pin === '0000' ? first : undefined);
        expect(wrong.status).toBe(402);
      }
      const refused = await recharge(payer.card, payer.cardPin);
      expect(refused.status).toBe(429);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
      // The first form again is not a new payment: its answer, not a 429.
      expect((await recharge(payer.card, '0000', first)).status).toBe(402);
      expect(await balanceOf(h, o.id)).toBe(1_000_000);
      expect(await usedCredit(h, payer.card)).toBe(0);
    } finally {
      await limited.close();
    }
  });

  it('a card company that does not answer: the same form again finishes the recharge, charged once', async () => {
    const slow = await gateway(h, { provider: { ...h.cfg.provider, timeoutMs: 300 } });
    try {
      const o = await owned();
      const payer = await addMember(h, 10_000_000);
      // Not the first amount offered, which a browser would select by itself.
      const form = rechargeForm(o, '2000000', payer);
      await setFaults(h, { hangNext: 1 });
      const pending = await postPageForm(slow, `${o.path}/recharge`, form, o.session);
      expect(pending.status).toBe(503);
      expect(pending.text).toContain('you will not be charged twice');
      // The page keeps this recharge's nonce and amount for the retry.
      expect(fieldOf(pending.text, 'nonce')).toBe(form.nonce);
      expect(pending.text.match(/<option [^>]*selected/g)).toEqual([`<option value="${form.amount}" selected`]);
      expect(await balanceOf(h, o.id)).toBe(1_000_000);
      // Sent again through a gateway that waits the card company's usual time: only the first was
      // to time out, and 300 ms is no bound on an answer on a busy machine.
      const done = await postPageForm(gw, `${o.path}/recharge`, form, o.session);
      expect(done.status).toBe(200);
      expect(await balanceOf(h, o.id)).toBe(3_000_000);
      expect(await usedCredit(h, payer.card)).toBe(2_000_000);
    } finally {
      await setFaults(h, NO_FAULTS);
      await slow.close();
    }
  });

  it('the recharge form sent twice (a double tap) while the card company is slow: the second page says recharged', async () => {
    const o = await owned();
    const payer = await addMember(h, 10_000_000);
    const form = rechargeForm(o, '2000000', payer);
    await setFaults(h, { latencyMs: 400 });
    try {
      // The browser shows only the second answer: it must say what the first did.
      const first = postPageForm(gw, `${o.path}/recharge`, form, o.session);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const second = await postPageForm(gw, `${o.path}/recharge`, form, o.session);
      expect((await first).status).toBe(200);
      expect(second.status).toBe(200);
      expect(second.text).toContain('added to your ID');
    } finally {
      await setFaults(h, NO_FAULTS);
    }
    expect(await balanceOf(h, o.id)).toBe(3_000_000);
    expect(await usedCredit(h, payer.card)).toBe(2_000_000);
  });

  it('the recharge form sent twice at once counts once against the anonymous limits (BUY_LIMIT_*)', async () => {
    const o = await owned();
    const payer = await addMember(h, 10_000_000);
    const form = rechargeForm(o, '500000', payer);
    const counted = Number(await h.r.get(keys.buysTotal));
    const copies = await Promise.all([1, 2].map(() => postPageForm(gw, `${o.path}/recharge`, form, o.session)));
    expect(copies.map((c) => c.status)).toEqual([200, 200]);
    expect(Number(await h.r.get(keys.buysTotal))).toBe(counted + 1);
    expect(await usedCredit(h, payer.card)).toBe(500_000);
  });

  it('an ID blocked while its recharge was paid: the payment is voided, nothing credited', async () => {
    const slow = await gateway(h, { provider: { ...h.cfg.provider, timeoutMs: 300 } });
    const o = await owned();
    const payer = await addMember(h, 10_000_000);
    const form = rechargeForm(o, '500000', payer);
    // The capture is done but its answer is lost; then the ID is blocked.
    const sent = await captureAnswerLost(() => postPageForm(slow, `${o.path}/recharge`, form, o.session));
    expect(sent.status).toBe(503);
    expect(await usedCredit(h, payer.card)).toBe(500_000);
    await setIdState(h.ctx, o.id, 'block', 'stolen');
    const r = await postPageForm(slow, `${o.path}/recharge`, form, o.session);
    await slow.close();
    expect(r.status).toBe(403);
    expect(r.text).toContain('The ID is blocked.');
    expect(await balanceOf(h, o.id)).toBe(1_000_000);
    expect(await usedCredit(h, payer.card)).toBe(0);
  });

  it('a paid recharge its owner never came back for is credited by the sweep; an unpaid one is voided', async () => {
    const slow = await gateway(h, { provider: { ...h.cfg.provider, timeoutMs: 300 } });
    const o = await owned();
    const payer = await addMember(h, 10_000_000);
    const post = (nonce: string, g: Gateway = slow): Promise<Res> =>
      postPageForm(
        g,
        `${o.path}/recharge`,
        { grant: fieldOf(o.page.text, 'grant'), nonce, amount: '500000', ...payer },
        o.session,
      );
    try {
      // Captured, answer lost.
      expect((await captureAnswerLost(() => post('a1'.repeat(16)))).status).toBe(503);
      // Authorized, answer lost.
      await setFaults(h, { hangNext: 1 });
      expect((await post('b2'.repeat(16))).status).toBe(503);
    } finally {
      await setFaults(h, NO_FAULTS);
      await slow.close();
    }
    expect(await usedCredit(h, payer.card)).toBe(1_000_000);
    expect(await gw.recharges.sweepAbandoned(Date.now() + h.cfg.abandonAfterMs + 1000)).toBe(2);
    expect(await balanceOf(h, o.id)).toBe(1_500_000);
    expect(await usedCredit(h, payer.card)).toBe(500_000);
    // The owner comes back with the first form: the recharge that was credited, not a second one.
    expect((await post('a1'.repeat(16), gw)).text).toContain('added to your ID');
    expect(await balanceOf(h, o.id)).toBe(1_500_000);
  });

  it('a recharge the sweep finds captured with a commission larger than its price is voided, not credited', async () => {
    const o = await owned();
    const payer = await addMember(h, 10_000_000);
    const bp = h.sandbox.commissionBp;
    h.sandbox.commissionBp = 10_001;
    try {
      // Captured, answer lost: only the sweep learns the capture, and its commission.
      await rechargeAnswerLost('c3'.repeat(16), o, payer);
      expect(await usedCredit(h, payer.card)).toBe(500_000);
      expect(await gw.recharges.sweepAbandoned(Date.now() + h.cfg.abandonAfterMs + 1000)).toBe(1);
      expect(await balanceOf(h, o.id)).toBe(1_000_000);
      expect(await usedCredit(h, payer.card)).toBe(0);
    } finally {
      h.sandbox.commissionBp = bp;
    }
  });

  it('a recharge whose claim lost the ID it is for is still settled by the sweep: nothing stays held', async () => {
    const o = await owned();
    const payer = await addMember(h, 10_000_000);
    const nonce = 'c5'.repeat(16);
    // The gateway that claimed the recharge died (or its Redis call failed) between the claim and
    // writing the ID it is for: the record holds no ID, and its lease has run out.
    const hash = h.ctx.ids.mac(`recharge:web/${nonce}`).slice(0, 32);
    const bucket = h.ctx.ids.bucketOf(hash);
    const key = keys.recharge(bucket, hash);
    const tgt = idKeyOf(h, o.id);
    const fingerprint = h.ctx.ids.mac(JSON.stringify([tgt, 500_000, payer.card, payer.cardPin]));
    const terms = { product: TALK.name, price: 500_000, currency: TALK.currency };
    const ttlSec = 2 * 86400;
    const claim = { key, open: keys.openRecharges(bucket), fingerprint, leaseMs: 1, ttlSec, terms };
    expect(await claimPurchase(h.ctx.scripts, claim, 'gone', Date.now() - 1000)).toBe('new');
    // The owner sends the form again: captured, and the answer lost.
    await rechargeAnswerLost(nonce, o, payer);
    expect(await usedCredit(h, payer.card)).toBe(500_000);
    // Never came back: the sweep credits what the owner paid for.
    expect(await gw.recharges.sweepAbandoned(Date.now() + h.cfg.abandonAfterMs + 1000)).toBeGreaterThanOrEqual(1);
    expect(await balanceOf(h, o.id)).toBe(1_500_000);
    expect(await usedCredit(h, payer.card)).toBe(500_000);
  });

  /** Runs `send` with the card company capturing the payment it is asked for and its answer lost on the way back. */
  async function captureAnswerLost<T>(send: () => Promise<T>): Promise<T> {
    const authorize = h.sandbox.authorize.bind(h.sandbox);
    h.sandbox.authorize = (b) => {
      const p = authorize(b);
      h.sandbox.faults.hangNext = 1;
      return p;
    };
    try {
      return await send();
    } finally {
      h.sandbox.authorize = authorize;
    }
  }

  /**
   * A recharge of 500,000 of `o` (a new owned ID) by `payer` (a new member), captured with its answer
   * lost (the owner saw 503): its record's key.
   */
  async function rechargeAnswerLost(
    nonce: string,
    o?: OwnedId,
    payer?: Buyer,
  ): Promise<{ o: OwnedId; payer: Buyer; key: string }> {
    const slow = await gateway(h, { provider: { ...h.cfg.provider, timeoutMs: 300 } });
    const owner = o ?? (await owned());
    const by = payer ?? (await addMember(h, 10_000_000));
    try {
      const form = { grant: fieldOf(owner.page.text, 'grant'), nonce, amount: '500000', ...by };
      const sent = await captureAnswerLost(() => postPageForm(slow, `${owner.path}/recharge`, form, owner.session));
      expect(sent.status).toBe(503);
    } finally {
      await setFaults(h, NO_FAULTS);
      await slow.close();
    }
    const hash = h.ctx.ids.mac(`recharge:web/${nonce}`).slice(0, 32);
    return { o: owner, payer: by, key: keys.recharge(h.ctx.ids.bucketOf(hash), hash) };
  }

  it('a paid recharge the previous version left without its ID is given back by the sweep, not dropped', async () => {
    // b0e8b35 wrote the ID only on a new claim: a resume of a record whose claim had lost it paid
    // with the ID in memory alone. Its answer lost and the owner gone, the sweep only took the record
    // off its list: the capture stayed taken, nothing credited, and nothing asked after it again.
    const { o, payer, key } = await rechargeAnswerLost('c6'.repeat(16));
    // As the previous version left it.
    expect(await h.r.hdel(key, 'tgt')).toBe(1);
    expect(await usedCredit(h, payer.card)).toBe(500_000);
    expect(await gw.recharges.sweepAbandoned(Date.now() + h.cfg.abandonAfterMs + 1000)).toBe(1);
    expect(await usedCredit(h, payer.card)).toBe(0);
    expect(await h.r.hget(key, 'st')).toBe('declined');
    expect(await balanceOf(h, o.id)).toBe(1_000_000);
  });

  it('the sweep settles a recharge as it stands when claimed, not as it read it before', async () => {
    // The sweep read the record, then claimed it. A retry that ended meanwhile, refusing the payment
    // (`voiding`, its void sent and unanswered), handed the lease back; the sweep went on from what it
    // had read (`capturing`) and credited the ID while the card company was giving the payment back.
    const { o, payer, key } = await rechargeAnswerLost('c7'.repeat(16));
    const records = (gw.recharges as unknown as { records: { claim: (...a: unknown[]) => Promise<unknown> } }).records;
    const claim = records.claim.bind(records);
    records.claim = async (...a: unknown[]) => {
      if (a[0] === key) await h.r.hset(key, { st: 'voiding', reason: 'expired' });
      return claim(...a);
    };
    try {
      expect(await gw.recharges.sweepAbandoned(Date.now() + h.cfg.abandonAfterMs + 1000)).toBe(1);
    } finally {
      records.claim = claim;
    }
    expect(await h.r.hmget(key, 'st', 'reason')).toEqual(['declined', 'expired']);
    expect(await usedCredit(h, payer.card)).toBe(0);
    expect(await balanceOf(h, o.id)).toBe(1_000_000);
  });

  it('redeems a voucher into the ID; the forms need the grant the PIN gave, in the same browser', async () => {
    const o = await owned();
    const grant = fieldOf(o.page.text, 'grant');
    const [v] = await soldIds(h, VOUCHER);
    // No grant, a forged one, or another browser: the PIN is asked again and nothing changes.
    for (const [g, s] of [
      ['', o.session],
      [`${Date.now() + 60_000}.${'0'.repeat(32)}`, o.session],
      [grant, await formSession(gw, o.path)],
    ] as const) {
      const r = await postPageForm(gw, `${o.path}/voucher`, { grant: g, voucher: v! }, s);
      expect(r.status).toBe(403);
      expect(r.text).toContain('Your PIN');
    }
    expect(await balanceOf(h, o.id)).toBe(1_000_000);
    const bad = await postPageForm(gw, `${o.path}/voucher`, { grant, voucher: '1234' }, o.session);
    expect(bad.text).toContain('not a valid voucher number');
    const r = await postPageForm(gw, `${o.path}/voucher`, { grant, voucher: v! }, o.session);
    expect(r.status).toBe(200);
    expect(await balanceOf(h, o.id)).toBe(3_000_000);
  });

  it("counts the page's unknown vouchers by the ID: no key names the link's secret tag", async () => {
    const o = await owned();
    const grant = fieldOf(o.page.text, 'grant');
    const r = await postPageForm(gw, `${o.path}/voucher`, { grant, voucher: generateId(h.cfg.idLength) }, o.session);
    expect(r.status).toBe(404);
    const client = `vch:chk:${hashOf(h, o.id)}`;
    expect(await h.r.keys('ts:*:guess:vch:*')).toContain(keys.guesses(h.ctx.ids.bucketOf(client), client));
    // The link is the ID hash and its tag: Redis keeps only a keyed hash of the tag (the ID's `chk`).
    const tag = o.path.split('/').pop()!.slice(32);
    expect(tag).toMatch(/^[0-9a-f]{32}$/);
    expect((await h.r.keys('*')).filter((k) => k.includes(tag))).toEqual([]);
  });

  it("tells nobody that a number is another buyer's ID: it answers as an unknown voucher, counted as a guess", async () => {
    const o = await owned();
    const grant = fieldOf(o.page.text, 'grant');
    const [other] = await soldIds(h, TALK);
    const client = `vch:chk:${hashOf(h, o.id)}`;
    const misses = async (): Promise<number> => Number(await h.r.get(keys.guesses(h.ctx.ids.bucketOf(client), client)));
    const unknown = await postPageForm(
      gw,
      `${o.path}/voucher`,
      { grant, voucher: generateId(h.cfg.idLength) },
      o.session,
    );
    expect(await misses()).toBe(1);
    const talk = await postPageForm(gw, `${o.path}/voucher`, { grant, voucher: other! }, o.session);
    // The same page as for a number nobody has, and one more guess towards the throttle.
    expect([talk.status, talk.headers.get('tessera-reason')]).toEqual([404, 'unknown_id']);
    expect(talk.text.replace(/value="[0-9a-f]{32}"/g, '')).toBe(unknown.text.replace(/value="[0-9a-f]{32}"/g, ''));
    expect(await misses()).toBe(2);
    expect(await balanceOf(h, other!)).toBe(1_000_000);
    // A till (a sales token) is told what the number is: it holds the card in its hand.
    expect((await redeem(o.id, other!)).json.error.reason).toBe('not_voucher');
  });

  it('tells nobody of a voucher still in stock, which a guesser would watch until it is sold', async () => {
    const o = await owned();
    const grant = fieldOf(o.page.text, 'grant');
    const [unsold] = await mint(h, VOUCHER, 1);
    const client = `vch:chk:${hashOf(h, o.id)}`;
    const misses = async (): Promise<number> => Number(await h.r.get(keys.guesses(h.ctx.ids.bucketOf(client), client)));
    const r = await postPageForm(gw, `${o.path}/voucher`, { grant, voucher: unsold! }, o.session);
    expect([r.status, r.headers.get('tessera-reason')]).toEqual([404, 'unknown_id']);
    expect(r.text).toContain('not a valid voucher number');
    expect(await misses()).toBe(1);
    expect(await idFields(h, unsold!)).toMatchObject({ st: 'minted' });
    // The till that sells it is told: it may activate it.
    expect((await redeem(o.id, unsold!)).json.error.reason).toBe('not_active');
  });

  it('offers no recharge for a product that forbids it', async () => {
    const r = await buy(gw, salesTok, newKey(), FIXED.name, buyer, PIN);
    const path = new URL(r.json.checkUrl).pathname;
    const page = await postPageForm(gw, path, { pin: PIN }, await formSession(gw, path));
    expect(page.status).toBe(200);
    expect(page.text).not.toContain('Recharge this ID');
  });
});

describe('export', () => {
  it('writes top-up and voucher records with their own columns', async () => {
    const [id] = await soldIds(h, TALK);
    const [v] = await soldIds(h, VOUCHER);
    await redeem(id!, v!);
    const run = await runCliIn(h, 'export', 'sales', '--format', 'ndjson');
    const rows = run.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, string>);
    expect(rows.find((r) => r.id === hashOf(h, id!) && r.type === 'topup')).toMatchObject({
      source: 'voucher',
      amount: '2000000',
      note: hashOf(h, v!),
      bal: '3000000',
    });
    expect(rows.find((r) => r.id === hashOf(h, v!) && r.type === 'voucher')).toMatchObject({
      amount: '2000000',
      to: hashOf(h, id!),
    });
  });
});

describe('catalog files', () => {
  it('load the top-up fields of talk products and recharge vouchers from CSV', async () => {
    const file = join(h.dir, 'topup-products.csv');
    writeFileSync(
      file,
      'name,kind,currency,face,price,plan,topup,topupAmounts,topupExtendsDays,topupMaxBalance,into\n' +
        'talk-csv,talk,EUR,1000000,1000000,std,yes,500000;1000000,90,3000000,\n' +
        'talk-csv-fixed,talk,EUR,1000000,1000000,std,no,,,,\n' +
        'voucher-csv,recharge,EUR,2000000,2000000,,,,,,talk-csv\n',
    );
    expect((await runCliIn(h, 'catalog-load', '--products', file)).code).toBe(0);
    const shown = JSON.parse((await runCliIn(h, 'catalog-show')).out);
    const byName = (n: string): unknown => shown.products.find((p: { name: string }) => p.name === n);
    expect(byName('talk-csv')).toMatchObject({
      topup: true,
      topupAmounts: [500_000, 1_000_000],
      topupExtendsDays: 90,
      topupMaxBalance: 3_000_000,
    });
    expect(byName('talk-csv-fixed')).toMatchObject({ topup: false });
    expect(byName('voucher-csv')).toMatchObject({ kind: 'recharge', face: 2_000_000, into: ['talk-csv'] });
  });
});

describe('the conservation audit', () => {
  it('balances every ID after top-ups, voucher transfers and a returned one', async () => {
    const run = await runCliIn(h, 'audit', '--json');
    const report = JSON.parse(run.out);
    expect(report.problems).toEqual([]);
    expect(run.code).toBe(0);
    expect(report.topups).toBeGreaterThan(0);
    expect(report.vouchers).toBeGreaterThan(0);
  });

  it('still balances once the top-up and voucher records are archived and trimmed', async () => {
    const before = JSON.parse((await runCliIn(h, 'audit', '--json')).out);
    const archived = await runCliIn(h, 'archive', '--before', String(Date.now() + 1), '--out', join(h.dir, 'archive'));
    expect(archived.code).toBe(0);
    let left = 0;
    for (let b = 0; b < h.cfg.buckets; b++) left += await h.r.xlen(keys.sales(b));
    expect(left).toBe(0);
    const after = JSON.parse((await runCliIn(h, 'audit', '--json')).out);
    expect(after.problems).toEqual([]);
    expect({ topups: after.topups, vouchers: after.vouchers }).toEqual({
      topups: before.topups,
      vouchers: before.vouchers,
    });
  });
});

/**
 * A scanner reads the status of the IDs it could redeem only: ticket, goods and
 * service IDs valid at its venue (or at every venue). A talk ID, a recharge
 * voucher or another venue's ticket answers exactly as an ID that does not exist,
 * over WebSocket and HTTP, and counts against the guess limit like one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { putProducts } from '../../src/catalog/store';
import type { EntryProduct, RechargeProduct } from '../../src/catalog/schema';
import type { Gateway } from '../../src/gateway/server';
import { generateId } from '../../src/ids/idnum';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { jsonCall } from '../support/http';
import { Scanner } from '../support/ws-client';
import { loadRedemptionCatalog, OTHER_VENUE, type Catalog } from './fixtures';

let h: Harness;
let gw: Gateway;
let cat: Catalog;
let clubTicket: EntryProduct;
let voucher: RechargeProduct;

beforeAll(async () => {
  h = await startHarness({ GUESS_LIMIT: '8' });
  await seedCatalog(h, [talkProduct()]);
  cat = await loadRedemptionCatalog(h);
  [clubTicket, voucher] = (await putProducts(h.ctx.redis, [
    { name: 'clubTicket', kind: 'entry', currency: 'EUR', price: 1, venues: [OTHER_VENUE] },
    // A recharge voucher is bearer value for talk IDs: no scanner redeems it, none may read it.
    { name: 'voucher', kind: 'recharge', currency: 'EUR', face: 5_000_000, price: 5_000_000 },
  ])) as [EntryProduct, RechargeProduct];
  gw = await gateway(h);
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

const UNKNOWN = { reason: 'unknown_id', message: 'no such ID' };

describe('a scanner reads the status of IDs it could redeem only', () => {
  it('its venue’s tickets, every-venue goods and its services: shown; talk time, vouchers and another venue’s ticket: as unknown', async () => {
    const tok = await token(h, 'scanner');
    const s = await Scanner.connect(gw.port, tok);
    const [ticket, wallet, spa, talk, club, recharge] = [
      ...(await soldIds(h, cat.ticket)),
      ...(await soldIds(h, cat.wallet)),
      ...(await soldIds(h, cat.spa)),
      ...(await soldIds(h, talkProduct())),
      ...(await soldIds(h, clubTicket)),
      ...(await soldIds(h, voucher)),
    ] as string[];
    for (const [id, product] of [
      [ticket, 'ticket'],
      [wallet, 'wallet'],
      [spa, 'spa'],
    ] as const) {
      expect(await s.request({ op: 'status', ref: product, id })).toMatchObject({ op: 'status', product });
      expect(await jsonCall(gw, 'GET', `/v1/ids/${id}/status`, { token: tok })).toMatchObject({
        status: 200,
        json: { product },
      });
    }
    for (const id of [talk!, club!, recharge!, generateId(16)]) {
      expect(await s.request({ op: 'status', ref: 'x', id })).toEqual({ op: 'refused', ref: 'x', ...UNKNOWN });
      expect(await jsonCall(gw, 'GET', `/v1/ids/${id}/status`, { token: tok })).toEqual({
        status: 404,
        json: { error: UNKNOWN },
      });
    }
    // An admin still sees them all.
    const admin = await token(h, 'admin');
    expect(await jsonCall(gw, 'GET', `/v1/ids/${talk}/status`, { token: admin })).toMatchObject({
      status: 200,
      json: { product: 'talk' },
    });
    await s.close();
  });

  it('an ID outside its scope counts as a guess: past GUESS_LIMIT the scanner is throttled, 429 with Retry-After', async () => {
    const tok = await token(h, 'scanner');
    const [talk] = await soldIds(h, talkProduct());
    for (let i = 0; i < 9; i++) await jsonCall(gw, 'GET', `/v1/ids/${talk}/status`, { token: tok });
    const r = await fetch(`http://127.0.0.1:${gw.port}/v1/ids/${talk}/status`, {
      headers: { Authorization: `Bearer ${tok}` },
    });
    const body = (await r.json()) as { error: { reason: string; retryAfter: number } };
    expect([r.status, body.error.reason]).toEqual([429, 'throttled']);
    // The header says what the body says (docs/scanners.md).
    expect(r.headers.get('retry-after')).toBe(String(body.error.retryAfter));
  });
});

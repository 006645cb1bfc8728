/**
 * The check page's forms as a buyer's phone fills them in, over plain HTTP:
 * what the owner is told when a voucher is entered again, and PINs pasted
 * with white space around them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Product, RechargeProduct } from '../../src/catalog/schema';
import type { Gateway } from '../../src/gateway/server';
import { gateway, mint, seedCatalog, soldIds, startHarness, token, type Harness } from '../support/harness';
import { formSession, postPageForm } from '../support/http';
import { balanceOf } from '../support/redis';
import { addMember, callWith, fieldOf, ownedId, product, type Buyer, type OwnedId } from '../sales/fixtures';

const TALK = product('talk-c', { face: 1_000_000, price: 1_000_000, topupMaxBalance: 50_000_000 });
const VOUCHER: RechargeProduct = {
  name: 'voucher-c',
  kind: 'recharge',
  currency: 'EUR',
  price: 2_000_000,
  face: 2_000_000,
  into: [],
};
const PIN = '8642';

let h: Harness;
let gw: Gateway;
let salesTok: string;
let buyer: Buyer;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK, VOUCHER] as Product[]);
  await mint(h, TALK, 4);
  gw = await gateway(h);
  salesTok = await token(h, 'sales', 'shop-c');
  buyer = await addMember(h, 100_000_000);
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

/** Buys an ID and opens its check link with the PIN, as its owner's browser would. */
const owned = (): Promise<OwnedId> => ownedId(gw, salesTok, TALK.name, buyer, PIN);

describe('a voucher entered again', () => {
  it('says it was already redeemed, not that its value was added again, nor a balance from back then', async () => {
    const o = await owned();
    const grant = fieldOf(o.page.text, 'grant');
    const [v] = await soldIds(h, VOUCHER);
    const first = await postPageForm(gw, `${o.path}/voucher`, { grant, voucher: v! }, o.session);
    expect(first.status).toBe(200);
    expect(first.text).toContain('2.00 EUR added to your ID');
    expect(await balanceOf(h, o.id)).toBe(3_000_000);
    // The owner calls, then types the same voucher again (or reloads its page).
    await callWith(h, gw, o.id, 5);
    const spent = await balanceOf(h, o.id);
    expect(spent).toBeLessThan(3_000_000);
    const again = await postPageForm(gw, `${o.path}/voucher`, { grant, voucher: v! }, o.session);
    expect(again.status).toBe(200);
    expect(again.text).toContain('already redeemed into this ID');
    expect(again.text).not.toContain('added to your ID');
    // The first answer's balance (3.00 EUR) is not shown as if it stood now.
    expect(again.text).not.toContain('3.00 EUR');
    expect(await balanceOf(h, o.id)).toBe(spent);
  });
});

describe('a PIN pasted with white space around it', () => {
  it('is the PIN: the buy page takes it, the check link shows the ID and counts no wrong try', async () => {
    const session = await formSession(gw, '/buy');
    const nonce = 'ef'.repeat(16);
    const form = {
      product: TALK.name,
      pin: ` ${PIN}\u00a0`,
      card: ` ${buyer.card} `,
      cardPin: `${buyer.cardPin} `,
      nonce,
    };
    const sold = await postPageForm(gw, '/buy', form, session);
    expect(sold.status).toBe(200);
    const path = /id="check-url"[^>]*href="http:\/\/[^/]+([^"]+)"/.exec(sold.text)?.[1] ?? '';
    expect(path).toMatch(/^\/check\//);
    // Five pasted tries would have locked the link when the spaces made each one a wrong PIN.
    const s = await formSession(gw, path);
    for (let i = 0; i < 6; i++) {
      const r = await postPageForm(gw, path, { pin: `\u3000${PIN} ` }, s);
      expect(r.status).toBe(200);
      expect(r.text).toContain('The ID number you purchased is');
    }
  });
});

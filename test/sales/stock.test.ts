/**
 * Inventory: out_of_stock only when nothing is left, and under a rush of buyers
 * on two gateway copies every remaining ID is sold exactly once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { activateId, setIdState } from '../../src/ledger/ids';
import { gateway, mint, seedCatalog, startHarness, token, type Harness } from '../support/harness';
import { http } from '../support/http';
import { bucketOf, hashOf, idFields } from '../support/redis';
import {
  addMember,
  buy,
  newKey,
  payment,
  product,
  purchaseRef,
  reservations,
  saleRecords,
  setFaults,
  stock,
  usedCredit,
} from './fixtures';
import { until } from '../support/wait';
import { keys } from '../../src/redis/keys';
import { sellId } from '../../src/sales/scripts';

let h: Harness;
let gw: Gateway;
let gw2: Gateway;
const SALES = 'shop-s';
let salesTok: string;

const ONE = product('talk-one', { price: 2_000_000 });
const NONE = product('talk-none');
const RUSH = product('talk-rush', { face: 1_000_000, price: 1_100_000 });
const BLOCKED = product('talk-blocked', { price: 3_000_000 });
const BY_HAND = product('talk-by-hand', { price: 4_000_000 });
const LAPSED = product('talk-lapsed', { price: 4_000_000 });
const OWNED = product('talk-owned', { price: 4_000_000 });
const LEGACY = product('talk-legacy', { price: 4_000_000 });

const refOf = (key: string): string => purchaseRef(h, SALES, key);

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [ONE, NONE, RUSH, BLOCKED, BY_HAND, LAPSED, OWNED, LEGACY]);
  await mint(h, ONE, 1);
  await mint(h, RUSH, 43);
  // In a rush every buyer is authorized before an ID is taken: on a loaded test machine the in-process
  // card company may take longer than the default timeout to answer them all.
  const patient = { provider: { ...h.cfg.provider, timeoutMs: 30_000 } };
  gw = await gateway(h, patient);
  gw2 = await gateway(h, patient);
  salesTok = await token(h, 'sales', SALES);
});
afterAll(async () => {
  await gw?.close();
  await gw2?.close();
  await h?.stop();
});

const SOLD_OUT = { error: { reason: 'out_of_stock', message: 'sold out' } };

describe('out_of_stock', () => {
  it('409 out_of_stock once the last ID is sold; the card company is not asked', async () => {
    const m = await addMember(h, 100_000_000);
    const first = await buy(gw, salesTok, newKey(), 'talk-one', m);
    expect(first.status).toBe(200);
    expect(await stock(h, 'talk-one')).toBe(0);
    for (const g of [gw, gw2]) {
      const key = newKey('empty');
      const r = await buy(g, salesTok, key, 'talk-one', m);
      expect(r.status).toBe(409);
      expect(r.json).toEqual(SOLD_OUT);
      expect((await payment(h, refOf(key))).status).toBe(404);
      // The refusal is the key's answer from now on.
      expect((await buy(g, salesTok, key, 'talk-one', m)).json).toEqual(SOLD_OUT);
    }
    expect(await usedCredit(h, m.card)).toBe(2_000_000);
    const listed = (await http(gw, 'GET', '/v1/products')).json.products.find(
      (p: { name: string }) => p.name === 'talk-one',
    );
    expect(listed.available).toBe(0);
  });

  it('a product never minted is out of stock', async () => {
    const m = await addMember(h, 100_000_000);
    const r = await buy(gw, salesTok, newKey(), 'talk-none', m);
    expect(r.status).toBe(409);
    expect(r.json).toEqual(SOLD_OUT);
    expect(await usedCredit(h, m.card)).toBe(0);
  });

  it('new stock sells at once after a sold-out answer (no stale "sold out")', async () => {
    const m = await addMember(h, 100_000_000);
    expect((await buy(gw, salesTok, newKey(), 'talk-one', m)).status).toBe(409);
    const [id] = await mint(h, ONE, 1);
    const r = await buy(gw, salesTok, newKey(), 'talk-one', m);
    expect(r.status).toBe(200);
    expect(r.json.id).toBe(id);
  });
});

describe('unsold IDs the operator blocks or sells by hand', () => {
  it('a blocked unsold ID leaves stock: nobody pays for it; unblocked, it is on sale again', async () => {
    const [id] = await mint(h, BLOCKED, 1);
    expect(await setIdState(h.ctx, id!, 'block', 'stolen batch')).toEqual({ ok: true, state: 'blocked' });
    expect(await stock(h, 'talk-blocked')).toBe(0);
    const m = await addMember(h, 100_000_000);
    const r = await buy(gw, salesTok, newKey(), 'talk-blocked', m);
    expect(r.status).toBe(409);
    expect(r.json).toEqual(SOLD_OUT);
    expect(await usedCredit(h, m.card)).toBe(0);
    expect((await idFields(h, id!)).st).toBe('blocked');

    expect(await setIdState(h.ctx, id!, 'unblock')).toEqual({ ok: true, state: 'minted' });
    expect(await stock(h, 'talk-blocked')).toBe(1);
    const again = await buy(gw, salesTok, newKey(), 'talk-blocked', m);
    expect(again.status).toBe(200);
    expect(again.json.id).toBe(id);
  });

  it('an ID sold by hand while a purchase holds it: the purchase sells another one', async () => {
    const ids = await mint(h, BY_HAND, 2);
    const m = await addMember(h, 100_000_000);
    // Slow enough that the hand sale lands while the purchase holds the ID, however loaded the machine.
    await setFaults(h, { latencyMs: 1500 });
    try {
      const pending = buy(gw, salesTok, newKey(), 'talk-by-hand', m);
      // Held once authorized, sold once captured: in between the operator sells it by hand.
      const byHash = new Map(ids.map((id) => [hashOf(h, id), id]));
      let held = '';
      await until(async () => {
        held = [...(await reservations(h)).keys()].find((k) => byHash.has(k)) ?? '';
        return held !== '';
      });
      const heldId = byHash.get(held)!;
      expect((await activateId(h.ctx, heldId, { price: 4_000_000, ref: 'desk' })).ok).toBe(true);
      const r = await pending;
      expect(r.status).toBe(200);
      expect(r.json.id).not.toBe(heldId);
      expect(ids).toContain(r.json.id);
    } finally {
      await setFaults(h, { latencyMs: 0 });
    }
    expect(await usedCredit(h, m.card)).toBe(4_000_000);
    expect(await stock(h, 'talk-by-hand')).toBe(0);
    for (const k of (await reservations(h)).keys()) expect(ids.map((id) => hashOf(h, id))).not.toContain(k);
  });

  it('an ID sold by hand while held does not go back on sale when the hold runs out', async () => {
    const [id] = await mint(h, LAPSED, 1);
    // A purchase's hold whose process went away before it sold.
    const until = Date.now() + 60_000;
    expect((await gw.inventory.reserve(LAPSED.name, until, 'tsp_lapsed'))?.idHash).toBe(hashOf(h, id!));
    expect((await activateId(h.ctx, id!, { price: 4_000_000, ref: 'desk' })).ok).toBe(true);
    expect(await gw.inventory.sweepHolds(until + 1)).toBe(0);
    expect(await stock(h, LAPSED.name)).toBe(0);
    expect((await reservations(h)).has(hashOf(h, id!))).toBe(false);
  });
});

describe('holds belong to their purchase', () => {
  it('a purchase whose hold ran out and went to another purchase cannot release that one back to stock', async () => {
    const [id] = await mint(h, OWNED, 1);
    const t = Date.now();
    const first = await gw.inventory.reserve(OWNED.name, t + 50, 'tsp_first');
    expect(first?.idHash).toBe(hashOf(h, id!));
    // (The gateways' own sweep may get there first.)
    await gw.inventory.sweepHolds(t + 51);
    expect(await stock(h, OWNED.name)).toBe(1);
    const next = await gw.inventory.reserve(OWNED.name, t + 60_000, 'tsp_next');
    expect(next?.idHash).toBe(first!.idHash);

    // The first purchase, declined late, gives back what it held: not the next purchase's hold.
    expect(await gw.inventory.release(OWNED.name, first!.bucket, first!.idHash, 'tsp_first')).toBe(false);
    expect(await stock(h, OWNED.name)).toBe(0);
    expect((await reservations(h)).get(first!.idHash)).toBe(t + 60_000);
    // Its own purchase releases it; so does the sweep once it runs out.
    expect(await gw.inventory.release(OWNED.name, next!.bucket, next!.idHash, 'tsp_next')).toBe(true);
    expect(await stock(h, OWNED.name)).toBe(1);
    expect(await gw.inventory.reserve(OWNED.name, t + 100, 'tsp_third')).toEqual(next);
    await gw.inventory.sweepHolds(t + 101);
    expect(await stock(h, OWNED.name)).toBe(1);
    expect(await h.r.hlen(keys.holdOwners(next!.bucket))).toBe(0);
  });

  it('a hold an older version took (no owner kept, or a stale one) is still sold or released by its purchase', async () => {
    const [a, b] = await mint(h, LEGACY, 2);
    // As an older reserve.lua left it: out of stock, in the reservations, no owner beside it.
    const oldHold = async (id: string, staleOwner?: string): Promise<{ bucket: number; idHash: string }> => {
      const loc = { bucket: bucketOf(h, id), idHash: hashOf(h, id) };
      expect(await h.r.srem(keys.inventory(loc.bucket, LEGACY.name), loc.idHash)).toBe(1);
      await h.r.zadd(keys.reservations(loc.bucket), Date.now() + 60_000, loc.idHash);
      if (staleOwner) await h.r.hset(keys.holdOwners(loc.bucket), loc.idHash, `1:${staleOwner}`);
      return loc;
    };
    const held = await oldHold(a!);
    expect(await gw.inventory.release(LEGACY.name, held.bucket, held.idHash, 'tsp_old')).toBe(true);
    expect(await stock(h, LEGACY.name)).toBe(2);

    const stale = await oldHold(b!, 'tsp_gone');
    const sale = await sellId(h.ctx.scripts, {
      idKey: keys.id(stale.bucket, stale.idHash),
      bucket: stale.bucket,
      checkHash: 'c'.repeat(32),
      product: LEGACY.name,
      price: LEGACY.price,
      currency: LEGACY.currency,
      channel: SALES,
      purchaseRef: 'tsp_old',
      providerRef: 'tsp_old',
      commission: 0,
      pinHash: 'x',
    });
    expect(sale).toMatchObject({ ok: true, duplicate: false });
    expect((await idFields(h, b!)).st).toBe('sold');
    expect(await h.r.hexists(keys.holdOwners(stale.bucket), stale.idHash)).toBe(0);
  });
});

// 40, not more: each sale hashes its PIN (a scrypt of about 50 ms of CPU, several times that on a
// loaded machine), and the race is the same at 80 purchases at once as at 200.
describe('a rush on the last 40 IDs', () => {
  it('80 concurrent purchases over two gateways: exactly 40 sold, 40 out_of_stock, no ID twice', async () => {
    const m = await addMember(h, 1_000_000_000_000);
    // Three sold first: what is left are the last 40.
    for (let i = 0; i < 3; i++) expect((await buy(gw, salesTok, newKey(), 'talk-rush', m)).status).toBe(200);
    expect(await stock(h, 'talk-rush')).toBe(40);
    const before = (await saleRecords(h)).filter((r) => r.product === 'talk-rush').length;
    expect(before).toBe(3);

    const keysUsed = Array.from({ length: 80 }, (_, i) => newKey(`rush${i}`));
    const results = await Promise.all(keysUsed.map((k, i) => buy(i % 2 ? gw2 : gw, salesTok, k, 'talk-rush', m)));

    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status !== 200);
    expect(ok).toHaveLength(40);
    expect(refused).toHaveLength(40);
    for (const r of refused) expect(r.json).toEqual(SOLD_OUT);
    const ids = ok.map((r) => r.json.id as string);
    expect(new Set(ids).size).toBe(40);
    expect(new Set(ok.map((r) => r.json.checkUrl as string)).size).toBe(40);

    expect(await stock(h, 'talk-rush')).toBe(0);
    expect((await reservations(h)).size).toBe(0);
    const recs = (await saleRecords(h)).filter((r) => r.product === 'talk-rush');
    expect(recs).toHaveLength(43);
    const soldHashes = recs.slice().map((r) => r.id);
    expect(new Set(soldHashes).size).toBe(43);
    for (const id of ids) {
      expect(soldHashes).toContain(hashOf(h, id));
      expect((await idFields(h, id)).st).toBe('sold');
    }
    // Charged exactly for what was sold. A refused buyer either found it sold out before the card company
    // was asked, or was authorized first (stock is taken only then) and that authorization was voided.
    expect(await usedCredit(h, m.card)).toBe(43 * 1_100_000);
    const refusedKeys = keysUsed.filter((_, i) => results[i]!.status !== 200);
    for (const k of refusedKeys) {
      const p = await payment(h, refOf(k));
      expect(p.status === 404 || p.body.state === 'voided').toBe(true);
    }
    expect([...h.sandbox.payments.values()].filter((p) => p.card === m.card && p.state === 'captured')).toHaveLength(
      43,
    );
  });
});

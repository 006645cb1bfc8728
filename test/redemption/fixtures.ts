/**
 * Redemption test fixtures: a catalog of entry, goods and service products at
 * two venues, scanner tokens, and reads of the redemption streams.
 */
import { putItems, putProducts } from '../../src/catalog/store';
import type { EntryProduct, GoodsProduct, Product, ServiceProduct } from '../../src/catalog/schema';
import { keys } from '../../src/redis/keys';
import { redemptionFields } from '../../src/ledger/redemption-record';
import { ScanWindows } from '../../src/redemption/scan-windows';
import { claimBucketOf } from '../../src/redemption/service';
import { token, uniq, type Harness } from '../support/harness';
import { bucketOf } from '../support/redis';

export const VENUE = 'arena';
export const OTHER_VENUE = 'club';
export const DAY = 86_400_000;

/** Goods prices at the arena (and one item only the club sells). */
export const PRICE = { beer: 4_500_000, water: 1_000_000, clubBeer: 3_000_000, cocktail: 7_000_000 } as const;
export const WALLET_FACE = 10_000_000;

export interface Catalog {
  /** One entry at the arena, any gate. */
  ticket: EntryProduct;
  /** Three entries at the arena. */
  ticket3: EntryProduct;
  /** One entry at the arena's north gate only. */
  gated: EntryProduct;
  /** One entry at the arena; back in after an exit scan. */
  reentry: EntryProduct;
  /** Three entries at the arena, with re-entry (a group on one ticket). */
  reentry3: EntryProduct;
  /** Valid from tomorrow. */
  future: EntryProduct;
  /** Valid until yesterday. */
  past: EntryProduct;
  /** Stored value, 10.00 at every venue, a year from first use. */
  wallet: GoodsProduct;
  /** Stored value at the arena only. */
  arenaWallet: GoodsProduct;
  /** Two massages at the arena. */
  spa: ServiceProduct;
}

/**
 * Loads the redemption catalog through the catalog store (defaults filled in,
 * instants turned to ms) and returns the products as stored, ready to mint.
 */
export async function loadRedemptionCatalog(h: Harness): Promise<Catalog> {
  const now = Date.now();
  const entry = (over: Partial<EntryProduct>): Record<string, unknown> => ({
    kind: 'entry',
    currency: 'EUR',
    price: 50_000_000,
    venues: [VENUE],
    ...over,
  });
  const loaded = await putProducts(h.ctx.redis, [
    entry({ name: 'ticket' }),
    entry({ name: 'ticket3', entries: 3 }),
    entry({ name: 'gated', gates: ['north'] }),
    entry({ name: 'reentry', reentry: true }),
    entry({ name: 'reentry3', entries: 3, reentry: true }),
    entry({ name: 'future', validFrom: now + DAY, validUntil: now + 2 * DAY }),
    entry({
      name: 'past',
      validFrom: new Date(now - 2 * DAY).toISOString(),
      validUntil: new Date(now - DAY).toISOString(),
    }),
    { name: 'wallet', kind: 'goods', currency: 'EUR', face: WALLET_FACE, price: WALLET_FACE },
    { name: 'arenaWallet', kind: 'goods', currency: 'EUR', face: WALLET_FACE, price: WALLET_FACE, venues: [VENUE] },
    { name: 'spa', kind: 'service', currency: 'EUR', price: 80_000_000, service: 'massage', uses: 2, venues: [VENUE] },
  ]);
  await putItems(h.ctx.redis, [
    { venue: VENUE, item: 'beer', price: PRICE.beer, title: 'Beer 0.5l' },
    { venue: VENUE, item: 'water', price: PRICE.water },
    { venue: OTHER_VENUE, item: 'beer', price: PRICE.clubBeer },
    { venue: OTHER_VENUE, item: 'cocktail', price: PRICE.cocktail },
  ]);
  const byName = new Map(loaded.map((p) => [p.name, p]));
  const get = <T extends Product>(name: string): T => byName.get(name) as T;
  return {
    ticket: get('ticket'),
    ticket3: get('ticket3'),
    gated: get('gated'),
    reentry: get('reentry'),
    reentry3: get('reentry3'),
    future: get('future'),
    past: get('past'),
    wallet: get('wallet'),
    arenaWallet: get('arenaWallet'),
    spa: get('spa'),
  };
}

/** A scanner token with a unique name, bound to a venue (and maybe a gate). */
export async function scannerToken(
  h: Harness,
  bind: { venue?: string; gate?: string } = { venue: VENUE },
): Promise<{ tok: string; name: string }> {
  const name = uniq('scn');
  return { tok: await token(h, 'scanner', name, bind), name };
}

// ---------------------------------------------------------------- redemption streams

export type Rec = Record<string, string> & { streamId: string };

/** Every redemption/reversal record in the ID's bucket stream that concerns this ID, in order. */
export async function recordsOf(h: Harness, id: string): Promise<Rec[]> {
  const { hash, bucket } = h.ctx.ids.hash(id);
  const rows = await h.r.xrange(keys.redemptions(bucket), '-', '+');
  const out: Rec[] = [];
  for (const [streamId, flat] of rows) {
    const rec = redemptionFields(flat);
    if (rec.id === hash) out.push({ ...rec, streamId });
  }
  return out;
}

/** Length of the ID's bucket stream (every record in it, any ID). */
export function streamLength(h: Harness, id: string): Promise<number> {
  return h.r.xlen(keys.redemptions(bucketOf(h, id)));
}

/** All records in every bucket stream. */
export async function allRecords(h: Harness): Promise<Rec[]> {
  const out: Rec[] = [];
  for (let b = 0; b < h.cfg.buckets; b++) {
    for (const [streamId, flat] of await h.r.xrange(keys.redemptions(b), '-', '+')) {
      out.push({ ...redemptionFields(flat), streamId: `${b}/${streamId}` });
    }
  }
  return out;
}

/** The bucket of a scan key's claim ('<scanner>:<scan id>'). */
export const claimBucket = (h: Harness, scanKey: string): number => claimBucketOf(h.ctx.ids, h.cfg.buckets, scanKey);

/** The window hash a claim of this scan key made now goes into. */
export const claimsNow = (h: Harness, scanKey: string): string =>
  keys.scanClaims(claimBucket(h, scanKey), new ScanWindows(h.cfg.scanTtlSec).at(Date.now())[0]!);

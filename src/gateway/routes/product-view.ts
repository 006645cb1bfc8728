import type { CatalogCache } from '../../catalog/cache';
import type { Product } from '../../catalog/schema';
import { callTalkTime } from '../../metering/scripts';
import type { Scripts } from '../../redis/scripts';
import type { Inventory } from '../../sales/inventory';

/** What a buyer's views of the catalog need. */
export interface ProductViewDeps {
  catalog: CatalogCache;
  inventory: Inventory;
  scripts: Scripts;
}

/**
 * What a buyer sees of each product (the sales API and the buy page): price, value,
 * talk time, stock. A talk product's talk time (`talkTimeSec`) is what a call to its plan's
 * catch-all destination (prefix '') started now would be granted on an ID holding its face
 * value: priced by the call scripts' own tariff engine (connection fee, blocks, minimums,
 * disconnect charge, rate changes), all products in one script call.
 */
export async function productViews(
  products: readonly Product[],
  d: ProductViewDeps,
): Promise<Record<string, unknown>[]> {
  const now = Date.now();
  const asks: { name: string; amount: number; descriptor: string }[] = [];
  for (const p of products) {
    if (p.kind !== 'talk') continue;
    const descriptor = d.catalog.tariffFor(p.plan, '', now);
    if (descriptor !== undefined) asks.push({ name: p.name, amount: p.face, descriptor });
  }
  const secs = await talkTimes(d.scripts, now, asks);
  const talkTime = new Map(asks.map((a, i) => [a.name, secs[i]!]));
  return Promise.all(products.map((p) => productView(p, d.inventory, talkTime.get(p.name))));
}

/**
 * How long a talk time priced by Redis stands. The buy page and the product list are anyone's to
 * ask: each asking Redis would let any client make Redis work per request, where the stock they
 * show is a picture too (Inventory). A rate change shows on the page at most this late.
 */
export const TALK_TIME_MAX_AGE_MS = 10_000;

/** Talk times priced lately, per Redis (its Scripts), by face and descriptor: bounded by the catalog. */
const priced = new WeakMap<Scripts, Map<string, { sec: Promise<number>; at: number }>>();

/** The talk time of each ask, from what was priced in the last TALK_TIME_MAX_AGE_MS, the rest in one script call. */
async function talkTimes(
  scripts: Scripts,
  now: number,
  asks: readonly { amount: number; descriptor: string }[],
): Promise<number[]> {
  let known = priced.get(scripts);
  if (!known) priced.set(scripts, (known = new Map<string, { sec: Promise<number>; at: number }>()));
  for (const [k, v] of known) if (now - v.at >= TALK_TIME_MAX_AGE_MS) known.delete(k);
  const keyOf = (a: { amount: number; descriptor: string }): string => `${a.amount} ${a.descriptor}`;
  const missing = asks.filter((a) => !known.has(keyOf(a)));
  if (missing.length > 0) {
    const all = callTalkTime(scripts, now, missing);
    // A failed pricing is not kept: the next request asks again.
    all.catch(() => missing.forEach((a) => known.delete(keyOf(a))));
    missing.forEach((a, i) => known.set(keyOf(a), { sec: all.then((secs) => secs[i]!), at: now }));
  }
  return Promise.all(asks.map((a) => known.get(keyOf(a))!.sec));
}

async function productView(
  p: Product,
  inventory: Inventory,
  talkTimeSec: number | undefined,
): Promise<Record<string, unknown>> {
  const view: Record<string, unknown> = {
    name: p.name,
    title: p.title ?? p.name,
    kind: p.kind,
    price: p.price,
    currency: p.currency,
  };
  if (p.kind === 'talk' || p.kind === 'goods' || p.kind === 'recharge') view.face = p.face;
  if (talkTimeSec !== undefined) view.talkTimeSec = talkTimeSec;
  if (p.kind === 'entry') view.entries = p.entries;
  if (p.kind === 'service') Object.assign(view, { service: p.service, uses: p.uses });
  view.available = await inventory.available(p.name);
  return view;
}

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
  const secs = await callTalkTime(d.scripts, now, asks);
  const talkTime = new Map(asks.map((a, i) => [a.name, secs[i]!]));
  return Promise.all(products.map((p) => productView(p, d.inventory, talkTime.get(p.name))));
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

import type { CatalogCache } from '../../catalog/cache';
import type { Product } from '../../catalog/schema';
import type { Inventory } from '../../sales/inventory';

/** What a buyer sees of a product (the sales API and the buy page): price, value, talk time at the plan's base rate, stock. */
export async function productView(
  p: Product,
  catalog: CatalogCache,
  inventory: Inventory,
): Promise<Record<string, unknown>> {
  const view: Record<string, unknown> = {
    name: p.name,
    title: p.title ?? p.name,
    kind: p.kind,
    price: p.price,
    currency: p.currency,
  };
  if (p.kind === 'talk' || p.kind === 'goods' || p.kind === 'recharge') view.face = p.face;
  if (p.kind === 'talk') {
    // Talk time at the plan's catch-all rate (prefix ''): what "minutes" usually means on a card.
    const base = catalog.rateFor(p.plan, '');
    if (base) view.talkTimeSec = Math.floor(p.face / base.rate);
  }
  if (p.kind === 'entry') view.entries = p.entries;
  if (p.kind === 'service') Object.assign(view, { service: p.service, uses: p.uses });
  view.available = await inventory.available(p.name);
  return view;
}

import type { Context } from '../../app/context';
import type { CatalogCache } from '../../catalog/cache';
import { isOnPublicSale } from '../../catalog/schema';
import { BUY_PAGE_NAME, IDEMPOTENCY_KEY, PurchaseBody, RefundBody } from '../../protocol/sales';
import { compile } from '../../protocol/validator';
import { lookupSale } from '../../ledger/sale-lookup';
import { statusOf } from '../../protocol/reasons';
import { refundSale } from '../../sales/admin';
import type { Inventory } from '../../sales/inventory';
import type { PaymentProvider } from '../../sales/provider';
import type { PurchaseResult, Purchases } from '../../sales/purchase';
import type { ApiResult, HttpApi } from '../http-api';
import { productViews } from './product-view';

export function purchaseResult(r: PurchaseResult): ApiResult {
  if (r.ok) {
    const { ok: _ok, ...sold } = r;
    return { ok: true, ...sold };
  }
  // A reason outside the catalogue is the card company's own decline: 402.
  const { reason, message, retryAfter, httpStatus = statusOf(reason, 402) } = r;
  return { ok: false, reason, message, httpStatus, ...(retryAfter ? { retryAfter } : {}) };
}

/** The sales API: catalog, purchases (Idempotency-Key), access numbers, and the operator's sale tools. */
export function salesRoutes(
  api: HttpApi,
  ctx: Context,
  catalog: CatalogCache,
  inventory: Inventory,
  purchases: Purchases,
  provider: PaymentProvider,
): void {
  // What anonymous buyers may buy (the buy page lists the same); a sales token may sell any product.
  api.get('/v1/products', [], async () => ({
    ok: true,
    products: await productViews(catalog.products.filter(isOnPublicSale), { catalog, inventory, scripts: ctx.scripts }),
  }));

  api.post('/v1/purchases', ['sales'], compile(PurchaseBody), async ({ body, idempotencyKey, token }) => {
    // A token created before the name was refused: its keys would be the buy page's.
    if (token.name === BUY_PAGE_NAME) return { ok: false, reason: 'reserved_name' };
    if (!IDEMPOTENCY_KEY.test(idempotencyKey))
      return {
        ok: false,
        reason: 'missing_idempotency_key',
        message: 'send an Idempotency-Key header (8 to 128 of A-Z a-z 0-9 . _ : -)',
      };
    const r = await purchases.purchase(`api:${token.name}`, `${token.name}/${idempotencyKey}`, {
      product: body.product,
      pin: body.pin,
      card: body.payment.card.replace(/ /g, ''),
      cardPin: body.payment.cardPin,
    });
    return purchaseResult(r);
  });

  api.get('/v1/access-numbers', [], async () => ({ ok: true, areas: catalog.areas }));

  api.get('/v1/admin/sales/:id', ['admin'], ({ params }) => lookupSale(ctx, params[0]));
  api.post('/v1/admin/sales/:id/refund', ['admin'], compile(RefundBody), ({ params, body, token }) =>
    refundSale(ctx, provider, params[0], body.reason ?? '', token.name),
  );
}

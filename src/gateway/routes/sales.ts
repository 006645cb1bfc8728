import { Type } from '@sinclair/typebox';
import type { Context } from '../../app/context';
import type { CatalogCache } from '../../catalog/cache';
import { compile } from '../../protocol/switch';
import { lookupSale, refundSale } from '../../sales/admin';
import type { Inventory } from '../../sales/inventory';
import { PIN_PATTERN } from '../../sales/pin';
import type { PaymentProvider } from '../../sales/provider';
import type { PurchaseResult, Purchases } from '../../sales/purchase';
import type { ApiResult, HttpApi } from '../http-api';
import { productView } from './product-view';

export const PurchaseBody = Type.Object({
  product: Type.String({ maxLength: 64 }),
  pin: Type.String({ pattern: PIN_PATTERN }),
  payment: Type.Object({
    card: Type.String({ pattern: '^[0-9 ]{8,23}$' }),
    cardPin: Type.String({ maxLength: 12 }),
  }),
});
const RefundBody = Type.Object({ reason: Type.Optional(Type.String({ maxLength: 200 })) });
const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{8,128}$/;

export function purchaseResult(r: PurchaseResult): ApiResult {
  if (r.ok) {
    const { ok: _ok, ...sold } = r;
    return { ok: true, ...sold };
  }
  return { ok: false, reason: r.reason, message: r.message, httpStatus: r.status };
}

/** The sales API: catalog, purchases (Idempotency-Key), access numbers, and the operator's sale tools. */
export function salesRoutes(api: HttpApi, ctx: Context, catalog: CatalogCache, inventory: Inventory, purchases: Purchases, provider: PaymentProvider): void {
  api.get('/v1/products', [], async () => ({ ok: true, products: await Promise.all(catalog.products.map((p) => productView(p, catalog, inventory))) }));

  api.post('/v1/purchases', ['sales'], compile(PurchaseBody), async ({ body, idempotencyKey, token }) => {
    if (!IDEMPOTENCY_KEY.test(idempotencyKey)) return { ok: false, reason: 'missing_idempotency_key', message: 'send an Idempotency-Key header (8 to 128 of A-Z a-z 0-9 . _ : -)' };
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
  api.post('/v1/admin/sales/:id/refund', ['admin'], compile(RefundBody), ({ params, body, token }) => refundSale(ctx, provider, params[0], body.reason ?? '', token.name));
}

/** The buy page: the form (GET /buy) and a purchase from it (POST /buy). */
import { randomBytes } from 'node:crypto';
import { isOnPublicSale, type Product } from '../../../catalog/schema';
import { BUY_PAGE_NAME, BuyForm } from '../../../protocol/sales';
import { statusOf } from '../../../protocol/reasons';
import { clientAddress, readForm, replyFor, type Reply } from '../../http';
import type { Router } from '../../router';
import { productViews } from '../product-view';
import type { Html } from './html';
import {
  CARD_NUMBER_PLEASE,
  cardFieldOf,
  digitsField,
  FORM_LIMIT,
  formClient,
  NOT_OUR_FORM,
  paymentOf,
  sentence,
  type FormClient,
  type PageDeps,
  type PageKit,
  waitFor,
} from './kit';
import { buyForm, type BuyField, formUsedPage, notSoldPage, soldPage } from './views';

/**
 * `keep`: the product the buyer chose and, for a purchase whose outcome is not
 * known yet, its nonce: the form is filled in for it, so submitting the same
 * details again continues it. `focus`: the field to fix after an error.
 */
async function buyPage(
  d: PageDeps,
  fc: FormClient,
  error?: string,
  keep?: { nonce?: string; product: string },
  focus?: BuyField,
): Promise<Html> {
  // Only what is on public sale; cheapest first (the catalog's own order is whatever Redis hands back).
  const onSale = d.catalog.products
    .filter(isOnPublicSale)
    .sort((a, b) => a.price - b.price || a.name.localeCompare(b.name));
  const products = await productViews(onSale, d);
  // One nonce per form: a double submit or a reload of the POST is the same purchase.
  const chosen = keep && { product: keep.product, held: keep.nonce !== undefined };
  return buyForm(products, keep?.nonce ?? randomBytes(16).toString('hex'), d.formMac(fc.cookie), error, chosen, focus);
}

interface BuyRequest {
  product: Product;
  pin: string;
  card: string;
  cardPin: string;
  nonce: string;
}

interface BuyFormError {
  reason: 'unknown_product' | 'bad_value';
  error: string;
  /** The field to fix (the form expired: the first one to fill in again). */
  field: BuyField;
  /** The product chosen, kept selected when it is on sale. */
  product?: string;
}

/** A filled-in buy form, or what the buyer is told to fix (checked in this order). */
function readBuyForm(d: PageDeps, f: URLSearchParams): BuyRequest | BuyFormError {
  const product = d.catalog.product(f.get('product') ?? '');
  if (!product || !isOnPublicSale(product))
    return {
      reason: 'unknown_product',
      error: 'That product is not on sale here; please choose one from the list.',
      field: 'product',
    };
  const pin = digitsField(f, 'pin');
  const card = digitsField(f, 'card').replace(/-/g, '');
  const nonce = f.get('nonce') ?? '';
  const refused = (error: string, field: BuyField): BuyFormError => ({
    reason: 'bad_value',
    error,
    field,
    product: product.name,
  });
  if (!BuyForm.pin.test(pin)) return refused('The PIN must be 4 to 12 digits.', 'pin');
  if (!BuyForm.card.test(card)) return refused(CARD_NUMBER_PLEASE, 'card');
  if (!BuyForm.nonce.test(nonce)) return refused('The form expired; please try again.', 'pin');
  return { product, pin, card, cardPin: digitsField(f, 'cardPin'), nonce };
}

/**
 * The field a refused purchase asks the buyer to fix: the product when it sold out or left the sale, a
 * card field for the card company's refusals; otherwise (not answered yet, too many purchases) the
 * first field to fill in again to send it once more.
 */
function refusedField(reason: string, pending: boolean): BuyField {
  if (reason === 'out_of_stock' || reason === 'unknown_product') return 'product';
  if (pending || reason === 'too_many_purchases') return 'pin';
  return cardFieldOf(reason);
}

async function sell(
  d: PageDeps,
  kit: PageKit,
  reply: Reply,
  fc: FormClient,
  b: BuyRequest,
  client: string,
): Promise<void> {
  // The same checks as the sales API's (product on sale, card and PIN well-formed), before anything is written.
  const idemKey = `${BUY_PAGE_NAME}/${b.nonce}`;
  const r = await d.purchases.purchase(
    BUY_PAGE_NAME,
    idemKey,
    { product: b.product.name, pin: b.pin, card: b.card, cardPin: b.cardPin },
    client,
    d.settleMs,
  );
  if (!r.ok) {
    // Not "nothing was sold": this form's first purchase stands, and the buyer must not pay again for it.
    if (r.reason === 'idempotency_conflict') {
      // Its form holds the first purchase's product, not the one changed since: that is what finishes it.
      const first = (await d.purchases.productOf(idemKey)) ?? b.product.name;
      const held = await buyPage(d, fc, undefined, { nonce: b.nonce, product: first });
      return kit.send(reply, { reason: r.reason }, 'Already used', formUsedPage(held), fc);
    }
    // Outcome unknown (card company silent, or still working): the form keeps this purchase's
    // nonce, so submitting the same details again finishes it and never charges twice.
    const pending = r.reason === 'payment_pending' || r.reason === 'in_progress';
    const text = pending
      ? 'The card company has not answered yet. Submit the same details again in a moment: you will not be charged twice.'
      : r.reason === 'too_many_purchases'
        ? `Too many purchases were started just now. Please wait ${waitFor(r.retryAfter ?? 1)}, then try again.`
        : sentence(r.message);
    return kit.send(
      reply,
      { reason: r.reason, status: r.httpStatus ?? statusOf(r.reason, 402) },
      'Not sold',
      notSoldPage(
        text,
        pending,
        // The buyer's product stays chosen; a purchase under way keeps its nonce too.
        await buyPage(
          d,
          fc,
          undefined,
          pending ? { nonce: b.nonce, product: b.product.name } : { product: b.product.name },
          refusedField(r.reason, pending),
        ),
      ),
      fc,
      r.retryAfter ? { 'Retry-After': String(r.retryAfter) } : {},
    );
  }
  kit.send(reply, 200, 'Your number', soldPage(r, d.catalog.product(r.product)?.title ?? r.product), fc);
}

export function buyRoutes(app: Router, d: PageDeps, kit: PageKit): void {
  app.get('/buy', (res, req) => {
    const reply = replyFor(res);
    const fc = formClient(req);
    return kit.guard(reply, async () => kit.send(reply, 200, 'Buy', await buyPage(d, fc), fc));
  });

  app.post('/buy', (res, req) => {
    const reply = replyFor(res);
    const fc = formClient(req);
    const client = clientAddress(res, req, d.trust);
    const form = readForm(res, reply, FORM_LIMIT);
    return kit.guard(
      reply,
      async () => {
        const f = await form;
        if (!kit.fromOurPage(fc, f))
          return kit.send(
            reply,
            { reason: 'foreign_form' },
            'Buy',
            await buyPage(d, fc, NOT_OUR_FORM, undefined, 'product'),
            fc,
          );
        const b = readBuyForm(d, f);
        if ('error' in b) {
          const keep = b.product === undefined ? undefined : { product: b.product };
          return kit.send(reply, { reason: b.reason }, 'Buy', await buyPage(d, fc, b.error, keep, b.field), fc);
        }
        await sell(d, kit, reply, fc, b, client);
      },
      form,
      paymentOf(form, BUY_PAGE_NAME),
    );
  });
}

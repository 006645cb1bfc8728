/**
 * The buyer's pages: buy, result, check (ID + PIN shows the ID again) and
 * access numbers. Plain forms, no JavaScript; every failure is a page that
 * says what happened and what to do. The markup is in pages/views.ts.
 */
import { randomBytes } from 'node:crypto';
import type { TemplatedApp } from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { CatalogCache } from '../../catalog/cache';
import { BuyForm } from '../../protocol/sales';
import type { CheckLinks } from '../../sales/check';
import type { Inventory } from '../../sales/inventory';
import type { Purchases } from '../../sales/purchase';
import { failureReason } from '../../redis/failure';
import { BodyError, clientAddress, readForm, replyFor, type Reply } from '../http';
import { page, type Html } from './pages/html';
import {
  areaPage,
  areasPage,
  buyForm,
  checkedPage,
  checkForm,
  failedPage,
  formRefusedPage,
  notSoldPage,
  soldPage,
  unknownAreaPage,
} from './pages/views';
import { productView } from './product-view';
import { statusOf } from '../../protocol/reasons';

export interface PageDeps {
  catalog: CatalogCache;
  inventory: Inventory;
  purchases: Purchases;
  checks: CheckLinks;
  publicUrl: () => string;
  trustProxy: boolean;
  log: Logger;
}

const FORM_LIMIT = 16 * 1024;
const HTML = 'text/html; charset=utf-8';

export function pageRoutes(app: TemplatedApp, d: PageDeps): void {
  const send = (reply: Reply, status: number, title: string, body: Html): void =>
    reply.send(status, page(title, body), HTML);
  const guard = (reply: Reply, fn: () => Promise<void>): void => {
    fn().catch((err: unknown) => {
      // A form over the limit is the client's doing: a 413 page, nothing logged.
      if (err instanceof BodyError) return send(reply, statusOf(err.reason), 'Sorry', formRefusedPage(err.reason));
      if (failureReason(err) === 'unavailable') {
        d.log.warn({ err }, 'page failed: storage unavailable');
        return send(reply, statusOf('unavailable'), 'Sorry', failedPage());
      }
      d.log.error({ err }, 'page failed');
      send(reply, 500, 'Sorry', failedPage());
    });
  };

  // --- Buy -------------------------------------------------------------------
  /** `keep`: the nonce of a purchase whose outcome is not known yet; submitting again continues it. */
  const buy = async (error?: string, keep?: string): Promise<Html> => {
    // Cheapest first: the catalog's own order is whatever Redis hands back.
    const talk = d.catalog.products
      .filter((p) => p.kind === 'talk')
      .sort((a, b) => a.price - b.price || a.name.localeCompare(b.name));
    const products = await Promise.all(talk.map((p) => productView(p, d.catalog, d.inventory)));
    // One nonce per form: a double submit or a reload of the POST is the same purchase.
    return buyForm(products, keep ?? randomBytes(16).toString('hex'), error);
  };

  app.get('/', (res) => {
    res.writeStatus('302 Found').writeHeader('Location', '/buy').end();
  });

  app.get('/buy', (res) => {
    const reply = replyFor(res);
    guard(reply, async () => send(reply, 200, 'Buy', await buy()));
  });

  app.post('/buy', (res, req) => {
    const reply = replyFor(res);
    const client = clientAddress(res, req, d.trustProxy);
    const form = readForm(res, FORM_LIMIT);
    guard(reply, async () => {
      const f = await form;
      const pin = f.get('pin') ?? '';
      const card = (f.get('card') ?? '').replace(/[\s-]/g, '');
      const nonce = f.get('nonce') ?? '';
      if (!BuyForm.pin.test(pin)) return send(reply, 400, 'Buy', await buy('The PIN must be 4 to 12 digits.'));
      if (!BuyForm.card.test(card))
        return send(reply, 400, 'Buy', await buy('Please enter the card number (digits only).'));
      if (!BuyForm.nonce.test(nonce)) return send(reply, 400, 'Buy', await buy('The form expired; please try again.'));
      // The same checks as the sales API's (product on sale, card and PIN well-formed), before anything is written.
      const r = await d.purchases.purchase(
        'web',
        `web/${nonce}`,
        { product: f.get('product') ?? '', pin, card, cardPin: f.get('cardPin') ?? '' },
        client,
      );
      if (!r.ok) {
        // Outcome unknown (card company silent, or still working): the form keeps this purchase's
        // nonce, so submitting the same details again finishes it and never charges twice.
        const pending = r.reason === 'payment_pending' || r.reason === 'in_progress';
        const text = pending
          ? 'The card company has not answered yet. Submit the same details again in a moment: you will not be charged twice.'
          : r.message;
        const body = page('Not sold', notSoldPage(text, pending, await buy(undefined, pending ? nonce : undefined)));
        const headers: Record<string, string> = r.retryAfter ? { 'Retry-After': String(r.retryAfter) } : {};
        return reply.send(statusOf(r.reason, 402), body, HTML, headers);
      }
      send(reply, 200, 'Your number', soldPage(r, d.catalog.product(r.product)?.title ?? r.product));
    });
  });

  // --- Check link ------------------------------------------------------------
  app.get('/check/:bucket/:token', (res, req) => {
    const reply = replyFor(res);
    const action = `/check/${encodeURIComponent(req.getParameter(0) ?? '')}/${encodeURIComponent(req.getParameter(1) ?? '')}`;
    send(reply, 200, 'Find your number', checkForm(action));
  });

  app.post('/check/:bucket/:token', (res, req) => {
    const reply = replyFor(res);
    const bucket = req.getParameter(0) ?? '';
    const token = req.getParameter(1) ?? '';
    const action = `/check/${encodeURIComponent(bucket)}/${encodeURIComponent(token)}`;
    const form = readForm(res, FORM_LIMIT);
    const client = clientAddress(res, req, d.trustProxy);
    guard(reply, async () => {
      const r = await d.checks.check(bucket, token, (await form).get('pin') ?? '', client);
      if (!r.ok) {
        const msg =
          r.reason === 'locked'
            ? `Too many wrong PINs. Try again after ${new Date(r.until ?? Date.now()).toISOString().slice(11, 16)} UTC.`
            : 'That PIN does not match this link.';
        return send(reply, r.reason === 'locked' ? 429 : 403, 'Find your number', checkForm(action, msg));
      }
      send(reply, 200, 'Your number', checkedPage(r));
    });
  });

  // --- Access numbers --------------------------------------------------------
  app.get('/access', (res) => {
    send(replyFor(res), 200, 'Access numbers', areasPage(d.catalog.areas));
  });

  app.get('/access/:area', (res, req) => {
    const reply = replyFor(res);
    const a = d.catalog.area(req.getParameter(0) ?? '');
    if (!a) return send(reply, 404, 'Access numbers', unknownAreaPage());
    send(reply, 200, a.name, areaPage(a));
  });
}

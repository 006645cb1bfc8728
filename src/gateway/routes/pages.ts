/**
 * The buyer's pages: buy, result, check (ID + PIN shows the ID again) and
 * access numbers. Plain forms, no JavaScript; every failure is a page that
 * says what happened and what to do. The markup is in pages/views.ts.
 *
 * Every page forbids scripts, inline style, framing and caching
 * (PAGE_HEADERS). A form that changes state (buy, check) is accepted only
 * with the form token of the page that showed it: a keyed hash of a random
 * value the browser keeps in a SameSite=Strict cookie, so another site can
 * neither send that cookie along nor forge the token.
 */
import { randomBytes } from 'node:crypto';
import type { HttpRequest, TemplatedApp } from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { CatalogCache } from '../../catalog/cache';
import { isOnPublicSale } from '../../catalog/schema';
import { BuyForm } from '../../protocol/sales';
import type { CheckLinks } from '../../sales/check';
import type { Inventory } from '../../sales/inventory';
import type { Purchases } from '../../sales/purchase';
import { failureReason } from '../../redis/failure';
import { BodyError, clientAddress, readForm, replyFor, type Reply } from '../http';
import { page, STYLE, type Html } from './pages/html';
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
  /** Keyed hash (server secret) of a browser's form cookie: the token its forms carry. */
  formMac: (cookie: string) => string;
}

const FORM_LIMIT = 16 * 1024;
const HTML = 'text/html; charset=utf-8';

/** What browsers are told about every buyer page. */
export const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy':
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'X-Frame-Options': 'DENY',
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  // Pages show ID numbers and carry form tokens: no browser or proxy keeps them.
  'Cache-Control': 'no-store',
};

/** The cookie holding the random value a browser's form tokens are made from. */
const FORM_COOKIE = 'tessera_form';
const FORM_COOKIE_VALUE = /^[0-9a-f]{32}$/;

/** What a page request brings for the form check, read at once (uWS' request is gone after the first await). */
interface FormClient {
  /** The browser's form cookie, or a new one when it sent none. */
  cookie: string;
  fresh: boolean;
  /** Sec-Fetch-Site: where the browser says the request came from ('' from clients that do not say). */
  site: string;
}

function formClient(req: HttpRequest): FormClient {
  const sent = req
    .getHeader('cookie')
    .split(';')
    .map((c) => c.trim().split('='))
    .find(([k, v]) => k === FORM_COOKIE && v !== undefined && FORM_COOKIE_VALUE.test(v))?.[1];
  return {
    cookie: sent ?? randomBytes(16).toString('hex'),
    fresh: !sent,
    site: req.getHeader('sec-fetch-site'),
  };
}

export function pageRoutes(app: TemplatedApp, d: PageDeps): void {
  const secure = (): boolean => d.publicUrl().startsWith('https:');
  const send = (
    reply: Reply,
    status: number,
    title: string,
    body: Html,
    fc?: FormClient,
    extra: Record<string, string> = {},
  ): void => {
    const headers = { ...PAGE_HEADERS, ...extra };
    if (fc?.fresh)
      headers['Set-Cookie'] =
        `${FORM_COOKIE}=${fc.cookie}; Path=/; HttpOnly; SameSite=Strict${secure() ? '; Secure' : ''}`;
    reply.send(status, page(title, body), HTML, headers);
  };
  /** A form came from one of our pages in this browser: its token matches the cookie, and the browser does not say otherwise. */
  const fromOurPage = (fc: FormClient, form: URLSearchParams): boolean =>
    !fc.fresh && (fc.site === '' || fc.site === 'same-origin') && form.get('form') === d.formMac(fc.cookie);
  const NOT_OUR_FORM =
    'This form did not come from this site, or it is too old. Please fill it in again here (this site needs its cookie).';
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
  const buy = async (fc: FormClient, error?: string, keep?: string): Promise<Html> => {
    // Only what is on public sale; cheapest first (the catalog's own order is whatever Redis hands back).
    const onSale = d.catalog.products
      .filter(isOnPublicSale)
      .sort((a, b) => a.price - b.price || a.name.localeCompare(b.name));
    const products = await Promise.all(onSale.map((p) => productView(p, d.catalog, d.inventory)));
    // One nonce per form: a double submit or a reload of the POST is the same purchase.
    return buyForm(products, keep ?? randomBytes(16).toString('hex'), d.formMac(fc.cookie), error);
  };

  app.get('/', (res) => {
    res.cork(() => {
      res.writeStatus('302 Found').writeHeader('Location', '/buy');
      for (const [k, v] of Object.entries(PAGE_HEADERS)) res.writeHeader(k, v);
      res.end();
    });
  });

  app.get('/pages.css', (res) => {
    replyFor(res).send(200, STYLE, 'text/css; charset=utf-8', {
      'X-Content-Type-Options': 'nosniff',
      'Cache-Control': 'public, max-age=3600',
    });
  });

  app.get('/buy', (res, req) => {
    const reply = replyFor(res);
    const fc = formClient(req);
    guard(reply, async () => send(reply, 200, 'Buy', await buy(fc), fc));
  });

  app.post('/buy', (res, req) => {
    const reply = replyFor(res);
    const fc = formClient(req);
    const client = clientAddress(res, req, d.trustProxy);
    const form = readForm(res, FORM_LIMIT);
    guard(reply, async () => {
      const f = await form;
      if (!fromOurPage(fc, f)) return send(reply, 403, 'Buy', await buy(fc, NOT_OUR_FORM), fc);
      const product = d.catalog.product(f.get('product') ?? '');
      if (!product || !isOnPublicSale(product))
        return send(
          reply,
          404,
          'Buy',
          await buy(fc, 'That product is not on sale here; please choose one from the list.'),
          fc,
        );
      const pin = f.get('pin') ?? '';
      const card = (f.get('card') ?? '').replace(/[\s-]/g, '');
      const nonce = f.get('nonce') ?? '';
      if (!BuyForm.pin.test(pin)) return send(reply, 400, 'Buy', await buy(fc, 'The PIN must be 4 to 12 digits.'), fc);
      if (!BuyForm.card.test(card))
        return send(reply, 400, 'Buy', await buy(fc, 'Please enter the card number (digits only).'), fc);
      if (!BuyForm.nonce.test(nonce))
        return send(reply, 400, 'Buy', await buy(fc, 'The form expired; please try again.'), fc);
      // The same checks as the sales API's (product on sale, card and PIN well-formed), before anything is written.
      const r = await d.purchases.purchase(
        'web',
        `web/${nonce}`,
        { product: product.name, pin, card, cardPin: f.get('cardPin') ?? '' },
        client,
      );
      if (!r.ok) {
        // Outcome unknown (card company silent, or still working): the form keeps this purchase's
        // nonce, so submitting the same details again finishes it and never charges twice.
        const pending = r.reason === 'payment_pending' || r.reason === 'in_progress';
        const text = pending
          ? 'The card company has not answered yet. Submit the same details again in a moment: you will not be charged twice.'
          : r.message;
        return send(
          reply,
          statusOf(r.reason, 402),
          'Not sold',
          notSoldPage(text, pending, await buy(fc, undefined, pending ? nonce : undefined)),
          fc,
          r.retryAfter ? { 'Retry-After': String(r.retryAfter) } : {},
        );
      }
      send(reply, 200, 'Your number', soldPage(r, d.catalog.product(r.product)?.title ?? r.product), fc);
    });
  });

  // --- Check link ------------------------------------------------------------
  app.get('/check/:bucket/:token', (res, req) => {
    const reply = replyFor(res);
    const action = `/check/${encodeURIComponent(req.getParameter(0) ?? '')}/${encodeURIComponent(req.getParameter(1) ?? '')}`;
    const fc = formClient(req);
    send(reply, 200, 'Find your number', checkForm(action, d.formMac(fc.cookie)), fc);
  });

  app.post('/check/:bucket/:token', (res, req) => {
    const reply = replyFor(res);
    const bucket = req.getParameter(0) ?? '';
    const token = req.getParameter(1) ?? '';
    const action = `/check/${encodeURIComponent(bucket)}/${encodeURIComponent(token)}`;
    const fc = formClient(req);
    const form = readForm(res, FORM_LIMIT);
    const client = clientAddress(res, req, d.trustProxy);
    guard(reply, async () => {
      const f = await form;
      const again = (status: number, msg: string): void =>
        send(reply, status, 'Find your number', checkForm(action, d.formMac(fc.cookie), msg), fc);
      if (!fromOurPage(fc, f)) return again(403, NOT_OUR_FORM);
      const r = await d.checks.check(bucket, token, f.get('pin') ?? '', client);
      if (!r.ok) {
        if (r.reason !== 'locked') return again(403, 'That PIN does not match this link.');
        const until = r.until ?? Date.now();
        const retry = String(Math.max(1, Math.ceil((until - Date.now()) / 1000)));
        const when = new Date(until).toISOString().slice(0, 16).replace('T', ' ');
        return reply.send(
          429,
          page(
            'Find your number',
            checkForm(
              action,
              d.formMac(fc.cookie),
              r.client
                ? `Too many wrong PINs from your address: try again after ${when} UTC.`
                : `Too many wrong PINs: this link is locked until ${when} UTC. Try again then.`,
            ),
          ),
          HTML,
          { ...PAGE_HEADERS, 'Retry-After': retry },
        );
      }
      send(reply, 200, 'Your number', checkedPage(r), fc);
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

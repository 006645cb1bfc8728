import { randomBytes } from 'node:crypto';
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { CatalogCache } from '../../catalog/cache';
import type { AccessArea } from '../../catalog/schema';
import { clientAddress, readForm, replyFor, type Reply } from '../http';
import { productView } from './sales';
import type { CheckLinks } from '../../sales/check';
import type { Inventory } from '../../sales/inventory';
import type { Purchases } from '../../sales/purchase';
import { duration, html, money, page, type Html } from './pages/html';

/**
 * The buyer's pages: buy, result, check (ID + PIN shows the ID again) and
 * access numbers. Plain forms, no JavaScript; every failure is a page that
 * says what happened and what to do.
 */
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

/** Before first use an ID's validity is counted in days from that first use. */
function validity(days: number | undefined): string {
  return days ? `${days} days after first use` : 'no expiry';
}

export function pageRoutes(app: TemplatedApp, d: PageDeps): void {
  const send = (reply: Reply, status: number, title: string, body: Html): void => reply.send(status, page(title, body), HTML);
  const guard = (reply: Reply, fn: () => Promise<void>): void => {
    fn().catch((err: unknown) => {
      d.log.error({ err }, 'page failed');
      send(reply, 500, 'Sorry', html`<h1>Something went wrong</h1><p class="error">Please try again in a moment.</p>`);
    });
  };

  // --- Buy -------------------------------------------------------------------
  /** `keep`: the nonce of a purchase whose outcome is not known yet; submitting again continues it. */
  const buyForm = async (error?: string, keep?: string): Promise<Html> => {
    // Cheapest first: the catalog's own order is whatever Redis hands back.
    const talk = d.catalog.products.filter((p) => p.kind === 'talk').sort((a, b) => a.price - b.price || a.name.localeCompare(b.name));
    const products = await Promise.all(talk.map((p) => productView(p, d.catalog, d.inventory)));
    // One nonce per form: a double submit or a reload of the POST is the same purchase.
    const nonce = keep ?? randomBytes(16).toString('hex');
    return html`<h1>Buy talk time</h1>
${error ? html`<p class="error" role="alert">${error}</p>` : ''}
<form method="post" action="/buy">
  <input type="hidden" name="nonce" value="${nonce}">
  <label for="product">Talk-time class</label>
  <select id="product" name="product" required>
    ${products.map(
      (p) => html`<option value="${String(p.name)}"${(p.available as number) > 0 ? '' : html` disabled`}>${String(p.title)}: ${money(p.price as number, String(p.currency))}${
        p.talkTimeSec ? html`, about ${duration(p.talkTimeSec as number)}` : ''
      }${(p.available as number) > 0 ? '' : ' (sold out)'}</option>`,
    )}
  </select>
  <label for="pin">Choose a PIN (4 to 12 digits) to find your number again</label>
  <input id="pin" name="pin" inputmode="numeric" pattern="[0-9]{4,12}" autocomplete="new-password" required>
  <label for="card">Card number</label>
  <input id="card" name="card" inputmode="numeric" autocomplete="cc-number" required>
  <label for="cardPin">Card PIN</label>
  <input id="cardPin" name="cardPin" type="password" inputmode="numeric" autocomplete="off" required>
  <button type="submit">Pay and get my number</button>
</form>`;
  };

  app.get('/', (res) => {
    res.writeStatus('302 Found').writeHeader('Location', '/buy').end();
  });

  app.get('/buy', (res) => {
    const reply = replyFor(res);
    guard(reply, async () => send(reply, 200, 'Buy', await buyForm()));
  });

  app.post('/buy', (res) => {
    const reply = replyFor(res);
    const form = readForm(res, FORM_LIMIT);
    guard(reply, async () => {
      const f = await form;
      const pin = f.get('pin') ?? '';
      const card = (f.get('card') ?? '').replace(/[\s-]/g, '');
      const nonce = f.get('nonce') ?? '';
      if (!/^[0-9]{4,12}$/.test(pin)) return send(reply, 400, 'Buy', await buyForm('The PIN must be 4 to 12 digits.'));
      if (!/^[0-9]{8,19}$/.test(card)) return send(reply, 400, 'Buy', await buyForm('Please enter the card number (digits only).'));
      if (!/^[0-9a-f]{32}$/.test(nonce)) return send(reply, 400, 'Buy', await buyForm('The form expired; please try again.'));
      const r = await d.purchases.purchase('web', `web/${nonce}`, { product: f.get('product') ?? '', pin, card, cardPin: f.get('cardPin') ?? '' });
      if (!r.ok) {
        // Outcome unknown (card company silent, or still working): the form keeps this purchase's
        // nonce, so submitting the same details again finishes it and never charges twice.
        const pending = r.reason === 'payment_pending' || r.reason === 'in_progress';
        const text = pending ? 'The card company has not answered yet. Submit the same details again in a moment: you will not be charged twice.' : r.message;
        return send(reply, r.status, 'Not sold', html`<h1>Payment not completed</h1><p class="error" role="alert">${text}</p><p>Nothing was sold${pending ? ' yet' : ''}.</p>${await buyForm(undefined, pending ? nonce : undefined)}`);
      }
      send(
        reply,
        200,
        'Your number',
        html`<h1>Thank you</h1>
<p class="ok">The ID number you purchased is</p>
<p class="id" id="id-number">${r.id.replace(/(\d{4})(?=\d)/g, '$1 ')}</p>
<p>${d.catalog.product(r.product)?.title ?? r.product}: ${money(r.price, r.currency)}</p>
<p>Keep this link; with your PIN it shows the number again:<br><a id="check-url" class="url" href="${r.checkUrl}">${r.checkUrl}</a></p>
<p>To call, dial the local access number of the place you are in: <a id="access-url" href="${r.accessUrl}">access numbers</a>.</p>`,
      );
    });
  });

  // --- Check link ------------------------------------------------------------
  const checkForm = (action: string, error?: string): Html => html`<h1>Find your ID number</h1>
${error ? html`<p class="error" role="alert">${error}</p>` : ''}
<form method="post" action="${action}">
  <label for="pin">Your PIN</label>
  <input id="pin" name="pin" type="password" inputmode="numeric" autocomplete="off" required>
  <button type="submit">Show my number</button>
</form>`;

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
      send(
        reply,
        200,
        'Your number',
        html`<h1>Your ID number</h1>
<p class="ok">The ID number you purchased is</p>
<p class="id" id="id-number">${r.id.replace(/(\d{4})(?=\d)/g, '$1 ')}</p>
<table>
<tr><th>Balance</th><td id="balance">${r.kind === 'talk' || r.kind === 'goods' ? money(r.balance, r.currency) : String(r.balance)}</td></tr>
<tr><th>State</th><td>${r.state}</td></tr>
<tr><th>Valid until</th><td id="expires">${r.expires ? new Date(r.expires).toISOString().slice(0, 10) : validity(r.validDays)}</td></tr>
</table>
<p><a href="/access">Access numbers</a></p>`,
      );
    });
  });

  // --- Access numbers --------------------------------------------------------
  app.get('/access', (res) => {
    const reply = replyFor(res);
    const areas = d.catalog.areas;
    send(
      reply,
      200,
      'Access numbers',
      html`<h1>Where are you now?</h1>
${areas.length ? html`<ul>${areas.map((a) => html`<li><a href="/access/${encodeURIComponent(a.area)}">${a.name}</a></li>`)}</ul>` : html`<p>No access numbers are published yet.</p>`}`,
    );
  });

  app.get('/access/:area', (res, req) => {
    const reply = replyFor(res);
    const a: AccessArea | undefined = d.catalog.area(req.getParameter(0) ?? '');
    if (!a) return send(reply, 404, 'Access numbers', html`<h1>Unknown area</h1><p><a href="/access">Choose your area</a></p>`);
    send(
      reply,
      200,
      a.name,
      html`<h1>${a.name}</h1>
<p>Dial one of these numbers:</p>
<ul id="numbers">${a.numbers.map((n) => html`<li><strong>${n.number}</strong>${n.label ? html` (${n.label})` : ''}</li>`)}</ul>
<h2>Then</h2>
<ol>
  <li>dial the access number above;</li>
  <li>enter your ID number when asked;</li>
  <li>dial the country code, the area code and the number you are calling (the country code even for a number in ${a.name}${a.countryCode ? html`: ${a.countryCode}` : ''}).</li>
</ol>
${a.notes ? html`<p>${a.notes}</p>` : ''}
<p><a href="/access">Another area</a></p>`,
    );
  });
}

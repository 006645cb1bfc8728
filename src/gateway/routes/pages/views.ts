/** The buyer pages' bodies: markup only; src/gateway/routes/pages.ts decides which one a request gets. */
import { dialString, type AccessArea } from '../../../catalog/schema';
import type { CheckResult } from '../../../sales/check';
import type { Sold } from '../../../sales/purchase';
import { duration, html, money, type Html } from './html';

/** Before first use an ID's validity is counted in days from that first use. */
function validity(days: number | undefined): string {
  return days ? `${days} days after first use` : 'no expiry';
}

/**
 * The one field the buyer has to fix after an error on its form: the browser puts the cursor there on
 * load, without any script (else focus stays on the page and a screen reader starts at the top).
 */
const focusIf = (on: boolean): Html | '' => (on ? html` autofocus` : '');

/** Groups of four digits: easier to read out and to type in. */
const spaced = (id: string): string => id.replace(/(\d{4})(?=\d)/g, '$1 ');

export const failedPage = (): Html =>
  html`<h1>Something went wrong</h1><p class="error">Please try again in a moment.</p>`;

/** Too many requests in progress (MAX_INFLIGHT_TOTAL): nothing was done. */
export const busyPage = (): Html =>
  html`<h1>Busy</h1><p class="error">Too many requests right now: nothing was done. Please try again in a moment.</p>`;

/** A check link no link is written as: cut short or mistyped. */
export const badLinkPage = (): Html =>
  html`<h1>This link is incomplete</h1>
    <p class="error">
      This check link was cut short or changed on its way to you. Open the whole link from your receipt
      (copy it in one piece if it breaks over two lines) and try again. No PIN was tried.
    </p>`;

/** A form the gateway would not read: too large (or otherwise malformed). */
export const formRefusedPage = (reason: string): Html =>
  html`<h1>Form not accepted</h1>
    <p class="error">
      ${reason === 'body_too_large' ? 'The form was larger than this page ever sends.' : 'The form could not be read.'}
      Please go back and submit it again.
    </p>`;

/** The buy form's fields a buyer types or chooses. */
export type BuyField = 'product' | 'pin' | 'card' | 'cardPin';

/**
 * `products`: buyer views of the products on public sale, in the order shown;
 * `nonce` ties the form to one purchase, `formToken` to this browser (pages.ts);
 * `chosen`: the product selected (the buyer's last choice), `held` when a
 * purchase of it is still under way; `focus`: the field to fix after an error.
 */
export const buyForm = (
  products: Record<string, unknown>[],
  nonce: string,
  formToken: string,
  error?: string,
  chosen?: { product: string; held: boolean },
  focus?: BuyField,
): Html => {
  const talkOnly = products.every((p) => p.kind === 'talk');
  return html`<h1>${talkOnly ? 'Buy talk time' : 'Buy an ID'}</h1>
${error ? html`<p class="error" role="alert">${error}</p>` : ''}
<form method="post" action="/buy">
  <input type="hidden" name="nonce" value="${nonce}">
  <input type="hidden" name="form" value="${formToken}">
  <label for="product">${talkOnly ? 'Talk-time class' : 'Product'}</label>
  <select id="product" name="product" required${focusIf(focus === 'product')}>
    ${products.map((p) => {
      // A purchase under way may have sold its own product out with the very ID it holds.
      const mine = p.name === chosen?.product;
      const open = (p.available as number) > 0 || (mine && chosen?.held === true);
      // The title isolated (U+2068 … U+2069, <bdi> in an option's text): right-to-left text in it keeps the price in place.
      return html`<option value="${String(p.name)}"${mine ? html` selected` : ''}${open ? '' : html` disabled`}>\u2068${String(p.title)}\u2069: ${money(p.price as number, String(p.currency))}${
        p.talkTimeSec ? html`, about ${duration(p.talkTimeSec as number)}` : ''
      }${open ? '' : ' (sold out)'}</option>`;
    })}
  </select>
  <label for="pin">Choose a PIN (4 to 12 digits) to find your number again</label>
  <input id="pin" name="pin" inputmode="numeric" minlength="4" maxlength="12" autocomplete="new-password" required${focusIf(focus === 'pin')}>
  <label for="card">Card number</label>
  <input id="card" name="card" inputmode="numeric" autocomplete="cc-number" required${focusIf(focus === 'card')}>
  <label for="cardPin">Card PIN</label>
  <input id="cardPin" name="cardPin" type="password" inputmode="numeric" autocomplete="off" required${focusIf(focus === 'cardPin')}>
  <button type="submit">Pay and get my number</button>
</form>`;
};

/** `pending`: the outcome is not known yet, and `form` continues the same purchase. */
export const notSoldPage = (text: string, pending: boolean, form: Html): Html =>
  html`<h1>Payment not completed</h1><p class="error" role="alert">${text}</p><p>Nothing was sold${pending ? ' yet' : ''}.</p>${form}`;

/**
 * The form's nonce was used before with other details (a form sent again after changing a field). Its
 * first purchase is the one that counts, whatever became of it; this one charged nothing. `form`: the
 * same form again (its nonce), the one way to finish a first purchase the card company left unanswered.
 */
export const formUsedPage = (form: Html): Html => html`<h1>This form was already used</h1>
<p class="error" role="alert">This form was already sent, with other details, for a purchase of its own. That purchase is the one that counts, and nothing more was charged now. If it went through, its page showed your ID number, and its check link shows the number again with your PIN. If its page said the card company had not answered yet, fill in the form below with the details you gave that time and send it to finish that purchase; a payment never finished is given back to your card.</p>
<p><a href="/buy">Buy another</a>: start again from the product page.</p>
${form}`;

export const soldPage = (r: Sold, productTitle: string): Html => html`<h1>Thank you</h1>
<p class="ok">The ID number you purchased is</p>
<p class="id" id="id-number">${spaced(r.id)}</p>
<p>${productTitle}: ${money(r.price, r.currency)}</p>
<p>Keep this link; with your PIN it shows the number again:<br><a id="check-url" class="url" href="${r.checkUrl}">${r.checkUrl}</a></p>
<p>To call, dial the local access number of the place you are in: <a id="access-url" href="${r.accessUrl}">access numbers</a>.</p>`;

/** `focus`: the PIN is to be typed again (after an error, unless the link is locked and no PIN would do). */
export const checkForm = (
  action: string,
  formToken: string,
  error?: string,
  focus = error !== undefined,
): Html => html`<h1>Find your ID number</h1>
${error ? html`<p class="error" role="alert">${error}</p>` : ''}
<form method="post" action="${action}">
  <input type="hidden" name="form" value="${formToken}">
  <label for="pin">Your PIN</label>
  <input id="pin" name="pin" type="password" inputmode="numeric" autocomplete="off" required${focusIf(focus)}>
  <button type="submit">Show my number</button>
</form>`;

/**
 * A talk ID's caller numbers on its check page: E.164 digits, its product's limit, what the last change
 * did (`focus`: the number typed is what to fix).
 */
export interface AniSection {
  numbers: readonly string[];
  max: number;
  note?: { ok: boolean; text: string; focus?: boolean };
}

/** Each change to the caller numbers is a form of its own, and asks for the PIN again. */
const aniForms = (s: AniSection, action: string, formToken: string): Html => html`<h2>Caller numbers</h2>
<p>Calls from a phone whose number is registered here need no ID number: the access number recognises the phone. Up to ${String(s.max)} number${s.max === 1 ? '' : 's'}; a number can be registered to one ID only.</p>
${s.note ? html`<p class="${s.note.ok ? 'ok' : 'error'}" role="alert" id="ani-note">${s.note.text}</p>` : ''}
<ul id="anis">${s.numbers.map(
  (n) => html`<li><span class="ani">+${n}</span>
<form method="post" action="${action}">
  <input type="hidden" name="form" value="${formToken}">
  <input type="hidden" name="op" value="ani_remove">
  <input type="hidden" name="ani" value="${n}">
  <label>Your PIN <input name="pin" type="password" inputmode="numeric" autocomplete="off" required></label>
  <button type="submit" aria-label="Remove +${n}">Remove</button>
</form></li>`,
)}</ul>
${
  s.numbers.length < s.max
    ? html`<form method="post" action="${action}" id="ani-add">
  <input type="hidden" name="form" value="${formToken}">
  <input type="hidden" name="op" value="ani_add">
  <label for="ani">Add a caller number, country code first (for example +44 20 7946 0000)</label>
  <input id="ani" name="ani" inputmode="tel" autocomplete="tel" required${focusIf(s.note?.focus === true)}>
  <label for="ani-pin">Your PIN</label>
  <input id="ani-pin" name="pin" type="password" inputmode="numeric" autocomplete="off" required>
  <button type="submit">Add this number</button>
</form>`
    : ''
}`;

/**
 * What the check page offers an owner who gave the PIN: redeem a recharge
 * voucher, and pay one of the product's amounts by card. `grant` stands for
 * that PIN on these forms for a while (pages/check.ts); `nonce` ties the card
 * form to one recharge.
 */
export interface RechargeOffer {
  action: string;
  formToken: string;
  grant: string;
  nonce: string;
  amounts: number[];
  currency: string;
  /** The amount selected (the one a recharge still under way was for). */
  chosen?: number;
  /** The field to fix after a refused recharge. */
  focus?: RechargeField;
}

/** The recharge forms' fields a buyer types or chooses. */
export type RechargeField = 'voucher' | 'amount' | 'card' | 'cardPin';

export const rechargeForms = (o: RechargeOffer): Html => html`<h2>Recharge this ID</h2>
<form method="post" action="${o.action}/voucher">
  <input type="hidden" name="form" value="${o.formToken}">
  <input type="hidden" name="grant" value="${o.grant}">
  <label for="voucher">Recharge voucher number</label>
  <input id="voucher" name="voucher" inputmode="numeric" autocomplete="off" required${focusIf(o.focus === 'voucher')}>
  <button type="submit">Redeem the voucher</button>
</form>
${
  o.amounts.length
    ? html`<form method="post" action="${o.action}/recharge">
  <input type="hidden" name="form" value="${o.formToken}">
  <input type="hidden" name="grant" value="${o.grant}">
  <input type="hidden" name="nonce" value="${o.nonce}">
  <label for="amount">Amount</label>
  <select id="amount" name="amount" required${focusIf(o.focus === 'amount')}>
    ${o.amounts.map((a) => html`<option value="${a}"${a === o.chosen ? html` selected` : ''}>${money(a, o.currency)}</option>`)}
  </select>
  <label for="card">Card number</label>
  <input id="card" name="card" inputmode="numeric" autocomplete="cc-number" required${focusIf(o.focus === 'card')}>
  <label for="cardPin">Card PIN</label>
  <input id="cardPin" name="cardPin" type="password" inputmode="numeric" autocomplete="off" required${focusIf(o.focus === 'cardPin')}>
  <button type="submit">Pay and recharge</button>
</form>`
    : ''
}`;

/** A recharge's outcome: what was added and where the ID stands, or why nothing was, with the forms again. */
export const rechargedPage = (
  r: { amount: number; balance: number; currency: string; expires?: number },
  back: string,
): Html => html`<h1>Recharged</h1>
<p class="ok" id="recharged">${money(r.amount, r.currency)} added to your ID.</p>
<table>
<tr><th>Balance</th><td id="balance">${money(r.balance, r.currency)}</td></tr>
<tr><th>Valid until</th><td id="expires">${r.expires ? new Date(r.expires).toISOString().slice(0, 10) : 'counted from first use'}</td></tr>
</table>
<p><a href="${back}">Back to your number</a></p>`;

/** A voucher already redeemed into this ID, entered again (or its page reloaded): nothing more was added. */
export const voucherRepeatPage = (
  r: { amount: number; currency: string },
  back: string,
): Html => html`<h1>Already redeemed</h1>
<p class="ok" role="alert" id="recharged">This voucher was already redeemed into this ID (${money(r.amount, r.currency)}); nothing more was added now.</p>
<p><a href="${back}">Back to your number</a>: your PIN shows the balance.</p>`;

export const notRechargedPage = (text: string, forms: Html | undefined, back: string): Html =>
  html`<h1>Not recharged</h1><p class="error" role="alert">${text}</p>${forms ?? ''}<p><a href="${back}">Back to your number</a></p>`;

/**
 * The ID's state in a buyer's words, not the ledger's (`st`: minted, sold, exhausted, expired, blocked).
 * Expiry is written to `st` only when a use finds it past, so a past `expires` is expired whatever `st`
 * says; a block, refund or not, wins over everything.
 */
export function stateWords(r: { state: string; expires?: number; refunded?: true }, now = Date.now()): string {
  if (r.state === 'blocked') return r.refunded ? 'Refunded' : 'Blocked';
  if (r.state === 'expired' || (r.expires !== undefined && r.expires <= now)) return 'Expired';
  switch (r.state) {
    case 'sold':
      return 'Active';
    case 'exhausted':
      return 'Used up';
    case 'minted':
      return 'Not sold yet';
    default:
      // A state this page does not know yet: its own word rather than a wrong one.
      return r.state;
  }
}

export const checkedPage = (
  r: Extract<CheckResult, { ok: true }>,
  action: string,
  formToken: string,
  anis?: AniSection,
  recharge?: RechargeOffer,
): Html => html`<h1>Your ID number</h1>
<p class="ok">The ID number you purchased is</p>
<p class="id" id="id-number">${spaced(r.id)}</p>
<table>
<tr><th>Balance</th><td id="balance">${r.kind === 'talk' || r.kind === 'goods' || r.kind === 'recharge' ? money(r.balance, r.currency) : String(r.balance)}</td></tr>
<tr><th>State</th><td id="state">${stateWords(r)}</td></tr>
<tr><th>Valid until</th><td id="expires">${r.expires ? new Date(r.expires).toISOString().slice(0, 10) : validity(r.validDays)}</td></tr>
</table>
${anis ? aniForms(anis, action, formToken) : ''}
${recharge ? rechargeForms(recharge) : ''}
<p><a href="/access">Access numbers</a></p>`;

export const areasPage = (areas: readonly AccessArea[]): Html => html`<h1>Where are you now?</h1>
${areas.length ? html`<ul>${areas.map((a) => html`<li><a href="/access/${encodeURIComponent(a.area)}">${a.name}</a></li>`)}</ul>` : html`<p>No access numbers are published yet.</p>`}`;

export const unknownAreaPage = (): Html => html`<h1>Unknown area</h1><p><a href="/access">Choose your area</a></p>`;

export const areaPage = (a: AccessArea): Html => html`<h1>${a.name}</h1>
<p>Dial one of these numbers:</p>
<ul id="numbers">${a.numbers.map((n) => html`<li><a href="tel:${dialString(n.number)}"><strong>${n.number}</strong></a>${n.label ? html` (${n.label})` : ''}</li>`)}</ul>
<h2>Then</h2>
<ol>
  <li>dial the access number above;</li>
  <li>enter your ID number when asked;</li>
  <li>dial the country code, the area code and the number you are calling (the country code even for a number in ${a.name}${a.countryCode ? html`: ${a.countryCode}` : ''}).</li>
</ol>
${a.notes ? html`<p>${a.notes}</p>` : ''}
<p><a href="/access">Another area</a></p>`;

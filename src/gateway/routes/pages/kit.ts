/**
 * What every buyer page shares: its headers, the form cookie and form-token
 * check, and the one way a page is sent or fails (see ../pages.ts).
 */
import { randomBytes } from 'node:crypto';
import type { HttpRequest } from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { CatalogCache } from '../../../catalog/cache';
import type { AniRegistry } from '../../../ledger/anis';
import type { CheckLinks } from '../../../sales/check';
import type { Inventory } from '../../../sales/inventory';
import type { Purchases } from '../../../sales/purchase';
import type { Recharges } from '../../../sales/recharge';
import type { Topups } from '../../../sales/topup';
import type { Scripts } from '../../../redis/scripts';
import { failureReason } from '../../../redis/failure';
import { statusOf } from '../../../protocol/reasons';
import { BuyForm } from '../../../protocol/sales';
import type { ProxyTrust } from '../../../protocol/client-address';
import { ANONYMOUS, type Load } from '../../dispatch';
import { BodyError, REASON_HEADER, reasonHeader, type Reply } from '../../http';
import { page, type Html } from './html';
import { busyPage, failedPage, formRefusedPage } from './views';

export interface PageDeps {
  catalog: CatalogCache;
  inventory: Inventory;
  /** The scripts: the tariff engine prices the talk time the buy page shows. */
  scripts: Scripts;
  purchases: Purchases;
  topups: Topups;
  recharges: Recharges;
  checks: CheckLinks;
  /** Caller numbers, which the check page lets an owner register. */
  anis: AniRegistry;
  publicUrl: () => string;
  /** Strict-Transport-Security's max-age behind TLS (HSTS_MAX_AGE_SEC); 0: not sent. */
  hstsMaxAgeSec: number;
  /** Whose X-Forwarded-For names the client (per-client limits of payments and PIN tries). */
  trust: ProxyTrust;
  log: Logger;
  /** Keyed hash (server secret) of a browser's form cookie: the token its forms carry. */
  formMac: (cookie: string) => string;
  /** Shared with the API and the WebSocket endpoints: MAX_INFLIGHT_TOTAL bounds the pages too. */
  load: Load;
  /** How long a page waits for another attempt of its own payment to end (two card company calls). */
  settleMs: number;
}

export const FORM_LIMIT = 16 * 1024;
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
export interface FormClient {
  /** The browser's form cookie, or a new one when it sent none. */
  cookie: string;
  fresh: boolean;
  /** Sec-Fetch-Site: where the browser says the request came from ('' from clients that do not say). */
  site: string;
  /** Origin: the site of the page that posted ('' when not sent, `null` when the browser hides it). */
  origin: string;
}

export function formClient(req: HttpRequest): FormClient {
  const sent = req
    .getHeader('cookie')
    .split(';')
    .map((c) => c.trim().split('='))
    .find(([k, v]) => k === FORM_COOKIE && v !== undefined && FORM_COOKIE_VALUE.test(v))?.[1];
  return {
    cookie: sent ?? randomBytes(16).toString('hex'),
    fresh: !sent,
    site: req.getHeader('sec-fetch-site'),
    origin: req.getHeader('origin'),
  };
}

export const NOT_OUR_FORM =
  'This form did not come from this site, or it is too old. Please fill it in again here (this site needs its cookie).';

/**
 * A message shown to the buyer as a sentence: capitalised and ended with a full stop. Refusal messages
 * are written to go after a reason in an API answer (`not enough credit on the card`), which clients
 * may match: they are left as they are, and only the page makes them a sentence.
 */
export function sentence(message: string): string {
  const s = message.charAt(0).toUpperCase() + message.slice(1);
  return /[.!?]$/.test(s) ? s : `${s}.`;
}

/** A card number of the wrong length or with other characters: the buyer mistyped it (400), no card company asked. */
export const CARD_NUMBER_PLEASE = 'Please enter the card number: 12 to 19 digits.';

/**
 * The card field a payment's refusal is about: the card PIN when it was wrong or malformed (the only
 * `bad_value` a payment on these forms can get: the page checks the rest first), else the card (a card
 * the card company refused, for its own reason or for want of credit).
 */
export const cardFieldOf = (reason: string): 'card' | 'cardPin' =>
  reason === 'wrong_card_pin' || reason === 'bad_value' ? 'cardPin' : 'card';

/**
 * What a page answers: 200, or a refusal by its reason from the catalogue (protocol/reasons.ts), with
 * the reason's status unless `status` says otherwise (a card company's own decline reason: 402).
 */
export type PageStatus = 200 | { reason: string; status?: number };

/** Sends the browser on to `location` (a page's own address, as the page headers say). */
export function redirect(reply: Reply, status: 302 | 303, location: string): void {
  reply.send(status, '', 'text/plain; charset=utf-8', { Location: location, ...PAGE_HEADERS });
}

/** The page helpers, bound to one gateway's dependencies. */
export interface PageKit {
  /** Sends a page; `fc` sets the form cookie when the browser had none. A refusal carries its reason (REASON_HEADER). */
  send(
    reply: Reply,
    status: PageStatus,
    title: string,
    body: Html,
    fc?: FormClient,
    extra?: Record<string, string>,
  ): void;
  /** A form came from one of our pages in this browser: its token matches the cookie, and the browser says it came from this site. */
  fromOurPage(fc: FormClient, form: URLSearchParams): boolean;
  /**
   * Runs a page's work, counted in flight like any request (past MAX_INFLIGHT_TOTAL: a 503 page at
   * once, no Redis asked). A form the client spoilt and storage down are pages saying so; anything
   * else it throws fails the promise, which the handler returns for the router to answer (`failed`).
   * `body`: the form on its way, which the work waits for before it is counted. `share`: what names
   * the payment the form makes (from the form, once in): copies of one form share one place
   * (Load.enterShared).
   */
  guard(
    reply: Reply,
    fn: () => Promise<void>,
    body?: Promise<unknown>,
    share?: Promise<string | undefined>,
  ): Promise<void>;
  /** The page a failed handler is answered with (500 `internal`): the router's FailedAnswer for pages. */
  failed: (reply: Reply) => void;
  /** The page of a request refused for want of room (503 `overloaded`, `Retry-After: 1`). */
  busy: (reply: Reply) => void;
}

export function pageKit(d: PageDeps): PageKit {
  const secure = (): boolean => d.publicUrl().startsWith('https:');
  const hsts = `max-age=${d.hstsMaxAgeSec}`;
  const send: PageKit['send'] = (reply, status, title, body, fc, extra = {}) => {
    const headers: Record<string, string> = { ...PAGE_HEADERS, ...extra };
    // Behind TLS (the links buyers keep are https): browsers come back over https only, for
    // HSTS_MAX_AGE_SEC, so a check link typed or followed as http:// never sends its PIN in clear.
    // Over plain HTTP it would mean nothing, and a gateway with no TLS in front must not promise it.
    // 0 sends nothing: a proxy in front that sends its own would otherwise see two.
    if (secure() && d.hstsMaxAgeSec > 0) headers['Strict-Transport-Security'] = hsts;
    // Lax, not Strict: a check link followed from a mail (another site) must bring the cookie, or the
    // page would set a new one and spoil the forms of this site open in the browser's other tabs. No
    // browser sends a Lax cookie with another site's post, so the forms stay ours alone.
    if (fc?.fresh)
      headers['Set-Cookie'] =
        `${FORM_COOKIE}=${fc.cookie}; Path=/; HttpOnly; SameSite=Lax${secure() ? '; Secure' : ''}`;
    if (status !== 200) headers[REASON_HEADER] = reasonHeader(status.reason);
    reply.send(status === 200 ? 200 : (status.status ?? statusOf(status.reason)), page(title, body), HTML, headers);
  };
  // The browser must not say the post came from elsewhere: Sec-Fetch-Site `same-origin` (every browser
  // since 2023), or, from one that does not send it, no Origin of another site. Such a browser hides
  // the origin of our own pages' posts (`null` under their no-referrer policy: iOS 15's Safari, still
  // on phones that take no later one), and a buyer on it must be able to buy; the cookie and token pair
  // is then all the proof, which a sibling subdomain able to set this site's cookie could forge.
  const fromThisSite = (fc: FormClient): boolean =>
    fc.site === 'same-origin' ||
    (fc.site === '' && (fc.origin === '' || fc.origin === 'null' || fc.origin === new URL(d.publicUrl()).origin));
  const fromOurPage: PageKit['fromOurPage'] = (fc, form) =>
    !fc.fresh && fromThisSite(fc) && form.get('form') === d.formMac(fc.cookie);
  const { load } = d;
  const busyReply: PageKit['busy'] = (reply) =>
    send(reply, { reason: 'overloaded' }, 'Sorry', busyPage(), undefined, { 'Retry-After': '1' });
  const guard: PageKit['guard'] = (reply, fn, body, share) =>
    // A form on its way is counted once it is in (Load.afterBody).
    body
      ? load.afterBody(body, () => (share ?? Promise.resolve(undefined)).then((k) => run(reply, fn, k)))
      : run(reply, fn);
  const run = async (reply: Reply, fn: () => Promise<void>, key?: string): Promise<void> => {
    // Anyone may ask for pages, and each waits on Redis: when Redis is slow they must be refused, not queued.
    // A form sent again while its first copy is at work waits for that one's answer (up to settleMs): in its place.
    const busy = (): void => busyReply(reply);
    if (key === undefined ? load.enterAs(ANONYMOUS) : !load.enterShared(key)) return busy();
    try {
      await fn();
    } catch (err) {
      // A form over the limit is the client's doing: a 413 page, nothing logged.
      if (err instanceof BodyError) return send(reply, { reason: err.reason }, 'Sorry', formRefusedPage(err.reason));
      const reason = failureReason(err);
      // Its client's lookups queued longer than Redis answers them in time (a burst): busy, not broken.
      if (reason === 'overloaded') return busy();
      if (reason !== 'unavailable') throw err;
      d.log.warn({ err }, 'page failed: storage unavailable');
      send(reply, { reason: 'unavailable' }, 'Sorry', failedPage());
    } finally {
      if (key === undefined) load.leaveAs(ANONYMOUS);
      else load.leaveShared(key);
    }
  };
  const failed: PageKit['failed'] = (reply) => send(reply, { reason: 'internal' }, 'Sorry', failedPage());
  return { send, fromOurPage, guard, failed, busy: busyReply };
}

/** The payment a card form makes (its nonce), which copies of the form share: Load.enterShared. */
export function paymentOf(form: Promise<URLSearchParams>, channel: string): Promise<string | undefined> {
  return form.then(
    (f) => {
      const nonce = f.get('nonce') ?? '';
      return BuyForm.nonce.test(nonce) ? `${channel}/${nonce}` : undefined;
    },
    () => undefined,
  );
}

/** A wait in the words a buyer reads: seconds up to two minutes, then minutes. */
export const waitFor = (sec: number): string =>
  sec === 1 ? '1 second' : sec < 120 ? `${sec} seconds` : `${Math.ceil(sec / 60)} minutes`;

const DECIMAL = /\p{Nd}/u;

/**
 * The value of each non-ASCII decimal digit met so far, as found by walking back to the start of its
 * run: up to 50 lookups (the mathematical digits), once per digit, not once per character of every
 * form anyone sends. Unicode has fewer than a thousand such digits, so the map stays small.
 */
const digitValues = new Map<number, string>();

function digitValue(cp: number): string {
  let v = digitValues.get(cp);
  if (v === undefined) {
    let n = 0;
    while (DECIMAL.test(String.fromCodePoint(cp - n - 1))) n++;
    // Runs may follow one another (the mathematical digits): the value is the place in its own.
    v = String(n % 10);
    digitValues.set(cp, v);
  }
  return v;
}

/**
 * A form field the buyer types digits into (PINs, card, voucher and caller
 * numbers), with every decimal digit as ASCII: a phone's keyboard in Arabic or
 * Persian, or a Japanese IME in full width, types ٢٤٦٨ or ２４６８ for 2468.
 * Unicode encodes each script's digits 0 to 9 in one contiguous run (a policy
 * it keeps), so a digit's value is its place in its run. White space is
 * dropped: a PIN pasted with a space around it is still the PIN, and must not
 * cost one of the link's tries.
 */
export function digitsField(f: URLSearchParams, name: string): string {
  return [...(f.get(name) ?? '').replace(/\s+/g, '')]
    .map((c) => (c <= '\x7f' || !DECIMAL.test(c) ? c : digitValue(c.codePointAt(0)!)))
    .join('');
}

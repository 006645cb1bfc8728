/**
 * The check link's page: ID + PIN shows the ID again (GET and POST
 * /check/:bucket/:token), lets the owner of a talk ID register caller numbers
 * (each change with the PIN again), and recharge it: a recharge voucher
 * (POST …/voucher) or an amount paid by card (POST …/recharge). The recharge
 * forms carry a grant the right PIN earned: a keyed hash of the link, the
 * browser's form cookie and an expiry, so they need neither the PIN again nor
 * any state on the server, and work only in that browser, for a while.
 */
import { randomBytes } from 'node:crypto';
import { aniTermsOf } from '../../../ledger/anis';
import { idHashOfKey } from '../../../redis/keys';
import { messageOf, statusOf } from '../../../protocol/reasons';
import { BuyForm } from '../../../protocol/sales';
import { CARD_PIN } from '../../../sales/purchase';
import type { CheckResult } from '../../../sales/check';
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import { clientAddress, pathParam, readForm, replyFor, type Reply } from '../../http';
import type { Router } from '../../router';
import {
  CARD_NUMBER_PLEASE,
  cardFieldOf,
  digitsField,
  FORM_LIMIT,
  formClient,
  NOT_OUR_FORM,
  paymentOf,
  redirect,
  sentence,
  type FormClient,
  type PageDeps,
  type PageKit,
  type PageStatus,
  waitFor,
} from './kit';
import {
  badLinkPage,
  checkedPage,
  checkForm,
  notRechargedPage,
  rechargedPage,
  rechargeForms,
  type AniSection,
  type RechargeField,
  type RechargeOffer,
  voucherRepeatPage,
} from './views';

/** How long the PIN given on the check page stands for the recharge forms it shows. */
const GRANT_MS = 15 * 60_000;

/**
 * What every request to a check link starts from, read while uWS's request is valid (before any
 * await): the link, the page's own address (`action`), the browser's form cookie, and the answer.
 */
function linkRequest(res: HttpResponse, req: HttpRequest) {
  const bucket = pathParam(req, 0);
  const token = pathParam(req, 1);
  const action = `/check/${encodeURIComponent(bucket)}/${encodeURIComponent(token)}`;
  return { reply: replyFor(res), bucket, token, action, fc: formClient(req) };
}

/** A form posted to a check link: linkRequest's, the form on its way, and who sent it. */
function linkPost(res: HttpResponse, req: HttpRequest, trust: PageDeps['trust']) {
  const link = linkRequest(res, req);
  return { ...link, client: clientAddress(res, req, trust), form: readForm(res, link.reply, FORM_LIMIT) };
}
/**
 * Dashes in a caller number typed on the page: separators only, as spaces are (which the ledger drops),
 * so dropping them changes no number: a `+` or `00` counts only at the start, and a dash where a space
 * might be gives the digits a space would. Brackets are not dropped: `+44 (0)20 …` would become a wrong
 * number (+44 020 …), not the owner's.
 */
const ANI_DASHES = /[-\u2010-\u2015\u2212]/g;

/**
 * What the owner is told when a change to the caller numbers is refused: for a number it cannot take,
 * what it takes (never the number typed).
 */
function aniRefusal(reason: string, max: number, bracketed: boolean): string {
  switch (reason) {
    case 'bad_ani':
      return bracketed
        ? 'Please type the caller number without brackets: +44 (20) 7946 0000 is +44 20 7946 0000, and a 0 in brackets after the country code is left out: +44 (0)20 7946 0000 is +44 20 7946 0000.'
        : 'That is not a caller number in international format. Type + and the country code first, then the number: 7 to 15 digits in all, spaces and dashes allowed, no brackets. For example +44 20 7946 0000.';
    case 'ani_taken':
      return 'That number is registered to another ID. Remove it there first.';
    case 'too_many_anis':
      return `This ID can have at most ${max} caller number${max === 1 ? '' : 's'}. Remove one first.`;
    case 'too_many_changes':
      return 'Too many changes to the caller numbers of this ID today: try again tomorrow.';
    case 'unknown_ani':
      return 'That number is not registered to this ID.';
    default:
      return `The change was refused: ${messageOf(reason)}.`;
  }
}

/**
 * The caller numbers of a talk ID whose PIN was just given, after the change
 * the form asked for (`op` ani_add or ani_remove), if any; undefined when its
 * product allows none.
 */
async function aniSection(
  d: PageDeps,
  r: Extract<CheckResult, { ok: true }>,
  form: URLSearchParams,
): Promise<{ section?: AniSection; status: PageStatus }> {
  const max = aniTermsOf(d.catalog.product(r.product))?.maxAnis ?? 0;
  if (r.kind !== 'talk' || max === 0) return { status: 200 };
  const idKey = d.anis.idKeyOf(r.id);
  const op = form.get('op');
  let note: AniSection['note'];
  let status: PageStatus = 200;
  if (op === 'ani_add' || op === 'ani_remove') {
    const ani = digitsField(form, 'ani').replace(ANI_DASHES, '');
    const c =
      op === 'ani_add'
        ? await d.anis.add(idKey, ani, { role: 'owner' })
        : await d.anis.remove(idKey, ani, { role: 'owner' });
    if (c.ok) note = { ok: true, text: op === 'ani_add' ? 'Caller number added.' : 'Caller number removed.' };
    else {
      // The number typed is what to fix when it is malformed or another ID's (the add form is still shown).
      const focus = op === 'ani_add' && (c.reason === 'bad_ani' || c.reason === 'ani_taken');
      note = { ok: false, text: aniRefusal(c.reason, max, /[()]/.test(ani)), focus };
      status = { reason: c.reason };
    }
  }
  return { section: { numbers: await d.anis.list(idKey), max, note }, status };
}

/**
 * What a wrong PIN is told: how many more wrong ones lock the link (or the address) and for how long,
 * so that the owner can stop before the last try; nothing of the ID. `client`: the address locks first.
 */
function wrongPinMessage(triesLeft: number, client: boolean, lockSec: number): string {
  const more = triesLeft === 1 ? 'One more wrong PIN' : `${triesLeft} more wrong PINs`;
  const then = client
    ? triesLeft === 0
      ? 'Your address may try no more PINs for now: please try again later.'
      : `${more} from your address will lock it out of check links for a while.`
    : `${more} will lock this link for at least ${waitFor(lockSec)}.`;
  return `That PIN does not match this link. ${then}`;
}

/** What a locked check link (or a locked-out client) is told, and when to try again. */
function lockedMessage(until: number, byClient: boolean): { retry: string; message: string } {
  const retry = String(Math.max(1, Math.ceil((until - Date.now()) / 1000)));
  // Shown to the minute, rounded up: the time said is never before the lock ends.
  const when = new Date(Math.ceil(until / 60_000) * 60_000).toISOString().slice(0, 16).replace('T', ' ');
  const message = byClient
    ? `Too many wrong PINs from your address: try again after ${when} UTC.`
    : `Too many wrong PINs: this link is locked until ${when} UTC. Try again then.`;
  return { retry, message };
}

const grantMac = (d: PageDeps, link: string, cookie: string, until: number): string =>
  d.formMac(`grant|${link}|${cookie}|${until}`);

function makeGrant(d: PageDeps, link: string, cookie: string): string {
  const until = Date.now() + GRANT_MS;
  return `${until}.${grantMac(d, link, cookie, until)}`;
}

function grantValid(d: PageDeps, link: string, cookie: string, grant: string): boolean {
  const m = /^(\d{13})\.([0-9a-f]{32})$/.exec(grant);
  if (!m) return false;
  const until = Number(m[1]);
  return until > Date.now() && m[2] === grantMac(d, link, cookie, until);
}

/** What the page says when a voucher is refused. */
function voucherRefusal(reason: string): string {
  if (reason === 'unknown_id' || reason === 'bad_checksum' || reason === 'bad_format')
    return 'That is not a valid voucher number; please check it and try again.';
  if (reason === 'already_redeemed') return 'That voucher has already been used.';
  if (reason === 'throttled') return 'Too many voucher numbers that do not exist: please wait before trying again.';
  return sentence(messageOf(reason));
}

/**
 * A recharge refused; `keep`: the card form's nonce and amount, when the outcome is not known yet;
 * `focus`: the field to fix.
 */
interface Refused {
  reason: string;
  message: string;
  focus: RechargeField;
  keep?: { nonce: string; amount: number };
  retryAfter?: number;
  httpStatus?: number;
}

export function checkRoutes(app: Router, d: PageDeps, kit: PageKit): void {
  // A link written as no link is (cut short, mistyped): said so, no PIN compared, no try counted.
  const badLink = (reply: Reply): void => kit.send(reply, { reason: 'bad_link' }, 'Incomplete link', badLinkPage());
  app.get('/check/:bucket/:token', (res, req) => {
    const { reply, bucket, token, action, fc } = linkRequest(res, req);
    if (!d.checks.wellFormed(bucket, token)) return badLink(reply);
    kit.send(reply, 200, 'Find your number', checkForm(action, d.formMac(fc.cookie)), fc);
  });

  // A recharge page's address opened again (a bookmark, the address sent to another device, a reload the
  // browser would not post again) has nothing to recharge: it leads to the link's PIN form.
  for (const suffix of ['voucher', 'recharge'])
    app.get(`/check/:bucket/:token/${suffix}`, (res, req) => {
      const { reply, bucket, token, action } = linkRequest(res, req);
      if (!d.checks.wellFormed(bucket, token)) return badLink(reply);
      redirect(reply, 303, action);
    });

  // Any other address under /check/ is a link cut short at a slash or with something added to it: a buyer
  // who opened it is told so, as for any other broken link, not given the API's JSON 404.
  for (const pattern of ['/check', '/check/*']) app.get(pattern, (res) => badLink(replyFor(res)));

  app.post('/check/:bucket/:token', (res, req) => {
    const { reply, bucket, token, action, fc, form, client } = linkPost(res, req, d.trust);
    return kit.guard(
      reply,
      async () => {
        const f = await form;
        const again = (reason: string, msg: string): void =>
          kit.send(reply, { reason }, 'Find your number', checkForm(action, d.formMac(fc.cookie), msg), fc);
        if (!kit.fromOurPage(fc, f)) return again('foreign_form', NOT_OUR_FORM);
        const r = await d.checks.check(bucket, token, digitsField(f, 'pin'), client);
        if (!r.ok) {
          if (r.reason === 'bad_link') return badLink(reply);
          if (r.reason === 'overloaded') return kit.busy(reply);
          if (r.reason !== 'locked')
            return again(
              r.reason,
              r.triesLeft === undefined
                ? 'That PIN does not match this link.'
                : wrongPinMessage(r.triesLeft, Boolean(r.client), d.checks.firstLockSec),
            );
          const { retry, message } = lockedMessage(r.until ?? Date.now(), Boolean(r.client));
          const body = checkForm(action, d.formMac(fc.cookie), message, false);
          return kit.send(reply, { reason: r.reason }, 'Find your number', body, undefined, { 'Retry-After': retry });
        }
        const { section, status } = await aniSection(d, r, f);
        const product = d.catalog.product(r.product);
        const offer: RechargeOffer | undefined =
          r.kind === 'talk' && product?.kind === 'talk' && product.topup !== false
            ? {
                action,
                formToken: d.formMac(fc.cookie),
                grant: makeGrant(d, action, fc.cookie),
                nonce: randomBytes(16).toString('hex'),
                amounts: d.recharges.offers(product),
                currency: r.currency,
              }
            : undefined;
        kit.send(reply, status, 'Your number', checkedPage(r, action, d.formMac(fc.cookie), section, offer), fc);
      },
      form,
    );
  });

  /**
   * A recharge form's POST: the form must come from our page in this browser and carry a live grant for
   * this link; `run` does the recharge.
   */
  const rechargeRoute = (
    suffix: 'voucher' | 'recharge',
    run: (
      loc: { key: string; bucket: number },
      f: URLSearchParams,
      token: string,
      client: string,
    ) => Promise<
      | { ok: true; amount: number; balance: number; currency: string; expires?: number; duplicate?: boolean }
      | ({ ok: false } & Refused)
    >,
  ): void => {
    app.post(`/check/:bucket/:token/${suffix}`, (res, req) => {
      const { reply, bucket, token, action, fc, form, client } = linkPost(res, req, d.trust);
      return kit.guard(
        reply,
        async () => {
          const f = await form;
          const pinAgain = (reason: string, msg: string): void =>
            kit.send(reply, { reason }, 'Find your number', checkForm(action, d.formMac(fc.cookie), msg), fc);
          if (!kit.fromOurPage(fc, f)) return pinAgain('foreign_form', NOT_OUR_FORM);
          const loc = grantValid(d, action, fc.cookie, f.get('grant') ?? '')
            ? await d.checks.linked(bucket, token)
            : undefined;
          if (!loc) return pinAgain('pin_required', 'Please enter your PIN again to recharge.');
          const r = await run(loc, f, token, client);
          // A voucher already redeemed into this ID answers its first redemption: nothing was added now,
          // and that answer's balance is as it stood then. (A card recharge's repeat is its own form again.)
          if (r.ok && suffix === 'voucher' && r.duplicate)
            return kit.send(reply, 200, 'Already redeemed', voucherRepeatPage(r, action), fc);
          if (r.ok) return kit.send(reply, 200, 'Recharged', rechargedPage(r, action), fc);
          await refused(reply, fc, action, f.get('grant') ?? '', loc, r);
        },
        form,
        // A card recharge sent twice is one payment (Recharges' key: the form's nonce).
        suffix === 'recharge' ? paymentOf(form, `web/${token}`) : undefined,
      );
    });
  };

  async function refused(
    reply: Reply,
    fc: FormClient,
    action: string,
    grant: string,
    loc: { key: string; bucket: number },
    r: Refused,
  ): Promise<void> {
    const o = await d.recharges.offerOf(loc);
    const forms = o.allowed
      ? rechargeForms({
          action,
          formToken: d.formMac(fc.cookie),
          grant,
          nonce: r.keep?.nonce ?? randomBytes(16).toString('hex'),
          amounts: o.amounts,
          currency: o.currency,
          chosen: r.keep?.amount,
          focus: r.focus,
        })
      : undefined;
    const extra: Record<string, string> = r.retryAfter ? { 'Retry-After': String(r.retryAfter) } : {};
    kit.send(
      reply,
      { reason: r.reason, status: r.httpStatus ?? statusOf(r.reason, 402) },
      'Not recharged',
      notRechargedPage(r.message, forms, action),
      fc,
      extra,
    );
  }

  rechargeRoute('voucher', async (loc, f) => {
    const voucher = digitsField(f, 'voucher').replace(/-/g, '');
    // Counted by the link's ID, not by the link: its counter is a key in Redis, and the link's tag is a
    // secret Redis keeps only a keyed hash of.
    // Anonymous: the page must not tell which numbers are other people's IDs, or vouchers still in stock.
    const r = await d.topups.voucherInto(loc, voucher, 'web', `chk:${idHashOfKey(loc.key)}`, true);
    if (r.ok) return r;
    return { ...r, message: voucherRefusal(r.reason), focus: 'voucher' };
  });

  rechargeRoute('recharge', async (loc, f, _token, client) => {
    const nonce = f.get('nonce') ?? '';
    const card = digitsField(f, 'card').replace(/-/g, '');
    const amount = Number(f.get('amount'));
    const cardPin = digitsField(f, 'cardPin');
    // The form expired: the card is the first field to fill in again.
    if (!BuyForm.nonce.test(nonce))
      return { ok: false, reason: 'bad_value', message: 'The form expired; please try again.', focus: 'card' };
    if (!BuyForm.card.test(card)) return { ok: false, reason: 'bad_value', message: CARD_NUMBER_PLEASE, focus: 'card' };
    const r = await d.recharges.recharge(loc, `web/${nonce}`, { amount, card, cardPin }, client, d.settleMs);
    if (r.ok) return r;
    // The amount, when it is the one at fault: over what the ID may hold, or (a well-formed card PIN) not offered.
    const focus: RechargeField =
      r.reason === 'topup_limit' || (r.reason === 'bad_value' && CARD_PIN.test(cardPin))
        ? 'amount'
        : cardFieldOf(r.reason);
    // Outcome unknown: the form keeps this recharge's nonce, so sending it again finishes it and never charges twice.
    const pending = r.reason === 'payment_pending' || r.reason === 'in_progress';
    return pending
      ? {
          ...r,
          focus,
          keep: { nonce, amount },
          message:
            'The card company has not answered yet. Submit the same details again in a moment: you will not be charged twice.',
        }
      : r.reason === 'too_many_purchases'
        ? {
            ...r,
            focus,
            message: `Too many payments were started just now. Please wait ${waitFor(r.retryAfter ?? 1)}, then try again.`,
          }
        : { ...r, focus, message: sentence(r.message) };
  });
}

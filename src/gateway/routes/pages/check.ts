/**
 * The check link's page: ID + PIN shows the ID again (GET and POST /check/:bucket/:token),
 * and lets the owner of a talk ID register caller numbers (each change with the PIN again).
 */
import type { TemplatedApp } from 'uWebSockets.js';
import { aniTermsOf } from '../../../ledger/anis';
import { messageOf, statusOf } from '../../../protocol/reasons';
import type { CheckResult } from '../../../sales/check';
import { clientAddress, readForm, replyFor } from '../../http';
import { FORM_LIMIT, formClient, NOT_OUR_FORM, type PageDeps, type PageKit } from './kit';
import { checkedPage, checkForm, type AniSection } from './views';

/** What the owner is told when a change to the caller numbers is refused. */
function aniRefusal(reason: string, max: number): string {
  switch (reason) {
    case 'bad_ani':
      return 'That is not a caller number in international format: the country code first (for example +44 20 7946 0000), 7 to 15 digits.';
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
): Promise<{ section?: AniSection; status: number }> {
  const max = aniTermsOf(d.catalog.product(r.product))?.maxAnis ?? 0;
  if (r.kind !== 'talk' || max === 0) return { status: 200 };
  const idKey = d.anis.idKeyOf(r.id);
  const op = form.get('op');
  let note: AniSection['note'];
  let status = 200;
  if (op === 'ani_add' || op === 'ani_remove') {
    const ani = form.get('ani') ?? '';
    const c =
      op === 'ani_add'
        ? await d.anis.add(idKey, ani, { role: 'owner' })
        : await d.anis.remove(idKey, ani, { role: 'owner' });
    if (c.ok) note = { ok: true, text: op === 'ani_add' ? 'Caller number added.' : 'Caller number removed.' };
    else {
      note = { ok: false, text: aniRefusal(c.reason, max) };
      status = statusOf(c.reason);
    }
  }
  return { section: { numbers: await d.anis.list(idKey), max, note }, status };
}

/** What a locked check link (or a locked-out client) is told, and when to try again. */
function lockedMessage(until: number, byClient: boolean): { retry: string; message: string } {
  const retry = String(Math.max(1, Math.ceil((until - Date.now()) / 1000)));
  const when = new Date(until).toISOString().slice(0, 16).replace('T', ' ');
  const message = byClient
    ? `Too many wrong PINs from your address: try again after ${when} UTC.`
    : `Too many wrong PINs: this link is locked until ${when} UTC. Try again then.`;
  return { retry, message };
}

export function checkRoutes(app: TemplatedApp, d: PageDeps, kit: PageKit): void {
  app.get('/check/:bucket/:token', (res, req) => {
    const reply = replyFor(res);
    const action = `/check/${encodeURIComponent(req.getParameter(0) ?? '')}/${encodeURIComponent(req.getParameter(1) ?? '')}`;
    const fc = formClient(req);
    kit.send(reply, 200, 'Find your number', checkForm(action, d.formMac(fc.cookie)), fc);
  });

  app.post('/check/:bucket/:token', (res, req) => {
    const reply = replyFor(res);
    const bucket = req.getParameter(0) ?? '';
    const token = req.getParameter(1) ?? '';
    const action = `/check/${encodeURIComponent(bucket)}/${encodeURIComponent(token)}`;
    const fc = formClient(req);
    const form = readForm(res, FORM_LIMIT);
    const client = clientAddress(res, req, d.trustProxy);
    kit.guard(reply, async () => {
      const f = await form;
      const again = (status: number, msg: string): void =>
        kit.send(reply, status, 'Find your number', checkForm(action, d.formMac(fc.cookie), msg), fc);
      if (!kit.fromOurPage(fc, f)) return again(403, NOT_OUR_FORM);
      const r = await d.checks.check(bucket, token, f.get('pin') ?? '', client);
      if (!r.ok) {
        if (r.reason !== 'locked') return again(403, 'That PIN does not match this link.');
        const { retry, message } = lockedMessage(r.until ?? Date.now(), Boolean(r.client));
        const body = checkForm(action, d.formMac(fc.cookie), message);
        return kit.send(reply, 429, 'Find your number', body, undefined, { 'Retry-After': retry });
      }
      const { section, status } = await aniSection(d, r, f);
      kit.send(reply, status, 'Your number', checkedPage(r, action, d.formMac(fc.cookie), section), fc);
    });
  });
}

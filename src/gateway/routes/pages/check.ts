/** The check link's page: ID + PIN shows the ID again (GET and POST /check/:bucket/:token). */
import type { TemplatedApp } from 'uWebSockets.js';
import { clientAddress, readForm, replyFor } from '../../http';
import { FORM_LIMIT, formClient, NOT_OUR_FORM, type PageDeps, type PageKit } from './kit';
import { checkedPage, checkForm } from './views';

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
      kit.send(reply, 200, 'Your number', checkedPage(r), fc);
    });
  });
}

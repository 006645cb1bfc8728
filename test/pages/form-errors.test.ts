/**
 * What the buyer's forms say and do after an error, over plain HTTP: the
 * error is an alert, and the one field to fix has the cursor (autofocus: no
 * script needed).
 */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Product, RechargeProduct } from '../../src/catalog/schema';
import type { Gateway } from '../../src/gateway/server';
import { gateway, mint, seedCatalog, soldIds, startHarness, token, type Harness } from '../support/harness';
import { REASONS, type Reason } from '../../src/protocol/reasons';
import { formSession, http, postPageForm, rawExchange, type Res } from '../support/http';
import { idKeyOf } from '../support/redis';
import {
  addMember,
  buy,
  buyForm,
  fieldOf,
  newKey,
  ownedId,
  product,
  type Buyer,
  type OwnedId,
} from '../sales/fixtures';

const TALK = product('talk-f', {
  face: 1_000_000,
  price: 1_000_000,
  topupMaxBalance: 2_000_000,
  topupAmounts: [1_000_000, 5_000_000],
});
const VOUCHER: RechargeProduct = {
  name: 'voucher-f',
  kind: 'recharge',
  currency: 'EUR',
  price: 5_000_000,
  face: 5_000_000,
  into: [],
};
const PIN = '8642';

let h: Harness;
let gw: Gateway;
/** The same, but an address is locked out after 3 wrong PINs (before a link's 5). */
let gwC: Gateway;
let salesTok: string;
let rich: Buyer;
let poor: Buyer;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK, VOUCHER] as Product[]);
  await mint(h, TALK, 10);
  gw = await gateway(h, {
    pin: { maxTries: 5, lockSec: 60, lockMaxSec: 60, maxTriesPerClient: 1000, maxTriesPerNetwork: 100_000 },
  });
  gwC = await gateway(h, {
    pin: { maxTries: 5, lockSec: 60, lockMaxSec: 60, maxTriesPerClient: 3, maxTriesPerNetwork: 100_000 },
  });
  salesTok = await token(h, 'sales', 'shop-f');
  rich = await addMember(h, 100_000_000);
  poor = await addMember(h, 0);
});
afterAll(async () => {
  await gw?.close();
  await gwC?.close();
  await h?.stop();
});

/** The ids of the fields a page puts the cursor in. */
const autofocused = (text: string): string[] =>
  [...text.matchAll(/<(?:input|select)\b[^>]*>/g)]
    .map((m) => m[0])
    .filter((tag) => /\sautofocus\b/.test(tag))
    .map((tag) => /\sid="([^"]*)"/.exec(tag)?.[1] ?? '(no id)');

/** The page's error, said as an alert: what a screen reader reads out on load. */
const alertOf = (text: string): string | undefined => /<p class="error" role="alert"[^>]*>([^<]*)<\/p>/.exec(text)?.[1];

/** No wrong PINs counted against the test's address (127.0.0.1), whatever other tests sent. */
async function clearClientCounts(): Promise<void> {
  const found = [...(await h.r.keys('ts:{b*}:pinip:*')), ...(await h.r.keys('ts:{b*}:pinnet:*'))];
  if (found.length) await h.r.del(...found);
}

/** Buys an ID and opens its check link with the PIN, as its owner's browser would. */
const owned = (): Promise<OwnedId> => ownedId(gw, salesTok, TALK.name, rich, PIN);

describe('after an error the field to fix has the cursor', () => {
  it('the buy page: the field its error is about, the product kept', async () => {
    const session = await formSession(gw, '/buy');
    expect(autofocused(await fetch(`http://127.0.0.1:${gw.port}/buy`).then((r) => r.text()))).toEqual([]);
    const cases: [Record<string, string>, number, string][] = [
      [{ ...buyForm(TALK.name, rich), pin: '12' }, 400, 'pin'],
      [{ ...buyForm(TALK.name, rich), card: '1234' }, 400, 'card'],
      [{ ...buyForm(TALK.name, rich), product: 'nothing-such' }, 404, 'product'],
      [buyForm(TALK.name, poor), 402, 'card'],
      [buyForm(TALK.name, { ...rich, cardPin: '9999' }), 402, 'cardPin'],
      [buyForm(TALK.name, { ...rich, cardPin: '12' }), 400, 'cardPin'],
    ];
    for (const [form, status, field] of cases) {
      const r = await postPageForm(gw, '/buy', form, session);
      expect(r.status, field).toBe(status);
      expect(alertOf(r.text), field).toBeTruthy();
      expect(autofocused(r.text), `${r.status} ${alertOf(r.text)}`).toEqual([field]);
      if (form.product === TALK.name) expect(r.text).toContain(`<option value="${TALK.name}" selected`);
    }
  });

  it('the check link: the PIN, after a wrong one', async () => {
    const o = await owned();
    expect(autofocused(o.page.text)).toEqual([]);
    const r = await postPageForm(gw, o.path, { pin: '0000' }, o.session);
    expect(r.status).toBe(403);
    expect(alertOf(r.text)).toContain('That PIN does not match this link.');
    expect(autofocused(r.text)).toEqual(['pin']);
  });

  it('the check page: the voucher refused, the card declined, the caller number refused', async () => {
    const o = await owned();
    const grant = fieldOf(o.page.text, 'grant');
    const voucher = await postPageForm(gw, `${o.path}/voucher`, { grant, voucher: '1234567890123' }, o.session);
    expect(voucher.status).toBeGreaterThanOrEqual(400);
    expect(alertOf(voucher.text)).toBeTruthy();
    expect(autofocused(voucher.text)).toEqual(['voucher']);

    // Over what the ID may hold (2.00 EUR): the amount; no credit on the card: the card.
    const [v] = await soldIds(h, VOUCHER);
    const over = await postPageForm(gw, `${o.path}/voucher`, { grant, voucher: v! }, o.session);
    expect(over.status).toBe(422);
    expect(autofocused(over.text)).toEqual(['voucher']);
    const card = {
      grant,
      amount: '1000000',
      nonce: randomBytes(16).toString('hex'),
      card: poor.card,
      cardPin: poor.cardPin,
    };
    const declined = await postPageForm(gw, `${o.path}/recharge`, card, o.session);
    expect(declined.status).toBe(402);
    expect(alertOf(declined.text)).toBeTruthy();
    expect(autofocused(declined.text)).toEqual(['card']);
    const tooMuch = await postPageForm(
      gw,
      `${o.path}/recharge`,
      { ...card, amount: '5000000', nonce: randomBytes(16).toString('hex'), card: rich.card, cardPin: rich.cardPin },
      o.session,
    );
    expect(tooMuch.status).toBeGreaterThanOrEqual(400);
    expect(autofocused(tooMuch.text)).toEqual(['amount']);

    const ani = await postPageForm(gw, o.path, { pin: PIN, op: 'ani_add', ani: '020 7946 0000' }, o.session);
    expect(ani.status).toBe(400);
    expect(/<p class="error" role="alert" id="ani-note">/.test(ani.text)).toBe(true);
    expect(autofocused(ani.text)).toEqual(['ani']);
  });
});

describe('a wrong PIN on the check link', () => {
  const digits = (s: string): string => s.replace(/\D/g, '');

  it('says how many more wrong PINs lock the link, before the last one does, and nothing of the ID', async () => {
    const o = await owned();
    const wrong = async (): Promise<Res> => {
      const r = await postPageForm(gw, o.path, { pin: '0000' }, o.session);
      expect(digits(r.text)).not.toContain(o.id);
      return r;
    };
    for (const left of [4, 3, 2]) {
      const r = await wrong();
      expect(r.status).toBe(403);
      expect(alertOf(r.text)).toBe(
        `That PIN does not match this link. ${left} more wrong PINs will lock this link for at least 60 seconds.`,
      );
    }
    expect(alertOf((await wrong()).text)).toBe(
      'That PIN does not match this link. One more wrong PIN will lock this link for at least 60 seconds.',
    );
    // The right PIN starts the count again.
    expect((await postPageForm(gw, o.path, { pin: PIN }, o.session)).status).toBe(200);
    expect(alertOf((await wrong()).text)).toContain('4 more wrong PINs will lock this link');
  });

  it('says so when the address locks first; an unknown link counts only the address', async () => {
    await clearClientCounts();
    const o = await owned();
    const s = await formSession(gwC, o.path);
    const unknown = o.path.replace(/[0-9a-f]{32}$/, '0'.repeat(32));
    const r1 = await postPageForm(gwC, o.path, { pin: '0000' }, s);
    expect(alertOf(r1.text)).toBe(
      'That PIN does not match this link. 2 more wrong PINs from your address will lock it out of check links for a while.',
    );
    const r2 = await postPageForm(gwC, unknown, { pin: PIN }, s);
    expect(r2.status).toBe(403);
    expect(alertOf(r2.text)).toBe(
      'That PIN does not match this link. One more wrong PIN from your address will lock it out of check links for a while.',
    );
    const r3 = await postPageForm(gwC, o.path, { pin: '0000' }, s);
    expect(alertOf(r3.text)).toBe(
      'That PIN does not match this link. Your address may try no more PINs for now: please try again later.',
    );
    const r4 = await postPageForm(gwC, o.path, { pin: PIN }, s);
    expect(r4.status).toBe(429);
    expect(alertOf(r4.text)).toContain('Too many wrong PINs from your address');
    await clearClientCounts();
  });
});

describe('a caller number typed on the check page', () => {
  const noteOf = (text: string): string | undefined =>
    /<p class="[^"]*" role="alert" id="ani-note">([^<]*)<\/p>/.exec(text)?.[1];
  const listed = (text: string): string[] => [...text.matchAll(/<span class="ani">\+(\d+)<\/span>/g)].map((m) => m[1]!);

  it('may have dashes, which change no number', async () => {
    const o = await owned();
    const add = (ani: string): Promise<Res> => postPageForm(gw, o.path, { pin: PIN, op: 'ani_add', ani }, o.session);
    const r = await add('+44-20-7946-0001');
    expect(r.status).toBe(200);
    expect(noteOf(r.text)).toBe('Caller number added.');
    expect(listed(r.text)).toEqual(['442079460001']);
    // A phone's own hyphen (U+2011) is one too.
    const r2 = await add('+1\u2011212\u2011555\u20110100');
    expect(r2.status).toBe(200);
    expect(listed(r2.text).sort()).toEqual(['12125550100', '442079460001']);
  });

  it('is refused with brackets, saying to type it without them, and never made another number', async () => {
    const o = await owned();
    const add = (ani: string): Promise<Res> => postPageForm(gw, o.path, { pin: PIN, op: 'ani_add', ani }, o.session);
    for (const ani of ['+44 (20) 7946-0000', '+44 (0)20 7946 0000']) {
      const r = await add(ani);
      expect(r.status, ani).toBe(400);
      expect(noteOf(r.text), ani).toContain('Please type the caller number without brackets');
      expect(noteOf(r.text), ani).toContain('+44 (0)20 7946 0000 is +44 20 7946 0000');
      expect(listed(r.text)).toEqual([]);
    }
    // A national number: what is taken, not a misleading "not in international format" alone.
    const national = await add('020 7946 0000');
    expect(national.status).toBe(400);
    expect(noteOf(national.text)).toBe(
      'That is not a caller number in international format. Type + and the country code first, then the number: 7 to 15 digits in all, spaces and dashes allowed, no brackets. For example +44 20 7946 0000.',
    );
  });
});

describe('what the check page says in words a buyer reads', () => {
  const stateOf = (text: string): string | undefined => /<td id="state">([^<]*)<\/td>/.exec(text)?.[1];

  it('the state: active, used up, expired, blocked, refunded; never the ledger’s word', async () => {
    const o = await owned();
    expect(stateOf(o.page.text)).toBe('Active');
    const key = idKeyOf(h, o.id);
    const shown = async (): Promise<string | undefined> =>
      stateOf((await postPageForm(gw, o.path, { pin: PIN }, o.session)).text);
    await h.r.hset(key, 'st', 'exhausted');
    expect(await shown()).toBe('Used up');
    // Expiry reaches `st` only when a use finds it past: a past expiry is expired either way.
    const exp = await h.r.hget(key, 'exp');
    await h.r.hset(key, 'exp', String(Date.now() - 1000));
    expect(await shown()).toBe('Expired');
    await h.r.hset(key, 'st', 'expired');
    expect(await shown()).toBe('Expired');
    await h.r.hset(key, 'exp', exp ?? '0', 'st', 'blocked', 'prev', 'sold');
    expect(await shown()).toBe('Blocked');
    await h.r.hset(key, 'refrec', '1-0');
    expect(await shown()).toBe('Refunded');
  });

  it('refusals as sentences, while the API keeps its messages as they were', async () => {
    const session = await formSession(gw, '/buy');
    const declined = await postPageForm(gw, '/buy', buyForm(TALK.name, poor), session);
    expect(declined.status).toBe(402);
    expect(alertOf(declined.text)).toBe('Not enough credit on the card.');
    const api = await buy(gw, salesTok, newKey(), TALK.name, poor, PIN);
    expect(api.json.error).toEqual({ reason: 'insufficient_funds', message: 'not enough credit on the card' });

    const o = await owned();
    const grant = fieldOf(o.page.text, 'grant');
    const [v] = await soldIds(h, VOUCHER);
    const over = await postPageForm(gw, `${o.path}/voucher`, { grant, voucher: v! }, o.session);
    expect(over.status).toBe(422);
    expect(alertOf(over.text)).toBe('The recharge would take the balance above what this product may hold.');
    const card = {
      grant,
      amount: '5000000',
      nonce: randomBytes(16).toString('hex'),
      card: rich.card,
      cardPin: rich.cardPin,
    };
    const tooMuch = await postPageForm(gw, `${o.path}/recharge`, card, o.session);
    expect(alertOf(tooMuch.text)).toBe('The recharge would take the balance above what this product may hold.');
    const poorCard = {
      ...card,
      amount: '1000000',
      nonce: randomBytes(16).toString('hex'),
      card: poor.card,
      cardPin: poor.cardPin,
    };
    expect(alertOf((await postPageForm(gw, `${o.path}/recharge`, poorCard, o.session)).text)).toBe(
      'Not enough credit on the card.',
    );
  });
});

describe('the reason a refused page carries', () => {
  /** The page's status and its Tessera-Reason header: the catalogue's reason, with that reason's status. */
  const refusal = (r: Res): [number, string | null] => [r.status, r.headers.get('tessera-reason')];
  const of = (reason: Reason): [number, string] => [REASONS[reason].status, reason];

  it('on the buy, access and check pages, as the API would give it; none on a page that is no refusal', async () => {
    const session = await formSession(gw, '/buy');
    const buyPage = (form: Record<string, string>, s = session): Promise<Res> => postPageForm(gw, '/buy', form, s);
    expect(refusal(await buyPage({ ...buyForm(TALK.name, rich), pin: '12' }))).toEqual(of('bad_value'));
    expect(refusal(await buyPage({ ...buyForm(TALK.name, rich), product: 'nothing-such' }))).toEqual(
      of('unknown_product'),
    );
    expect(refusal(await buyPage(buyForm(TALK.name, poor)))).toEqual(of('insufficient_funds'));
    expect(refusal(await buyPage(buyForm(TALK.name, rich), { ...session, cookie: '' }))).toEqual(of('foreign_form'));
    expect(refusal(await buyPage(buyForm(TALK.name, rich)))).toEqual([200, null]);
    expect(refusal(await http(gw, 'GET', '/buy'))).toEqual([200, null]);

    expect(refusal(await http(gw, 'GET', '/access/nowhere'))).toEqual(of('unknown_area'));
    expect(refusal(await http(gw, 'GET', '/check/1/short'))).toEqual(of('bad_link'));

    const o = await owned();
    expect(refusal(o.page)).toEqual([200, null]);
    expect(refusal(await postPageForm(gw, o.path, { pin: '0000' }, o.session))).toEqual(of('wrong_pin'));
    expect(refusal(await postPageForm(gw, o.path, { pin: PIN, op: 'ani_add', ani: '020' }, o.session))).toEqual(
      of('bad_ani'),
    );
    const voucher = { grant: fieldOf(o.page.text, 'grant'), voucher: '1234567890123' };
    expect(refusal(await postPageForm(gw, `${o.path}/voucher`, { ...voucher, grant: '' }, o.session))).toEqual(
      of('pin_required'),
    );
    expect(refusal(await postPageForm(gw, `${o.path}/voucher`, voucher, o.session))[1]).toMatch(/^[a-z_]+$/);
  });

  it("a card company's own decline reason: passed on, never as header lines of its own", async () => {
    // A card company answers what it likes; its reason reaches the page's header, where a line
    // break would end the header and start another (a cookie set for the buyer's browser).
    const declines = createServer((req, res) => {
      req.resume();
      res.writeHead(402, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: 'declined', reason: 'do_not_honor\r\nSet-Cookie: hijack=1\r\nX: é' }));
    });
    await new Promise<void>((r) => declines.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(declines.address() as AddressInfo).port}`;
    // One on sale: the card company is asked only about a product in stock.
    await mint(h, TALK, 1);
    const g = await gateway(h, { provider: { ...h.cfg.provider, url } });
    try {
      const session = await formSession(g, '/buy');
      const form = new URLSearchParams({ form: session.token, ...buyForm(TALK.name, rich) }).toString();
      const { text } = await rawExchange(
        g.port,
        `POST /buy HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: ${session.cookie}\r\nSec-Fetch-Site: same-origin\r\n` +
          `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${form.length}\r\n\r\n${form}`,
      );
      const head = text.slice(0, text.indexOf('\r\n\r\n')).split('\r\n');
      expect(head[0]).toBe('HTTP/1.1 402 Payment Required');
      expect(head.filter((l) => /^set-cookie:/i.test(l))).toEqual([]);
      expect(head.filter((l) => /^tessera-reason:/i.test(l))).toEqual([
        'Tessera-Reason: do_not_honor%0D%0ASet-Cookie: hijack=1%0D%0AX: %C3%A9',
      ]);
    } finally {
      await g.close();
      await new Promise((r) => declines.close(r));
    }
  });
});

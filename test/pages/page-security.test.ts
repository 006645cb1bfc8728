/**
 * The buyer pages as a hostile web sees them, over plain HTTP: the headers
 * every page sends (no script, no inline style, no framing, no caching of ID
 * numbers), forms accepted only from our own pages in the same browser, and
 * sales to anonymous buyers only of products on public sale.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EntryProduct, Product } from '../../src/catalog/schema';
import { putAccess } from '../../src/catalog/store';
import type { Gateway } from '../../src/gateway/server';
import { gateway, mint, seedCatalog, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { formSession, http, postPageForm, type FormSession, type Res } from '../support/http';
import { idFields } from '../support/redis';
import { addMember, buy, newKey, stock, type Buyer } from '../sales/fixtures';

const WEB = talkProduct({ name: 'talk-web', title: 'Talk on the web', webShop: true });
/** A price-0 staff pass and an entry ticket: in stock, never on public sale. */
const STAFF = talkProduct({ name: 'staff-pass', title: 'Staff pass', price: 0, webShop: undefined });
const TICKET: EntryProduct = {
  name: 'ticket',
  kind: 'entry',
  title: 'Concert ticket',
  currency: 'EUR',
  price: 45_000_000,
  entries: 1,
  venues: ['arena'],
  gates: [],
  reentry: false,
  expiryDays: 0,
};
const PRODUCTS: Product[] = [WEB, STAFF, TICKET];

let h: Harness;
let gw: Gateway;
let buyer: Buyer;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, PRODUCTS);
  await putAccess(h.ctx.redis, [{ area: 'de', name: 'Germany', countryCode: '49', numbers: [{ number: '0800 123' }] }]);
  for (const p of PRODUCTS) await mint(h, p, 8);
  gw = await gateway(h);
  buyer = await addMember(h, 1_000_000_000);
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

const buyFields = (product: string, nonce: string): Record<string, string> => ({
  product,
  pin: '4711',
  card: buyer.card,
  cardPin: buyer.cardPin,
  nonce,
});
const nonce = (): string =>
  newKey('n')
    .replace(/[^0-9a-f]/g, '')
    .padEnd(32, 'a')
    .slice(0, 32);

/** What every buyer page must say to the browser. */
function expectPageHeaders(r: Res, what: string): void {
  const csp = r.headers.get('content-security-policy') ?? '';
  expect(csp, what).toContain("default-src 'none'");
  expect(csp, what).toContain("style-src 'self'");
  expect(csp, what).toContain("frame-ancestors 'none'");
  expect(csp, what).toContain("form-action 'self'");
  expect(csp, what).not.toMatch(/unsafe-inline|unsafe-eval|script-src/);
  expect(r.headers.get('x-frame-options'), what).toBe('DENY');
  expect(r.headers.get('x-content-type-options'), what).toBe('nosniff');
  expect(r.headers.get('referrer-policy'), what).toBe('no-referrer');
  expect(r.headers.get('cache-control'), what).toBe('no-store');
  // Nothing the policy would have to allow: no script, no inline style, no event handler.
  expect(r.text, what).not.toMatch(/<script|<style|\sstyle=|\son[a-z]+=/i);
}

describe('buyer page headers', () => {
  it('every page, the sold page and the check page with the ID included, sends the headers and no inline code', async () => {
    const s = await formSession(gw);
    const sold = await postPageForm(gw, '/buy', buyFields(WEB.name, nonce()), s);
    expect(sold.status).toBe(200);
    expect(sold.text).toContain('id="id-number"');
    const checkPath = new URL(/id="check-url" class="url" href="([^"]+)"/.exec(sold.text)![1]!).pathname;
    const checked = await postPageForm(gw, checkPath, { pin: '4711' });
    expect(checked.status).toBe(200);
    expect(checked.text).toContain('id="id-number"');
    const pages: [string, Res][] = [
      ['GET /buy', await http(gw, 'GET', '/buy')],
      ['POST /buy (sold)', sold],
      ['POST /buy (refused)', await postPageForm(gw, '/buy', { ...buyFields(WEB.name, nonce()), pin: 'x' })],
      ['GET check link', await http(gw, 'GET', checkPath)],
      ['POST check link (shown)', checked],
      ['POST check link (wrong PIN)', await postPageForm(gw, checkPath, { pin: '0000' })],
      ['GET /access', await http(gw, 'GET', '/access')],
      ['GET /access/de', await http(gw, 'GET', '/access/de')],
      ['GET /access/nowhere', await http(gw, 'GET', '/access/nowhere')],
    ];
    for (const [what, r] of pages) {
      expect(r.type, what).toBe('text/html; charset=utf-8');
      expectPageHeaders(r, what);
      expect(r.text, what).toContain('<link rel="stylesheet" href="/pages.css">');
    }
  });

  it('behind TLS (an https PUBLIC_URL) pages ask browsers to come back over https only, and the cookie is Secure', async () => {
    const tls = await gateway(h, { publicUrl: 'https://tessera.example' });
    try {
      for (const path of ['/buy', '/access', '/check/0/' + '0'.repeat(64)]) {
        const r = await http(tls, 'GET', path);
        expect(r.headers.get('strict-transport-security'), path).toBe('max-age=31536000');
      }
      expect((await http(tls, 'GET', '/buy')).headers.get('set-cookie')).toMatch(/; Secure$/);
    } finally {
      await tls.close();
    }
    // HSTS_MAX_AGE_SEC sets how long; 0 sends none (a proxy in front that sends its own).
    for (const [hstsMaxAgeSec, sent] of [
      [600, 'max-age=600'],
      [0, null],
    ] as const) {
      const g = await gateway(h, { publicUrl: 'https://tessera.example', hstsMaxAgeSec });
      try {
        expect((await http(g, 'GET', '/buy')).headers.get('strict-transport-security')).toBe(sent);
      } finally {
        await g.close();
      }
    }
    // Over plain HTTP the header would mean nothing, and a gateway without TLS in front must not send it.
    const plain = await http(gw, 'GET', '/buy');
    expect(plain.headers.get('strict-transport-security')).toBeNull();
    expect(plain.headers.get('set-cookie')).not.toMatch(/Secure/);
  });

  it('the style sheet is a file of its own, labelled CSS', async () => {
    const r = await http(gw, 'GET', '/pages.css');
    expect(r.status).toBe(200);
    expect(r.type).toBe('text/css; charset=utf-8');
    expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    expect(r.text).toContain('.id {');
  });
});

describe('forms are taken only from our own pages in the same browser', () => {
  it('a buy form posted without the page’s cookie and token sells nothing and says what to do', async () => {
    const before = await stock(h, WEB.name);
    const bare = await http(gw, 'POST', '/buy', { form: buyFields(WEB.name, nonce()) });
    expect(bare.status).toBe(403);
    expect(bare.text).toContain('This form did not come from this site');
    // The page it answers is a fresh form that works: its cookie and token.
    const cookie = bare.headers.get('set-cookie')?.split(';')[0] ?? '';
    expect(bare.headers.get('set-cookie')).toMatch(/HttpOnly; SameSite=Lax/);
    const tokenIn = /name="form" value="([0-9a-f]+)"/.exec(bare.text)![1]!;

    // Another browser's token with this cookie, or this token without its cookie: refused.
    const other = await formSession(gw);
    for (const [form, headers] of [
      [{ form: other.token }, { Cookie: cookie }],
      [{ form: tokenIn }, {}],
      [{ form: tokenIn }, { Cookie: other.cookie }],
    ] as [Record<string, string>, Record<string, string>][]) {
      const r = await http(gw, 'POST', '/buy', { form: { ...buyFields(WEB.name, nonce()), ...form }, headers });
      expect(r.status).toBe(403);
    }
    // A browser that says the post came from another site: refused even with a good pair.
    const crossSite = await http(gw, 'POST', '/buy', {
      form: { ...buyFields(WEB.name, nonce()), form: tokenIn },
      headers: { Cookie: cookie, 'Sec-Fetch-Site': 'cross-site' },
    });
    expect(crossSite.status).toBe(403);
    expect(await stock(h, WEB.name)).toBe(before);

    const ok = await http(gw, 'POST', '/buy', {
      form: { ...buyFields(WEB.name, nonce()), form: tokenIn },
      headers: { Cookie: cookie, 'Sec-Fetch-Site': 'same-origin' },
    });
    expect(ok.status).toBe(200);
    expect(await stock(h, WEB.name)).toBe(before - 1);
  });

  it('a check form posted from elsewhere is refused before any PIN is tried', async () => {
    const s: FormSession = await formSession(gw);
    const sold = await postPageForm(gw, '/buy', buyFields(WEB.name, nonce()), s);
    const checkPath = new URL(/id="check-url" class="url" href="([^"]+)"/.exec(sold.text)![1]!).pathname;
    const bare = await http(gw, 'POST', checkPath, { form: { pin: '4711' } });
    expect(bare.status).toBe(403);
    expect(bare.text).toContain('This form did not come from this site');
    expect(bare.text).not.toContain('id="id-number"');
    const crossSite = await http(gw, 'POST', checkPath, {
      form: { pin: '4711', form: s.token },
      headers: { Cookie: s.cookie, 'Sec-Fetch-Site': 'cross-site' },
    });
    expect(crossSite.status).toBe(403);
    expect(crossSite.text).not.toContain('id="id-number"');
    // Neither was counted as a try on the link.
    const id = /id="id-number">([0-9 ]+)</.exec(sold.text)![1]!.replace(/ /g, '');
    expect((await idFields(h, id)).pinfail).toBe('0');
    // The same browser, from the link's own page: shown.
    const own = await postPageForm(gw, checkPath, { pin: '4711' }, s);
    expect(own.status).toBe(200);
    expect(own.text).toContain('id="id-number"');
  });
});

describe('a browser must say a form came from this site', () => {
  it('a good cookie and token from elsewhere are refused; from an older browser on our page, taken', async () => {
    const before = await stock(h, WEB.name);
    const s = await formSession(gw);
    const post = (headers: Record<string, string>): Promise<Res> =>
      http(gw, 'POST', '/buy', { form: { ...buyFields(WEB.name, nonce()), form: s.token }, headers });
    // A sibling subdomain that set this site's cookie (same-site), and an older browser without
    // Sec-Fetch-Site posting from another site's page.
    const elsewhere: Record<string, string>[] = [
      { 'Sec-Fetch-Site': 'same-site', Origin: 'http://evil.localhost' },
      { 'Sec-Fetch-Site': 'none' },
      { Origin: 'http://evil.localhost' },
    ];
    for (const headers of elsewhere) {
      const r = await post({ ...headers, Cookie: s.cookie });
      expect(r.status, JSON.stringify(headers)).toBe(403);
      expect(r.headers.get('tessera-reason')).toBe('foreign_form');
    }
    expect(await stock(h, WEB.name)).toBe(before);
    // Older browsers without Sec-Fetch-Site posting from our page (at PUBLIC_URL, here its default):
    // one sending its origin, one hiding it under our no-referrer policy (iOS 15's Safari), one
    // sending neither header.
    const older: Record<string, string>[] = [{ Origin: `http://localhost:${gw.port}` }, { Origin: 'null' }, {}];
    for (const headers of older) {
      const r = await post({ ...headers, Cookie: s.cookie });
      expect(r.status, JSON.stringify(headers)).toBe(200);
    }
    expect(await stock(h, WEB.name)).toBe(before - older.length);
  });

  it('so does a check link’s PIN form: refused before any PIN is tried', async () => {
    const s: FormSession = await formSession(gw);
    const sold = await postPageForm(gw, '/buy', buyFields(WEB.name, nonce()), s);
    const checkPath = new URL(/id="check-url" class="url" href="([^"]+)"/.exec(sold.text)![1]!).pathname;
    const id = /id="id-number">([0-9 ]+)</.exec(sold.text)![1]!.replace(/ /g, '');
    const bare = await http(gw, 'POST', checkPath, {
      form: { pin: '4711', form: s.token },
      headers: { Cookie: s.cookie, Origin: 'http://evil.localhost' },
    });
    expect(bare.status).toBe(403);
    expect(bare.text).not.toContain('id="id-number"');
    expect((await idFields(h, id)).pinfail).toBe('0');
  });
});

describe('anonymous buyers buy only what is on public sale', () => {
  it('the product list and the buy form list only products flagged webShop', async () => {
    const list = await http(gw, 'GET', '/v1/products');
    expect(list.status).toBe(200);
    expect(list.json.products.map((p: { name: string }) => p.name)).toEqual([WEB.name]);
    const form = await http(gw, 'GET', '/buy');
    const options = [...form.text.matchAll(/<option value="([^"]*)"/g)].map((m) => m[1]);
    expect(options).toEqual([WEB.name]);
  });

  it('the buy form refuses a product in stock but not on public sale, and sells nothing', async () => {
    for (const p of [STAFF, TICKET]) {
      const before = await stock(h, p.name);
      const r = await postPageForm(gw, '/buy', buyFields(p.name, nonce()));
      expect(r.status, p.name).toBe(404);
      expect(r.text).toContain('That product is not on sale here');
      expect(r.text).not.toContain('id="id-number"');
      expect(await stock(h, p.name)).toBe(before);
    }
  });

  it('a sales token still sells every product of the catalogue', async () => {
    const shop = await token(h, 'sales', 'shop-channels');
    const r = await buy(gw, shop, newKey(), STAFF.name, buyer);
    expect(r.status).toBe(200);
    expect(r.json.product).toBe(STAFF.name);
  });
});

/**
 * The buyer's pages in a real browser: Debian's Chromium, as a phone, with
 * JavaScript switched off, against a real gateway, Redis and sandbox card
 * company. Buy, see a decline, recover the ID with the PIN, get locked out,
 * find the access number. Every page must fit the phone's width.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { putAccess } from '../../src/catalog/store';
import type { Gateway } from '../../src/gateway/server';
import { keys } from '../../src/redis/keys';
import { gateway, mint, seedCatalog, startHarness, talkProduct, type Harness } from '../support/harness';
import { ensureChromium, follow, launchPhone, layout, PHONE, scriptsAreOff, submit, text, type Phone } from './phone';

const chromium = ensureChromium();
if (!chromium.ok) {
  // Only where Debian's chromium can be neither found nor installed; CI installs it.
  if (process.env.CI) throw new Error(`browser tests cannot run: ${chromium.why}`);
  console.warn(`SKIPPED test/pages/buyer-pages.test.ts: ${chromium.why}`);
}

const ALICE = { card: '4000 0000 0000 0002', cardPin: '1234' };
const BOB = { card: '4000000000000010', cardPin: '1234' };
const STRANGER = { card: '4111111111111111', cardPin: '1234' }; // a valid card number the card company does not know
const SMALL = talkProduct({ name: 'talk', title: 'Talk 1', face: 1_000_000, price: 1_000_000 });
const BIG = talkProduct({ name: 'talk50', title: 'Talk 50', face: 50_000_000, price: 50_000_000 });
const AREAS = [
  {
    area: 'jp-tokyo',
    name: 'Japan: Tokyo',
    countryCode: '81',
    numbers: [{ number: '+81 3 4578 1234', label: 'toll free' }, { number: '+81 3 4578 5678' }],
    notes: 'From a hotel room, dial 0 first for an outside line.',
  },
  { area: 'de', name: 'Germany', countryCode: '49', numbers: [{ number: '0800 123 4567' }] },
];

let h: Harness;
let gw: Gateway;
let phone: Phone;
let base: string;
let page: Page;
let minted: string[];
/** From the purchase in the first test, for the recovery tests. */
let bought: { id: string; checkUrl: string; pin: string } | undefined;
const shots: string[] = [];
let failed = false;

/** Checks the page as a phone shows it (viewport meta, nothing wider than the screen) and keeps a screenshot. */
async function fitsPhone(name: string): Promise<void> {
  // The screenshot first, so a page that fails below can be looked at.
  const file = join(phone.shots, `${String(shots.length + 1).padStart(2, '0')}-${name}.png`);
  const png = await page.screenshot({ path: file, fullPage: true });
  shots.push(file);
  const l = await layout(page);
  expect(l.viewportMeta, `${name}: viewport meta`).toMatch(/width=device-width/);
  // A page wider than the screen makes a phone zoom out to fit it: the layout viewport grows.
  expect(l.innerWidth, `${name}: laid out at the phone's width`).toBe(PHONE.width);
  expect(l.scrollWidth, `${name}: no horizontal scrolling`).toBeLessThanOrEqual(PHONE.width);
  expect(l.overflowing, `${name}: elements past the right edge`).toEqual([]);
  expect(l.smallestFontPx, `${name}: smallest text`).toBeGreaterThanOrEqual(14);
  expect(l.tinyTargets, `${name}: controls too small to tap`).toEqual([]);
  expect(l.scripts, `${name}: no scripts`).toBe(0);
  // The full-page screenshot is exactly the phone's width (2 device pixels a CSS pixel): nothing widened the page.
  expect(png.readUInt32BE(16), `${name}: screenshot width`).toBe(PHONE.width * 2);
}

async function count(keyOf: (bucket: number) => string, cmd: 'scard' | 'xlen'): Promise<number> {
  let n = 0;
  for (let b = 0; b < h.cfg.buckets; b++) n += await h.r[cmd](keyOf(b));
  return n;
}
const stock = (product: string): Promise<number> => count((b) => keys.inventory(b, product), 'scard');
const sales = (): Promise<number> => count((b) => keys.sales(b), 'xlen');
const digits = (s: string): string => s.replace(/\D/g, '');

async function openBuy(): Promise<void> {
  const res = await page.goto(`${base}/buy`);
  expect(res?.status()).toBe(200);
}

async function fillBuy(product: string, pin: string, card: { card: string; cardPin: string }): Promise<number> {
  await page.selectOption('#product', product);
  await page.fill('#pin', pin);
  await page.fill('#card', card.card);
  await page.fill('#cardPin', card.cardPin);
  return submit(page);
}

/** The id of the element with the focus (autofocus needs no page script). */
const focused = (): Promise<string> => page.evaluate<string>('document.activeElement ? document.activeElement.id : ""');

async function checkWith(checkUrl: string, pin: string): Promise<number> {
  expect((await page.goto(checkUrl))?.status()).toBe(200);
  await page.fill('#pin', pin);
  return submit(page);
}

describe.skipIf(!chromium.ok)('buyer pages in Chromium, phone-sized, without JavaScript', () => {
  beforeAll(async () => {
    h = await startHarness();
    await seedCatalog(h, [SMALL, BIG]);
    await putAccess(h.ctx.redis, AREAS);
    minted = [...(await mint(h, SMALL, 5)), ...(await mint(h, BIG, 2))];
    gw = await gateway(h, {
      pin: { maxTries: 5, lockSec: 60, lockMaxSec: 60, maxTriesPerClient: 1000, maxTriesPerNetwork: 100_000 },
    });
    base = `http://127.0.0.1:${gw.port}`;
    phone = await launchPhone();
    page = phone.page;
  }, 60_000);

  afterAll(async () => {
    await phone?.close();
    await gw?.close();
    await h?.stop();
    // Kept when asked for (TESSERA_SCREENSHOTS=dir) or when a test failed, to look at.
    if (!phone) return;
    if (process.env.TESSERA_SCREENSHOTS || failed) console.log(`screenshots of the pages: ${phone.shots}`);
    else rmSync(phone.shots, { recursive: true, force: true });
  });

  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') failed = true;
  });

  it('runs no page script, yet can measure the page', async () => {
    expect(await scriptsAreOff(page)).toBe(true);
  });

  it('buys an ID end to end', async () => {
    const before = { stock: await stock('talk'), sales: await sales() };
    expect((await page.goto(`${base}/`))?.url()).toBe(`${base}/buy`);
    expect(await text(page)).toContain('Buy talk time');
    const options = await page.$$eval('#product option', (os) =>
      os.map((o) => (o as unknown as { textContent: string }).textContent),
    );
    // Cheapest first, with price and talk time at the plan's base rate (100 micro-units a second); each
    // title between the invisible isolates that keep right-to-left text in it from moving the price.
    expect(options).toEqual([
      '\u2068Talk 1\u2069: 1.00 EUR, about 2 h 46 min',
      '\u2068Talk 50\u2069: 50.00 EUR, about 138 h 53 min',
    ]);
    await fitsPhone('buy');

    expect(await fillBuy('talk', '2468', ALICE)).toBe(200);
    const t = await text(page);
    expect(t).toContain('The ID number you purchased is');
    const id = digits(await page.innerText('#id-number'));
    expect(minted).toContain(id);
    expect(t).toContain('Talk 1: 1.00 EUR');
    const checkUrl = await page.getAttribute('#check-url', 'href');
    expect(checkUrl).toMatch(new RegExp(`^http://localhost:${gw.port}/check/\\d+/[0-9a-f]{64}$`));
    expect(await page.innerText('#check-url')).toBe(checkUrl);
    expect(await page.getAttribute('#access-url', 'href')).toBe(`http://localhost:${gw.port}/access`);
    await fitsPhone('result');

    expect(await stock('talk')).toBe(before.stock - 1);
    expect(await sales()).toBe(before.sales + 1);
    expect(h.sandbox.members.get('4000000000000002')?.used).toBe(1_000_000);
    bought = { id, checkUrl: checkUrl!.replace('localhost', '127.0.0.1'), pin: '2468' };

    // Reloading the result (the browser re-posts the same form) is the same purchase: no second ID, no second charge.
    const again = await page.reload();
    expect(again?.request().method()).toBe('POST');
    expect(again?.status()).toBe(200);
    expect(digits(await page.innerText('#id-number'))).toBe(id);
    expect(await sales()).toBe(before.sales + 1);
    expect(h.sandbox.members.get('4000000000000002')?.used).toBe(1_000_000);

    // The link on the result page leads to the check page.
    expect(await follow(page, '#check-url')).toBe(200);
    expect(await text(page)).toContain('Find your ID number');
  });

  it('tells why a payment is declined, and sells nothing', async () => {
    const before = { small: await stock('talk'), big: await stock('talk50'), sales: await sales() };
    await openBuy();
    expect(await fillBuy('talk50', '1357', BOB)).toBe(402);
    let t = await text(page);
    expect(t).toContain('Payment not completed');
    expect(t).toContain('Not enough credit on the card.');
    expect(t).toContain('Nothing was sold.');
    expect(t).not.toContain('The ID number you purchased is');
    expect(await page.$('#id-number')).toBeNull();
    // The form is there again to try another way.
    expect(await page.$('form[action="/buy"] #card')).not.toBeNull();
    // With the cursor in the card field, not left on the page, and the reason read out as an alert.
    expect(await focused()).toBe('card');
    expect(await page.getAttribute('p.error', 'role')).toBe('alert');
    await fitsPhone('declined');

    // A card the card company does not know.
    expect(await fillBuy('talk', '1357', STRANGER)).toBe(402);
    t = await text(page);
    expect(t).toContain('The card company does not know this card holder.');
    expect(await page.$('#id-number')).toBeNull();

    expect(await stock('talk50')).toBe(before.big);
    expect(await stock('talk')).toBe(before.small);
    expect(await sales()).toBe(before.sales);
    expect(h.sandbox.members.get('4000000000000010')?.used).toBe(0);
  });

  it('says what is wrong with a form it cannot take', async () => {
    await openBuy();
    await page.selectOption('#product', 'talk');
    // The browser's own check (minlength) is what a person meets first; the server says it too.
    await page.$eval('#pin', (e) =>
      (e as unknown as { removeAttribute(a: string): void }).removeAttribute('minlength'),
    );
    await page.fill('#pin', '12');
    await page.fill('#card', ALICE.card);
    await page.fill('#cardPin', ALICE.cardPin);
    expect(await submit(page)).toBe(400);
    expect(await text(page)).toContain('The PIN must be 4 to 12 digits.');
    await fitsPhone('form-error');
  });

  it('shows the ID again for the right PIN on the check link', async () => {
    expect(bought).toBeDefined();
    expect((await page.goto(bought!.checkUrl))?.status()).toBe(200);
    await fitsPhone('check');
    await page.fill('#pin', bought!.pin);
    expect(await submit(page)).toBe(200);
    const t = await text(page);
    expect(t).toContain('The ID number you purchased is');
    expect(digits(await page.innerText('#id-number'))).toBe(bought!.id);
    expect(await page.innerText('#balance')).toBe('1.00 EUR');
    await fitsPhone('check-ok');
  });

  it('shows nothing about the ID for a wrong PIN', async () => {
    expect(await checkWith(bought!.checkUrl, '9999')).toBe(403);
    const t = await text(page);
    expect(t).toContain('That PIN does not match this link.');
    expect(t).not.toContain('The ID number you purchased is');
    expect(await page.$('#id-number')).toBeNull();
    expect(await focused()).toBe('pin');
    expect(digits(await page.content())).not.toContain(bought!.id);
    await fitsPhone('check-wrong');

    // A link that does not exist answers the same way.
    expect(await checkWith(bought!.checkUrl.replace(/[0-9a-f]{32}$/, '0'.repeat(32)), bought!.pin)).toBe(403);
    expect(await text(page)).toContain('That PIN does not match this link.');

    // The one wrong PIN did not spoil the link for its owner.
    expect(await checkWith(bought!.checkUrl, bought!.pin)).toBe(200);
    expect(digits(await page.innerText('#id-number'))).toBe(bought!.id);
  });

  it('locks the check link after 5 wrong PINs, even against the right one', async () => {
    const r = await gw.purchases.purchase('test', 'pages/lockout', {
      product: 'talk',
      pin: '8642',
      card: digits(ALICE.card),
      cardPin: ALICE.cardPin,
    });
    if (!r.ok) throw new Error(`purchase: ${r.reason}`);
    const link = r.checkUrl.replace('localhost', '127.0.0.1');
    for (let i = 1; i <= 4; i++) {
      expect(await checkWith(link, '0000'), `wrong PIN ${i}`).toBe(403);
      expect(await text(page)).toContain('That PIN does not match this link.');
    }
    const t0 = Date.now();
    expect(await checkWith(link, '0000'), 'wrong PIN 5').toBe(429);
    const until = new Date(t0 + 60_000);
    // Shown to the minute, rounded up.
    const stamp = (d: Date): string =>
      new Date(Math.ceil(d.getTime() / 60_000) * 60_000).toISOString().slice(0, 16).replace('T', ' ');
    const t = await text(page);
    expect(t).toMatch(
      /Too many wrong PINs: this link is locked until \d{4}-\d\d-\d\d \d\d:\d\d UTC\. Try again then\./,
    );
    // About a minute from now (lockSec 60); the minute may tick over meanwhile.
    expect([stamp(until), stamp(new Date(until.getTime() + 2000))]).toContain(/until ([-\d]+ \d\d:\d\d)/.exec(t)![1]);
    await fitsPhone('check-locked');

    expect(await checkWith(link, '8642'), 'the right PIN while locked').toBe(429);
    expect(await text(page)).toContain('Too many wrong PINs');
    expect(await page.$('#id-number')).toBeNull();
    expect(digits(await page.content())).not.toContain(r.id);

    // Only that link is locked: the other buyer's still opens.
    expect(await checkWith(bought!.checkUrl, bought!.pin)).toBe(200);
    expect(digits(await page.innerText('#id-number'))).toBe(bought!.id);
  });

  it('a buy form filled in one tab still pays after the check link is opened from a mail in another', async () => {
    // The mail (another site) in a second tab: following its link is a cross-site navigation, which must not
    // cost this browser its form cookie and so the form the first tab holds.
    const before = { stock: await stock('talk'), sales: await sales() };
    await openBuy();
    await page.selectOption('#product', 'talk');
    await page.fill('#pin', '1357');
    await page.fill('#card', ALICE.card);
    await page.fill('#cardPin', ALICE.cardPin);
    const mail = await phone.context.newPage();
    try {
      await mail.route('http://mail.example/', (r) =>
        r.fulfill({ contentType: 'text/html', body: `<p><a id="link" href="${bought!.checkUrl}">your check link</a>` }),
      );
      await mail.goto('http://mail.example/');
      expect(await follow(mail, '#link')).toBe(200);
      expect(await text(mail)).toContain('Find your ID number');
    } finally {
      await mail.close();
    }
    expect(await submit(page)).toBe(200);
    expect(await text(page)).toContain('The ID number you purchased is');
    expect(await stock('talk')).toBe(before.stock - 1);
    expect(await sales()).toBe(before.sales + 1);
  });

  it('finds the access number for an area', async () => {
    expect((await page.goto(`${base}/buy`))?.status()).toBe(200);
    expect(await follow(page, 'nav >> text=Access numbers')).toBe(200);
    expect(page.url()).toBe(`${base}/access`);
    expect(await text(page)).toContain('Where are you now?');
    expect(
      await page.$$eval('ul li a', (as) => as.map((a) => (a as unknown as { textContent: string }).textContent)),
    ).toEqual(['Germany', 'Japan: Tokyo']);
    await fitsPhone('access');

    expect(await follow(page, 'text=Japan: Tokyo')).toBe(200);
    expect(page.url()).toBe(`${base}/access/jp-tokyo`);
    const numbers = await page.$$eval('#numbers li', (ls) =>
      ls.map((l) => (l as unknown as { textContent: string }).textContent),
    );
    expect(numbers).toEqual(['+81 3 4578 1234 (toll free)', '+81 3 4578 5678']);
    const t = await text(page);
    expect(t).toContain('dial the access number above');
    expect(t).toContain('enter your ID number when asked');
    expect(t).toContain('dial the country code, the area code and the number you are calling');
    expect(t).toContain('From a hotel room, dial 0 first for an outside line.');
    await fitsPhone('access-area');

    expect(await follow(page, 'text=Another area')).toBe(200);
    expect(page.url()).toBe(`${base}/access`);
    expect((await page.goto(`${base}/access/atlantis`))?.status()).toBe(404);
    expect(await text(page)).toContain('Unknown area');
  });
});

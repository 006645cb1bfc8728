/**
 * The check link: its token and the buyer's PIN together show the ID again.
 * A wrong PIN (or a link that does not exist) shows nothing about the ID;
 * too many wrong PINs lock the link, and a client address spraying links.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config';
import type { Gateway } from '../../src/gateway/server';
import { gateway, mint, seedCatalog, startHarness, token, type Harness } from '../support/harness';
import { formSession, http, postPageForm, type FormSession, type Res } from '../support/http';
import { captureLog, type LogLine } from '../support/log';
import { CheckLinks } from '../../src/sales/check';
import { verifyPin } from '../../src/sales/pin';
import { keys } from '../../src/redis/keys';
import { idFields, idKeyOf } from '../support/redis';
import { sleep, until } from '../support/wait';
import { Client } from '../support/ws-client';
import { addMember, buy, callWith, newKey, product, type Buyer } from './fixtures';

let h: Harness;
/** Per-link lock after 5 wrong PINs for 2 s; the per-client limit out of the way. */
let gw: Gateway;
/** The same, with 3 wrong PINs per client address before it is locked out. */
let gwC: Gateway;
let salesTok: string;
let buyer: Buyer;
/** What both gateways log. */
const logged = captureLog();

const P = product('talk-c', { face: 1_000_000, price: 1_000_000, expiryDays: 30 });

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [P]);
  await mint(h, P, 60);
  gw = await gateway(
    h,
    { pin: { maxTries: 5, lockSec: 2, lockMaxSec: 2, maxTriesPerClient: 1000, maxTriesPerNetwork: 100_000 } },
    logged.log,
  );
  gwC = await gateway(
    h,
    { pin: { maxTries: 5, lockSec: 2, lockMaxSec: 2, maxTriesPerClient: 3, maxTriesPerNetwork: 100_000 } },
    logged.log,
  );
  salesTok = await token(h, 'sales', 'shop-c');
  buyer = await addMember(h, 1_000_000_000);
});
afterAll(async () => {
  await gw?.close();
  await gwC?.close();
  await h?.stop();
});

/** Every test starts with no wrong PINs counted against the test's address. */
async function clearClientCounts(): Promise<void> {
  const found = [...(await h.r.keys('ts:{b*}:pinip:*')), ...(await h.r.keys('ts:{b*}:pinnet:*'))];
  if (found.length) await h.r.del(...found);
}
beforeEach(clearClientCounts);

interface Bought {
  id: string;
  pin: string;
  /** /check/<bucket>/<token> */
  path: string;
}

async function buyOne(pin = String(1000 + Math.floor(Math.random() * 9000))): Promise<Bought> {
  const r = await buy(gw, salesTok, newKey(), 'talk-c', buyer, pin);
  if (r.status !== 200) throw new Error(`buy: ${r.status} ${r.text}`);
  return { id: r.json.id, pin, path: new URL(r.json.checkUrl).pathname };
}

const grouped = (id: string): string => id.replace(/(\d{4})(?=\d)/g, '$1 ');
/** One browser per gateway: its form cookie and token, as a check link's page gave them. */
const sessions = new Map<Gateway, Promise<FormSession>>();
const check = async (g: Gateway, path: string, pin: string): Promise<Res> => {
  if (!sessions.has(g)) sessions.set(g, formSession(g, '/check/0/' + '0'.repeat(32)));
  return postPageForm(g, path, { pin }, await sessions.get(g));
};
const wrongPin = (b: Bought): string => (b.pin === '0000' ? '1111' : '0000');

/** The page shows nothing of the ID: not the number, bare or grouped, nor a balance. */
function expectNothingOf(r: Res, id: string): void {
  expect(r.text).not.toContain(id);
  expect(r.text).not.toContain(grouped(id));
  expect(r.text).not.toContain('id-number');
  expect(r.text).not.toContain('balance');
  expect(r.text).not.toContain('The ID number you purchased is');
}

describe('check link', () => {
  it('GET shows the PIN form, posting back to the link, and nothing of the ID', async () => {
    const b = await buyOne();
    const r = await http(gw, 'GET', b.path);
    expect(r.status).toBe(200);
    expect(r.type).toBe('text/html; charset=utf-8');
    expect(r.text).toContain(`<form method="post" action="${b.path}">`);
    expect(r.text).toContain('name="pin"');
    expectNothingOf(r, b.id);
  });

  it('a link with its bucket percent-encoded is the same link: the form posts to it as written by us', async () => {
    const b = await buyOne('24680');
    const encoded = b.path.replace(
      /^\/check\/(\d+)\//,
      (_, n: string) => `/check/${[...n].map((d) => `%3${d}`).join('')}/`,
    );
    expect(encoded).not.toBe(b.path);
    const r = await http(gw, 'GET', encoded);
    expect(r.text).toContain(`<form method="post" action="${b.path}">`);
    expect((await check(gw, encoded, '24680')).status).toBe(200);
  });

  it('the right PIN shows the ID with its balance, state and expiry', async () => {
    const b = await buyOne('73519');
    const r = await check(gw, b.path, '73519');
    expect(r.status).toBe(200);
    expect(r.type).toBe('text/html; charset=utf-8');
    expect(r.text).toContain('The ID number you purchased is');
    const shown = /<p class="id" id="id-number">([0-9 ]+)<\/p>/.exec(r.text);
    expect(shown?.[1]).toBe(grouped(b.id));
    expect(shown![1]!.replace(/ /g, '')).toBe(b.id);
    expect(r.text).toContain('<td id="balance">1.00 EUR</td>');
    expect(r.text).toContain('<td id="state">Active</td>');
  });

  it('a sold ID keeps its compact hash: the PIN hash fits within hash-max-listpack-value', async () => {
    const b = await buyOne();
    const pin = (await idFields(h, b.id)).pin!;
    expect(pin.length).toBeLessThanOrEqual(64);
    // Past 64 bytes in any value Redis turns the ID's hash into a hashtable: about 4 × its memory.
    expect(await h.r.call('OBJECT', 'ENCODING', idKeyOf(h, b.id))).toBe('listpack');
    expect((await check(gw, b.path, b.pin)).status).toBe(200);
  });

  it('a link names its ID: the sale writes no index for it, and only its own tag opens it', async () => {
    const before = await h.r.keys('ts:{b*}:chk:*');
    const b = await buyOne();
    expect(await h.r.keys('ts:{b*}:chk:*')).toEqual(before);
    const [, bucket, tokenText] = b.path.split('/').slice(1);
    expect(tokenText!.slice(0, 32)).toBe(h.ctx.ids.hash(b.id).hash);
    expect((await check(gw, b.path, b.pin)).status).toBe(200);
    // The ID's own hash with another tag, or with the tag of another link: answered like an unknown link.
    const other = await buyOne();
    for (const tag of [randomBytes(16).toString('hex'), other.path.slice(-32)]) {
      const r = await check(gw, `/check/${bucket}/${tokenText!.slice(0, 32)}${tag}`, b.pin);
      expect(r.status).toBe(403);
      expectNothingOf(r, b.id);
    }
    expect((await check(gw, b.path, b.pin)).status).toBe(200);
  });

  it('a link sold before links named their ID (a bare tag, found through its index) still opens it', async () => {
    const b = await buyOne();
    const { hash, bucket } = h.ctx.ids.hash(b.id);
    const tag = b.path.slice(-32);
    // What such a sale wrote: the index from the keyed hash of the tag to the ID.
    await h.r.set(keys.check(bucket, h.ctx.ids.mac(`chk:${tag}`).slice(0, 32)), hash);
    const r = await check(gw, `/check/${bucket}/${tag}`, b.pin);
    expect(r.status).toBe(200);
    expect(r.text).toContain(grouped(b.id));
  });

  it('before first use the page states the product’s own validity (30 days after first use), not another', async () => {
    const b = await buyOne();
    const r = await check(gw, b.path, b.pin);
    expect(r.status).toBe(200);
    const expires = /<td id="expires">([^<]*)<\/td>/.exec(r.text)?.[1];
    expect(expires).toContain('30 days');
    expect(expires).not.toContain('one year');
  });

  it('after a call the page shows the balance left and the expiry date', async () => {
    const b = await buyOne();
    // 100 s at 100 micro/s: 0.99 EUR left.
    await callWith(h, gw, b.id, 100);
    const f = await idFields(h, b.id);
    expect(f.bal).toBe('990000');
    const exp = Number(f.exp);
    expect(exp).toBe(Number(f.first) + 30 * 86_400_000);
    const r = await check(gw, b.path, b.pin);
    expect(r.status).toBe(200);
    expect(/<td id="balance">([^<]*)<\/td>/.exec(r.text)?.[1]).toBe('0.99 EUR');
    expect(/<td id="expires">([^<]*)<\/td>/.exec(r.text)?.[1]).toBe(new Date(exp).toISOString().slice(0, 10));
  });

  it('the balance is shown to the micro-unit, never rounded up to the cent', async () => {
    const b = await buyOne();
    // 7 s at 100 micro/s: 0.9993 EUR left, which "1.00 EUR" would overstate.
    await callWith(h, gw, b.id, 7);
    expect((await idFields(h, b.id)).bal).toBe('999300');
    const r = await check(gw, b.path, b.pin);
    expect(/<td id="balance">([^<]*)<\/td>/.exec(r.text)?.[1]).toBe('0.9993 EUR');
  });

  it('a wrong PIN: 403, the form again, nothing of the ID', async () => {
    const b = await buyOne('2580');
    for (const pin of ['2581', '', '25800', '<script>']) {
      const r = await check(gw, b.path, pin);
      expect(r.status, pin).toBe(403);
      expect(r.text).toContain('That PIN does not match this link.');
      expect(r.text).toContain(`action="${b.path}"`);
      expectNothingOf(r, b.id);
    }
    expect((await check(gw, b.path, '2580')).status).toBe(200);
  });

  it('only the link’s own PIN opens it: another ID’s PIN does not', async () => {
    const a = await buyOne('1111');
    const b = await buyOne('2222');
    const r = await check(gw, b.path, '1111');
    expect(r.status).toBe(403);
    expectNothingOf(r, a.id);
    expectNothingOf(r, b.id);
  });

  it('an unknown link answers like a wrong PIN, but for the tries left, which are its address’s', async () => {
    const b = await buyOne();
    const wrong = await check(gw, b.path, wrongPin(b));
    const [, , bucket] = b.path.split('/');
    const unknown = [
      `/check/${bucket}/${randomBytes(16).toString('hex')}`,
      `/check/${bucket}/${randomBytes(32).toString('hex')}`,
    ];
    for (const path of unknown) {
      const r = await check(gw, path, b.pin);
      expect(r.status, path).toBe(403);
      expect(r.type).toBe(wrong.type);
      // The same page but for the form's own action and the tries left (the address's, not a link's).
      const page = (t: string): string =>
        t.replace(/action="[^"]*"/, '').replace(/ (?:One|\d+) more wrong PINs?[^<]*</, '<');
      expect(r.text).toMatch(/\d+ more wrong PINs from your address will lock it out of check links/);
      expect(page(r.text)).toBe(page(wrong.text));
      expectNothingOf(r, b.id);
    }
    // Its form, too, looks like any other link's.
    const form = await http(gw, 'GET', unknown[0]!);
    expect(form.status).toBe(200);
    const token = (t: string): string => t.replace(/name="form" value="[^"]*"/, '');
    expect(token(form.text)).toBe(token((await http(gw, 'GET', b.path)).text.replace(b.path, unknown[0]!)));
  });
});

/** Check links whose PIN verifications are counted. */
function countingLinks(): { links: CheckLinks; verified: () => number } {
  let n = 0;
  const counting = (pin: string, encoded: string): Promise<boolean> => {
    n++;
    return verifyPin(pin, encoded);
  };
  return { links: new CheckLinks(h.ctx, counting), verified: () => n };
}

describe('unknown links', () => {
  it('an unknown link costs a PIN verification, like a real link with a wrong PIN', async () => {
    const { links, verified } = countingLinks();
    const b = await buyOne();
    const [, , bucket, tok] = b.path.split('/');
    expect(await links.check(bucket!, tok!, wrongPin(b), 'client-a')).toMatchObject({ ok: false, reason: 'wrong_pin' });
    expect(verified()).toBe(1);
    for (const [bk, t] of [
      [bucket!, randomBytes(16).toString('hex')],
      [bucket!, randomBytes(32).toString('hex')],
    ]) {
      expect(await links.check(bk!, t!, b.pin, 'client-b')).toMatchObject({
        ok: false,
        reason: 'wrong_pin',
        client: true,
      });
    }
    expect(verified()).toBe(3);
  });

  it('a link cut short or mistyped is told so: no try counted, no PIN compared', async () => {
    const { links, verified } = countingLinks();
    const target = await buyOne();
    const [, , bucket, tok] = target.path.split('/');
    const broken = [
      [bucket!, tok!.slice(0, 50)],
      [bucket!, `${tok!}0`],
      [bucket!, tok!.toUpperCase()],
      [String(h.cfg.buckets + 5), tok!],
      ['abc', tok!],
    ];
    for (const [bk, t] of broken)
      expect(await links.check(bk!, t!, target.pin, 'client-c')).toEqual({ ok: false, reason: 'bad_link' });
    expect(verified()).toBe(0);
    // Through the page, more of them than the address may send wrong PINs (3 here): none counted.
    for (const [bk, t] of [...broken, ...broken]) {
      const path = `/check/${bk!}/${t!}`;
      const r = await check(gwC, path, target.pin);
      expect(r.status, path).toBe(404);
      expect(r.text).toContain('This link is incomplete');
      expectNothingOf(r, target.id);
      const form = await http(gwC, 'GET', path);
      expect(form.status).toBe(404);
      expect(form.text).not.toContain('name="pin"');
    }
    expect((await idFields(h, target.id)).pinfail).toBe('0');
    expect((await check(gwC, target.path, target.pin)).status).toBe(200);
  });
});

describe('a check link opened with more or less than the link', () => {
  it('cut short at a slash, or with a slash or a segment added, is a page saying so, not the API 404', async () => {
    const b = await buyOne();
    const [, , bucket] = b.path.split('/');
    for (const path of ['/check', '/check/', `/check/${bucket!}`, `/check/${bucket!}/`, `${b.path}/`, `${b.path}/x`]) {
      const r = await http(gw, 'GET', path);
      expect(r.status, path).toBe(404);
      expect(r.headers.get('tessera-reason'), path).toBe('bad_link');
      expect(r.type, path).toMatch(/^text\/html/);
      expect(r.text, path).toContain('This link is incomplete');
      expectNothingOf(r, b.id);
    }
    expect((await idFields(h, b.id)).pinfail).toBe('0');
  });

  it("a recharge page's address opened again (bookmark, other device) leads to the link's PIN form", async () => {
    const b = await buyOne();
    for (const suffix of ['voucher', 'recharge']) {
      const r = await fetch(`http://127.0.0.1:${gw.port}${b.path}/${suffix}`, { redirect: 'manual' });
      expect(r.status, suffix).toBe(303);
      expect(r.headers.get('location'), suffix).toBe(b.path);
      expect(r.headers.get('cache-control'), suffix).toBe('no-store');
      const followed = await http(gw, 'GET', `${b.path}/${suffix}`);
      expect(followed.status, suffix).toBe(200);
      expect(followed.text, suffix).toContain('name="pin"');
      expectNothingOf(followed, b.id);
    }
    const cut = await fetch(`http://127.0.0.1:${gw.port}${b.path.slice(0, -4)}/voucher`, { redirect: 'manual' });
    expect(cut.status).toBe(404);
    expect(cut.headers.get('tessera-reason')).toBe('bad_link');
  });
});

describe('the bucket of a link', () => {
  it('is its decimal number as the link writes it: any other spelling is no link, even with the right PIN', async () => {
    const b = await buyOne();
    const [, , bucket, tok] = b.path.split('/');
    const n = Number(bucket);
    for (const spelled of [`${n}.0`, `0x${n.toString(16)}`, `+${n}`, `0${n}`, `${n}e0`, `%20${n}`]) {
      const r = await check(gw, `/check/${spelled}/${tok}`, b.pin);
      expect(r.status, spelled).toBe(404);
      expect(r.text, spelled).toContain('This link is incomplete');
      expectNothingOf(r, b.id);
    }
    expect((await check(gw, b.path, b.pin)).status).toBe(200);
  });
});

describe('escalating locks', () => {
  /** One step of the PIN gate at a chosen time: first lock 1 s, at most 3 s, 2 wrong PINs allowed. */
  const step = (key: string, now: number, op: 'try' | 'ok' | 'wrong', attempt = 0): Promise<unknown> =>
    h.ctx.scripts.run('pin_attempt', [key], [now, op, 2, 1000, attempt, 3000]);
  /** Two wrong PINs at `now`: the lock's end. */
  async function lockAt(key: string, now: number): Promise<number> {
    for (let i = 1; i <= 2; i++) {
      const [state, n] = (await step(key, now, 'try')) as [string, number];
      expect(state).toBe('open');
      const r = (await step(key, now, 'wrong', n)) as [string, number];
      if (i === 2) {
        expect(r[0]).toBe('locked');
        return r[1];
      }
    }
    throw new Error('unreachable');
  }

  it('each lock lasts twice as long as the one before, up to the longest; a right PIN starts over', async () => {
    const b = await buyOne();
    const key = idKeyOf(h, b.id);
    const t0 = 1_000_000_000_000;
    expect(await lockAt(key, t0)).toBe(t0 + 1000);
    // Still locked just before the end, whatever is sent.
    expect(await step(key, t0 + 999, 'try')).toEqual(['locked', t0 + 1000]);
    expect(await lockAt(key, t0 + 1000)).toBe(t0 + 3000);
    expect(await lockAt(key, t0 + 3000)).toBe(t0 + 6000);
    expect(await lockAt(key, t0 + 6000)).toBe(t0 + 9000);
    expect((await idFields(h, b.id)).pinlocks).toBe('4');
    // The owner's right PIN: the next lock is the first one again.
    expect(await step(key, t0 + 9000, 'ok')).toEqual(['open']);
    expect(await lockAt(key, t0 + 9000)).toBe(t0 + 10_000);
  });

  it('the locked page tells the owner until when, and Retry-After says how long', async () => {
    const b = await buyOne('8642');
    for (let i = 1; i <= 4; i++) expect((await check(gw, b.path, '1357')).status).toBe(403);
    const r = await check(gw, b.path, '1357');
    expect(r.status).toBe(429);
    const until = Number((await idFields(h, b.id)).pinlock);
    // To the minute, rounded up: never a time at which the link is still locked.
    const when = new Date(Math.ceil(until / 60_000) * 60_000).toISOString().slice(0, 16).replace('T', ' ');
    expect(r.text).toContain(`Too many wrong PINs: this link is locked until ${when} UTC. Try again then.`);
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(Number(r.headers.get('retry-after'))).toBeLessThanOrEqual(2);
    expectNothingOf(r, b.id);
  });
});

describe('lockout', () => {
  it('five wrong PINs lock the link (429) even for the right PIN; it opens again after the lock time', async () => {
    const b = await buyOne('8642');
    for (let i = 1; i <= 4; i++) {
      const r = await check(gw, b.path, '1357');
      expect(r.status, `wrong PIN #${i}`).toBe(403);
    }
    const sentAt = Date.now();
    const fifth = await check(gw, b.path, '1357');
    expect(fifth.status).toBe(429);
    const answeredAt = Date.now();
    // Locked for 2 s from the fifth wrong PIN: the end the link keeps, not a clock read around it.
    const until = Number((await idFields(h, b.id)).pinlock);
    expect(until).toBeGreaterThanOrEqual(sentAt + 2000);
    expect(until).toBeLessThanOrEqual(answeredAt + 2000);
    const right = await check(gw, b.path, '8642');
    expect(right.status).toBe(429);
    expect(right.text).toContain('Too many wrong PINs');
    expectNothingOf(right, b.id);
    expectNothingOf(fifth, b.id);

    // Other links are not affected.
    const other = await buyOne();
    expect((await check(gw, other.path, other.pin)).status).toBe(200);

    // Open once the lock is over.
    await sleep(until + 100 - Date.now());
    const open = await check(gw, b.path, '8642');
    expect(open.status).toBe(200);
    expect(open.text).toContain(grouped(b.id));
    // The count starts over: four more wrong PINs do not lock it.
    for (let i = 0; i < 4; i++) expect((await check(gw, b.path, '1357')).status).toBe(403);
  });

  it('a burst of wrong PINs sent at once gets no more tries than one after the other', async () => {
    const b = await buyOne('6543');
    // Twelve wrong PINs at once, then the right one while they are still being checked.
    const burst = Array.from({ length: 12 }, () => check(gw, b.path, '1111'));
    await sleep(30);
    const right = await check(gw, b.path, '6543');
    const wrong = await Promise.all(burst);
    // At most five PINs are ever compared per lock period: the rest are refused as locked.
    expect(wrong.filter((r) => r.status === 403).length).toBeLessThanOrEqual(4);
    expect(wrong.filter((r) => r.status === 429).length).toBeGreaterThanOrEqual(8);
    // Twelve wrong PINs came first: the link is locked, and the right PIN shows nothing.
    expect(right.status).toBe(429);
    expectNothingOf(right, b.id);
  });

  it('the right PIN resets the count of wrong ones', async () => {
    const b = await buyOne('9753');
    for (let i = 0; i < 4; i++) expect((await check(gw, b.path, '1111')).status).toBe(403);
    expect((await check(gw, b.path, '9753')).status).toBe(200);
    for (let i = 0; i < 4; i++) expect((await check(gw, b.path, '1111')).status).toBe(403);
    expect((await check(gw, b.path, '9753')).status).toBe(200);
    expect((await idFields(h, b.id)).pinfail).toBe('0');
  });

  it('per client address: wrong PINs spread over several links lock the client out, for the lock time', async () => {
    // The address's window of wrong PINs is the lock time (60 s): three scrypts on a loaded machine
    // cannot outlast it, as they could a lock of 2 s.
    await behindProxy({ maxTriesPerClient: 3, maxTriesPerNetwork: 100_000 }, async (target, from) => {
      const links = [await buyOne(), await buyOne(), await buyOne()];
      for (const l of links) expect((await from('198.18.1.7', l.path, wrongPin(l))).status).toBe(403);
      // Now even a right PIN on a link never tried is refused, showing nothing.
      const r = await from('198.18.1.7', target.path, target.pin);
      expect(r.status).toBe(429);
      expect(r.text).toContain('Too many wrong PINs');
      expectNothingOf(r, target.id);
      // For what is left of the lock time, counted from the first wrong PIN: not for good.
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(30);
      expect(Number(r.headers.get('retry-after'))).toBeLessThanOrEqual(60);
      // No link was locked by itself: it is the client, and another address opens the link.
      for (const l of [...links, target]) expect((await idFields(h, l.id)).pinlock ?? '0').toBe('0');
      expect((await from('198.18.2.7', target.path, target.pin)).status).toBe(200);
    });
  });

  it('per client address: a burst over many links at once gets no more tries than one after the other', async () => {
    // In a window of 60 s: the burst's scrypts on a loaded machine cannot outlast it.
    await behindProxy({ maxTriesPerClient: 3, maxTriesPerNetwork: 100_000 }, async (target, from) => {
      const links = await Promise.all(Array.from({ length: 8 }, () => buyOne()));
      const wrong = await Promise.all(links.map((l) => from('198.18.5.7', l.path, wrongPin(l))));
      // Three wrong PINs per client: the other five are refused unchecked, and so is a right one after them.
      expect(wrong.filter((r) => r.status === 403).length).toBeLessThanOrEqual(3);
      expect(wrong.filter((r) => r.status === 429).length).toBeGreaterThanOrEqual(5);
      const right = await from('198.18.5.7', target.path, target.pin);
      expect(right.status).toBe(429);
      expectNothingOf(right, target.id);
    });
  });

  /** A link that does not exist: a try on it costs a scrypt all the same. */
  const nowhere = (): string => `/check/0/${randomBytes(16).toString('hex')}`;

  /**
   * A gateway behind a trusted proxy (X-Forwarded-For gives the client) with these PIN limits, in a
   * minute's window (a slow runner must not see a count expire mid-test), and a sold ID: `from` tries
   * a PIN on a link as one client address.
   */
  async function behindProxy(
    limits: Pick<Config['pin'], 'maxTriesPerClient' | 'maxTriesPerNetwork'>,
    fn: (target: Bought, from: (address: string, path: string, pin: string) => Promise<Res>) => Promise<void>,
  ): Promise<void> {
    const proxied = await gateway(h, {
      trustProxy: true,
      pin: { maxTries: 5, lockSec: 60, lockMaxSec: 60, ...limits },
    });
    try {
      const target = await buyOne();
      const session = await formSession(proxied, target.path);
      await fn(target, (address, path, pin) =>
        postPageForm(proxied, path, { pin }, session, { 'X-Forwarded-For': address }),
      );
    } finally {
      await proxied.close();
    }
  }

  it('per client address: an IPv6 client is counted by its /64, as the buy page counts it', async () => {
    await behindProxy({ maxTriesPerClient: 3, maxTriesPerNetwork: 100_000 }, async (target, from) => {
      for (let i = 1; i <= 3; i++)
        expect((await from(`2001:db8:7:1::${i}`, target.path, wrongPin(target))).status).toBe(403);
      expect((await from('2001:db8:7:1:ffff::9', target.path, target.pin)).status).toBe(429);
      expect((await from('2001:db8:7:2::1', target.path, target.pin)).status).toBe(200);
    });
  });

  it('per network: many addresses of one /24 together get PIN_MAX_TRIES_PER_NETWORK tries, other networks theirs', async () => {
    await behindProxy({ maxTriesPerClient: 1000, maxTriesPerNetwork: 3 }, async (target, from) => {
      // Each try from an address of its own, over links that do not exist: each one a scrypt.
      for (let i = 1; i <= 3; i++) expect((await from(`198.51.100.${i}`, nowhere(), '1234')).status).toBe(403);
      const refused = await from('198.51.100.200', target.path, target.pin);
      expect(refused.status).toBe(429);
      expectNothingOf(refused, target.id);
      expect((await from('198.51.101.1', target.path, target.pin)).status).toBe(200);
    });
  });

  it('per network: right PINs count too, so a known link and PIN sent again and again costs a bounded number of scrypts', async () => {
    await behindProxy({ maxTriesPerClient: 1000, maxTriesPerNetwork: 3 }, async (target, from) => {
      for (let i = 1; i <= 3; i++) expect((await from(`192.0.2.${i}`, target.path, target.pin)).status).toBe(200);
      const refused = await from('192.0.2.9', target.path, target.pin);
      expect(refused.status).toBe(429);
      expectNothingOf(refused, target.id);
    });
  });

  it('an address locked out for its own tries spends none of its network’s: its neighbours still get theirs', async () => {
    await behindProxy({ maxTriesPerClient: 2, maxTriesPerNetwork: 4 }, async (target, from) => {
      for (let i = 0; i < 2; i++) expect((await from('203.0.113.7', nowhere(), '1234')).status).toBe(403);
      // Refused for the address, unchecked: ten more from it cost its network nothing.
      for (let i = 0; i < 10; i++) expect((await from('203.0.113.7', nowhere(), '1234')).status).toBe(429);
      expect((await from('203.0.113.8', target.path, target.pin)).status).toBe(200);
    });
  });

  it('per client address: unknown links count as wrong PINs', async () => {
    await behindProxy({ maxTriesPerClient: 3, maxTriesPerNetwork: 100_000 }, async (target, from) => {
      for (let i = 0; i < 3; i++) expect((await from('198.18.3.7', nowhere(), '1234')).status).toBe(403);
      expect((await from('198.18.3.7', target.path, target.pin)).status).toBe(429);
    });
  });
});

describe('PIN checks in flight', () => {
  /**
   * A gateway behind a trusted proxy whose PIN verifications wait until released: tries from many
   * networks (no address or network near its limit) pile up as a spray from a botnet's addresses
   * would, each waiting for a scrypt on the thread pool.
   */
  async function heldVerifications(over: Partial<Config>) {
    const g = await gateway(h, { trustProxy: true, maxInflightTotal: 30, ...over });
    let held = 0;
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const links = (g as unknown as { checks: { verify: (pin: string, encoded: string) => Promise<boolean> } }).checks;
    links.verify = async (pin, encoded) => {
      held++;
      await released;
      return verifyPin(pin, encoded);
    };
    return { g, held: () => held, release };
  }

  /**
   * 40 PIN tries from 40 networks on made-up links of a gateway whose verifications are held, a
   * switch connected beside them: resolved once every try is held or answered.
   */
  async function spray(over: Partial<Config>) {
    const [switchTok, b] = await Promise.all([token(h, 'switch'), buyOne()]);
    const v = await heldVerifications(over);
    const c = await Client.connect(v.g.port, switchTok);
    const close = async (): Promise<void> => {
      v.release();
      await c.close();
      await v.g.close();
    };
    try {
      const session = await formSession(v.g, b.path);
      let answered = 0;
      const tries = Array.from({ length: 40 }, (_, i) =>
        postPageForm(v.g, `/check/0/${randomBytes(16).toString('hex')}`, { pin: '0000' }, session, {
          'X-Forwarded-For': `198.19.${i}.9`,
        }).finally(() => answered++),
      );
      // Every try is either waiting for its verification or answered (a loaded runner may take a while).
      await until(() => v.held() + answered === 40, 20_000, 10, 'every try held or answered');
      const start = () => c.request({ op: 'start', ref: 1, call: newKey('c'), id: b.id, dest: '4912345' });
      return { ...v, tries, start, close };
    } catch (err) {
      await close();
      throw err;
    }
  }

  it('are bounded (PIN_MAX_CHECKS): a spray over many networks is refused busy, and takes no place a switch needs', async () => {
    const s = await spray({ pinMaxChecks: 8 });
    try {
      expect(s.held()).toBe(8);
      // The metering still has its places: a call starts.
      expect((await s.start()).op).toBe('started');
      s.release();
      const pages = await Promise.all(s.tries);
      const refused = pages.filter((r) => r.status === 503);
      expect(refused).toHaveLength(32);
      for (const r of refused) {
        expect(r.headers.get('tessera-reason')).toBe('overloaded');
        expect(r.headers.get('retry-after')).toBe('1');
      }
      expect(pages.filter((r) => r.status === 403)).toHaveLength(8);
      // A try refused busy counted nothing: one key per address and per network of the eight checked.
      expect((await h.r.keys('ts:{b*}:pinip:*')).length).toBe(8);
      expect((await h.r.keys('ts:{b*}:pinnet:*')).length).toBe(8);
    } finally {
      await s.close();
    }
  });

  it('held past PIN_MAX_CHECKS take no more than the share of no token (MAX_INFLIGHT_PER_TOKEN)', async () => {
    // Every request of no token (pages, open endpoints, lookups of made-up tokens) counts under
    // one name: until 2026-12-08 they could take every place of the gateway, and a switch's
    // start was refused `overloaded` while PIN tries waited for their hashes.
    const s = await spray({ pinMaxChecks: 100, maxInflightPerToken: 15 });
    try {
      expect(s.held()).toBe(15);
      expect((await s.start()).op).toBe('started');
      s.release();
      expect((await Promise.all(s.tries)).filter((r) => r.status === 503)).toHaveLength(25);
    } finally {
      await s.close();
    }
  });
});

describe('lock logging', () => {
  /** The lines logged for locks since `from` (an index into the captured lines). */
  const lockLines = (from: number): LogLine[] =>
    logged.lines.slice(from).filter((l) => l.msg === 'check link locked: too many wrong PINs');

  /**
   * One lock line since `from`: a warning of this kind naming `b`'s link (its bucket, the start of its ID
   * hash) and our address, with no other field: no PIN, no ID, no link tag.
   */
  function expectOneLock(from: number, lock: string, b: Bought, lockSec: unknown = 2, client = /127\.0\.0\.1$/): void {
    const [, , bucket, tok] = b.path.split('/');
    const lines = lockLines(from);
    expect(lines).toEqual([
      {
        level: 40,
        time: expect.any(Number),
        pid: expect.any(Number),
        hostname: expect.any(String),
        msg: 'check link locked: too many wrong PINs',
        lock,
        bucket: Number(bucket),
        link: tok!.slice(0, 8),
        client: expect.stringMatching(client),
        lockSec,
      },
    ]);
  }

  it('a link that locks logs one warning: its bucket and ID reference, the client, how long; a further lock says escalated', async () => {
    const b = await buyOne('8642');
    const from = logged.lines.length;
    for (let i = 1; i <= 4; i++) expect((await check(gw, b.path, '1357')).status).toBe(403);
    expect(lockLines(from)).toEqual([]);
    expect((await check(gw, b.path, '1357')).status).toBe(429);
    // Refused while locked: no further line.
    expect((await check(gw, b.path, '8642')).status).toBe(429);
    expectOneLock(from, 'link', b);

    // A link locked before (its series of locks goes on): the next lock is an escalated one.
    const again = await buyOne('8642');
    await h.r.hset(idKeyOf(h, again.id), 'pinlocks', '1');
    const next = logged.lines.length;
    for (let i = 1; i <= 5; i++) await check(gw, again.path, '1357');
    expectOneLock(next, 'escalated', again);
  });

  it('a client address locked out logs one warning, with the link it tried', async () => {
    // An address of its own behind a trusted proxy, in a window of 60 s (the lock time): three scrypts
    // on a loaded machine cannot outlast it, as they could a window of 2 s.
    const proxied = await gateway(
      h,
      {
        trustProxy: true,
        pin: { maxTries: 5, lockSec: 60, lockMaxSec: 60, maxTriesPerClient: 3, maxTriesPerNetwork: 100_000 },
      },
      logged.log,
    );
    try {
      const links = [await buyOne(), await buyOne(), await buyOne()];
      const target = await buyOne();
      const session = await formSession(proxied, target.path);
      const tryPin = (path: string, pin: string): Promise<Res> =>
        postPageForm(proxied, path, { pin }, session, { 'X-Forwarded-For': '198.18.4.7' });
      const from = logged.lines.length;
      for (const l of links) expect((await tryPin(l.path, wrongPin(l))).status).toBe(403);
      expect(lockLines(from)).toEqual([]);
      expect((await tryPin(target.path, target.pin)).status).toBe(429);
      expect((await tryPin(target.path, target.pin)).status).toBe(429);
      // The lockout lasts what is left of the address's window of wrong PINs.
      expectOneLock(from, 'address', target, expect.any(Number), /^198\.18\.4\.7$/);
    } finally {
      await proxied.close();
    }
  });
});

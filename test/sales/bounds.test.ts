/**
 * What anonymous buyers (the buy page) can make Tessera keep and hold: a
 * request that fails its checks writes nothing; new purchases are counted per
 * client address and in total, and refused 429 with Retry-After beyond that;
 * a declined purchase's answer is kept for an hour, not a month; and declined
 * cards, even a flood of them, never hold stock a real buyer could have.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import type { Config } from '../../src/config/config';
import { keys } from '../../src/redis/keys';
import { clientGroup, clientNetwork } from '../../src/protocol/client-address';
import { gateway, mint, seedCatalog, startHarness, token, type Harness } from '../support/harness';
import { baseOf, formSession, http, type FormSession } from '../support/http';
import { sleep, until } from '../support/wait';
import { addMember, cardNumber, NO_FAULTS, PIN, product, setFaults, stock, type Buyer } from './fixtures';

let h: Harness;
const P = product('talk-b', { price: 2_000_000 });
/** Two units only: what a handful of declined cards could keep sold out. */
const FEW = product('talk-few', { price: 1_000_000 });
const FEW2 = product('talk-few2', { price: 1_000_000 });
const EMPTY = product('talk-empty');

const gateways: Gateway[] = [];
const open = async (over: Parameters<typeof gateway>[1]): Promise<Gateway> => {
  const g = await gateway(h, over);
  gateways.push(g);
  return g;
};

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [P, FEW, FEW2, EMPTY]);
  await mint(h, P, 20);
  await mint(h, FEW, 2);
  await mint(h, FEW2, 2);
});
afterEach(async () => {
  await setFaults(h, NO_FAULTS);
});
afterAll(async () => {
  for (const g of gateways) await g.close();
  await h?.stop();
});

/** A card the card company does not know: declined not_member. */
const stranger = (): Buyer => ({ card: cardNumber(), cardPin: '2468' });
const nonce = (): string => randomBytes(16).toString('hex');

interface BuyAnswer {
  status: number;
  retryAfter: string | null;
  text: string;
}

/** POST /buy as a browser would, from `from` (sent as X-Forwarded-For: the gateway trusts it when told to). */
async function buyPage(
  gw: Gateway,
  p: string,
  buyer: Buyer,
  opts: { nonce?: string; from?: string; pin?: string; session?: FormSession } = {},
): Promise<BuyAnswer> {
  // A browser's form: the page's cookie and the form token made from it (the page's CSRF defence).
  const session = opts.session ?? (await formSession(gw));
  const res = await fetch(`${baseOf(gw)}/buy`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      'sec-fetch-site': 'same-origin',
      cookie: session.cookie,
      ...(opts.from ? { 'x-forwarded-for': opts.from } : {}),
    },
    body: new URLSearchParams({
      form: session.token,
      product: p,
      pin: opts.pin ?? PIN,
      card: buyer.card,
      cardPin: buyer.cardPin,
      nonce: opts.nonce ?? nonce(),
    }).toString(),
  });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), text: await res.text() };
}

/** A buyer is told how long to wait in words, not pointed at a header. */
function expectWaitWords(r: BuyAnswer): void {
  expect(r.text).toMatch(
    /Too many purchases were started just now\. Please wait \d+ (seconds|minutes), then try again\./,
  );
  expect(r.text).not.toContain('Retry-After');
}

/** Every key in Redis but the catalog's (which the gateway may touch on its own). */
async function dataKeys(): Promise<string[]> {
  // Not the balance-event streams: every gateway's webhook worker creates them (XGROUP … MKSTREAM)
  // on its own schedule after it starts, whatever requests come, and one did so mid-test once.
  return (await h.r.keys('ts:{*')).filter((k) => !/^ts:\{b\d+\}:ev$/.test(k)).sort();
}

describe('nothing is written for a request that fails its checks', () => {
  it('unknown product, sold-out product, malformed card or card PIN: refused, Redis unchanged', async () => {
    const gw = await open({});
    const m = await addMember(h, 100_000_000);
    const before = await dataKeys();
    const cases: [Buyer & { product: string }, number, string][] = [
      [{ product: 'no-such-product', ...m }, 404, 'not on sale here'],
      [{ product: 'talk-empty', ...m }, 409, 'sold out'],
      // Not a card number by its length: malformed (400), like non-digits; only the card company declines (402).
      [
        { product: 'talk-b', card: '12345678', cardPin: m.cardPin },
        400,
        'Please enter the card number: 12 to 19 digits.',
      ],
      [
        { product: 'talk-b', card: '12345678901', cardPin: m.cardPin },
        400,
        'Please enter the card number: 12 to 19 digits.',
      ],
      [
        { product: 'talk-b', card: '1'.repeat(20), cardPin: m.cardPin },
        400,
        'Please enter the card number: 12 to 19 digits.',
      ],
      [{ product: 'talk-b', card: m.card, cardPin: 'x'.repeat(5000) }, 400, 'The card PIN must be 4 to 12 digits.'],
      [{ product: 'talk-b', card: m.card, cardPin: '' }, 400, 'The card PIN must be 4 to 12 digits.'],
    ];
    for (const [b, status, text] of cases) {
      const r = await buyPage(gw, b.product, b);
      expect(r.status).toBe(status);
      expect(r.text).toContain(text);
    }
    // The same checks on the sales API.
    const api = await http(gw, 'POST', '/v1/purchases', {
      token: await token(h, 'sales', 'shop-b'),
      idem: 'order-unknown-1',
      body: { product: 'no-such-product', pin: PIN, payment: { card: m.card, cardPin: m.cardPin } },
    });
    expect(api.status).toBe(404);
    expect(await dataKeys()).toEqual(before);
  });
});

describe('anonymous purchases are counted per client address and in total', () => {
  /** A gateway behind a trusted proxy (X-Forwarded-For gives the address) with these BUY_LIMIT_* in a 10-minute window. */
  const limited = (over: Partial<Config['buyLimit']>): Promise<Gateway> =>
    open({ trustProxy: true, buyLimit: { windowSec: 600, perClient: 100, perNetwork: 1000, total: 1000, ...over } });

  it('past BUY_LIMIT_PER_CLIENT one address gets 429 with Retry-After and adds nothing; a retry of a started purchase still answers', async () => {
    const gw = await limited({ perClient: 3 });
    const from = '198.51.100.7';
    const first = nonce();
    const card = stranger();
    expect((await buyPage(gw, 'talk-b', card, { from, nonce: first })).status).toBe(402);
    for (let i = 0; i < 2; i++) expect((await buyPage(gw, 'talk-b', stranger(), { from })).status).toBe(402);

    const before = await dataKeys();
    const refused = await buyPage(gw, 'talk-b', stranger(), { from });
    expect(refused.status).toBe(429);
    expectWaitWords(refused);
    expect(Number(refused.retryAfter)).toBeGreaterThan(0);
    expect(Number(refused.retryAfter)).toBeLessThanOrEqual(600);
    expect(await dataKeys()).toEqual(before);

    // The first purchase's form submitted again is not a new purchase: its answer, not a 429.
    const again = await buyPage(gw, 'talk-b', card, { from, nonce: first });
    expect(again.status).toBe(402);
    expect(again.text).toContain('The card company does not know this card holder');
    // Another address is counted on its own; an IPv6 client by its /64.
    expect((await buyPage(gw, 'talk-b', stranger(), { from: '198.51.100.8' })).status).toBe(402);
    for (let i = 0; i < 3; i++)
      expect((await buyPage(gw, 'talk-b', stranger(), { from: `2001:db8:1:2::${i + 1}` })).status).toBe(402);
    expect((await buyPage(gw, 'talk-b', stranger(), { from: '2001:db8:1:2:ffff::9' })).status).toBe(429);
  });

  it('a form sent twice at once (a double tap) is one purchase, counted once', async () => {
    const gw = await limited({ perClient: 2 });
    const from = '198.51.100.71';
    const tapped = nonce();
    const card = stranger();
    const taps = await Promise.all([1, 2].map(() => buyPage(gw, 'talk-b', card, { from, nonce: tapped })));
    expect(taps.map((t) => t.status)).not.toContain(429);
    // The address has one purchase of its two left.
    expect((await buyPage(gw, 'talk-b', stranger(), { from })).status).toBe(402);
    expect((await buyPage(gw, 'talk-b', stranger(), { from })).status).toBe(429);
  });

  it('a form sent twice at once to two gateways (behind a load balancer) is counted once', async () => {
    const gws = [await limited({ perClient: 3 }), await limited({ perClient: 3 })];
    const from = '198.51.100.72';
    const tapped = nonce();
    const card = stranger();
    // Each copy waits a moment between its count and its claim, as on a busy gateway: none finds the
    // purchase started, so every copy reaches the count.
    for (const g of gws) {
      const records = (g.purchases as unknown as { records: { claim: (...a: unknown[]) => Promise<unknown> } }).records;
      const claim = records.claim.bind(records);
      records.claim = async (...a) => (await sleep(200), claim(...a));
    }
    // One browser: its session (the secret is the gateways'), each copy sent at once to either gateway.
    const session = await formSession(gws[0]!);
    const taps = await Promise.all(
      [0, 1, 0, 1].map((i) => buyPage(gws[i]!, 'talk-b', card, { from, nonce: tapped, session })),
    );
    expect(taps.map((t) => t.status)).not.toContain(429);
    // The address has two purchases of its three left, whichever gateway it reaches.
    expect((await buyPage(gws[1]!, 'talk-b', stranger(), { from })).status).toBe(402);
    expect((await buyPage(gws[0]!, 'talk-b', stranger(), { from })).status).toBe(402);
    expect((await buyPage(gws[1]!, 'talk-b', stranger(), { from })).status).toBe(429);
  });

  it('a count that failed (Redis refused it) leaves nothing behind: the same form sent again is counted and answered', async () => {
    const gw = await limited({ perClient: 2 });
    const from = '198.51.100.81';
    const again = nonce();
    const card = stranger();
    await h.r.del(keys.buysTotal);
    await h.r.hset(keys.buysTotal, 'not', 'a count');
    try {
      expect((await buyPage(gw, 'talk-b', card, { from, nonce: again })).status).toBe(500);
    } finally {
      await h.r.del(keys.buysTotal);
    }
    expect((await buyPage(gw, 'talk-b', card, { from, nonce: again })).status).toBe(402);
  });

  it('a card number failing its check digit is refused at once: not counted, the card company not asked', async () => {
    const gw = await limited({ perClient: 2 });
    const from = '198.51.100.61';
    const before = await dataKeys();
    for (let i = 0; i < 5; i++) {
      const r = await buyPage(gw, 'talk-b', { card: '4000000000000011', cardPin: '1234' }, { from });
      expect(r.status).toBe(402);
      expect(r.text).toContain('The card number is not valid');
    }
    expect(await dataKeys()).toEqual(before);
    expect((await buyPage(gw, 'talk-b', stranger(), { from })).status).toBe(402);
  });

  it('past BUY_LIMIT_TOTAL every new address gets 429 and no per-address count is kept for it', async () => {
    const gw = await limited({ total: 4 });
    await h.r.del(keys.buysTotal);
    for (let i = 0; i < 4; i++)
      expect((await buyPage(gw, 'talk-b', stranger(), { from: `203.0.113.${i + 1}` })).status).toBe(402);
    const before = await dataKeys();
    for (let i = 0; i < 20; i++) {
      const r = await buyPage(gw, 'talk-b', stranger(), { from: `203.0.113.${i + 100}` });
      expect(r.status).toBe(429);
      expectWaitWords(r);
      expect(Number(r.retryAfter)).toBeGreaterThan(0);
    }
    expect(await dataKeys()).toEqual(before);
    await h.r.del(keys.buysTotal);
  });

  it('a declined purchase keeps its answer for PURCHASE_DECLINED_TTL_SEC, not a month', async () => {
    const gw = await open({ trustProxy: true });
    const before = new Set(await dataKeys());
    expect((await buyPage(gw, 'talk-b', stranger(), { from: '192.0.2.77' })).status).toBe(402);
    const added = (await dataKeys()).filter((k) => !before.has(k) && k.includes(':pur:'));
    expect(added).toHaveLength(1);
    const ttl = await h.r.ttl(added[0]!);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(h.cfg.purchaseDeclinedTtlSec);
    expect(h.cfg.purchaseDeclinedTtlSec).toBe(3600);
  });

  it('past BUY_LIMIT_PER_NETWORK the addresses of one /24 or /48 get 429; another network still buys', async () => {
    const gw = await limited({ perNetwork: 3 });
    for (const [net, other] of [
      ['198.18.5.', '198.18.6.1'],
      ['2001:db8:77:', '2001:db8:78::1'],
    ] as const) {
      const at = (host: number): string => (net.includes(':') ? `${net}${host}::1` : `${net}${host}`);
      for (let i = 1; i <= 3; i++) expect((await buyPage(gw, 'talk-b', stranger(), { from: at(i) })).status).toBe(402);
      const refused = await buyPage(gw, 'talk-b', stranger(), { from: at(200) });
      expect(refused.status).toBe(429);
      expectWaitWords(refused);
      expect((await buyPage(gw, 'talk-b', stranger(), { from: other })).status).toBe(402);
    }
  });

  it('networks are counted as an IPv4 /24 and an IPv6 /48', () => {
    expect(clientNetwork('192.0.2.77')).toBe('192.0.2.0/24');
    expect(clientNetwork('::ffff:192.0.2.77')).toBe('192.0.2.0/24');
    expect(clientNetwork('2001:db8:1:2::1')).toBe('2001:db8:1::/48');
    expect(clientNetwork('2001:db8:1:ffff:1:2:3:4')).toBe('2001:db8:1::/48');
    expect(clientNetwork('not an address')).toBe('not an address');
    // As a proxy may write them: brackets and ports are no part of the client.
    expect(clientGroup('192.0.2.1:5555')).toBe('192.0.2.1');
    expect(clientGroup('[::ffff:192.0.2.1]')).toBe('192.0.2.1');
    expect(clientGroup('[2001:db8:1:2::1]:443')).toBe('2001:db8:1:2::/64');
    expect(clientNetwork('[2001:db8:1:2::1]:443')).toBe('2001:db8:1::/48');
    expect(clientNetwork('198.51.100.7:80')).toBe('198.51.100.0/24');
  });

  it('clients are grouped as counted: IPv4 as is, IPv4-mapped as IPv4, IPv6 by /64', () => {
    expect(clientGroup('192.0.2.1')).toBe('192.0.2.1');
    expect(clientGroup('::ffff:192.0.2.1')).toBe('192.0.2.1');
    expect(clientGroup('0000:0000:0000:0000:0000:ffff:c000:0201')).toBe('192.0.2.1');
    expect(clientGroup('2001:db8:1:2::1')).toBe('2001:db8:1:2::/64');
    expect(clientGroup('2001:0DB8:0001:0002:ffff:0:0:9')).toBe('2001:db8:1:2::/64');
    expect(clientGroup('::1')).toBe('0:0:0:0::/64');
  });
});

describe('declined cards hold no stock', () => {
  it('a real buyer gets an ID while a flood of declined cards runs against the last two', async () => {
    const gw = await open({ buyLimit: { windowSec: 600, perClient: 100_000, perNetwork: 100_000, total: 100_000 } });
    // The card company takes its time: every declined card is at the card company for a while.
    await setFaults(h, { latencyMs: 200 });
    let running = true;
    let declined = 0;
    const flood = Array.from({ length: 8 }, async () => {
      while (running) {
        const r = await buyPage(gw, 'talk-few', stranger());
        if (r.status !== 402) throw new Error(`flood: HTTP ${r.status}`);
        declined++;
      }
    });
    try {
      await until(() => declined >= 16, 30_000, 20, 'the flood to run');
      const buyer = await addMember(h, 100_000_000);
      const r = await buyPage(gw, 'talk-few', buyer);
      expect(r.status).toBe(200);
      expect(r.text).toContain('Your number');
      expect(await stock(h, 'talk-few')).toBe(1);
    } finally {
      running = false;
      await Promise.all(flood);
    }
    expect(await stock(h, 'talk-few')).toBe(1);
  });

  it('declined cards whose answer was lost hold nothing either: the next buyer gets an ID', async () => {
    const gw = await open({
      provider: { ...h.cfg.provider, timeoutMs: 300 },
      buyLimit: { windowSec: 600, perClient: 100_000, perNetwork: 100_000, total: 100_000 },
    });
    await setFaults(h, { hangNext: 3 });
    for (let i = 0; i < 3; i++) expect((await buyPage(gw, 'talk-few2', stranger())).status).toBe(503);
    expect(await stock(h, 'talk-few2')).toBe(2);
    const buyer = await addMember(h, 100_000_000);
    expect((await buyPage(gw, 'talk-few2', buyer)).status).toBe(200);
    expect(await stock(h, 'talk-few2')).toBe(1);
  });
});

/**
 * Model-based fuzzer of sales and an ID's money life outside calls and scans,
 * written from docs/sales.md and docs/operations.md (not from the code): random
 * operations per seed against two gateways on one Redis, over real HTTP, with
 * the sandbox card company behind a proxy that fails, hangs, delays or queues
 * the calls it is told to (test/support/faulty-provider.ts). Purchases (API and
 * buy page), Idempotency-Key retries on either gateway and on both at once, the
 * same key with another body, clients that hang up, the last IDs bought at
 * once, abandoned purchases and recharges, hold and refund-void sweeps, hand
 * sales, operator, voucher and card top-ups, refunds, blocks, repricing, check
 * links with right and wrong PINs; each answer is checked against the model, and
 * at each seed's end: the audit, the export (NDJSON and CSV, windows), the
 * lookup, the inventory and holds, the webhooks' top-up events, and the card
 * company's books (every payment it kept is a recorded sale or recharge).
 *
 * Seeds replay their operations (outcomes that race, like a client hanging up
 * mid-purchase, may differ run to run; the model accepts every documented one).
 * SALES_FUZZ_SEEDS=1,2,3 and SALES_FUZZ_STEPS=60 by default; SALES_FUZZ_LOG=DIR
 * writes each seed's operations there; SALES_FUZZ_BUY_LIMIT,
 * SALES_FUZZ_NET_BUDGET and SALES_FUZZ_CHECK_WEIGHT reach the limits sooner.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import type { Product } from '../../src/catalog/schema';
import { keys } from '../../src/redis/keys';
import { putProducts } from '../../src/catalog/store';
import { sweepRefundVoids } from '../../src/sales/admin';
import { HttpProvider } from '../../src/sales/provider';
import { sweepLateAuthorizations } from '../../src/sales/payment-record';
import { gateway, mint, seedCatalog, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { http, formSession, postPageForm, type FormSession, type Res } from '../support/http';
import { runCliIn } from '../support/cli';
import { hashOf } from '../support/redis';
import { Receiver } from '../support/receiver';
import { FaultyProvider } from '../support/faulty-provider';
import { until } from '../support/wait';
import { random } from '../support/random';
import { addMember, fieldOf, inventoryHashes, purchaseRef, reservations, type Buyer } from '../sales/fixtures';

const SEEDS = (process.env.SALES_FUZZ_SEEDS ?? '1,2,3').split(',').map(Number);
const STEPS = Number(process.env.SALES_FUZZ_STEPS ?? 60);
const TIMEOUT_MS = 300;
const HOLD_MS = 600_000;
const QUEUED_MS = 1500;
/** BUY_LIMIT_PER_CLIENT: new card payments one address may start in the (long) window. */
const BUY_LIMIT = Number(process.env.SALES_FUZZ_BUY_LIMIT ?? 1000);
const ABANDON_MS = 1_800_000;
/** PIN tries the fuzzer's network (127.0.0.0/24) may make: low enough to be reached in a long seed. */
const NET_BUDGET = Number(process.env.SALES_FUZZ_NET_BUDGET ?? 40);

/** RFC 4180 CSV: quoted fields may hold commas, quotes (doubled) and line ends. */
/** `amount` credited to `m`: its balance, and the top-up its records will show. */
function credit(m: ModelId, amount: number): void {
  m.bal += amount;
  m.topups.push(amount);
}

/** Voucher `v` spent into `t`: all of its face goes to `t`. */
function spend(v: ModelId, t: ModelId): void {
  v.into = t.id;
  v.bal = 0;
  credit(t, v.face);
}

function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let f = '';
  let q = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (q) {
      if (c === '"' && text[i + 1] === '"') {
        f += '"';
        i++;
      } else if (c === '"') q = false;
      else f += c;
    } else if (c === '"') q = true;
    else if (c === ',') {
      row.push(f);
      f = '';
    } else if (c === '\n' || (c === '\r' && text[i + 1] === '\n')) {
      if (c === '\r') i++;
      row.push(f);
      rows.push(row);
      row = [];
      f = '';
    } else f += c;
  }
  if (f !== '' || row.length) rows.push([...row, f]);
  return rows;
}

interface ModelId {
  id: string;
  product: string;
  face: number;
  /** how it was sold: by a purchase key, or by hand */
  key?: string;
  hand?: boolean;
  state: 'sold' | 'blocked' | 'refunded';
  /** a recharge voucher: the ID it went into */
  voucher?: boolean;
  into?: string;
  /** state before a block */
  prev?: 'sold';
  bal: number;
  topups: number[];
  pin?: string;
  checkPath?: string;
  pinFails: number;
  lockedUntil: number;
  price: number;
}

interface ModelKey {
  key: string;
  body: { product: string; pin: string; payment: Buyer };
  /** done: sold; declined: final refusal; open: unknown outcome */
  st: 'done' | 'declined' | 'open';
  /** the price fixed when it was claimed */
  price?: number;
  id?: string;
  reason?: string;
  member: string;
  /** the buy page's nonce: the key is `web/<nonce>` of the page's own channel */
  web?: string;
  /** refused before it was claimed (out of stock at the check): the key is still unused */
  unclaimed?: boolean;
}

describe('sales model fuzzer', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  for (const seed of SEEDS) {
    it(`seed ${seed}`, { timeout: 240_000 }, async () => {
      const rand = random(seed).next;
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
      const chance = (p: number): boolean => rand() < p;
      const log: string[] = [];
      const note = (s: string): void => void log.push(s);

      const h: Harness = await startHarness({
        BUY_LIMIT_PER_CLIENT: String(BUY_LIMIT),
        PIN_MAX_TRIES_PER_CLIENT: '12',
        PIN_MAX_TRIES_PER_NETWORK: String(NET_BUDGET),
      });
      cleanups.push(() => h.stop());
      const proxy = new FaultyProvider(h.cfg.provider.url!, TIMEOUT_MS, QUEUED_MS);
      const url = await proxy.listen();
      cleanups.push(() => proxy.close());
      const hooks = await Receiver.start();
      cleanups.push(() => hooks.close());
      const webhooks = [{ url: hooks.url, events: ['topup' as const], secret: 'fz-secret-0123456789' }];
      const products: Product[] = [
        talkProduct({
          name: 'tk-a',
          face: 2_500_000,
          price: 3_000_000,
          topupAmounts: [1_000_000, 2_000_000],
          webhooks,
        }),
        talkProduct({ name: 'tk-b', face: 1_000_000, price: 1_500_000, webShop: false, webhooks }),
        { name: 'vch', kind: 'recharge', currency: 'EUR', price: 2_000_000, face: 2_000_000, into: [] },
      ];
      await seedCatalog(h, products);
      const inventory = new Map<string, Set<string>>();
      for (const p of products) inventory.set(p.name, new Set(await mint(h, p, 2 + Math.floor(rand() * 4))));
      const over = {
        provider: { ...h.cfg.provider, url, timeoutMs: TIMEOUT_MS },
        holdMs: HOLD_MS,
        abandonAfterMs: ABANDON_MS,
      };
      const gws: Gateway[] = [await gateway(h, over), await gateway(h, over)];
      for (const g of gws) cleanups.unshift(() => g.close());
      const SALES = 'shop-fz';
      const salesTok = await token(h, 'sales', SALES);
      const adminTok = await token(h, 'admin', 'ops-fz');
      const rich = await addMember(h, 1_000_000_000, '2468');
      const poor = await addMember(h, 2_000_000, '1357');
      const members = { rich, poor };
      const used = { rich: 0, poor: 0 };
      const ids = new Map<string, ModelId>();
      const pkeys: ModelKey[] = [];
      let wrongFromAddress = 0;
      /** new card payments of anonymous clients (buy page, check page recharges) in the window */
      let paymentsCounted = 0;
      let netTries = 0;
      const blockedUnsold = new Map<string, string>();
      /** refunded IDs whose void got no answer: the money is still with the card company */
      const unvoided = new Set<ModelId>();
      const provider = new HttpProvider(url, TIMEOUT_MS);
      const ADDRESS_BUDGET = 12;
      let nKey = 0;
      const gw = (): Gateway => pick(gws);
      /** Free text an operator may type: commas, quotes, line ends, formula starts, other scripts. */
      const text = (): string =>
        pick([
          'fz',
          'a, b',
          'say "no"',
          'two\nlines',
          '=1+2',
          '-3',
          '+x',
          '@sum',
          '\tx',
          '-4500000',
          'Ünïcødé ✓',
          "it's",
          ' ',
          'x\r\ny',
        ]);
      const priceOf = (name: string): number => products.find((p) => p.name === name)!.price;
      const faceOf = (name: string): number => (products.find((p) => p.name === name) as { face: number }).face;
      const fail = (what: string, r: Res | { status: number; json?: unknown }): never => {
        if (process.env.SALES_FUZZ_LOG) writeFileSync(`${process.env.SALES_FUZZ_LOG}/seed-${seed}.log`, log.join('\n'));
        throw new Error(
          `seed ${seed}: ${what}: got ${r.status} ${JSON.stringify(r.json)}\n--- log\n${log.slice(-30).join('\n')}`,
        );
      };
      const purchase = async (g: Gateway, k: ModelKey, signal?: AbortSignal): Promise<Res> =>
        k.web
          ? webAnswer(
              await postPageForm(g, '/buy', {
                product: k.body.product,
                pin: k.body.pin,
                card: k.body.payment.card,
                cardPin: k.body.payment.cardPin,
                nonce: k.web,
              }),
              k.body.product,
            )
          : signal
            ? fetch(`http://127.0.0.1:${g.port}/v1/purchases`, {
                method: 'POST',
                signal,
                headers: {
                  authorization: `Bearer ${salesTok}`,
                  'content-type': 'application/json',
                  'idempotency-key': k.key,
                },
                body: JSON.stringify(k.body),
              }).then(async (r) => ({
                status: r.status,
                json: await r.json(),
                text: '',
                type: null,
                headers: r.headers,
              }))
            : http(g, 'POST', '/v1/purchases', { token: salesTok, idem: k.key, body: k.body });

      /** Books a purchase's answer into the model; `fresh`: the key was not finished before. */
      const book = (k: ModelKey, r: Res, where: string): void => {
        note(
          `${where} ${k.key} ${k.body.product} -> ${r.status} ${r.json?.error?.reason ?? r.json?.id ?? ''} ${proxy.take().join(',')}`,
        );
        if (k.unclaimed) {
          k.unclaimed = false;
          k.st = 'open';
        }
        const limited = r.status === 429 && r.json?.error?.reason === 'too_many_purchases';
        const unclaimedNow =
          limited ||
          (r.status === 409 && r.json?.error?.reason === 'out_of_stock' && !h.sandbox.payments.has(refOf(k)));
        if (limited && (!k.web || k.price !== undefined || paymentsCounted < BUY_LIMIT))
          fail(`${where}: too many purchases after ${paymentsCounted}`, r);
        if (k.st === 'open' && k.price === undefined && !unclaimedNow) {
          k.price = priceOf(k.body.product);
          // A new card payment of the buy page counts against the address, once however often it is sent.
          if (k.web && paymentsCounted++ >= BUY_LIMIT) fail(`${where}: a payment past the limit was taken`, r);
        }
        if (limited) {
          k.st = 'declined';
          k.reason = 'too_many_purchases';
          k.unclaimed = true;
          return;
        }
        if (k.st === 'done') {
          if (r.status !== 200 || r.json.id !== k.id) fail(`${where}: a finished purchase answers its ID again`, r);
          return;
        }
        if (k.st === 'declined') {
          if (r.status === 200 || r.json?.error?.reason !== k.reason) fail(`${where}: a decline answers again`, r);
          return;
        }
        if (r.status === 200) {
          const inv = inventory.get(k.body.product)!;
          if (!inv.has(r.json.id)) fail(`${where}: sold an ID not in ${k.body.product}'s inventory`, r);
          if (r.json.price !== k.price || r.json.product !== k.body.product) fail(`${where}: answer`, r);
          inv.delete(r.json.id);
          k.st = 'done';
          k.id = r.json.id;
          used[k.member as 'rich'] += k.price!;
          ids.set(r.json.id, {
            id: r.json.id,
            product: k.body.product,
            face: faceOf(k.body.product),
            key: k.key,
            voucher: k.body.product === 'vch',
            state: 'sold',
            bal: faceOf(k.body.product),
            topups: [],
            pin: k.body.pin,
            checkPath: new URL(r.json.checkUrl).pathname,
            pinFails: 0,
            lockedUntil: 0,
            price: k.price!,
          });
          return;
        }
        const reason = r.json?.error?.reason;
        if (r.status === 503 && reason === 'payment_pending') return;
        if (r.status === 409 && reason === 'in_progress') return;
        if (r.status === 409 && reason === 'out_of_stock') {
          // Out of stock at the check writes nothing (the key stays unused); after the authorization it is final.
          k.st = 'declined';
          k.reason = reason;
          k.unclaimed = !h.sandbox.payments.has(refOf(k));
          return;
          k.reason = reason;
          return;
        }
        if (r.status === 402) {
          if (reason === 'insufficient_funds' && !(k.member === 'poor')) fail(`${where}: rich member refused`, r);
          if (reason === 'wrong_card_pin' && k.body.payment.cardPin === members[k.member as 'rich'].cardPin)
            fail(`${where}: right card PIN refused`, r);
          k.st = 'declined';
          k.reason = reason;
          return;
        }
        fail(`${where}: unexpected answer`, r);
      };

      /** A buy page's answer as the purchase API's: the page's statuses are the API's, the ID is on a 200 page. */
      const webAnswer = (r: Res, product: string): Res => {
        const id = /id="id-number">([0-9 ]+)</.exec(r.text)?.[1]?.replace(/ /g, '');
        const check = /href="([^"]*\/check\/[^"]+)"/.exec(r.text)?.[1];
        const alert = /role="alert">([^<]*)</.exec(r.text)?.[1] ?? '';
        const reason =
          r.status === 402
            ? /Not enough credit/.test(alert)
              ? 'insufficient_funds'
              : /card PIN/i.test(alert)
                ? 'wrong_card_pin'
                : `declined: ${alert}`
            : r.status === 409
              ? 'out_of_stock'
              : r.status === 503
                ? 'payment_pending'
                : r.status === 404
                  ? 'unknown_product'
                  : r.status === 422
                    ? 'idempotency_conflict'
                    : r.status === 429
                      ? 'too_many_purchases'
                      : undefined;
        if (r.status === 200 && (!check || !id)) fail('buy page: no ID or check link', r);
        const shown = /: (\d+)\.(\d\d) EUR</.exec(r.text);
        const price = shown ? Number(shown[1]) * 1_000_000 + Number(shown[2]) * 10_000 : NaN;
        return {
          ...r,
          json:
            r.status === 200
              ? { id, checkUrl: new URL(check!, 'http://x').href, price, product }
              : { error: { reason } },
        };
      };
      const refOf = (k: ModelKey): string => (k.web ? purchaseRef(h, 'web', k.web) : purchaseRef(h, SALES, k.key));

      interface ModelRecharge {
        m: ModelId;
        member: 'rich' | 'poor';
        form: { nonce: string; amount: string; card: string; cardPin: string };
        grant?: string;
        session?: FormSession;
        st: 'open' | 'done' | 'declined';
        /** counted against the buy limit (it got past the checks that write nothing) */
        counted?: boolean;
      }
      const openRecharges: ModelRecharge[] = [];
      const bookRecharge = (rc: ModelRecharge, r: Res, where: string): void => {
        const m = rc.m;
        const amount = Number(rc.form.amount);
        const alert = r.status === 200 ? '' : (/role="alert">([^<]*)</.exec(r.text)?.[1] ?? '');
        note(
          `${where} ${m.id} ${amount} ${rc.member} (${m.state} ${m.bal}) -> ${r.status} ${alert} ${proxy.take().join(',')}`,
        );
        const refusedFirst =
          r.status === 400 ||
          r.status === 403 ||
          (r.status === 409 && /refunded/i.test(r.text)) ||
          (r.status === 422 && !/already used/i.test(r.text));
        if (r.status === 429) {
          if (rc.counted || paymentsCounted < BUY_LIMIT)
            fail(`${where}: too many purchases after ${paymentsCounted}`, r);
          rc.st = 'declined';
          openRecharges.splice(openRecharges.indexOf(rc), 1);
          return;
        }
        if (!rc.counted && !refusedFirst) {
          rc.counted = true;
          if (paymentsCounted++ >= BUY_LIMIT) fail(`${where}: a recharge past the limit was taken`, r);
        }
        if (r.status === 200) {
          if (rc.st === 'done') return;
          if (m.state !== 'sold') fail('recharge credited a blocked or refunded ID', r);
          rc.st = 'done';
          openRecharges.splice(openRecharges.indexOf(rc), 1);
          credit(m, amount);
          used[rc.member] += amount;
          return;
        }
        if (rc.st === 'done') fail('a recharge done answers again', r);
        if (r.status === 503) return;
        if (r.status === 409 && /in progress|being processed/i.test(r.text)) return;
        if (r.status === 402 || r.status === 403 || r.status === 409 || r.status === 422) {
          if (r.status === 422 && m.bal + amount <= 10 * m.face && m.state === 'sold' && !/already used/i.test(r.text))
            fail('recharge refused under the limit', r);
          if (r.status === 402 && rc.member === 'rich' && /Not enough credit/.test(r.text))
            fail('rich member refused', r);
          rc.st = 'declined';
          openRecharges.splice(openRecharges.indexOf(rc), 1);
          return;
        }
        fail(`${where}: unexpected`, r);
      };

      /** A voucher redeemed on the target's check page, its page answered as the voucher API's. */
      const voucherOnPage = async (t: ModelId, v: ModelId): Promise<Res> => {
        const g = gw();
        const s = await formSession(g, t.checkPath);
        const page = await postPageForm(g, t.checkPath!, { pin: t.pin! }, s);
        if (page.status !== 200) fail('check page for a voucher', page);
        const r = await postPageForm(
          g,
          `${t.checkPath}/voucher`,
          { grant: fieldOf(page.text, 'grant'), voucher: v.id },
          s,
        );
        const alert = /role="alert">([^<]*)</.exec(r.text)?.[1] ?? '';
        const reason =
          r.status === 403
            ? 'blocked'
            : r.status === 422
              ? 'topup_limit'
              : r.status === 409
                ? /already been used/.test(alert)
                  ? 'already_redeemed'
                  : 'refunded'
                : `page ${r.status}: ${alert}`;
        if (r.status !== 200) return { ...r, json: { error: { reason } } };
        const again = /Already redeemed/.test(r.text);
        return { ...r, json: { duplicate: again, amount: v.face, balance: again ? undefined : t.bal + v.face } };
      };

      const newKey = (): ModelKey => {
        const member = chance(0.25) ? 'poor' : 'rich';
        const m = members[member];
        const cardPin = chance(0.1) ? '9999' : m.cardPin;
        const k: ModelKey = {
          key: `fzkey-${seed}-${++nKey}`,
          body: {
            product: pick(products).name,
            pin: String(1000 + Math.floor(rand() * 9000)),
            payment: { card: m.card, cardPin },
          },
          st: 'open',
          member,
        };
        pkeys.push(k);
        return k;
      };
      const openKeys = (): ModelKey[] => pkeys.filter((k) => k.st === 'open');
      const anyKey = (): ModelKey | undefined => (pkeys.length ? pick(pkeys) : undefined);
      const liveIds = (): ModelId[] => [...ids.values()];

      const ops: Array<[number, string, () => Promise<void>]> = [
        [
          6,
          'buy',
          async () => {
            const k = newKey();
            book(k, await purchase(gw(), k), 'buy');
          },
        ],
        [
          3,
          'buy-fault',
          async () => {
            const k = newKey();
            const kind = pick(['authorize', 'capture'] as const);
            proxy.add(
              kind,
              pick(
                kind === 'authorize'
                  ? (['hang', 'fail', 'slow', 'late', 'queued'] as const)
                  : (['hang', 'fail', 'slow', 'late', 'garble', 'overcharge'] as const),
              ),
            );
            book(k, await purchase(gw(), k), 'buy-fault');
            proxy.clear();
          },
        ],
        [
          4,
          'retry',
          async () => {
            const k = chance(0.7) && openKeys().length ? pick(openKeys()) : anyKey();
            if (!k) return;
            if (chance(0.3))
              proxy.add(
                pick(['payments', 'authorize', 'capture', 'void']),
                pick(['hang', 'fail', 'late', 'garble'] as const),
              );
            book(k, await purchase(gw(), k), 'retry');
            proxy.clear();
          },
        ],
        [
          2,
          'retry-both-gateways',
          async () => {
            const k = anyKey();
            if (!k) return;
            const [a, b] = await Promise.all([purchase(gws[0]!, k), purchase(gws[1]!, k)]);
            if (a.status === 200 && b.status === 200 && a.json.id !== b.json.id) fail('two gateways sold two IDs', b);
            const wasOpen = k.st === 'open' || k.unclaimed;
            book(k, a, 'retry-A');
            // Both ran at once: the one that found the other at work says so, whatever the other ended with.
            if (wasOpen && b.status === 409 && b.json?.error?.reason === 'in_progress') note('retry-B in_progress');
            else book(k, b, 'retry-B');
          },
        ],
        [
          2,
          'retry-other-body',
          async () => {
            const k = anyKey();
            if (!k || k.unclaimed || !(k.st !== 'open' || h.sandbox.payments.has(refOf(k)))) return;
            const other: ModelKey = { ...k, body: { ...k.body, pin: k.body.pin === '1111' ? '2222' : '1111' } };
            const r = await purchase(gw(), other);
            note(`other-body ${k.key} -> ${r.status} ${r.json?.error?.reason}`);
            if (r.status !== 422 || r.json.error.reason !== 'idempotency_conflict') fail('same key, another body', r);
          },
        ],
        [
          2,
          'hang-up',
          async () => {
            // The client gives up while the card company is slow: the purchase carries on or stops.
            const k = newKey();
            proxy.add(pick(['authorize', 'capture']), 'slow');
            const ac = new AbortController();
            const p = purchase(gw(), k, ac.signal).catch(() => undefined);
            await new Promise((r) => setTimeout(r, Math.floor(rand() * TIMEOUT_MS)));
            ac.abort();
            const r = await p;
            proxy.clear();
            if (r) book(k, r, 'hang-up(answered)');
            else note(`hang-up ${k.key}`);
            // The attempt goes on without its client: the retry finds it at work until it ends.
            for (let i = 0; i < 100 && k.st === 'open'; i++) {
              const again = await purchase(gw(), k);
              if (again.status === 409 && again.json?.error?.reason === 'in_progress') {
                await new Promise((res) => setTimeout(res, 20));
                continue;
              }
              book(k, again, 'hang-up retry');
              break;
            }
          },
        ],
        [
          2,
          'race-last',
          async () => {
            // Buyers more than the stock of a product at once, on both gateways.
            const name = pick(products).name;
            const n = inventory.get(name)!.size + 1;
            const ks = Array.from({ length: Math.min(n, 4) }, () => {
              const k = newKey();
              k.body.product = name;
              k.member = 'rich';
              k.body.payment = { ...rich };
              return k;
            });
            const rs = await Promise.all(ks.map((k, i) => purchase(gws[i % 2]!, k)));
            ks.forEach((k, i) => book(k, rs[i]!, 'race'));
          },
        ],
        [
          2,
          'hand-sale',
          async () => {
            const name = pick(products).name;
            const inv = inventory.get(name)!;
            if (!inv.size) return;
            const id = pick([...inv]);
            const price = Math.floor(rand() * 3) * 500_000;
            const r = await http(gw(), 'POST', `/v1/admin/ids/${id}/activate`, { token: adminTok, body: { price } });
            note(`hand-sale ${id} -> ${r.status} ${r.json?.error?.reason ?? ''}`);
            // Any minted ID, held by a purchase or not (that purchase then sells another).
            if (r.status !== 200) fail('hand sale', r);
            inv.delete(id);
            ids.set(id, {
              id,
              product: name,
              face: faceOf(name),
              hand: true,
              voucher: name === 'vch',
              state: 'sold',
              bal: faceOf(name),
              topups: [],
              pinFails: 0,
              lockedUntil: 0,
              price,
            });
          },
        ],
        [
          3,
          'topup',
          async () => {
            const m = liveIds().length ? pick(liveIds()) : undefined;
            if (!m) return;
            const amount = pick([500_000, 1_000_000, 20_000_000]);
            const idem = `tu-${seed}-${Math.floor(rand() * 1e9)}`;
            const r = await http(gw(), 'POST', `/v1/admin/ids/${m.id}/topup`, {
              token: adminTok,
              idem,
              body: { amount, note: text() },
            });
            note(`topup ${m.id} ${amount} -> ${r.status} ${r.json?.error?.reason ?? r.json?.balance}`);
            if (m.voucher) {
              if (!['wrong_kind', 'blocked', 'refunded'].includes(r.json?.error?.reason)) fail('topup of a voucher', r);
              return;
            }
            const want =
              m.state === 'refunded'
                ? 'refunded'
                : m.state === 'blocked'
                  ? 'blocked'
                  : m.bal + amount > 10 * m.face
                    ? 'topup_limit'
                    : undefined;
            if (want) {
              if (r.json?.error?.reason !== want) fail(`topup: expected ${want}`, r);
              return;
            }
            if (r.status !== 200 || r.json.balance !== m.bal + amount) fail('topup', r);
            credit(m, amount);
            if (chance(0.3)) {
              const again = await http(gw(), 'POST', `/v1/admin/ids/${m.id}/topup`, {
                token: adminTok,
                idem,
                body: { amount },
              });
              if (again.status !== 200 || !again.json.duplicate || again.json.balance !== m.bal)
                fail('topup repeat', again);
            }
          },
        ],
        [
          2,
          'block',
          async () => {
            const cand = liveIds().filter((m) => m.state === 'sold');
            if (!cand.length) return;
            const m = pick(cand);
            const r = await http(gw(), 'POST', `/v1/admin/ids/${m.id}/block`, {
              token: adminTok,
              body: { reason: 'lost' },
            });
            note(`block ${m.id} -> ${r.status}`);
            if (r.status !== 200 || r.json.state !== 'blocked') fail('block', r);
            m.prev = 'sold';
            m.state = 'blocked';
          },
        ],
        [
          2,
          'unblock',
          async () => {
            const cand = liveIds().filter((m) => m.state !== 'sold');
            if (!cand.length) return;
            const m = pick(cand);
            const r = await http(gw(), 'POST', `/v1/admin/ids/${m.id}/unblock`, { token: adminTok });
            note(`unblock ${m.id} (${m.state}) -> ${r.status} ${JSON.stringify(r.json)}`);
            if (m.state === 'refunded') {
              if (r.status === 200) fail('a refunded ID was unblocked', r);
              return;
            }
            if (r.status !== 200 || r.json.state !== (m.into ? 'exhausted' : 'sold')) fail('unblock', r);
            m.state = 'sold';
          },
        ],
        [
          2,
          'refund',
          async () => {
            const m = liveIds().length ? pick(liveIds()) : undefined;
            if (!m) return;
            const r = await http(gw(), 'POST', `/v1/admin/sales/${m.id}/refund`, {
              token: adminTok,
              body: { reason: text() },
            });
            note(`refund ${m.id} (${m.state}, topups ${m.topups.length}) -> ${r.status} ${JSON.stringify(r.json)}`);
            if (m.state === 'refunded') {
              if (r.status !== 200 || !r.json.duplicate) fail('refund again', r);
              if (unvoided.has(m) && r.json.provider === 'voided') {
                used[pkeys.find((k) => k.key === m.key)!.member as 'rich'] -= m.price;
                unvoided.delete(m);
              }
              return;
            }
            if (m.topups.length) {
              if (r.json?.error?.reason !== 'recharged') fail('refund of a recharged ID', r);
              return;
            }
            if (m.into) {
              if (r.json?.error?.reason !== 'already_used') fail('refund of a redeemed voucher', r);
              return;
            }
            if (r.status !== 200 || r.json.refunded !== m.bal || r.json.duplicate) fail('refund', r);
            const want = m.hand ? 'not_paid_through_a_provider' : 'voided';
            if (r.json.provider !== want) fail(`refund provider ${want}`, r);
            if (!m.hand && !m.key) throw new Error('unreachable');
            if (!m.hand) used[pkeys.find((k) => k.key === m.key)!.member as 'rich'] -= m.price;
            m.state = 'refunded';
            m.bal = 0;
          },
        ],
        [
          Number(process.env.SALES_FUZZ_CHECK_WEIGHT ?? 3),
          'check',
          async () => {
            const cand = liveIds().filter((m) => m.checkPath);
            if (!cand.length) return;
            const m = pick(cand);
            const right = chance(0.4);
            const pin = right ? m.pin! : m.pin === '0000' ? '0001' : '0000';
            const s: FormSession = await formSession(gw(), m.checkPath);
            const r = await postPageForm(gw(), m.checkPath!, { pin }, s);
            note(
              `check ${m.id} ${right ? 'right' : 'wrong'} fails=${m.pinFails} addr=${wrongFromAddress} net=${netTries} -> ${r.status}`,
            );
            const addressLocked = wrongFromAddress >= ADDRESS_BUDGET || netTries >= NET_BUDGET;
            const linkLocked = m.pinFails >= 5;
            if (addressLocked || linkLocked) {
              if (r.status !== 429) fail('locked check link', r);
              // A try on a locked link still counts against its address and network, right PIN or not.
              if (!addressLocked) {
                wrongFromAddress++;
                netTries++;
              }
              return;
            }
            // A right PIN gives its network's count back (src/sales/check.ts; the docs say every try counts).
            if (!right) netTries++;
            if (right) {
              if (r.status !== 200 || !r.text.includes(m.id.replace(/(\d{4})(?=\d)/g, '$1 '))) fail('right PIN', r);
              const words =
                m.state === 'refunded' ? 'Refunded' : m.state === 'blocked' ? 'Blocked' : m.into ? 'Used up' : 'Active';
              if (!r.text.includes(words)) fail(`check page: state ${words}`, r);
              m.pinFails = 0;
              return;
            }
            m.pinFails++;
            wrongFromAddress++;
            // The wrong PIN that uses up the link's tries locks it at once.
            if (m.pinFails >= 5) {
              if (r.status !== 429) fail('the last wrong PIN locks the link', r);
              return;
            }
            if (r.status !== 403) fail('wrong PIN', r);
            const linkLeft = 5 - m.pinFails;
            const addrLeft = ADDRESS_BUDGET - wrongFromAddress;
            if (linkLeft > 0 && addrLeft > 0) {
              const n = Math.min(linkLeft, addrLeft);
              const said = /(\d+|One) more wrong PINs?/.exec(r.text)?.[1];
              const saidN = said === 'One' ? 1 : Number(said);
              if (saidN !== n) fail(`wrong PIN count: said ${said}, expected ${n}`, r);
            }
          },
        ],
        [
          3,
          'card-recharge',
          async () => {
            const cand = liveIds().filter((m) => m.checkPath && m.product === 'tk-a' && m.pinFails < 5);
            if (!cand.length || wrongFromAddress >= ADDRESS_BUDGET || netTries >= NET_BUDGET) return;
            const m = pick(cand);
            let rc = chance(0.5) && openRecharges.length ? pick(openRecharges) : undefined;
            if (rc && rc.m !== m) rc = undefined;
            const g = gw();
            const s = await formSession(g, m.checkPath);
            const page = await postPageForm(g, m.checkPath!, { pin: m.pin! }, s);
            if (page.status !== 200) fail('check page for a recharge', page);
            m.pinFails = 0;
            if (!page.text.includes('Recharge this ID')) {
              if (m.state === 'sold') fail('no recharge form on an active ID', page);
              return;
            }
            const member = chance(0.25) ? 'poor' : 'rich';
            rc ??= {
              m,
              member,
              form: {
                nonce: fieldOf(page.text, 'nonce'),
                amount: pick(['1000000', '2000000']),
                card: members[member].card,
                cardPin: members[member].cardPin,
              },
              st: 'open',
            };
            if (!openRecharges.includes(rc)) openRecharges.push(rc);
            if (chance(0.4))
              proxy.add(pick(['authorize', 'capture', 'payments']), pick(['hang', 'fail', 'late'] as const));
            rc.grant = fieldOf(page.text, 'grant');
            rc.session = s;
            const r = await postPageForm(g, `${m.checkPath}/recharge`, { grant: rc.grant, ...rc.form }, s);
            bookRecharge(rc, r, 'card-recharge');
            proxy.clear();
          },
        ],
        [
          3,
          'concurrent',
          async () => {
            const talk = liveIds().filter((m) => !m.voucher);
            const fresh = talk.filter(
              (m) => m.state === 'sold' && !m.topups.length && m.bal + 2_000_000 <= 10 * m.face,
            );
            const vouchers = liveIds().filter((m) => m.voucher && m.state === 'sold' && !m.into);
            const kind = pick([
              'refund-refund',
              'topup-topup',
              'voucher-two',
              'refund-topup',
              'refund-voucher',
            ] as const);
            const [a, b] = [gws[0]!, gws[1]!];
            const refund = (g: Gateway, m: ModelId): Promise<Res> =>
              http(g, 'POST', `/v1/admin/sales/${m.id}/refund`, { token: adminTok, body: { reason: text() } });
            const topup = (g: Gateway, m: ModelId, idem: string, amount: number): Promise<Res> =>
              http(g, 'POST', `/v1/admin/ids/${m.id}/topup`, { token: adminTok, idem, body: { amount } });
            const redeem = (g: Gateway, v: ModelId, t: ModelId): Promise<Res> =>
              http(g, 'POST', '/v1/topups', { token: salesTok, body: { id: t.id, voucher: v.id } });
            const refunded = (m: ModelId, r: Res): void => {
              if (!m.hand) used[pkeys.find((k) => k.key === m.key)!.member as 'rich'] -= m.price;
              if (r.json.provider !== (m.hand ? 'not_paid_through_a_provider' : 'voided')) fail('refund void', r);
              m.state = 'refunded';
              m.bal = 0;
            };
            if (kind === 'refund-refund') {
              const m = fresh.length ? pick(fresh) : undefined;
              if (!m) return;
              const [x, y] = await Promise.all([refund(a, m), refund(b, m)]);
              note(
                `concurrent refunds ${m.id} -> ${x.status} ${JSON.stringify(x.json)} | ${y.status} ${JSON.stringify(y.json)}`,
              );
              if (x.status !== 200 || y.status !== 200) fail('concurrent refunds', x.status !== 200 ? x : y);
              if ([x, y].filter((r) => !r.json.duplicate).length !== 1) fail('concurrent refunds: one is the first', y);
              if (x.json.record !== y.json.record) fail('concurrent refunds: one record', y);
              refunded(m, x.json.duplicate ? y : x);
            } else if (kind === 'topup-topup') {
              const m = fresh.length ? pick(fresh) : undefined;
              if (!m) return;
              const idem = `tu-${seed}-${Math.floor(rand() * 1e9)}`;
              const [x, y] = await Promise.all([topup(a, m, idem, 1_000_000), topup(b, m, idem, 1_000_000)]);
              note(
                `concurrent topups ${m.id} -> ${x.status} ${JSON.stringify(x.json)} | ${y.status} ${JSON.stringify(y.json)}`,
              );
              const ok = [x, y].filter((r) => r.status === 200);
              if (!ok.length || ok.filter((r) => !r.json.duplicate).length !== 1)
                fail('concurrent topups: one credit', y);
              for (const r of [x, y])
                if (r.status !== 200 && !(r.status === 409 && r.json.error.reason === 'in_progress'))
                  fail('concurrent topup', r);
              if (ok.some((r) => r.json.balance !== m.bal + 1_000_000)) fail('concurrent topups: balance', y);
              credit(m, 1_000_000);
            } else if (kind === 'voucher-two') {
              const v = vouchers.length ? pick(vouchers) : undefined;
              if (!v) return;
              const ts = fresh.filter((m) => m.bal + v.face <= 10 * m.face);
              if (ts.length < 2) return;
              const [t1, t2] = [ts[0]!, ts[1]!];
              const [x, y] = await Promise.all([redeem(a, v, t1), redeem(b, v, t2)]);
              note(
                `concurrent voucher ${v.id} -> ${t1.id}: ${x.status} ${JSON.stringify(x.json)} | ${t2.id}: ${y.status} ${JSON.stringify(y.json)}`,
              );
              const won = [x, y].filter((r) => r.status === 200);
              if (won.length !== 1) fail('one voucher into two IDs', y);
              const lost = x.status === 200 ? y : x;
              if (!['already_redeemed', 'in_progress'].includes(lost.json?.error?.reason))
                fail('the other redemption', lost);
              const t = x.status === 200 ? t1 : t2;
              spend(v, t);
            } else if (kind === 'refund-topup') {
              const m = fresh.length ? pick(fresh) : undefined;
              if (!m) return;
              const idem = `tu-${seed}-${Math.floor(rand() * 1e9)}`;
              const [x, y] = await Promise.all([refund(a, m), topup(b, m, idem, 1_000_000)]);
              note(
                `refund ${m.id} ∥ topup -> ${x.status} ${JSON.stringify(x.json)} | ${y.status} ${JSON.stringify(y.json)}`,
              );
              if (x.status === 200) {
                // Refunded first: the top-up finds it refunded.
                if (y.json?.error?.reason !== 'refunded') fail('top-up after a refund', y);
                refunded(m, x);
              } else {
                if (x.json?.error?.reason !== 'recharged' || y.status !== 200) fail('refund after a top-up', x);
                credit(m, 1_000_000);
              }
            } else {
              const m = fresh.length ? pick(fresh) : undefined;
              const v = vouchers.length ? pick(vouchers) : undefined;
              if (!m || !v) return;
              const [x, y] = await Promise.all([refund(a, m), redeem(b, v, m)]);
              note(
                `refund ${m.id} ∥ voucher ${v.id} -> ${x.status} ${JSON.stringify(x.json)} | ${y.status} ${JSON.stringify(y.json)}`,
              );
              if (x.status === 200) {
                if (y.json?.error?.reason !== 'refunded') fail('voucher after a refund', y);
                refunded(m, x);
              } else {
                if (x.json?.error?.reason !== 'recharged' || y.status !== 200) fail('refund after a voucher', x);
                spend(v, m);
              }
            }
          },
        ],
        [
          1,
          'mint',
          async () => {
            const p = pick(products);
            for (const id of await mint(h, p, 1 + Math.floor(rand() * 3))) inventory.get(p.name)!.add(id);
            note(`mint ${p.name}`);
          },
        ],
        [
          2,
          'block-unsold',
          async () => {
            const name = pick(products).name;
            const inv = inventory.get(name)!;
            if (!inv.size) return;
            const id = pick([...inv]);
            const r = await http(gw(), 'POST', `/v1/admin/ids/${id}/block`, {
              token: adminTok,
              body: { reason: 'lost' },
            });
            note(`block-unsold ${id} -> ${r.status}`);
            if (r.status !== 200 || r.json.state !== 'blocked') fail('block unsold', r);
            inv.delete(id);
            blockedUnsold.set(id, name);
          },
        ],
        [
          1,
          'unblock-unsold',
          async () => {
            if (!blockedUnsold.size) return;
            const [id, name] = pick([...blockedUnsold]);
            const r = await http(gw(), 'POST', `/v1/admin/ids/${id}/unblock`, { token: adminTok });
            note(`unblock-unsold ${id} -> ${r.status} ${JSON.stringify(r.json)}`);
            if (r.status !== 200 || r.json.state !== 'minted') fail('unblock unsold', r);
            blockedUnsold.delete(id);
            inventory.get(name)!.add(id);
          },
        ],
        [
          1,
          'abandon-sweep',
          async () => {
            // Half an hour passes: purchases and recharges left midway are settled by the sweep.
            const later = Date.now() + ABANDON_MS + 60_000;
            const n = await pick(gws).purchases.sweepAbandoned(later);
            const m = await pick(gws).recharges.sweepAbandoned(later);
            note(`abandon sweep settled ${n} purchases, ${m} recharges (queued ${proxy.queued})`);
            // Their buyers come back: each answers how it was settled.
            for (const k of openKeys()) book(k, await purchase(gw(), k), 'after abandon sweep');
            for (const rc of [...openRecharges])
              bookRecharge(
                rc,
                await postPageForm(gw(), `${rc.m.checkPath}/recharge`, { grant: rc.grant!, ...rc.form }, rc.session),
                'recharge after abandon sweep',
              );
          },
        ],
        [
          1,
          'hold-sweep',
          async () => {
            // Time passes: holds run out (the IDs of purchases stopped at capturing go back).
            const n = await pick(gws).inventory.sweepHolds(Date.now() + HOLD_MS + 1000);
            note(`hold sweep returned ${n}`);
          },
        ],
        [
          1,
          'refund-void-lost',
          async () => {
            const cand = liveIds().filter((m) => m.state !== 'refunded' && !m.hand && !m.topups.length && !m.into);
            if (!cand.length) return;
            const m = pick(cand);
            proxy.add('void', pick(['hang', 'fail', 'late'] as const));
            const r = await http(gw(), 'POST', `/v1/admin/sales/${m.id}/refund`, {
              token: adminTok,
              body: { reason: text() },
            });
            proxy.clear();
            note(`refund-void-lost ${m.id} -> ${r.status} ${JSON.stringify(r.json)}`);
            if (r.status !== 200 || r.json.refunded !== m.bal || r.json.provider !== 'unknown')
              fail('refund, void lost', r);
            m.state = 'refunded';
            m.bal = 0;
            unvoided.add(m);
          },
        ],
        [
          1,
          'refund-void-sweep',
          async () => {
            const n = await sweepRefundVoids(h.ctx, provider, Date.now() + 3_600_000);
            note(`refund void sweep ${n}`);
            for (const m of unvoided) {
              used[pkeys.find((k) => k.key === m.key)!.member as 'rich'] -= m.price;
            }
            unvoided.clear();
          },
        ],
        [
          3,
          'voucher',
          async () => {
            const vs = liveIds().filter((m) => m.voucher);
            const ts = liveIds().filter((m) => !m.voucher);
            if (!vs.length || !ts.length) return;
            const v = pick(vs);
            const t = pick(ts);
            // Through the API (a till), or by the ID's owner on its check page.
            const onPage = t.checkPath && t.state === 'sold' && t.pinFails < 5 && chance(0.4);
            if (onPage && (wrongFromAddress >= ADDRESS_BUDGET || netTries >= NET_BUDGET)) return;
            const r = onPage
              ? await voucherOnPage(t, v)
              : await http(gw(), 'POST', '/v1/topups', { token: salesTok, body: { id: t.id, voucher: v.id } });
            if (onPage) t.pinFails = 0;
            note(
              `voucher${onPage ? ' on page' : ''} ${v.id} (${v.state} into ${v.into ?? '-'}) -> ${t.id} (${t.state} ${t.bal}) -> ${r.status} ${JSON.stringify(r.json)}`,
            );
            const can: string[] = [];
            if (v.state === 'refunded') can.push('refunded');
            else if (v.state === 'blocked') can.push('blocked');
            if (v.into === t.id) can.push('duplicate');
            else if (v.into) can.push('already_redeemed');
            if (t.state === 'refunded') can.push('refunded');
            else if (t.state === 'blocked') can.push('blocked');
            else if (!v.into && t.bal + v.face > 10 * t.face) can.push('topup_limit');
            if (can.length) {
              if (can.includes('duplicate') && r.status === 200) {
                if (r.status !== 200 || !r.json.duplicate || r.json.amount !== v.face) fail('voucher again', r);
                return;
              }
              if (!can.includes(r.json?.error?.reason)) fail(`voucher refused: ${can.join('|')}`, r);
              return;
            }
            if (r.status !== 200 || r.json.duplicate || r.json.amount !== v.face || r.json.balance !== t.bal + v.face)
              fail('voucher', r);
            spend(v, t);
          },
        ],
        [
          1,
          'reprice',
          async () => {
            // The catalog changes meanwhile: a purchase started keeps the price it started with.
            const i = Math.floor(rand() * 2);
            const p = products[i]!;
            products[i] = { ...p, price: p.price + 100_000 };
            await putProducts(h.ctx.redis, products);
            await until(
              () => gws.every((g) => g.catalog.product(p.name)?.price === p.price + 100_000),
              5000,
              10,
              'reprice',
            );
            note(`reprice ${p.name} ${p.price + 100_000}`);
          },
        ],
        [
          2,
          'buy-page',
          async () => {
            const k = newKey();
            k.web = randomBytes(16).toString('hex');
            k.body.product = pick(['tk-a', 'tk-a', 'tk-b']);
            if (chance(0.4)) proxy.add(pick(['authorize', 'capture']), pick(['hang', 'fail', 'late'] as const));
            const r = await purchase(gw(), k);
            proxy.clear();
            if (k.body.product === 'tk-b') {
              // Not on public sale: refused before anything is written.
              note(`buy-page ${k.key} tk-b -> ${r.status}`);
              if (r.status !== 404) fail('buy page: a product not on public sale', r);
              pkeys.splice(pkeys.indexOf(k), 1);
              return;
            }
            book(k, r, 'buy-page');
          },
        ],
        [
          1,
          'access',
          async () => {
            const r = await http(gw(), 'GET', '/access');
            if (r.status !== 200) fail('access page', r);
          },
        ],
      ];
      const total = ops.reduce((s, [w]) => s + w, 0);

      for (let step = 0; step < STEPS; step++) {
        let x = rand() * total;
        const op = ops.find(([w]) => (x -= w) < 0)!;
        await op[2]();
      }

      // Settle: every open purchase retried with a healthy card company; those left go to the sweep.
      proxy.clear();
      for (const k of openKeys()) {
        if (chance(0.5)) continue; // abandoned: the sweep settles it
        for (let i = 0; i < 20 && k.st === 'open'; i++) {
          book(k, await purchase(gw(), k), 'settle');
          if (k.st === 'open') await new Promise((r) => setTimeout(r, 50));
        }
      }
      const resend = (rc: ModelRecharge): Promise<Res> =>
        postPageForm(gw(), `${rc.m.checkPath}/recharge`, { grant: rc.grant!, ...rc.form }, rc.session);
      for (const rc of [...openRecharges]) {
        if (chance(0.5)) continue; // abandoned: the sweep settles it
        for (let i = 0; i < 20 && rc.st === 'open'; i++) {
          bookRecharge(rc, await resend(rc), 'settle-recharge');
          if (rc.st === 'open') await new Promise((r) => setTimeout(r, 50));
        }
      }
      const later = Date.now() + ABANDON_MS + HOLD_MS + 60_000;
      await gws[1]!.recharges.sweepAbandoned(later);
      for (const rc of [...openRecharges]) {
        const r = await resend(rc);
        // Settled by the sweep: credited when the card company had captured it, else voided.
        if (r.status === 503 || (r.status === 409 && /in progress|being processed/i.test(r.text)))
          fail('an abandoned recharge still open after the sweep', r);
        bookRecharge(rc, r, 'recharge after sweep');
      }
      await gws[0]!.purchases.sweepAbandoned(later);
      await gws[1]!.purchases.sweepAbandoned(later);
      await gws[0]!.inventory.sweepHolds(later);
      for (const k of openKeys()) {
        const r = await purchase(gw(), k);
        note(`after sweep ${k.key} -> ${r.status} ${r.json?.error?.reason ?? r.json?.id}`);
        if (r.status === 200) book(k, r, 'after-sweep');
        else if (r.status === 402 || (r.status === 409 && r.json.error.reason === 'out_of_stock')) {
          // Abandoned; or a refusal recorded before its void got through ends with its own reason.
          k.st = 'declined';
          k.reason = r.json.error.reason;
        } else fail('abandoned purchase after the sweep', r);
      }

      await sweepRefundVoids(h.ctx, provider, Date.now() + 3_600_000);
      for (const m of unvoided) used[pkeys.find((k) => k.key === m.key)!.member as 'rich'] -= m.price;
      unvoided.clear();
      // Authorizations that reached the card company after their attempts ended are found and voided.
      await until(() => proxy.queued === 0, 10_000, 50, 'queued requests passed on');
      for (const at of [2 * 60_000, 10 * 60_000, 2 * 3_600_000, 26 * 3_600_000])
        await sweepLateAuthorizations(h.ctx, provider, Date.now() + at);
      // Final state.
      const sold = [...ids.values()];
      const audit = await runCliIn(h, 'audit', '--json');
      if (audit.code !== 0) fail(`audit: ${audit.out}${audit.err}`, { status: audit.code });
      const exp = await runCliIn(h, 'export', 'sales', '--format', 'ndjson');
      expect(exp.code).toBe(0);
      const recs = exp.out
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, string>);
      for (const m of sold) {
        const mine = recs.filter((r) => r.id === hashOf(h, m.id));
        const sales = mine.filter((r) => !r.type);
        const refunds = mine.filter((r) => r.type === 'refund');
        const tops = mine.filter((r) => r.type === 'topup');
        const ctx = `${m.id} ${JSON.stringify(mine)}`;
        expect(sales.length, `one sale record: ${ctx}`).toBe(1);
        expect(Number(sales[0]!.price), ctx).toBe(m.price);
        if (!m.hand) {
          const k = pkeys.find((x) => x.key === m.key)!;
          expect(sales[0]!.channel, ctx).toBe(k.web ? 'web' : `api:${SALES}`);
          expect(sales[0]!.ref, ctx).toBe(refOf(k));
          expect(Number(sales[0]!.net) + Number(sales[0]!.commission), ctx).toBe(m.price);
        }
        expect(refunds.length, ctx).toBe(m.state === 'refunded' ? 1 : 0);
        expect(tops.map((t) => Number(t.amount)).sort(), ctx).toEqual([...m.topups].sort());
        // The operator's lookup: the same sale record, the refund and what its void came to.
        const look = await http(gws[1]!, 'GET', `/v1/admin/sales/${m.id}`, { token: adminTok });
        expect(look.status, ctx).toBe(200);
        expect(look.json.sale?.record, `lookup of ${ctx}: ${JSON.stringify(look.json)}`).toBe(
          sales[0]!.record!.split('/')[1],
        );
        expect(look.json.sale?.price, ctx).toBe(sales[0]!.price);
        if (m.state === 'refunded') {
          expect(look.json.refund?.record, ctx).toBe(refunds[0]!.record!.split('/')[1]);
          expect(look.json.refund?.void, ctx).toBe(m.hand ? 'not_paid_through_a_provider' : 'voided');
        } else expect(look.json.refund, ctx).toBeUndefined();
        const st = await http(gws[0]!, 'GET', `/v1/ids/${m.id}/status`, { token: adminTok });
        expect(st.json.balance, ctx).toBe(m.bal);
        expect(st.json.state, ctx).toBe(m.state !== 'sold' ? 'blocked' : m.into ? 'exhausted' : 'sold');
        expect(mine.filter((r) => r.type === 'voucher').length, ctx).toBe(m.into ? 1 : 0);
      }
      const soldHashes = new Set(sold.map((m) => hashOf(h, m.id)));
      expect(recs.filter((r) => !r.type).length, 'sale records = IDs sold').toBe(sold.length);
      expect(
        recs.every((r) => soldHashes.has(r.id!)),
        'no record of an unsold ID',
      ).toBe(true);
      // Inventory and holds.
      for (const p of products) {
        const have = await inventoryHashes(h, p.name);
        const want = new Set([...inventory.get(p.name)!].map((id) => hashOf(h, id)));
        expect([...have].sort(), `inventory of ${p.name}`).toEqual([...want].sort());
      }
      expect((await reservations(h)).size, 'holds left').toBe(0);
      // The card company's books: each member's credit used is what they paid and kept.
      const all = (await (await fetch(`${h.cfg.provider.url}/_sandbox/members`)).json()) as Array<{
        card: string;
        used: number;
      }>;
      for (const [name, b] of Object.entries(members))
        expect(all.find((x) => x.card === b.card)!.used, `credit used by ${name}`).toBe(used[name as 'rich']);
      for (const k of pkeys) {
        const p = h.sandbox.payments.get(refOf(k));
        const refunded = k.id && ids.get(k.id)!.state === 'refunded';
        const want = k.st === 'done' ? (refunded ? ['voided'] : ['captured']) : [undefined, 'declined', 'voided'];
        expect(want, `payment of ${k.key} (${k.st} ${k.reason ?? ''}): ${JSON.stringify(p)}`).toContain(p?.state);
      }
      // The CSV holds what the NDJSON holds (text starting like a formula behind a '), and windows that
      // follow one another export each record once.
      const csv = await runCliIn(h, 'export', 'sales');
      expect(csv.code).toBe(0);
      const rows = parseCsv(csv.out);
      const header = rows.shift()!;
      expect(rows.length, 'CSV rows').toBe(recs.length);
      rows.forEach((row, i) => {
        const want = recs[i]!;
        header.forEach((col, j) => {
          const v = want[col] ?? '';
          const safe = /^[=+\-@\t\r]/.test(v) && !/^-?[0-9]+$/.test(v) ? `'${v}` : v;
          expect(row[j], `CSV ${want.record} ${col}`).toBe(safe);
        });
      });
      if (recs.length > 2) {
        const cut = Number(pick(recs).record!.split('/')[1]!.split('-')[0]);
        const before = await runCliIn(h, 'export', 'sales', '--format', 'ndjson', '--until', String(cut - 1));
        const after = await runCliIn(h, 'export', 'sales', '--format', 'ndjson', '--since', String(cut));
        const ids = (o: string): string[] =>
          o
            .split('\n')
            .filter(Boolean)
            .map((l) => (JSON.parse(l) as { record: string }).record);
        expect([...ids(before.out), ...ids(after.out)].sort(), 'windows').toEqual(recs.map((r) => r.record!).sort());
      }
      // Money in = money recorded: every payment the card company kept is a sale's or a recharge's, and
      // every sale or recharge paid by card is a payment it kept, of the same amount; none is left held.
      const kept = new Map<string, number>();
      for (const p of h.sandbox.payments.values()) {
        expect(p.state, `payment ${p.reference} left held`).not.toBe('authorized');
        if (p.state === 'captured') kept.set(p.reference, p.amount);
      }
      const paid = new Map<string, number>();
      for (const r of recs) {
        if (!r.type && r.provider) paid.set(r.provider, Number(r.price));
        if (r.type === 'topup' && r.source === 'online') paid.set(r.ref!, Number(r.price));
      }
      const refundedRefs = new Set(recs.filter((r) => r.type === 'refund').map((r) => r.ref));
      for (const [ref, amount] of paid)
        if (!refundedRefs.has(ref)) expect(kept.get(ref), `payment of ${ref}`).toBe(amount);
      for (const [ref, amount] of kept) expect(paid.get(ref), `record of payment ${ref}`).toBe(amount);
      // Nothing left unfinished, no voids pending.
      for (let b = 0; b < h.cfg.buckets; b++) {
        expect(await h.r.zcard(keys.refundVoids(b)), `refund voids in ${b}`).toBe(0);
      }
      // Webhook events: one topup event per top-up, with its amount.
      const nTopups = sold.reduce((n, m) => n + m.topups.length, 0);
      await until(() => hooks.delivered().size >= nTopups, 15_000, 50, 'topup events delivered');
      const events = [...hooks.delivered().values()] as Array<{
        type: string;
        idHash: string;
        data: { amount: number };
      }>;
      expect(events.length, 'no events beyond the top-ups').toBe(nTopups);
      for (const m of sold) {
        const ev = events.filter((e) => e.type === 'topup' && e.idHash === hashOf(h, m.id));
        expect(ev.map((e) => e.data.amount).sort(), `topup events of ${m.id}`).toEqual([...m.topups].sort());
      }
      if (process.env.SALES_FUZZ_LOG) writeFileSync(`${process.env.SALES_FUZZ_LOG}/seed-${seed}.log`, log.join('\n'));
      const tally = new Map<string, number>();
      for (const l of log) {
        const t = `${l.split(' ')[0]}:${/-> (\d+)/.exec(l)?.[1] ?? ''}`;
        tally.set(t, (tally.get(t) ?? 0) + 1);
      }
      console.log(
        `seed ${seed} clean: ${pkeys.length} purchases, ${sold.length} IDs; ${[...tally]
          .map(([k, n]) => `${k}=${n}`)
          .sort()
          .join(' ')}`,
      );
    });
  }
});

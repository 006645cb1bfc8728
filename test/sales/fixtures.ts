/**
 * Sales test fixtures: purchases over HTTP, the sandbox card company's test
 * controls (over HTTP), card numbers, and reads of inventory, reservations and
 * the sale streams straight from Redis.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import { putProducts } from '../../src/catalog/store';
import type { Product } from '../../src/catalog/schema';
import type { Gateway } from '../../src/gateway/server';
import { luhnDigit } from '../../src/ids/luhn';
import { keys } from '../../src/redis/keys';
import type { Faults, Member } from '../../src/dev/sandbox';
import { formSession, http, postPageForm, type FormSession, type Res } from '../support/http';
import { talkProduct, token, uniq, type Harness } from '../support/harness';
import { streamFields } from '../support/redis';
import { sleep } from '../support/wait';
import { Client } from '../support/ws-client';

export const PIN = '4711';
/** A unique, well-formed Idempotency-Key. */
export const newKey = (tag = 'k'): string => uniq(tag, 8);
/** A card number with a good Luhn check digit (16 digits, starts with 5: never a demo member). */
export function cardNumber(): string {
  let body = '5';
  for (let i = 0; i < 14; i++) body += String(randomBytes(1)[0]! % 10);
  return body + String(luhnDigit(body));
}

/** The same card number with its check digit off by one. */
export const badLuhn = (card: string): string => card.slice(0, -1) + String((Number(card.slice(-1)) + 1) % 10);

export interface Buyer {
  card: string;
  cardPin: string;
}

/** Registers a member at the sandbox card company (POST /_sandbox/members). */
export async function addMember(h: Harness, limit: number, cardPin = '2468'): Promise<Buyer> {
  const card = cardNumber();
  const r = await fetch(`${h.cfg.provider.url}/_sandbox/members`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: `Member ${card.slice(-4)}`, card, pin: cardPin, limit, used: 0 } satisfies Member),
  });
  if (r.status !== 200) throw new Error(`add member: HTTP ${r.status}`);
  return { card, cardPin };
}

/** A member's credit used, as the sandbox reports it over HTTP. */
export async function usedCredit(h: Harness, card: string): Promise<number> {
  const all = (await (await fetch(`${h.cfg.provider.url}/_sandbox/members`)).json()) as Member[];
  const m = all.find((x) => x.card === card);
  if (!m) throw new Error(`no member ${card}`);
  return m.used;
}

/** Sets sandbox faults over HTTP; returns what the sandbox now has. */
export async function setFaults(h: Harness, f: Partial<Faults>): Promise<Faults> {
  const r = await fetch(`${h.cfg.provider.url}/_sandbox/faults`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(f),
  });
  return (await r.json()) as Faults;
}

export const NO_FAULTS: Faults = { latencyMs: 0, failRate: 0, hangRate: 0, hangNext: 0 };

/** The sandbox payment of a purchase reference (its state, amount, commission), over HTTP. */
export async function payment(h: Harness, ref: string): Promise<{ status: number; body: any }> {
  const r = await fetch(`${h.cfg.provider.url}/v1/payments/${encodeURIComponent(ref)}`);
  return { status: r.status, body: await r.json() };
}

/** The sandbox's reference for a purchase made with this sales token name and Idempotency-Key. */
export const purchaseRef = (h: Harness, tokName: string, key: string): string =>
  `tsp_${h.ctx.ids.mac(`purchase:${tokName}/${key}`).slice(0, 32)}`;

export function purchaseBody(
  product: string,
  buyer: Buyer,
  pin = PIN,
): { product: string; pin: string; payment: Buyer } {
  return { product, pin, payment: { card: buyer.card, cardPin: buyer.cardPin } };
}

/** The buy page's form for `product` paid with `buyer`'s card, with a nonce of its own (one purchase). */
export function buyForm(
  product: string,
  buyer: Buyer,
  pin = PIN,
): { product: string; pin: string; card: string; cardPin: string; nonce: string } {
  return { product, pin, card: buyer.card, cardPin: buyer.cardPin, nonce: randomBytes(16).toString('hex') };
}

export function buy(
  gw: Gateway,
  salesToken: string,
  key: string,
  product: string,
  buyer: Buyer,
  pin = PIN,
): Promise<Res> {
  return http(gw, 'POST', '/v1/purchases', { token: salesToken, idem: key, body: purchaseBody(product, buyer, pin) });
}

/** An ID bought over the sales API, and its check page as its owner's browser opened it with the PIN. */
export interface OwnedId {
  id: string;
  path: string;
  session: FormSession;
  page: Res;
}

/** Buys an ID and opens its check link with the PIN, as its owner's browser would. */
export async function ownedId(
  gw: Gateway,
  salesToken: string,
  product: string,
  buyer: Buyer,
  pin = PIN,
): Promise<OwnedId> {
  const r = await buy(gw, salesToken, newKey(), product, buyer, pin);
  expect(r.status).toBe(200);
  const path = new URL(r.json.checkUrl).pathname;
  const session = await formSession(gw, path);
  const page = await postPageForm(gw, path, { pin }, session);
  expect(page.status).toBe(200);
  return { id: r.json.id, path, session, page };
}

/** The value of a page's form field (`name="…" value="…"`): a hidden grant or nonce, say. */
export const fieldOf = (text: string, name: string): string =>
  new RegExp(`name="${name}" value="([^"]+)"`).exec(text)?.[1] ?? '';

/** Unsold IDs of a product left in inventory, all buckets (read from Redis, no cache). */
export async function stock(h: Harness, product: string): Promise<number> {
  let n = 0;
  for (let b = 0; b < h.cfg.buckets; b++) n += await h.r.scard(keys.inventory(b, product));
  return n;
}

/** All ID hashes in inventory of a product. */
export async function inventoryHashes(h: Harness, product: string): Promise<Set<string>> {
  const out = new Set<string>();
  for (let b = 0; b < h.cfg.buckets; b++) for (const m of await h.r.smembers(keys.inventory(b, product))) out.add(m);
  return out;
}

/** IDs held for purchases in progress, all buckets: ID hash -> held until. */
export async function reservations(h: Harness): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (let b = 0; b < h.cfg.buckets; b++) {
    const flat = await h.r.zrange(keys.reservations(b), '0', '-1', 'WITHSCORES');
    for (let i = 0; i < flat.length; i += 2) out.set(flat[i]!, Number(flat[i + 1]));
  }
  return out;
}

export type Rec = Record<string, string> & { stream: string };

/** Every record of every bucket's sales stream (sales, activations, refunds). */
export async function saleRecords(h: Harness): Promise<Rec[]> {
  const out: Rec[] = [];
  for (let b = 0; b < h.cfg.buckets; b++) {
    for (const [id, flat] of await h.r.xrange(keys.sales(b), '-', '+')) {
      out.push({ ...streamFields(flat), stream: `${b}/${id}` });
    }
  }
  return out;
}

export const recordsOf = async (h: Harness, idHash: string): Promise<Rec[]> =>
  (await saleRecords(h)).filter((r) => r.id === idHash);

/** Adds products after the gateway started and waits until it sells them. */
export async function addProducts(h: Harness, gw: Gateway, products: Product[]): Promise<void> {
  await putProducts(h.ctx.redis, products);
  const end = Date.now() + 5000;
  while (!products.every((p) => gw.catalog.product(p.name))) {
    if (Date.now() > end) throw new Error('gateway did not pick up the products');
    await sleep(20);
  }
}

/** A talk product of its own name (so its stock is the test's alone). */
export const product = (name: string, over: Parameters<typeof talkProduct>[0] = {}): Product =>
  talkProduct({ name, ...over });

/**
 * Places one call of `sec` seconds on the ID through the switch protocol
 * (dest falls to plan std's catch-all rate, 100 micro/s) and returns the stop answer.
 */
export async function callWith(h: Harness, gw: Gateway, id: string, sec: number): Promise<Record<string, any>> {
  const c = await Client.connect(gw.port, await token(h, 'switch'));
  try {
    const call = uniq('c');
    const started = await c.request({ op: 'start', ref: 1, call, id, dest: '4912345' });
    if (started.op !== 'started') throw new Error(`start: ${JSON.stringify(started)}`);
    return { started, stopped: await c.request({ op: 'stop', ref: 2, call, sec }) };
  } finally {
    await c.close();
  }
}

/** Commission the sandbox keeps by default: 250 basis points, rounded down. */
export const commissionOf = (price: number, bp = 250): number => Math.floor((price * bp) / 10_000);

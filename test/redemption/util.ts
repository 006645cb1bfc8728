import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { pack, Unpackr } from 'msgpackr';
import { putItems, putProducts } from '../../src/catalog/store';
import type { EntryProduct, GoodsProduct, Product, ServiceProduct } from '../../src/catalog/schema';
import { keys } from '../../src/redis/keys';
import { redemptionFields } from '../../src/ledger/redemption-record';
import { token, waitForGot, type Harness, type Msg } from '../helpers/env';

/**
 * Shared pieces of the redemption tests: a catalog of entry, goods and service
 * products at two venues, a scanner socket that keeps each reply's encoding,
 * HTTP calls, reads of the bucket streams and Prometheus samples. (The CLI:
 * test/helpers/cli.ts.)
 */

export const VENUE = 'arena';
export const OTHER_VENUE = 'club';
export const DAY = 86_400_000;

/** Goods prices at the arena (and one item only the club sells). */
export const PRICE = { beer: 4_500_000, water: 1_000_000, clubBeer: 3_000_000, cocktail: 7_000_000 } as const;
export const WALLET_FACE = 10_000_000;

export interface Catalog {
  /** One entry at the arena, any gate. */
  ticket: EntryProduct;
  /** Three entries at the arena. */
  ticket3: EntryProduct;
  /** One entry at the arena's north gate only. */
  gated: EntryProduct;
  /** One entry at the arena; back in after an exit scan. */
  reentry: EntryProduct;
  /** Valid from tomorrow. */
  future: EntryProduct;
  /** Valid until yesterday. */
  past: EntryProduct;
  /** Stored value, 10.00 at every venue, a year from first use. */
  wallet: GoodsProduct;
  /** Stored value at the arena only. */
  arenaWallet: GoodsProduct;
  /** Two massages at the arena. */
  spa: ServiceProduct;
}

/**
 * Loads the redemption catalog through the catalog store (defaults filled in,
 * instants turned to ms) and returns the products as stored, ready to mint.
 */
export async function loadRedemptionCatalog(h: Harness): Promise<Catalog> {
  const now = Date.now();
  const entry = (over: Partial<EntryProduct>): Record<string, unknown> => ({ kind: 'entry', currency: 'EUR', price: 50_000_000, venues: [VENUE], ...over });
  const loaded = await putProducts(h.ctx.redis, [
    entry({ name: 'ticket' }),
    entry({ name: 'ticket3', entries: 3 }),
    entry({ name: 'gated', gates: ['north'] }),
    entry({ name: 'reentry', reentry: true }),
    entry({ name: 'future', validFrom: now + DAY, validUntil: now + 2 * DAY }),
    entry({ name: 'past', validFrom: new Date(now - 2 * DAY).toISOString(), validUntil: new Date(now - DAY).toISOString() }),
    { name: 'wallet', kind: 'goods', currency: 'EUR', face: WALLET_FACE, price: WALLET_FACE },
    { name: 'arenaWallet', kind: 'goods', currency: 'EUR', face: WALLET_FACE, price: WALLET_FACE, venues: [VENUE] },
    { name: 'spa', kind: 'service', currency: 'EUR', price: 80_000_000, service: 'massage', uses: 2, venues: [VENUE] },
  ]);
  await putItems(h.ctx.redis, [
    { venue: VENUE, item: 'beer', price: PRICE.beer, title: 'Beer 0.5l' },
    { venue: VENUE, item: 'water', price: PRICE.water },
    { venue: OTHER_VENUE, item: 'beer', price: PRICE.clubBeer },
    { venue: OTHER_VENUE, item: 'cocktail', price: PRICE.cocktail },
  ]);
  const byName = new Map(loaded.map((p) => [p.name, p]));
  const get = <T extends Product>(name: string): T => byName.get(name) as T;
  return {
    ticket: get('ticket'),
    ticket3: get('ticket3'),
    gated: get('gated'),
    reentry: get('reentry'),
    future: get('future'),
    past: get('past'),
    wallet: get('wallet'),
    arenaWallet: get('arenaWallet'),
    spa: get('spa'),
  };
}

export const uniq = (tag = 's'): string => `${tag}-${randomBytes(6).toString('hex')}`;

/** A scanner token with a unique name, bound to a venue (and maybe a gate). */
export async function scannerToken(h: Harness, bind: { venue?: string; gate?: string } = { venue: VENUE }): Promise<{ tok: string; name: string }> {
  const name = uniq('scn');
  return { tok: await token(h, 'scanner', name, bind), name };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until fn returns true (or throws after timeoutMs). */
export async function until(fn: () => boolean | Promise<boolean>, timeoutMs = 5000, stepMs = 20): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(stepMs);
  }
}

// ---------------------------------------------------------------- Redis reads

export function idKeyOf(h: Harness, id: string): string {
  const { hash, bucket } = h.ctx.ids.hash(id);
  return keys.id(bucket, hash);
}

export const hashOf = (h: Harness, id: string): string => h.ctx.ids.hash(id).hash;

/** The ID's fields in Redis (st, bal, first, fven, fgate, exp, inside, ...). */
export function idFields(h: Harness, id: string): Promise<Record<string, string>> {
  return h.r.hgetall(idKeyOf(h, id));
}

export async function balanceOf(h: Harness, id: string): Promise<number> {
  return Number(await h.r.hget(idKeyOf(h, id), 'bal'));
}

export type Rec = Record<string, string> & { streamId: string };

/** Every redemption/reversal record in the ID's bucket stream that concerns this ID, in order. */
export async function recordsOf(h: Harness, id: string): Promise<Rec[]> {
  const { hash, bucket } = h.ctx.ids.hash(id);
  const rows = await h.r.xrange(keys.redemptions(bucket), '-', '+');
  const out: Rec[] = [];
  for (const [streamId, flat] of rows) {
    const rec = redemptionFields(flat);
    if (rec.id === hash) out.push({ ...rec, streamId });
  }
  return out;
}

/** Length of the ID's bucket stream (every record in it, any ID). */
export function streamLength(h: Harness, id: string): Promise<number> {
  return h.r.xlen(keys.redemptions(h.ctx.ids.hash(id).bucket));
}

/** All records in every bucket stream. */
export async function allRecords(h: Harness): Promise<Rec[]> {
  const out: Rec[] = [];
  for (let b = 0; b < h.cfg.buckets; b++) {
    for (const [streamId, flat] of await h.r.xrange(keys.redemptions(b), '-', '+')) {
      out.push({ ...redemptionFields(flat), streamId: `${b}/${streamId}` });
    }
  }
  return out;
}

// ---------------------------------------------------------------- scanner socket

const unpackr = new Unpackr({ mapsAsObjects: true, int64AsType: 'auto' as 'number' });

export interface Got {
  msg: Msg;
  /** The frame the message came in was binary (MessagePack), else text (JSON). */
  binary: boolean;
}

/**
 * A scanner over a real socket on /v1/scanner. Keeps every message with the
 * encoding of its frame; `binary` picks the encoding requests are sent in.
 */
export class Scanner {
  readonly got: Got[] = [];
  private waiters: (() => void)[] = [];
  private nextRef = 1;

  private constructor(
    readonly ws: WebSocket,
    readonly binary: boolean,
  ) {
    ws.on('message', (data, isBinary) => {
      const buf = data as Buffer;
      const body: unknown = isBinary ? unpackr.unpack(buf) : JSON.parse(buf.toString('utf8'));
      for (const msg of Array.isArray(body) ? (body as Msg[]) : [body as Msg]) this.got.push({ msg, binary: isBinary });
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
  }

  static connect(port: number, tok: string, opts: { binary?: boolean; path?: string } = {}): Promise<Scanner> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}${opts.path ?? '/v1/scanner'}`, { headers: tok ? { Authorization: `Bearer ${tok}` } : {} });
      const s = new Scanner(ws, opts.binary ?? false);
      ws.once('open', () => resolve(s));
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body })));
      });
    });
  }

  send(m: unknown, binary = this.binary): void {
    this.ws.send(binary ? pack(m) : JSON.stringify(m), { binary });
  }

  waitFor(pred: (m: Msg) => boolean, from = 0, timeoutMs = 5000): Promise<Got> {
    return waitForGot(this.got, (check) => this.waiters.push(check), pred, from, timeoutMs);
  }

  /** Sends a message (a ref is added when missing) and waits for the reply with its ref. */
  async requestGot(m: Msg, binary = this.binary): Promise<Got> {
    const msg = { ...m, ref: m.ref ?? this.nextRef++ };
    const from = this.got.length;
    this.send(msg, binary);
    return this.waitFor((x) => x.ref === msg.ref, from);
  }

  async request(m: Msg, binary = this.binary): Promise<Msg> {
    return (await this.requestGot(m, binary)).msg;
  }

  /** redeem: the reply without its ref (scan is echoed). */
  async redeem(fields: { scan: string; id: string; item?: string; qty?: number; gate?: string; dir?: 'in' | 'out' } & Msg): Promise<Msg> {
    const { ref: _ref, ...rest } = await this.request({ op: 'redeem', ...fields });
    return rest;
  }

  async validate(fields: { id: string; item?: string; qty?: number; gate?: string; dir?: 'in' | 'out' } & Msg): Promise<Msg> {
    const { ref: _ref, ...rest } = await this.request({ op: 'validate', ...fields });
    return rest;
  }

  async reverse(scan: string, reason?: string): Promise<Msg> {
    const { ref: _ref, ...rest } = await this.request({ op: 'reverse', scan, ...(reason === undefined ? {} : { reason }) });
    return rest;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }
}

// ---------------------------------------------------------------- HTTP

export interface HttpReply {
  status: number;
  json: any;
}

export async function http(port: number, method: 'GET' | 'POST', path: string, tok?: string, body?: unknown): Promise<HttpReply> {
  const headers: Record<string, string> = {};
  if (tok) headers.Authorization = `Bearer ${tok}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

/** The value of one unlabelled sample (counter or gauge) in Prometheus text. */
export function metric(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

export async function metricsText(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  return res.text();
}

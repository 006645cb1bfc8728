import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis from 'ioredis';
import WebSocket from 'ws';
import { pack, Unpackr } from 'msgpackr';
import { openContext, type Context } from '../../src/app/context';
import { putPlans, putProducts, createToken } from '../../src/catalog/store';
import { loadConfig, type Config } from '../../src/config/config';
import { startGateway, type Gateway } from '../../src/gateway/server';
import { mintIds } from '../../src/ledger/mint';
import { activateId } from '../../src/ledger/ids';
import { createLogger } from '../../src/observability/log';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../src/redis/embedded';
import { Sandbox } from '../../src/dev/sandbox';
import type { Product, TalkProduct } from '../../src/catalog/schema';

/**
 * Test harness: a real redis-server on a free port per test file, a real
 * gateway on a free port, real WebSocket clients. Nothing is mocked.
 */
export const TEST_SECRET = 'ab'.repeat(32);

/** The gateway sends amounts beyond 32 bits as int64; a JS switch reads them back as numbers. */
const unpackr = new Unpackr({ mapsAsObjects: true, int64AsType: 'auto' as 'number' });

export interface Harness {
  redis: EmbeddedRedis;
  /** The sandbox card company every gateway of this harness pays through. */
  sandbox: Sandbox;
  cfg: Config;
  /** Direct Redis access for assertions. */
  r: Redis;
  /** Context for CLI-level helpers (mint, activate). */
  ctx: Context;
  dir: string;
  stop(): Promise<void>;
}

export async function startHarness(env: Record<string, string> = {}): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-test-'));
  const redis = await startEmbeddedRedis({ dir: join(dir, 'redis'), persist: false });
  const sandbox = new Sandbox();
  const sandboxPort = await sandbox.listen();
  const cfg = loadConfig({
    PROVIDER_URL: `http://127.0.0.1:${sandboxPort}`, TESSERA_SECRET: TEST_SECRET, DATA_DIR: dir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', REDIS_URL: redis.url, BUCKETS: '64', ...env });
  const ctx = await openContext(cfg, createLogger('silent'), redis.url);
  const r = new Redis(redis.url);
  return {
    redis,
    sandbox,
    cfg,
    r,
    ctx,
    dir,
    async stop() {
      r.disconnect();
      await ctx.close();
      await redis.stop();
      await sandbox.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function gateway(h: Harness, overrides: Partial<Config> = {}): Promise<Gateway> {
  return startGateway({ ...h.cfg, ...overrides }, createLogger('silent'), h.redis.url);
}

/** Rate plan "std": 100 micro/s everywhere, 200 to 44, 1000 + 5000 fee to 449; nothing to 999. */
export const STD_RATES = [
  { prefix: '', rate: 100, fee: 0 },
  { prefix: '44', rate: 200, fee: 0 },
  { prefix: '449', rate: 1000, fee: 5000 },
];

export function talkProduct(over: Partial<TalkProduct> = {}): TalkProduct {
  return { name: 'talk', kind: 'talk', currency: 'EUR', face: 1_000_000, price: 1_000_000, plan: 'std', thresholds: [300, 60, 10], expiryDays: 30, maxCalls: 1, ...over };
}

export async function seedCatalog(h: Harness, products: Product[] = [talkProduct()]): Promise<void> {
  await putPlans(h.ctx.redis, [
    { name: 'std', rates: STD_RATES },
    { name: 'nowhere', rates: [{ prefix: '999', rate: 1, fee: 0 }] },
  ]);
  await putProducts(h.ctx.redis, products);
}

export async function token(
  h: Harness,
  role: 'switch' | 'scanner' | 'sales' | 'admin' = 'switch',
  name = `sw-${role}-${Math.random().toString(36).slice(2, 8)}`,
  bind: { venue?: string; gate?: string } = role === 'scanner' ? { venue: 'arena' } : {},
): Promise<string> {
  return (await createToken(h.ctx.redis, { name, role, ...bind })).token;
}

export async function mint(h: Harness, product: Product, n = 1): Promise<string[]> {
  const ids: string[] = [];
  await mintIds(h.ctx, product, n, (id) => ids.push(id));
  return ids;
}

/** `n` of these IDs that share one hash-tag bucket (so one batched script call can take them together). */
export function sameBucketIds(h: Harness, ids: readonly string[], n: number): string[] {
  const byBucket = new Map<number, string[]>();
  for (const id of ids) {
    const b = h.ctx.ids.hash(id).bucket;
    byBucket.set(b, [...(byBucket.get(b) ?? []), id]);
  }
  const largest = [...byBucket.values()].sort((a, b) => b.length - a.length)[0] ?? [];
  if (largest.length < n) throw new Error(`no ${n} of ${ids.length} IDs share a bucket`);
  return largest.slice(0, n);
}

/** Mints and sells IDs of a product. */
export async function soldIds(h: Harness, product: Product, n = 1): Promise<string[]> {
  const ids = await mint(h, product, n);
  for (const id of ids) {
    const r = await activateId(h.ctx, id, { price: product.price });
    if (!r.ok) throw new Error(`activate: ${r.reason}`);
  }
  return ids;
}

export type Msg = Record<string, any>;

/**
 * The first of `got` at index >= from whose message matches pred, received
 * already or later: `onArrival` keeps a check to run when more arrive. Rejects
 * after timeoutMs with the last five messages.
 */
export function waitForGot<G extends { msg: Msg }>(got: G[], onArrival: (check: () => void) => void, pred: (m: Msg) => boolean, from: number, timeoutMs: number): Promise<G> {
  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`timed out; last received: ${JSON.stringify(got.slice(-5).map((g) => g.msg))}`)), timeoutMs);
    const check = (): void => {
      const hit = got.slice(from).find((g) => pred(g.msg));
      if (hit) {
        clearTimeout(deadline);
        resolve(hit);
      } else {
        onArrival(check);
      }
    };
    check();
  });
}

/**
 * A switch (or scanner) client over a real socket. Collects every message the
 * gateway sends (frames holding arrays are flattened) and lets a test wait for
 * the one it expects.
 */
export class Client {
  readonly received: Msg[] = [];
  private waiters: { pred: (m: Msg) => boolean; resolve: (m: Msg) => void }[] = [];

  private constructor(
    readonly ws: WebSocket,
    readonly binary: boolean,
  ) {
    ws.on('message', (data, isBinary) => {
      const body = isBinary ? unpackr.unpack(data as Buffer) : JSON.parse(data.toString());
      for (const m of Array.isArray(body) ? body : [body]) {
        this.received.push(m);
        this.waiters = this.waiters.filter((w) => (w.pred(m) ? (w.resolve(m), false) : true));
      }
    });
  }

  static connect(port: number, tok: string, opts: { binary?: boolean; path?: string } = {}): Promise<Client> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}${opts.path ?? '/v1/switch'}`, { headers: tok ? { Authorization: `Bearer ${tok}` } : {} });
      const c = new Client(ws, opts.binary ?? false);
      ws.once('open', () => resolve(c));
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })));
    });
  }

  send(m: unknown): void {
    this.ws.send(this.binary ? pack(m) : JSON.stringify(m));
  }

  sendRaw(data: Buffer | string, binary: boolean): void {
    this.ws.send(data, { binary });
  }

  /** Waits for the first message (already received or future) matching pred. */
  waitFor(pred: (m: Msg) => boolean, timeoutMs = 5000): Promise<Msg> {
    const seen = this.received.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out; received: ${JSON.stringify(this.received.slice(-5))}`)), timeoutMs);
      this.waiters.push({ pred, resolve: (m) => (clearTimeout(t), resolve(m)) });
    });
  }

  /** Sends a request with a ref and waits for the reply with that ref. */
  async request(m: Msg, timeoutMs?: number): Promise<Msg> {
    this.send(m);
    return this.waitFor((x) => x.ref === m.ref && x.op !== 'alert' && x.op !== 'cutoff', timeoutMs);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }
}

/**
 * Test harness: a real redis-server on a free port per test file, a real
 * gateway on a free port, real WebSocket clients. Nothing is mocked.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis from 'ioredis';
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

/** The secret every harness (and every CLI run against it) shares. */
export const TEST_SECRET = 'ab'.repeat(32);

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
    PROVIDER_URL: `http://127.0.0.1:${sandboxPort}`,
    TESSERA_SECRET: TEST_SECRET,
    DATA_DIR: dir,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    REDIS_URL: redis.url,
    BUCKETS: '64',
    ...env,
  });
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

/** A gateway on the harness; `log` (test/support/log.ts) for a test that reads what it logs. */
export async function gateway(
  h: Harness,
  overrides: Partial<Config> = {},
  log = createLogger('silent'),
): Promise<Gateway> {
  const g = await startGateway({ ...h.cfg, ...overrides }, log, h.redis.url);
  // The webhook worker's first round creates the balance-event streams (XGROUP … MKSTREAM) a
  // poll interval after start: done now, so that no test sees keys appear that it did not cause.
  await g.hooks.pass();
  // The expiry sweep's first pass comes a minute after start: a file whose gateway lives longer
  // would see it forfeit IDs it moved past their expiry. Tests run it themselves (g.expiry.sweep()).
  g.expiry.stop();
  return g;
}

/**
 * Stops the gateway's webhook worker, for a file that reads balance events from their stream: the
 * worker deletes each event no webhook takes at its next poll (docs/operations.md, Webhooks), so
 * whether a test still found its event would depend on how long the test took.
 */
export async function keepEvents(g: Gateway): Promise<Gateway> {
  await g.hooks.stop();
  return g;
}

/** Runs `fn` against a gateway of its own with these settings, closed after it however it ends. */
export async function withGateway<T>(
  h: Harness,
  overrides: Partial<Config>,
  fn: (g: Gateway) => Promise<T>,
): Promise<T> {
  const g = await gateway(h, overrides);
  try {
    return await fn(g);
  } finally {
    await g.close();
  }
}

/** Rate plan "std": 100 micro/s everywhere, 200 to 44, 1000 + 5000 fee to 449; nothing to 999. */
export const STD_RATES = [
  { prefix: '', rate: 100, fee: 0 },
  { prefix: '44', rate: 200, fee: 0 },
  { prefix: '449', rate: 1000, fee: 5000 },
];

/** A talk product on plan std, on public sale (`webShop`) like the demo's talk products. */
export function talkProduct(over: Partial<TalkProduct> = {}): TalkProduct {
  return {
    name: 'talk',
    kind: 'talk',
    currency: 'EUR',
    face: 1_000_000,
    price: 1_000_000,
    plan: 'std',
    thresholds: [300, 60, 10],
    expiryDays: 30,
    maxCalls: 1,
    webShop: true,
    ...over,
  };
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

/** A unique name: `tag-` and random hex (call ids, scan ids, token names, keys). */
export const uniq = (tag = 's', bytes = 6): string => `${tag}-${randomBytes(bytes).toString('hex')}`;

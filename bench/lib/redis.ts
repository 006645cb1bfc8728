/**
 * The benchmarks' own redis-server and what they read from it: catalog-free
 * setup (sold IDs) and INFO figures (forks, fsyncs, memory, command counts).
 */
import { join } from 'node:path';
import { openContext, type Context } from '../../src/app/context';
import type { Product } from '../../src/catalog/schema';
import { loadConfig } from '../../src/config/config';
import { mintIds } from '../../src/ledger/mint';
import { activate } from '../../src/ledger/scripts';
import { createLogger } from '../../src/observability/log';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../src/redis/embedded';
import { keys } from '../../src/redis/keys';
import { cleanup, watchdog } from './process';

export interface BenchRedis {
  redis: EmbeddedRedis;
  /** redis-server's own pid. */
  pid: number | undefined;
  /** A context on it (config from env, REDIS_URL its URL). */
  ctx: Context;
  /** Closes the context and stops redis-server. */
  stop(): Promise<void>;
}

/**
 * The bench's own redis-server in the temp dir's redis/ (AOF, appendfsync
 * everysec, as in production), killed with the bench even if that is SIGKILLed.
 * The context logs at logLevel (silent unless told).
 */
export async function startBenchRedis(env: Record<string, string>, logLevel = 'silent'): Promise<BenchRedis> {
  // Known from its spawn: an interrupt while Redis boots kills it and waits for it too.
  const redis = await startEmbeddedRedis({
    dir: join(cleanup.tmp, 'redis'),
    persist: true,
    onSpawn: (p) => (cleanup.redisPid = p.pid),
  });
  const pid = redis.process.pid;
  const ctx = await openContext(loadConfig({ REDIS_URL: redis.url, ...env }), createLogger(logLevel), redis.url);
  const dog = watchdog(pid);
  return {
    redis,
    pid,
    ctx,
    async stop() {
      await ctx.close();
      await redis.stop();
      cleanup.redisPid = undefined;
      dog?.kill('SIGKILL');
    },
  };
}

/**
 * Mints count IDs of product and sells them through activate.lua directly
 * (what activateId does, minus its product lookup), 2,000 in flight at a
 * time: autopipelined. price and ref are the sale's.
 */
export async function mintSold(
  ctx: Context,
  product: Product,
  count: number,
  sale: { price: number; ref: string },
): Promise<string[]> {
  const ids: string[] = [];
  if (count === 0) return ids;
  await mintIds(ctx, product, count, (id) => ids.push(id));
  const now = Date.now();
  for (let i = 0; i < ids.length; i += 2000) {
    await Promise.all(
      ids.slice(i, i + 2000).map(async (id) => {
        const { hash, bucket } = ctx.ids.hash(id);
        const a = { product: product.name, channel: 'bench', ...sale };
        const r = await activate(ctx.scripts, { key: keys.id(bucket, hash), bucket }, a, now);
        if (!r.ok) throw new Error(`activate ${product.name}: ${r.reason}`);
      }),
    );
  }
  return ids;
}

/** A number from a section of INFO, 0 when absent. */
export async function infoNumber(ctx: Context, section: string, re: RegExp): Promise<number> {
  return Number(re.exec(await ctx.redis.info(section))?.[1] ?? 0);
}

/** Background forks (AOF rewrite, RDB snapshot) so far; they compete for the same two cores. */
export const totalForks = (ctx: Context): Promise<number> => infoNumber(ctx, 'stats', /^total_forks:(\d+)/m);

/**
 * How long Redis' latest fork took (ms): the whole server stops while it
 * copies its page tables, every client with it.
 */
export const lastForkMs = async (ctx: Context): Promise<number> =>
  (await infoNumber(ctx, 'stats', /^latest_fork_usec:(\d+)/m)) / 1000;

/**
 * Times Redis held back its AOF write because the previous fsync was still
 * running (appendfsync everysec on a busy disk): each one stalls every client
 * for up to 2 s, which shows as a gap in the timeline.
 */
export const delayedFsyncs = (ctx: Context): Promise<number> =>
  infoNumber(ctx, 'persistence', /^aof_delayed_fsync:(\d+)/m);

/** Bytes of memory Redis uses for data and overhead (INFO used_memory). */
export const usedMemory = (ctx: Context): Promise<number> => infoNumber(ctx, 'memory', /used_memory:(\d+)/);

/** Waits (up to 60 s) for a running AOF rewrite or RDB snapshot to finish, so a measurement does not start inside one. */
export async function quiesce(ctx: Context): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const info = await ctx.redis.info('persistence');
    if (!/^(aof_rewrite|rdb_bgsave)_in_progress:1/m.test(info)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

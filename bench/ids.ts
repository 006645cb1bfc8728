/**
 * bench/ids.ts: Redis memory per sold idle ID, `npm run bench:ids [-- flags]`.
 *
 * Mints N IDs of a calling-card product (lua/mint.lua, as `tessera mint`
 * does) and sells every one as a purchase does: reserve.lua takes it out of
 * inventory, sell.lua writes its PIN hash, check link and sale record. The
 * purchase path's scrypt PIN hash costs ~50 ms an ID, so one hash is computed
 * up front and used for every sale: its length, what memory sees, is a real
 * one's. No call, redemption or purchase record is written: the IDs are idle.
 *
 * Prints used_memory after the catalog and after the sales, the difference
 * per ID (indexes and the sale record included), and MEMORY USAGE of what one
 * sold ID owns (its hash, its shares of the sales stream and of the product's
 * terms; its check link names the ID and has no key of its own),
 * against the target of 200 bytes; last line: JSON.
 */
import { randomUUID } from 'node:crypto';
import type { Context } from '../src/app/context';
import type { RatePlan, TalkProduct } from '../src/catalog/schema';
import { putPlans, putProducts } from '../src/catalog/store';
import { productTerms, termsVersion } from '../src/catalog/terms';
import { mintBatches } from '../src/ledger/mint';
import { keys } from '../src/redis/keys';
import { hashPin } from '../src/sales/pin';
import { checkLink } from '../src/sales/check';
import { reserveId, sellId } from '../src/sales/scripts';
import { intFlag, parseFlags } from './lib/flags';
import { cleanUpOnExit, makeTmp, removeTmp, runMain, sleep } from './lib/process';
import { quiesce, startBenchRedis, usedMemory } from './lib/redis';
import { fmtInt, printJsonLine, round1 } from './lib/report';
import { TARGETS } from './lib/targets';

const SECRET = 'ab'.repeat(32);
/** Sales in flight per bucket: 64 buckets × 32 keep Redis busy without a long queue. */
const PER_BUCKET = 32;
/** IDs whose keys are sized one by one with MEMORY USAGE. */
const SAMPLE = 200;

const USAGE = `npm run bench:ids -- [flags]

  --ids N     IDs minted and sold [1000000]
  --keep      keep the temp dir (Redis data)
  --help

Prints Redis used_memory per sold idle ID (its indexes and sale record
included) and MEMORY USAGE of one ID's keys, against the target of 200 bytes;
last line: JSON.
`;

interface Options {
  ids: number;
  keep: boolean;
}

function options(argv: string[]): Options {
  const flags = parseFlags(
    argv,
    { ids: { type: 'string', default: '1000000' }, keep: { type: 'boolean', default: false } },
    USAGE,
  );
  return { ids: intFlag('ids', flags.ids, 1, 100_000_000), keep: flags.keep ?? false };
}

const PLAN: RatePlan = { name: 'bench-ids', rates: [{ prefix: '', rate: 1000, fee: 0 }] };
/** A calling card as sold: talk IDs carry the most terms of any kind. */
const PRODUCT: TalkProduct = {
  name: 'bench-card',
  kind: 'talk',
  currency: 'EUR',
  face: 10_000_000,
  price: 10_000_000,
  plan: PLAN.name,
  thresholds: [300, 60, 10],
  expiryDays: 180,
  maxCalls: 1,
};

/** used_memory once nothing is in flight: no rewrite running, the AOF buffer written out. */
async function settledMemory(ctx: Context): Promise<number> {
  await quiesce(ctx);
  await sleep(1100);
  return usedMemory(ctx);
}

/** One sold ID's keys, for MEMORY USAGE. */
interface SoldKeys {
  id: string;
}

/**
 * Sells every ID of one bucket's inventory as a purchase does, PER_BUCKET at
 * a time: reserve, then sell with the shared PIN hash. Returns the keys of
 * the first few sold, for sizing.
 */
async function sellBucket(ctx: Context, bucket: number, pinHash: string, sample: SoldKeys[]): Promise<number> {
  let sold = 0;
  for (;;) {
    const held = await Promise.all(
      Array.from({ length: PER_BUCKET }, async () => {
        const ref = randomUUID();
        const idHash = await reserveId(ctx.scripts, bucket, PRODUCT.name, Date.now() + 600_000, ref);
        return idHash === null ? undefined : { idHash, ref };
      }),
    );
    const holds = held.filter((h) => h !== undefined);
    await Promise.all(
      holds.map(async ({ idHash, ref }) => {
        // As a purchase derives it (src/sales/purchase.ts).
        const { checkHash } = checkLink(ctx.ids, ref, idHash);
        const idKey = keys.id(bucket, idHash);
        const r = await sellId(ctx.scripts, {
          idKey,
          bucket,
          checkHash,
          product: PRODUCT.name,
          price: PRODUCT.price,
          currency: PRODUCT.currency,
          channel: 'web',
          purchaseRef: ref,
          providerRef: ref,
          commission: 0,
          pinHash,
        });
        if (!r.ok) throw new Error(`sell: ${r.reason}`);
        if (sample.length < SAMPLE) sample.push({ id: idKey });
      }),
    );
    sold += holds.length;
    if (holds.length < PER_BUCKET) return sold;
  }
}

const memoryUsage = async (ctx: Context, key: string): Promise<number> =>
  Number(await ctx.redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'));

const listpackValueMax = async (ctx: Context): Promise<string> =>
  String((await ctx.redis.config('GET', 'hash-max-listpack-value'))[1]);

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

interface PerId {
  idHash: number;
  /** OBJECT ENCODING of a sold ID's hash and its longest field value: past hash-max-listpack-value, Redis leaves the compact listpack. */
  encoding: string;
  longestValue: { field: string; bytes: number };
  /** The product's terms, kept once per bucket: their share per ID. */
  productTerms: number;
  saleRecord: number;
  /** Inventory sets, reservation zsets and hold owners left over (empty ones are deleted): 0 once all are sold. */
  inventory: number;
}

/** MEMORY USAGE of what a sold ID owns: its hash (mean over the sample), its shares of the sales streams and the product's terms. */
async function perIdKeys(ctx: Context, sample: SoldKeys[], n: number): Promise<PerId> {
  const idHash = mean(await Promise.all(sample.map((k) => memoryUsage(ctx, k.id))));
  const buckets = Array.from({ length: ctx.cfg.buckets }, (_, b) => b);
  const version = termsVersion(productTerms(PRODUCT));
  const sizes = await Promise.all(
    buckets.flatMap((b) => [
      memoryUsage(ctx, keys.sales(b)),
      memoryUsage(ctx, keys.productTerms(b, version)),
      memoryUsage(ctx, keys.inventory(b, PRODUCT.name)),
      memoryUsage(ctx, keys.reservations(b)),
      memoryUsage(ctx, keys.holdOwners(b)),
    ]),
  );
  const sum = (k: number): number => sizes.filter((_, i) => i % 5 === k).reduce((a, b) => a + b, 0);
  const streams = sum(0);
  const terms = sum(1);
  const inventory = sum(2) + sum(3) + sum(4);
  const first = sample[0]?.id ?? '';
  const encoding = String(await ctx.redis.call('OBJECT', 'ENCODING', first));
  const fields = Object.entries(await ctx.redis.hgetall(first)).sort((a, b) => b[1].length - a[1].length);
  const [field, value] = fields[0] ?? ['', ''];
  return {
    idHash,
    encoding,
    longestValue: { field, bytes: Buffer.byteLength(value) },
    productTerms: terms / n,
    saleRecord: streams / n,
    inventory: inventory / n,
  };
}

async function main(): Promise<void> {
  const opts = options(process.argv.slice(2));
  const tmp = makeTmp('tessera-bench-ids-', opts.keep);
  const br = await startBenchRedis({ TESSERA_SECRET: SECRET, DATA_DIR: tmp, LOG_LEVEL: 'silent' });
  const { ctx } = br;
  console.log(`tessera bench:ids  ids=${fmtInt(opts.ids)} buckets=${ctx.cfg.buckets}  (node ${process.version})`);
  await putPlans(ctx.redis, [PLAN]);
  await putProducts(ctx.redis, [PRODUCT]);
  const pinHash = await hashPin('4821');
  const before = await settledMemory(ctx);

  const tMint = performance.now();
  const minted = await mintBatches(ctx, PRODUCT, opts.ids, () => undefined);
  if (minted.stopped !== undefined) throw new Error(`mint stopped after ${minted.minted}: ${minted.stopped}`);
  const mintSec = (performance.now() - tMint) / 1000;
  const inventoryBytes = ((await settledMemory(ctx)) - before) / opts.ids;

  const tSell = performance.now();
  const sample: SoldKeys[] = [];
  const perBucket = await Promise.all(
    Array.from({ length: ctx.cfg.buckets }, (_, b) => sellBucket(ctx, b, pinHash, sample)),
  );
  const sold = perBucket.reduce((a, b) => a + b, 0);
  const sellSec = (performance.now() - tSell) / 1000;
  const after = await settledMemory(ctx);
  const perId = (after - before) / sold;
  const keysOf = await perIdKeys(ctx, sample, sold);
  const owned = keysOf.idHash + keysOf.productTerms + keysOf.saleRecord + keysOf.inventory;

  console.log(
    `setup: ${fmtInt(minted.minted)} minted in ${mintSec.toFixed(1)} s (${fmtInt(inventoryBytes)} B each in inventory), ${fmtInt(sold)} sold through reserve.lua and sell.lua in ${sellSec.toFixed(1)} s`,
  );
  console.log('\nresults');
  console.log(
    `  used_memory      ${fmtInt(before)} → ${fmtInt(after)} B: ${fmtInt(perId)} B per sold idle ID (its keys, index entries, sale record and Redis' own overhead per key)`,
  );
  console.log(
    `  MEMORY USAGE     ID hash ${fmtInt(keysOf.idHash)} B, product terms ${keysOf.productTerms.toFixed(1)} B (one hash per bucket ÷ IDs), sale record ${fmtInt(keysOf.saleRecord)} B (sales streams ÷ IDs), inventory left ${fmtInt(keysOf.inventory)} B: ${fmtInt(owned)} B`,
  );
  console.log(
    `  ID hash          ${keysOf.encoding}; its longest value ${keysOf.longestValue.field} is ${keysOf.longestValue.bytes} B (hash-max-listpack-value ${await listpackValueMax(ctx)} B)`,
  );
  console.log(
    `  rest             ${fmtInt(perId - owned)} B per ID: the keyspace's own entries and allocator rounding`,
  );
  // Judged on the JSON line's rounded figure, as `npm run bench` judges it.
  const met = TARGETS.bytesPerId.met(Math.round(perId)) === true;
  console.log(
    `\ntarget (${TARGETS.bytesPerId.text} of Redis memory per sold idle ID): ${met ? 'met' : 'NOT met'} — ${fmtInt(perId)} B`,
  );
  await br.stop();
  removeTmp();
  printJsonLine({
    bench: 'ids',
    ids: sold,
    usedMemory: { before, after },
    bytesPerId: Math.round(perId),
    bytesPerIdInInventory: Math.round(inventoryBytes),
    idHashEncoding: keysOf.encoding,
    longestValue: keysOf.longestValue,
    memoryUsage: {
      idHash: Math.round(keysOf.idHash),
      productTerms: Math.round(keysOf.productTerms * 10) / 10,
      saleRecord: Math.round(keysOf.saleRecord),
      inventory: Math.round(keysOf.inventory),
    },
    targetBytes: TARGETS.bytesPerId.limit,
    targetMet: met,
    timeSec: { mint: round1(mintSec), sell: round1(sellSec) },
  });
}

cleanUpOnExit();
runMain(main);

/**
 * bench/tick-script.ts: `call_tick`'s own Redis time per tick, for two or more
 * versions of lua/ side by side in one run: `npm run bench:tick-script --
 * --lua ../wt-before/lua --lua lua`.
 *
 * bench:switch's figures move with everything on the machine (the gateway,
 * the load generator, the VM's speed); this isolates the script. It starts
 * N calls through this tree's call_start (flat tariff, one call per ID, so
 * each call holds all its ID's balance), answers each with a tick at sec 1,
 * then, round after round, ticks every call one second further with each
 * version's `call_tick` in turn (FCALL, --batch ticks per call, calls in a
 * random order, as the gateway's per-bucket batches hit hashes out of the CPU
 * cache). Each version is its own function library on the same Redis, so the
 * versions must share this tree's session layout and call_tick's arguments
 * (ARGV[2] one refresh flag per call, since a34bd7e): compare a change with the
 * commit before it, not across such changes. Redis' time per tick is INFO
 * commandstats' FCALL time ÷ ticks, per round; the median and fastest round
 * per version are printed, and each version's median ÷ the first's. A repeat
 * of the last second (a dup) is measured the same way. Last line: JSON.
 */
import { resolve } from 'node:path';
import type { Context } from '../src/app/context';
import type { RatePlan, TalkProduct } from '../src/catalog/schema';
import { putPlans, putProducts } from '../src/catalog/store';
import { PlanTariff } from '../src/catalog/tariff';
import { callKeysFor, callKeyOf, type CallKeys } from '../src/metering/call-keys';
import { callStart } from '../src/metering/scripts';
import { keys } from '../src/redis/keys';
import { readLibrary, type Library } from '../src/redis/scripts';
import { intFlag, parseFlags } from './lib/flags';
import { cleanUpOnExit, makeTmp, removeTmp, runMain } from './lib/process';
import { mintSold, startBenchRedis } from './lib/redis';
import { printJsonLine } from './lib/report';

const USAGE = `npm run bench:tick-script -- [flags]

  --lua DIR      a lua/ folder to measure (repeatable; the first is the baseline) [lua]
  --calls N      live calls [10000]
  --batch B      ticks per FCALL [8]
  --rounds R     rounds, each version once per round [10]
  --keep         keep the temp dir (Redis data)
  --help

Prints call_tick's Redis time per tick (steady and repeated ticks) for each
version, median and fastest round, and each median ÷ the first version's;
last line: JSON.
`;

interface Options {
  lua: string[];
  calls: number;
  batch: number;
  rounds: number;
  keep: boolean;
}

function options(argv: string[]): Options {
  const f = parseFlags(
    argv,
    {
      lua: { type: 'string', multiple: true, default: ['lua'] },
      calls: { type: 'string', default: '10000' },
      batch: { type: 'string', default: '8' },
      rounds: { type: 'string', default: '10' },
      keep: { type: 'boolean', default: false },
    },
    USAGE,
  );
  return {
    lua: (f.lua ?? ['lua']).map((d) => resolve(d)),
    calls: intFlag('calls', f.calls, 1, 1_000_000),
    batch: intFlag('batch', f.batch, 1, 64),
    rounds: intFlag('rounds', f.rounds, 1, 1000),
    keep: f.keep ?? false,
  };
}

const PLAN: RatePlan = { name: 'bench-tick', rates: [{ prefix: '', rate: 1000, fee: 0 }] };
const PRODUCT: TalkProduct = {
  name: 'bench-tick',
  kind: 'talk',
  currency: 'EUR',
  face: 1_000_000_000,
  price: 1_000_000_000,
  plan: PLAN.name,
  thresholds: [300, 60, 10],
  expiryDays: 30,
  maxCalls: 1,
};
const DEST = '4912345';

/** N calls started through this tree's call_start, in a random order. */
async function startCalls(ctx: Context, n: number): Promise<CallKeys[]> {
  await putPlans(ctx.redis, [PLAN]);
  await putProducts(ctx.redis, [PRODUCT]);
  const ids = await mintSold(ctx, PRODUCT, n, { price: PRODUCT.price, ref: 'bench' });
  const now = Date.now();
  const desc = new PlanTariff([PLAN]).descriptor(DEST, now);
  if (!desc) throw new Error(`plan ${PLAN.name} has no rate for ${DEST}`);
  const calls = await Promise.all(
    ids.map(async (id, i) => {
      const { hash, bucket } = ctx.ids.hash(id);
      const call = `t${i}`;
      const ck = callKeysFor(keys.id(bucket, hash), callKeyOf('bench', call));
      const r = await callStart(ctx.scripts, ck, {
        now,
        ringGraceMs: 0,
        dest: DEST,
        sw: 'bench',
        call,
        idHash: hash,
        mode: 'tick',
        aniHash: '',
        rates: [PLAN.name, desc],
      });
      if (!r.ok) throw new Error(`start: ${r.reason}`);
      return ck;
    }),
  );
  return calls.sort(() => Math.random() - 0.5);
}

/**
 * Every call ticked at `sec` through `fn`, `batch` per FCALL, none asking for a
 * live-set refresh; Redis' FCALL time per tick.
 */
async function tickAll(ctx: Context, fn: string, calls: CallKeys[], sec: number, batch: number): Promise<number> {
  await ctx.redis.config('RESETSTAT');
  const now = Date.now();
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < calls.length; i += batch) {
    const group = calls.slice(i, i + batch);
    const keys = [group[0]!.live, ...group.flatMap((c) => [c.session, c.id]), group[0]!.events];
    pending.push(ctx.redis.fcall(fn, keys.length, ...keys, now, '0'.repeat(group.length), ...group.map(() => sec)));
  }
  await Promise.all(pending);
  const m = /cmdstat_fcall:calls=(\d+),usec=(\d+)/.exec(await ctx.redis.info('commandstats'));
  if (!m) throw new Error('no FCALL in INFO commandstats');
  return Number(m[2]) / calls.length;
}

interface Row {
  lua: string;
  library: string;
  steadyUs: { median: number; fastest: number };
  dupUs: { median: number; fastest: number };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (x: number): string => x.toFixed(2);

runMain(async () => {
  cleanUpOnExit();
  const opts = options(process.argv.slice(2));
  makeTmp('tessera-bench-tick-', opts.keep);
  const br = await startBenchRedis({ TESSERA_SECRET: 'ab'.repeat(32) });
  let rows: Row[];
  try {
    const { ctx } = br;
    const libs: Library[] = opts.lua.map((dir) => readLibrary(dir));
    for (const lib of libs) await ctx.redis.call('FUNCTION', 'LOAD', 'REPLACE', lib.code);
    const fns = libs.map((lib) => {
      const fn = lib.functions.get('call_tick');
      if (!fn) throw new Error(`no call_tick in ${lib.name}`);
      return fn;
    });
    console.log(
      `tessera bench:tick-script  calls=${opts.calls} batch=${opts.batch} rounds=${opts.rounds}  (${opts.lua.length} versions)`,
    );
    const calls = await startCalls(ctx, opts.calls);
    await tickAll(ctx, fns[0]!, calls, 1, opts.batch); // the answer: every call's first, general tick
    const steady = fns.map((): number[] => []);
    const dup = fns.map((): number[] => []);
    let sec = 1;
    for (let r = 0; r < opts.rounds; r++) {
      for (const [v, fn] of fns.entries()) {
        sec += 1;
        steady[v]!.push(await tickAll(ctx, fn, calls, sec, opts.batch));
        dup[v]!.push(await tickAll(ctx, fn, calls, sec, opts.batch));
      }
    }
    rows = opts.lua.map((dir, v) => ({
      lua: dir,
      library: libs[v]!.name,
      steadyUs: { median: median(steady[v]!), fastest: Math.min(...steady[v]!) },
      dupUs: { median: median(dup[v]!), fastest: Math.min(...dup[v]!) },
    }));
    for (const row of rows)
      console.log(
        `  ${row.lua}\n    steady tick ${fmt(row.steadyUs.median)} µs (fastest ${fmt(row.steadyUs.fastest)}) = ${fmt(row.steadyUs.median / rows[0]!.steadyUs.median)} × the first` +
          `; repeated tick ${fmt(row.dupUs.median)} µs (fastest ${fmt(row.dupUs.fastest)})`,
      );
  } finally {
    await br.stop();
    removeTmp();
  }
  // The JSON line last, after removeTmp's "kept DIR" (--keep).
  printJsonLine({ bench: 'tick-script', params: { ...opts }, rows });
});

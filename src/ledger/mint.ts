import type { Context } from '../app/context';
import type { Product } from '../catalog/schema';
import { keys } from '../redis/keys';
import { failureReason } from '../redis/failure';
import { mintInto } from './scripts';
import { generateId } from '../ids/idnum';
import { productTerms } from '../catalog/terms';

const PER_CALL = 100;
const BATCH = 20_000;

/** How a mint paces and retries its script calls. */
export interface MintPacing {
  /** Script calls in flight at once: enough to keep Redis busy, few enough that none waits long behind the others. */
  inFlight: number;
  /** Tries of one script call that fails for want of Redis (timeout, connection, BUSY...) before the mint stops. */
  tries: number;
  /** Pause before the first retry (ms); it doubles with each further one, up to 2 s. */
  backoffMs: number;
  /** After a stop: how long to keep asking Redis whether the calls that got no answer landed (ms). */
  settleMs: number;
}

export const MINT_PACING: MintPacing = { inFlight: 32, tries: 6, backoffMs: 100, settleMs: 30_000 };

/** What a mint did: how many IDs Redis confirmed (each emitted once) and, if it stopped early, why. */
export interface MintOutcome {
  minted: number;
  /** Set when the mint stopped before `count`: the last Redis error. */
  stopped?: string;
  /** IDs of calls whose outcome Redis never told (not emitted): 0 unless Redis stayed away after a stop. */
  unknown: number;
}

interface Call {
  bucket: number;
  ids: { id: string; key: string; sealed: string }[];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Mints `count` IDs of a product into inventory. IDs are grouped by bucket so
 * one script call writes up to 100 of them in one slot; the rare hash already
 * taken is minted again. `emit` receives each call's clear IDs exactly once,
 * after Redis confirmed them: the only moment the clear numbers leave the
 * process.
 *
 * A call that gets no answer (timeout, lost connection, busy server) is sent
 * again unchanged: the same IDs with the same sealed numbers, so lua/mint.lua
 * tells an ID the first try already wrote (its seal) from a real clash. When a
 * call still fails after its tries, no new call is started; the calls in flight
 * finish, and for each failed one Redis is asked (on the same connection, so
 * after anything sent before has run) which of its IDs it holds: those are
 * emitted too. So when the mint stops, what was emitted is exactly what Redis
 * holds, unless Redis stayed unreachable for `settleMs` (`unknown` says how
 * many IDs that leaves in doubt).
 */
export async function mintBatches(
  ctx: Context,
  product: Product,
  count: number,
  emit: (ids: readonly string[]) => void,
  pacing: MintPacing = MINT_PACING,
  /** Why to stop starting calls now (the output closed, say), or undefined to go on. */
  halt: () => string | undefined = () => undefined,
): Promise<MintOutcome> {
  const terms = productTerms(product);
  const outcome: MintOutcome = { minted: 0, unknown: 0 };
  const failed: Call[] = [];
  let want = count;
  const inflight = new Set<Promise<void>>();

  const send = (c: Call): Promise<Set<number>> =>
    mintInto(ctx.scripts, c.bucket, product.name, terms, c.ids, Date.now());

  const run = async (c: Call): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      if (outcome.stopped !== undefined && attempt > 1) return void failed.push(c);
      try {
        const clash = await send(c);
        const done = c.ids.filter((_, j) => !clash.has(j)).map((i) => i.id);
        outcome.minted += done.length;
        want += clash.size;
        if (done.length > 0) emit(done);
        return;
      } catch (err) {
        if (failureReason(err) !== 'unavailable' || attempt >= pacing.tries) {
          outcome.stopped ??= err instanceof Error ? err.message : String(err);
          return void failed.push(c);
        }
        await sleep(Math.min(2000, pacing.backoffMs * 2 ** (attempt - 1)));
      }
    }
  };

  // Generation (CPU here) and writing (CPU in Redis) overlap: while one batch is
  // generated, up to `inFlight` script calls of the previous ones keep Redis busy.
  while (outcome.stopped === undefined && (want > 0 || inflight.size > 0)) {
    outcome.stopped = halt();
    if (outcome.stopped !== undefined) break;
    if (want === 0) {
      await Promise.race(inflight);
      continue;
    }
    const batch = Math.min(want, BATCH);
    want -= batch;
    const byBucket = new Map<number, { id: string; key: string }[]>();
    for (let i = 0; i < batch; i++) {
      const id = generateId(ctx.cfg.idLength);
      const { hash, bucket } = ctx.ids.hash(id);
      let list = byBucket.get(bucket);
      if (!list) byBucket.set(bucket, (list = []));
      list.push({ id, key: keys.id(bucket, hash) });
    }
    for (const [bucket, list] of byBucket) {
      for (let i = 0; i < list.length && outcome.stopped === undefined; i += PER_CALL) {
        // Sealed once: a retry must send the very same sealed numbers.
        const ids = list.slice(i, i + PER_CALL).map((c) => ({ ...c, sealed: ctx.ids.seal(c.id) }));
        const p = run({ bucket, ids });
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
        if (inflight.size >= pacing.inFlight) await Promise.race(inflight);
      }
    }
  }
  await Promise.all(inflight);
  const deadline = Date.now() + pacing.settleMs;
  for (const c of failed) {
    const held = await heldOf(ctx, c, deadline, pacing.backoffMs);
    if (!held) {
      outcome.unknown += c.ids.length;
      continue;
    }
    outcome.minted += held.length;
    if (held.length > 0) emit(held);
  }
  return outcome;
}

/** mintBatches, one ID at a time, throwing if the mint stopped early: for tests, benchmarks and the demo. */
export async function mintIds(
  ctx: Context,
  product: Product,
  count: number,
  emit: (id: string) => void,
): Promise<number> {
  const r = await mintBatches(ctx, product, count, (ids) => ids.forEach((id) => emit(id)));
  if (r.stopped !== undefined) throw new Error(`mint stopped after ${r.minted} of ${count}: ${r.stopped}`);
  return r.minted;
}

/**
 * Which IDs of a call that got no answer Redis holds with the call's own sealed
 * numbers, asked until the deadline; undefined if Redis never answered.
 */
async function heldOf(ctx: Context, c: Call, deadline: number, backoffMs: number): Promise<string[] | undefined> {
  for (;;) {
    try {
      const pipe = ctx.redis.pipeline();
      for (const i of c.ids) pipe.hget(i.key, 'seal');
      const rows = (await pipe.exec()) ?? [];
      const seals = rows.map(([err, v]) => {
        if (err) throw err;
        return v;
      });
      return c.ids.filter((i, j) => seals[j] === i.sealed).map((i) => i.id);
    } catch (err) {
      if (failureReason(err) !== 'unavailable' || Date.now() >= deadline) return undefined;
      await sleep(backoffMs);
    }
  }
}

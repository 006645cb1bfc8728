import type { Context } from '../app/context';
import type { Product } from '../catalog/schema';
import { keys } from '../redis/keys';
import { mintInto } from './scripts';
import { generateId } from '../ids/idnum';
import { productTerms } from '../catalog/terms';

const PER_CALL = 100;
const IN_FLIGHT = 256;
const BATCH = 20_000;

/**
 * Mints `count` IDs of a product into inventory. IDs are grouped by bucket so
 * one script call writes up to 100 of them in one slot; the rare hash already
 * taken is minted again. `emit` receives each clear ID exactly once, after
 * Redis has it: the only moment the clear number leaves the process.
 */
export async function mintIds(
  ctx: Context,
  product: Product,
  count: number,
  emit: (id: string) => void,
): Promise<number> {
  const terms = productTerms(product);
  let minted = 0;
  let want = count;
  const inflight = new Set<Promise<void>>();
  // Generation (CPU here) and writing (CPU in Redis) overlap: while one batch is
  // generated, up to IN_FLIGHT script calls of the previous ones keep Redis busy.
  while (want > 0 || inflight.size > 0) {
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
      for (let i = 0; i < list.length; i += PER_CALL) {
        const chunk = list.slice(i, i + PER_CALL);
        const sealed = chunk.map((c) => ({ key: c.key, sealed: ctx.ids.seal(c.id) }));
        const p = mintInto(ctx.scripts, bucket, product.name, terms, sealed).then((clash) => {
          chunk.forEach((c, j) => {
            if (!clash.has(j)) {
              emit(c.id);
              minted++;
            }
          });
          want += clash.size;
        });
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
        if (inflight.size >= IN_FLIGHT) await Promise.race(inflight);
      }
    }
  }
  return minted;
}

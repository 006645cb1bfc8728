import type { Context } from '../app/context';
import { keys } from '../redis/keys';
import { releaseId, reserveId } from './scripts';

/**
 * Unsold IDs live in per-bucket sets, so reserving one is a single-slot SPOP.
 * This keeps a short-lived picture of which buckets still hold stock of a
 * product, so a reservation goes straight to a bucket that has some; a bucket
 * found empty is dropped from the picture, and only when the picture is empty
 * is Redis asked again, so "out of stock" is said only when it is true.
 */
export class Inventory {
  private readonly stock = new Map<string, { at: number; counts: Map<number, number> }>();
  /**
   * A refresh under way, by product: requests that find the picture stale join it. Each refresh is
   * a SCARD per bucket, and every buy page asks for it: without this, each page arriving while one
   * refresh waits on Redis sends a whole one of its own (BUCKETS commands per product a page).
   */
  private readonly refreshing = new Map<string, Promise<Map<number, number>>>();

  constructor(
    private readonly ctx: Context,
    private readonly maxAgeMs = 2000,
  ) {}

  /** Units of a product left in inventory (all buckets). */
  async available(product: string): Promise<number> {
    let total = 0;
    for (const n of (await this.counts(product, false)).values()) total += n;
    return total;
  }

  /** Whether any ID of the product is left: the picture when it shows some, else Redis asked afresh. */
  async inStock(product: string): Promise<boolean> {
    if ((await this.counts(product, false)).size > 0) return true;
    return (await this.counts(product, true)).size > 0;
  }

  private async counts(product: string, fresh: boolean): Promise<Map<number, number>> {
    const known = this.stock.get(product);
    if (!fresh && known && Date.now() - known.at < this.maxAgeMs) return known.counts;
    // A fresh look must start after its caller asked: it joins nothing older.
    const under = fresh ? undefined : this.refreshing.get(product);
    if (under) return under;
    const refresh = this.refresh(product).finally(() => {
      if (this.refreshing.get(product) === refresh) this.refreshing.delete(product);
    });
    this.refreshing.set(product, refresh);
    return refresh;
  }

  private async refresh(product: string): Promise<Map<number, number>> {
    const { buckets } = this.ctx.cfg;
    const n = await Promise.all(
      Array.from({ length: buckets }, (_, b) => this.ctx.redis.scard(keys.inventory(b, product))),
    );
    const counts = new Map<number, number>();
    n.forEach((c, b) => c > 0 && counts.set(b, c));
    this.stock.set(product, { at: Date.now(), counts });
    return counts;
  }

  /** Reserves one ID of the product until `until` (ms) for the purchase `owner`; undefined when none is left anywhere. */
  async reserve(
    product: string,
    until: number,
    owner: string,
  ): Promise<{ idHash: string; bucket: number } | undefined> {
    for (let fresh = false; ; fresh = true) {
      const counts = await this.counts(product, fresh);
      while (counts.size > 0) {
        const buckets = [...counts.keys()];
        const bucket = buckets[Math.floor(Math.random() * buckets.length)]!;
        const idHash = await reserveId(this.ctx.scripts, bucket, product, until, owner);
        if (idHash) {
          const left = (counts.get(bucket) ?? 1) - 1;
          if (left > 0) counts.set(bucket, left);
          else counts.delete(bucket);
          return { idHash, bucket };
        }
        counts.delete(bucket);
      }
      if (fresh) return undefined;
    }
  }

  /**
   * Puts the purchase `owner`'s reserved ID back: only while it is still reserved (not sold) and its
   * hold is still the purchase's (it did not run out and go to another purchase).
   */
  async release(product: string, bucket: number, idHash: string, owner: string): Promise<boolean> {
    const released = await releaseId(this.ctx.scripts, bucket, product, idHash, 0, owner);
    if (released) this.stock.delete(product);
    return released;
  }

  /** Returns holds that ran out to inventory; run periodically by every gateway (the script re-checks). */
  async sweepHolds(now = Date.now()): Promise<number> {
    const { buckets } = this.ctx.cfg;
    let released = 0;
    await Promise.all(
      Array.from({ length: buckets }, async (_, b) => {
        const expired = await this.ctx.redis.zrangebyscore(keys.reservations(b), '-inf', `(${now}`, 'LIMIT', 0, 200);
        for (const idHash of expired) {
          const product = await this.ctx.redis.hget(keys.id(b, idHash), 'prod');
          if (!product) continue;
          if (await releaseId(this.ctx.scripts, b, product, idHash, now, '')) released++;
        }
      }),
    );
    return released;
  }
}

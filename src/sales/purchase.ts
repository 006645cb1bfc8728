import type { Logger } from 'pino';
import type { Context } from '../app/context';
import type { CatalogCache } from '../catalog/cache';
import type { Product } from '../catalog/schema';
import { bucketOfKey, keys } from '../redis/keys';
import { replicated } from '../redis/replication';
import type { Inventory } from './inventory';
import { hashPin } from './pin';
import { claimPurchase, sellId } from './scripts';
import type { PaymentProvider } from './provider';
import type { Metrics } from '../observability/metrics';
import { isReason, messageOf, type Reason } from '../protocol/reasons';

/**
 * One purchase, start to finish, safe to retry at any point: reserve an ID,
 * authorize and capture at the card company, then sell the ID with the buyer's
 * PIN and record the sale. Where it stands is kept in Redis under the
 * Idempotency-Key, so a retry (or another gateway) picks up exactly where an
 * earlier attempt stopped, and asks the provider when an answer was lost.
 */
export interface PurchaseRequest {
  product: string;
  pin: string;
  card: string;
  cardPin: string;
}

export interface Sold {
  id: string;
  checkUrl: string;
  accessUrl: string;
  product: string;
  price: number;
  currency: string;
}

/** A refusal's reason is one of the catalogue's (protocol/reasons.ts) or, for a decline, the card company's own. */
export type PurchaseResult = ({ ok: true } & Sold) | { ok: false; reason: string; message: string };

type State = 'new' | 'reserved' | 'authorizing' | 'authorized' | 'capturing' | 'captured' | 'done' | 'declined';

interface PurchaseRecord {
  st: State;
  /** Keyed fingerprint of the request the purchase was claimed for. */
  fp?: string;
  product?: string;
  idHash?: string;
  bucket?: string;
  commission?: string;
  answer?: string;
  reason?: string;
}

const PURCHASE_TTL_SEC = 30 * 86400;

const fail = (reason: Reason, message = messageOf(reason)): PurchaseResult => ({ ok: false, reason, message });

export class Purchases {
  constructor(
    private readonly ctx: Context,
    private readonly catalog: CatalogCache,
    private readonly inventory: Inventory,
    private readonly provider: PaymentProvider,
    private readonly publicUrl: () => string,
    private readonly log: Logger,
    private readonly metrics?: Metrics,
  ) {}

  private recordKey(idemKey: string): { key: string; ref: string; open: string } {
    const h = this.ctx.ids.mac(`purchase:${idemKey}`).slice(0, 32);
    const bucket = this.ctx.ids.bucketOf(h);
    return { key: keys.purchase(bucket, h), ref: `tsp_${h}`, open: keys.openPurchases(bucket) };
  }

  async purchase(channel: string, idemKey: string, req: PurchaseRequest): Promise<PurchaseResult> {
    const r = await this.attempt(channel, idemKey, req);
    this.metrics?.purchases.inc({ outcome: r.ok ? 'sold' : r.reason });
    return r;
  }

  private async attempt(channel: string, idemKey: string, req: PurchaseRequest): Promise<PurchaseResult> {
    const { key, ref, open } = this.recordKey(idemKey);
    // Keyed: the fingerprint must not let a Redis reader test PINs or card numbers.
    const fp = this.ctx.ids.mac(JSON.stringify([req.product, req.pin, req.card, req.cardPin]));
    const claim = await claimPurchase(this.ctx.scripts, {
      key,
      open,
      fingerprint: fp,
      leaseMs: this.ctx.cfg.purchaseLeaseMs,
      ttlSec: PURCHASE_TTL_SEC,
    });
    // The claim is the purchase's record: a retry after a failover must find it.
    if (claim !== 'conflict' && claim !== 'busy') await replicated(this.ctx.redis, key);
    switch (claim) {
      case 'conflict':
        return fail('idempotency_conflict');
      case 'busy':
        return fail('in_progress');
      case 'done':
        return this.answerOf(await this.read(key));
    }
    try {
      return await this.run(key, ref, channel, req, await this.read(key));
    } finally {
      // Let a retry take over at once instead of waiting for the lease.
      await this.ctx.redis.hset(key, 'lease', '0');
    }
  }

  private async read(key: string): Promise<PurchaseRecord> {
    return (await this.ctx.redis.hgetall(key)) as unknown as PurchaseRecord;
  }

  /** Each step is on a replica before the next (a card company call) is made. */
  private async set(key: string, fields: { [k: string]: string | number }): Promise<void> {
    await this.ctx.redis.hset(key, fields);
    await replicated(this.ctx.redis, key);
    // A purchase that ended leaves the open set (same bucket as its record).
    if (fields.st === 'done' || fields.st === 'declined')
      await this.ctx.redis.zrem(keys.openPurchases(bucketOfKey(key)), key);
  }

  private answerOf(r: PurchaseRecord): PurchaseResult {
    if (r.st === 'declined') {
      const reason = r.reason ?? 'declined';
      // Ours are in the catalogue; any other reason is the card company's decline.
      if (isReason(reason)) return fail(reason);
      return { ok: false, reason, message: `declined by the card company: ${reason}` };
    }
    const sold = JSON.parse(r.answer!) as Sold & { sealed: string };
    const { sealed, ...rest } = sold;
    return { ok: true, ...rest, id: this.ctx.ids.unseal(sealed) };
  }

  private async decline(key: string, reason: string, r: PurchaseRecord): Promise<PurchaseResult> {
    if (r.idHash && r.product) await this.inventory.release(r.product, Number(r.bucket), r.idHash);
    await this.set(key, { st: 'declined', reason });
    return this.answerOf({ st: 'declined', reason });
  }

  private pending(): PurchaseResult {
    return fail('payment_pending');
  }

  private async run(
    key: string,
    ref: string,
    channel: string,
    req: PurchaseRequest,
    r: PurchaseRecord,
  ): Promise<PurchaseResult> {
    const product = this.catalog.product(r.product ?? req.product);
    if (!product) return this.decline(key, 'unknown_product', r);

    // An attempt that lost its answer resumes by asking the card company what happened.
    if (r.st === 'authorizing' || r.st === 'capturing') {
      const s = await this.provider.status(ref);
      if (s.state === 'unknown') return this.pending();
      if (s.state === 'declined' || s.state === 'voided') return this.decline(key, s.reason ?? s.state, r);
      if (s.state === 'none') r.st = 'reserved';
      if (s.state === 'authorized') r.st = 'authorized';
      if (s.state === 'captured') {
        r.st = 'captured';
        r.commission = String(s.commission ?? 0);
        await this.set(key, { st: 'captured', commission: r.commission });
      }
    }

    if (r.st === 'new') {
      const held = await this.inventory.reserve(product.name, Date.now() + this.ctx.cfg.holdMs);
      if (!held) return this.decline(key, 'out_of_stock', r);
      Object.assign(r, { st: 'reserved', product: product.name, idHash: held.idHash, bucket: String(held.bucket) });
      await this.set(key, { st: 'reserved', product: product.name, idHash: held.idHash, bucket: held.bucket });
    }

    if (r.st === 'reserved') {
      await this.set(key, { st: 'authorizing' });
      const a = await this.provider.authorize({
        reference: ref,
        card: req.card,
        cardPin: req.cardPin,
        amount: product.price,
        currency: product.currency,
      });
      if (a.status === 'unknown') return this.pending();
      if (a.status === 'declined') return this.decline(key, a.reason, r);
      r.st = 'authorized';
      await this.set(key, { st: 'authorized' });
    }

    if (r.st === 'authorized') {
      await this.set(key, { st: 'capturing' });
      const c = await this.provider.capture(ref);
      if (c.status === 'unknown') return this.pending();
      if (c.status !== 'captured') {
        // Do not leave the buyer's credit held for an ID they will not get.
        await this.provider.void(ref);
        return this.decline(key, c.status === 'declined' ? c.reason : 'capture_failed', r);
      }
      r.st = 'captured';
      r.commission = String(c.commission);
      await this.set(key, { st: 'captured', commission: c.commission });
    }

    if (r.st !== 'captured') throw new Error(`purchase ${ref} in unexpected state ${r.st}`);
    return this.sell(key, ref, channel, req, product, r);
  }

  /** Paid for: sell the held ID (or, if its hold ran out meanwhile, another one). */
  private async sell(
    key: string,
    ref: string,
    channel: string,
    req: PurchaseRequest,
    product: Product,
    r: PurchaseRecord,
  ): Promise<PurchaseResult> {
    const pinHash = await hashPin(req.pin);
    for (let attempt = 0; attempt < 5; attempt++) {
      const bucket = Number(r.bucket);
      const idKey = keys.id(bucket, r.idHash!);
      // Reproducible, so a retry after a crash gives the buyer the same link.
      const token = this.ctx.ids.mac(`check:${ref}:${r.idHash}`).slice(0, 32);
      const res = await sellId(this.ctx.scripts, {
        idKey,
        bucket,
        checkHash: this.ctx.ids.mac(`chk:${token}`).slice(0, 32),
        product: product.name,
        price: product.price,
        channel,
        purchaseRef: ref,
        providerRef: ref,
        commission: Number(r.commission ?? 0),
        pinHash,
      });
      if (res.ok) {
        await replicated(this.ctx.redis, idKey);
        const sealed = await this.ctx.redis.hget(idKey, 'seal');
        const base = this.publicUrl();
        const sold: Sold = {
          id: this.ctx.ids.unseal(sealed!),
          checkUrl: `${base}/check/${bucket}/${token}`,
          accessUrl: `${base}/access`,
          product: product.name,
          price: product.price,
          currency: product.currency,
        };
        const { id, ...rest } = sold;
        await this.set(key, { st: 'done', answer: JSON.stringify({ ...rest, sealed }) });
        return { ok: true, ...sold, id };
      }
      if (res.reason !== 'not_reserved') throw new Error(`sell refused: ${res.reason}`);
      // The hold ran out while the card company took its time: take another ID.
      const held = await this.inventory.reserve(product.name, Date.now() + this.ctx.cfg.holdMs);
      if (!held) {
        this.log.warn({ ref }, 'paid but sold out meanwhile: voiding the payment');
        await this.provider.void(ref);
        return this.decline(key, 'out_of_stock', { st: 'captured' });
      }
      Object.assign(r, { idHash: held.idHash, bucket: String(held.bucket) });
      await this.set(key, { idHash: held.idHash, bucket: held.bucket });
    }
    throw new Error(`purchase ${ref}: could not sell`);
  }

  /**
   * Purchases left midway for longer than ABANDON_AFTER_MS (the buyer never came back
   * after an unknown outcome) are settled from the provider's side: whatever
   * was authorized or captured is voided, the held ID goes back to stock, and
   * the purchase ends declined 'abandoned'. Nobody keeps paying for an ID they
   * never saw. Every gateway may sweep: the claim's lease makes one win.
   */
  async sweepAbandoned(now = Date.now()): Promise<number> {
    const { buckets, abandonAfterMs, purchaseLeaseMs } = this.ctx.cfg;
    let settled = 0;
    for (let b = 0; b < buckets; b++) {
      const open = keys.openPurchases(b);
      for (const key of await this.ctx.redis.zrangebyscore(open, '-inf', `(${now - abandonAfterMs}`, 'LIMIT', 0, 100)) {
        const r = await this.read(key);
        if (!r.st || r.st === 'done' || r.st === 'declined') {
          await this.ctx.redis.zrem(open, key);
          continue;
        }
        const claim = await claimPurchase(
          this.ctx.scripts,
          { key, open, fingerprint: r.fp ?? '', leaseMs: purchaseLeaseMs, ttlSec: PURCHASE_TTL_SEC },
          now,
        );
        if (claim !== 'resume') continue;
        const ref = `tsp_${key.slice(key.lastIndexOf(':') + 1)}`;
        try {
          const s = await this.provider.status(ref);
          if (s.state === 'unknown') continue;
          if (s.state === 'authorized' || s.state === 'captured') {
            const v = await this.provider.void(ref);
            if (v.status !== 'voided') continue;
          }
          await this.decline(key, 'abandoned', r);
          settled++;
          this.log.warn({ ref, was: s.state }, 'abandoned purchase settled: payment voided, ID back in stock');
        } finally {
          await this.ctx.redis.hset(key, 'lease', '0');
        }
      }
    }
    return settled;
  }
}

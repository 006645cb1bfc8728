/**
 * One purchase, start to finish, safe to retry at any point: check the request,
 * fix its price, authorize at the card company, only then reserve an ID,
 * capture, and sell the ID with the buyer's PIN and record the sale. Where it
 * stands is kept in Redis under the Idempotency-Key, so a retry (or another
 * gateway) picks up exactly where an earlier attempt stopped, and asks the
 * provider when an answer was lost. Nothing is written for a request that fails
 * its checks, and an anonymous buyer's new purchases are counted per client
 * address and in total (BUY_LIMIT_*).
 */
import type { Logger } from 'pino';
import type { Context } from '../app/context';
import type { CatalogCache } from '../catalog/cache';
import { isOnPublicSale } from '../catalog/schema';
import { keys } from '../redis/keys';
import { replicated, replicatedSeen } from '../redis/replication';
import { declinedAnswer, PaymentRecords } from './payment-record';
import type { Inventory } from './inventory';
import { hashPin } from './pin';
import { Settler } from './settle';
import { checkLink } from './check';
import { bindPurchase, sellId } from './scripts';
import type { PaymentProvider } from './provider';
import type { Metrics } from '../observability/metrics';
import { messageOf, type Reason } from '../protocol/reasons';
import { BUY_PAGE_NAME, PIN_RE } from '../protocol/sales';
import { admitAnonymous, cardNumberValid } from './anonymous';

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

/**
 * A refusal's reason is one of the catalogue's (protocol/reasons.ts) or, for a decline, the card company's own
 * (with `httpStatus` 402: its name may be one of ours); `retryAfter` (seconds) comes with too_many_purchases.
 */
export type PurchaseResult =
  ({ ok: true } & Sold) | { ok: false; reason: string; message: string; retryAfter?: number; httpStatus?: number };

/**
 * `reserved` is only found in records written before IDs were reserved after
 * authorizing; such a record resumes as `new` with the ID it holds.
 */
type State =
  'new' | 'reserved' | 'authorizing' | 'authorized' | 'capturing' | 'captured' | 'voiding' | 'done' | 'declined';

interface PurchaseRecord {
  st: State;
  /** Keyed fingerprint of the request the purchase was claimed for. */
  fp?: string;
  product?: string;
  /** Price (micro-units) and currency, fixed when the purchase started. */
  price?: string;
  cur?: string;
  /** The ID held for it, once the card company authorized. */
  idHash?: string;
  bucket?: string;
  commission?: string;
  answer?: string;
  reason?: string;
}

/** A sold purchase's answer is kept this long for retries. */
const SOLD_TTL_SEC = 30 * 86400;

const fail = (reason: Reason, message = messageOf(reason)): PurchaseResult => ({ ok: false, reason, message });

export const CARD_PIN = /^[0-9]{4,12}$/;

/**
 * The checks a purchase passes before anything is written: the buyer's PIN, the
 * card number (12 to 19 digits once spaces are gone) and card PIN well-formed.
 * Whether the product exists and is on public sale is checked next, by the caller.
 */
export function malformedPurchase(req: PurchaseRequest): PurchaseResult | undefined {
  if (!PIN_RE.test(req.pin)) return fail('bad_value', 'the PIN must be 4 to 12 digits');
  if (!cardNumberValid(req.card)) return fail('card_invalid');
  if (!CARD_PIN.test(req.cardPin)) return fail('bad_value', 'the card PIN must be 4 to 12 digits');
  return undefined;
}

export class Purchases {
  private readonly records: PaymentRecords<PurchaseRecord>;
  /** Copies of one buy form waiting for its attempt at work: ./settle.ts. */
  private readonly settler = new Settler<PurchaseResult>();

  constructor(
    private readonly ctx: Context,
    private readonly catalog: CatalogCache,
    private readonly inventory: Inventory,
    private readonly provider: PaymentProvider,
    private readonly publicUrl: () => string,
    private readonly log: Logger,
    private readonly metrics?: Metrics,
  ) {
    this.records = new PaymentRecords(ctx, keys.openPurchases, SOLD_TTL_SEC, 'tsp_');
  }

  /** Stops what outlives a request (a lease handed back later): the gateway is closing. */
  stop(): void {
    this.records.stop();
  }

  private recordKey(idemKey: string): { key: string; ref: string } {
    const h = this.ctx.ids.mac(`purchase:${idemKey}`).slice(0, 32);
    const key = keys.purchase(this.ctx.ids.bucketOf(h), h);
    return { key, ref: this.records.refOf(key) };
  }

  /**
   * The product of the purchase an idempotency key started, if any: a form sent again with another
   * product is refused idempotency_conflict, and its page offers the first purchase's to finish it.
   */
  async productOf(idemKey: string): Promise<string | undefined> {
    return (await this.ctx.redis.hget(this.recordKey(idemKey).key, 'product')) ?? undefined;
  }

  /**
   * `client`: the address of an anonymous buyer (the buy page), whose new
   * purchases count against BUY_LIMIT_PER_CLIENT and BUY_LIMIT_TOTAL.
   * `waitMs`: how long to wait for another attempt at work on the same key
   * rather than answer `in_progress` (the buy page: ./settle.ts).
   */
  async purchase(
    channel: string,
    idemKey: string,
    req: PurchaseRequest,
    client?: string,
    waitMs = 0,
  ): Promise<PurchaseResult> {
    const same = JSON.stringify([channel, idemKey, req.product, req.pin, req.card, req.cardPin]);
    const r = await this.settler.settled(waitMs, same, () => this.attempt(channel, idemKey, req, client));
    this.metrics?.purchases.inc({ outcome: r.ok ? 'sold' : r.reason });
    return r;
  }

  private async attempt(
    channel: string,
    idemKey: string,
    req: PurchaseRequest,
    client: string | undefined,
  ): Promise<PurchaseResult> {
    // Deterministic checks first: a refusal here writes nothing, and a retry gets the same refusal.
    const malformed = malformedPurchase(req);
    if (malformed) return malformed;
    const { key, ref } = this.recordKey(idemKey);
    const product = this.catalog.product(req.product);
    // Anonymous buyers (the buy page) get what is on public sale; a sales token sells every product.
    const onSale = product !== undefined && (channel !== BUY_PAGE_NAME || isOnPublicSale(product));
    // A purchase already started goes on (or answers) whatever its product or stock has become since.
    let started: boolean | undefined;
    const isStarted = async (): Promise<boolean> => (started ??= (await this.ctx.redis.exists(key)) === 1);
    if (!onSale && !(await isStarted())) return fail('unknown_product');
    // Sold out: said before anything is written or the card company is asked. (Stock is taken only after
    // the card company authorizes, so a buyer may still find it gone then: the payment is voided.)
    if (onSale && !(await this.inventory.inStock(product.name)) && !(await isStarted())) return fail('out_of_stock');
    // A form sent twice at once (a double tap), to any gateway, is one purchase, counted once.
    if (client !== undefined && !(await isStarted())) {
      const refused = await admitAnonymous(this.ctx, client, key);
      if (refused) return refused;
    }
    // Keyed: the fingerprint must not let a Redis reader test PINs or card numbers.
    const fp = this.ctx.ids.mac(JSON.stringify([req.product, req.pin, req.card, req.cardPin]));
    // The price and currency are fixed here, once: what is authorized, sold, recorded and answered.
    const claim = await this.records.claim(
      key,
      fp,
      onSale ? { product: product.name, price: product.price, currency: product.currency } : undefined,
    );
    // The claim is the purchase's record: a retry after a failover must find it. A finished
    // purchase answers from its record, which another gateway may have written.
    if (claim.state === 'done') await replicatedSeen(this.ctx.redis, key);
    else if (claim.state !== 'conflict' && claim.state !== 'busy') await replicated(this.ctx.redis, key);
    switch (claim.state) {
      case 'gone':
        return fail('unknown_product');
      case 'conflict':
        return fail('idempotency_conflict');
      case 'busy':
        return fail('in_progress');
      case 'done':
        return this.answerOf(await this.records.read(key));
    }
    return claim.own(async () => this.run(key, ref, channel, req, await this.records.read(key)));
  }

  private answerOf(r: PurchaseRecord): PurchaseResult {
    if (r.st === 'declined') return declinedAnswer(r.reason);
    const sold = JSON.parse(r.answer!) as Sold & { sealed: string };
    const { sealed, ...rest } = sold;
    return { ok: true, ...rest, id: this.ctx.ids.unseal(sealed) };
  }

  private async decline(key: string, reason: string, r: PurchaseRecord, watched = false): Promise<PurchaseResult> {
    if (r.idHash && r.product) {
      await this.inventory.release(r.product, Number(r.bucket), r.idHash, this.records.refOf(key));
    }
    await this.records.set(key, { st: 'declined', reason }, watched);
    return declinedAnswer(reason);
  }

  private pending(): PurchaseResult {
    return fail('payment_pending');
  }

  /** Gives back what the card company holds, then declines; until it has, the purchase stays as it is. */
  private async voidThenDecline(key: string, ref: string, reason: string, r: PurchaseRecord): Promise<PurchaseResult> {
    // Not given back yet: a retry (or the abandoned-purchase sweep) tries again.
    if (!(await this.records.giveBack(this.provider, key, ref, reason))) return this.pending();
    return this.decline(key, reason, r);
  }

  /**
   * Takes an ID of the purchase's product for it (in place of the one `r` has,
   * whose hold ran out); false when none is left. An attempt whose lease ran out
   * while it waited on the card company may still be at work beside the retry
   * that took over: the first to bind an ID wins, and the other gives its own
   * back and sells that one, so one payment never sells two IDs.
   */
  private async hold(key: string, r: PurchaseRecord): Promise<boolean> {
    const ref = this.records.refOf(key);
    const held = await this.inventory.reserve(r.product!, Date.now() + this.ctx.cfg.holdMs, ref);
    if (!held) {
      // None left for this attempt; another may have bound one meanwhile, and that one is the purchase's.
      const [idHash, bucket] = await this.ctx.redis.hmget(key, 'idHash', 'bucket');
      if (!idHash || idHash === r.idHash) return false;
      Object.assign(r, { idHash, bucket: bucket ?? '' });
      return true;
    }
    const bound = await bindPurchase(this.ctx.scripts, key, r.idHash ?? '', held);
    if (bound.ok) Object.assign(r, { idHash: held.idHash, bucket: String(held.bucket) });
    else {
      this.log.warn({ key }, 'another attempt of this purchase bound an ID first: selling that one');
      await this.inventory.release(r.product!, held.bucket, held.idHash, ref);
      Object.assign(r, { idHash: bound.idHash, bucket: String(bound.bucket) });
    }
    await replicated(this.ctx.redis, key);
    return true;
  }

  private async run(
    key: string,
    ref: string,
    channel: string,
    req: PurchaseRequest,
    r: PurchaseRecord,
  ): Promise<PurchaseResult> {
    if (r.price === undefined || r.cur === undefined || r.product === undefined) {
      // A record from before terms were fixed at the start: fix them now, once.
      const product = this.catalog.product(r.product ?? req.product);
      if (!product) return this.decline(key, 'unknown_product', r);
      Object.assign(r, { product: product.name, price: String(product.price), cur: product.currency });
      await this.records.set(key, { product: product.name, price: product.price, cur: product.currency });
    }
    if (r.st === 'reserved') r.st = 'new';

    // Stock is taken only once the card company holds the money: a declined card, or one whose
    // answer never came, holds no ID.
    const held = async (): Promise<string | undefined> =>
      r.idHash || (await this.hold(key, r)) ? undefined : 'out_of_stock';
    const paid = await this.records.pay(this.provider, key, ref, r, req, held);
    if (paid.to === 'pending') return this.pending();
    if (paid.to === 'decline') return this.decline(key, paid.reason, r);
    if (paid.to === 'void') return this.voidThenDecline(key, ref, paid.reason, r);
    return this.sell(key, ref, channel, req, r);
  }

  /** Paid for: sell the held ID (or, if its hold ran out meanwhile, another one), at the purchase's own price. */
  private async sell(
    key: string,
    ref: string,
    channel: string,
    req: PurchaseRequest,
    r: PurchaseRecord,
  ): Promise<PurchaseResult> {
    const pinHash = await hashPin(req.pin);
    const product = r.product!;
    const price = Number(r.price);
    const currency = r.cur!;
    // Paid with no ID held (the hold ran out and was taken): another one, or the payment goes back.
    const outOfStock = (): Promise<PurchaseResult> => {
      this.log.warn({ ref }, 'paid but sold out meanwhile: voiding the payment');
      return this.voidThenDecline(key, ref, 'out_of_stock', { st: 'captured' });
    };
    if (!r.idHash && !(await this.hold(key, r))) return outOfStock();
    for (let attempt = 0; attempt < 5; attempt++) {
      const bucket = Number(r.bucket);
      const idKey = keys.id(bucket, r.idHash!);
      const { token, checkHash } = checkLink(this.ctx.ids, ref, r.idHash!);
      const res = await sellId(this.ctx.scripts, {
        idKey,
        bucket,
        checkHash,
        product,
        price,
        currency,
        channel,
        purchaseRef: ref,
        providerRef: ref,
        commission: Number(r.commission ?? 0),
        pinHash,
      });
      if (res.ok) {
        // A sale made by an earlier attempt (a duplicate) must be on a replica too.
        await (res.duplicate ? replicatedSeen : replicated)(this.ctx.redis, idKey);
        return this.finish(key, ref, bucket, r.idHash!, token, { product, price, currency });
      }
      if (res.reason !== 'not_reserved') throw new Error(`sell refused: ${res.reason}`);
      // The hold ran out while the card company took its time (or the operator blocked or sold the ID
      // by hand meanwhile): take another ID.
      if (!(await this.hold(key, r))) return outOfStock();
    }
    throw new Error(`purchase ${ref}: could not sell`);
  }

  /** Ends a purchase whose ID is sold: its answer, kept for retries. */
  private async finish(
    key: string,
    ref: string,
    bucket: number,
    idHash: string,
    token: string,
    terms: { product: string; price: number; currency: string },
  ): Promise<PurchaseResult> {
    const sealed = await this.ctx.redis.hget(keys.id(bucket, idHash), 'seal');
    const base = this.publicUrl();
    const sold: Sold = {
      id: this.ctx.ids.unseal(sealed!),
      checkUrl: `${base}/check/${bucket}/${token}`,
      accessUrl: `${base}/access`,
      ...terms,
    };
    const { id, ...rest } = sold;
    await this.records.set(key, { st: 'done', answer: JSON.stringify({ ...rest, sealed }) });
    return { ok: true, ...sold, id };
  }

  /**
   * The ID an attempt had already sold when it stopped (its gateway died, or Redis failed,
   * between sell.lua and the purchase's `done`): the purchase is paid for and sold, whatever
   * its record says.
   */
  private async soldFor(r: PurchaseRecord, ref: string): Promise<boolean> {
    if (!r.idHash || r.bucket === undefined) return false;
    const idKey = keys.id(Number(r.bucket), r.idHash);
    if ((await this.ctx.redis.hget(idKey, 'pref')) !== ref) return false;
    await replicatedSeen(this.ctx.redis, idKey);
    return true;
  }

  /**
   * Purchases left midway for longer than ABANDON_AFTER_MS (the buyer never came back
   * after an unknown outcome) are settled from the provider's side: whatever
   * was authorized or captured is voided, the held ID goes back to stock, and
   * the purchase ends declined 'abandoned'. Nobody keeps paying for an ID they
   * never saw. One whose ID was already sold is finished instead (a retry gets
   * it). Every gateway may sweep: the claim's lease makes one win.
   */
  async sweepAbandoned(now = Date.now()): Promise<number> {
    let settled = 0;
    for (let b = 0; b < this.ctx.cfg.buckets; b++) {
      for await (const { key, record: listed } of this.records.abandoned(b, now)) {
        // Leased from the clock, not from `now` (when this round started): a round slowed down by the
        // card company would take a lease already run out, and a retry would settle it beside us.
        const claim = await this.records.claim(key, listed.fp ?? '', undefined);
        if (claim.state === 'gone') await this.records.unlist(key);
        if (claim.state !== 'resume') continue;
        const ref = this.records.refOf(key);
        await claim.own(async () => {
          // As it stands now it is ours: a retry may have moved it on (to `voiding`, say) since it was listed.
          const r = await this.records.read(key);
          // Already sold: voiding now would leave a sold ID, with its sale record, unpaid for.
          if (await this.soldFor(r, ref)) {
            const { token } = checkLink(this.ctx.ids, ref, r.idHash!);
            const terms = { product: r.product!, price: Number(r.price), currency: r.cur! };
            await this.finish(key, ref, Number(r.bucket), r.idHash!, token, terms);
            settled++;
            this.log.warn({ ref }, 'abandoned purchase had sold its ID before it stopped: finished, not voided');
            return;
          }
          const s = await this.provider.status(ref);
          if (s.state === 'unknown') return;
          // One already refused (voiding) ends with its own reason.
          const reason = r.st === 'voiding' ? (r.reason ?? 'abandoned') : 'abandoned';
          const held = s.state === 'authorized' || s.state === 'captured';
          if (held && !(await this.records.giveBack(this.provider, key, ref, reason))) return;
          const late = s.state === 'none' && r.st === 'authorizing';
          if (late) await this.records.watchLate(key, now);
          await this.decline(key, reason, r, late);
          settled++;
          this.log.warn({ ref, was: s.state }, 'abandoned purchase settled: payment voided, ID back in stock');
        });
      }
    }
    return settled;
  }
}

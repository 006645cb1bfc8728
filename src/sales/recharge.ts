/**
 * An owner's online recharge of their ID (the check page): an amount the
 * product offers, paid through the card company like a purchase, credited by
 * lua/topup.lua. Idempotent like purchases: where it stands is kept in Redis
 * under its Idempotency-Key (the form's nonce), so a retry, or another
 * gateway, picks up where an attempt stopped, asks the card company when an
 * answer was lost, and never charges twice. The card is charged only for an ID
 * the top-up rules accept; should the ID refuse after the capture (blocked
 * meanwhile), the payment is voided.
 */
import type { Logger } from 'pino';
import type { Context } from '../app/context';
import { topupTerms, type Product } from '../catalog/schema';
import { messageOf, type Reason } from '../protocol/reasons';
import { bucketOfKey, keys } from '../redis/keys';
import { replicated } from '../redis/replication';
import type { PaymentProvider } from './provider';
import { CARD_PIN } from './purchase';
import { admitAnonymous, cardNumberValid } from './anonymous';
import { declinedAnswer, PaymentRecords } from './payment-record';
import { Settler } from './settle';
import type { IdLoc, TopupAnswer, Topups } from './topup';
import { idFields } from '../ledger/id-fields';

export interface RechargeRequest {
  amount: number;
  card: string;
  cardPin: string;
}

/** A refusal's reason is the catalogue's or, for a decline, the card company's own; `retryAfter` (seconds) comes with too_many_purchases. */
export type RechargeResult =
  | ({ ok: true } & TopupAnswer)
  | { ok: false; reason: string; message: string; retryAfter?: number; httpStatus?: number };

type State = 'new' | 'authorizing' | 'authorized' | 'capturing' | 'captured' | 'voiding' | 'done' | 'declined';

interface RechargeRecord {
  st: State;
  fp?: string;
  product?: string;
  price?: string;
  cur?: string;
  /** The ID recharged (its key). */
  tgt?: string;
  commission?: string;
  answer?: string;
  reason?: string;
}

/** A recharge's answer is kept this long for retries. */
const DONE_TTL_SEC = 30 * 86400;

const fail = (reason: Reason, message = messageOf(reason)): RechargeResult => ({ ok: false, reason, message });

export class Recharges {
  private readonly records: PaymentRecords<RechargeRecord>;
  /** Copies of one recharge form waiting for its attempt at work: ./settle.ts. */
  private readonly settler = new Settler<RechargeResult>();

  constructor(
    private readonly ctx: Context,
    private readonly productOf: (name: string) => Product | undefined,
    private readonly topups: Topups,
    private readonly provider: PaymentProvider,
    private readonly log: Logger,
  ) {
    this.records = new PaymentRecords(ctx, keys.openRecharges, DONE_TTL_SEC, 'tsr_');
  }

  /** Stops what outlives a request (a lease handed back later): the gateway is closing. */
  stop(): void {
    this.records.stop();
  }

  private recordKey(idemKey: string): { key: string; ref: string; hash: string } {
    const h = this.ctx.ids.mac(`recharge:${idemKey}`).slice(0, 32);
    const key = keys.recharge(this.ctx.ids.bucketOf(h), h);
    return { key, ref: this.records.refOf(key), hash: h };
  }

  /** The amounts the owner of an ID of this product may recharge online (none: not offered). */
  offers(product: Product | undefined): number[] {
    if (product?.kind !== 'talk' || product.topup === false) return [];
    return product.topupAmounts ?? [];
  }

  /** What the check page offers for the ID at `loc`: whether it takes top-ups, the amounts payable online. */
  async offerOf(loc: IdLoc): Promise<{ allowed: boolean; amounts: number[]; currency: string }> {
    const [prod, cur] = await idFields(this.ctx.redis, loc.key, ['prod', 'cur']);
    const product = this.productOf(prod ?? '');
    return { allowed: topupTerms(product).allowed, amounts: this.offers(product), currency: cur ?? '' };
  }

  /**
   * `client`: the address of the check page's visitor, whose new recharges count against the
   * limits of anonymous card payments (BUY_LIMIT_*), as the buy page's purchases do.
   * `waitMs`: how long to wait for another attempt at work on the same key
   * rather than answer `in_progress` (the check page: ./settle.ts).
   */
  recharge(target: IdLoc, idemKey: string, req: RechargeRequest, client?: string, waitMs = 0): Promise<RechargeResult> {
    const same = JSON.stringify([target.key, idemKey, req.amount, req.card, req.cardPin]);
    return this.settler.settled(waitMs, same, () => this.attempt(target, idemKey, req, client));
  }

  private async attempt(
    target: IdLoc,
    idemKey: string,
    req: RechargeRequest,
    client: string | undefined,
  ): Promise<RechargeResult> {
    if (!cardNumberValid(req.card)) return fail('card_invalid');
    if (!CARD_PIN.test(req.cardPin)) return fail('bad_value', 'the card PIN must be 4 to 12 digits');
    const { key, ref, hash } = this.recordKey(idemKey);
    const [prod, cur] = await idFields(this.ctx.redis, target.key, ['prod', 'cur']);
    const product = this.productOf(prod ?? '');
    const started = (await this.ctx.redis.exists(key)) === 1;
    if (!started) {
      if (!this.offers(product).includes(req.amount))
        return fail('bad_value', 'choose one of the amounts offered for this ID');
      // The card is charged only for a recharge the ID would take.
      const would = await this.topups.apply(
        target,
        { source: 'online', ref, amount: req.amount, currency: cur ?? '', note: hash },
        'check',
      );
      if (!would.ok) return fail(would.reason as Reason);
      // A form sent twice at once (a double tap), to any gateway, is one recharge, counted once.
      if (client !== undefined) {
        const refused = await admitAnonymous(this.ctx, client, key);
        if (refused) return refused;
      }
    }
    const fp = this.ctx.ids.mac(JSON.stringify([target.key, req.amount, req.card, req.cardPin]));
    const claim = await this.records.claim(key, fp, { product: prod ?? '', price: req.amount, currency: cur ?? '' });
    // Written before any card company call, on a resume too: a claim whose gateway died (or whose
    // Redis call failed) before it wrote the ID leaves a record the sweep could not settle.
    if (claim.state === 'new' || claim.state === 'resume') await this.ctx.redis.hsetnx(key, 'tgt', target.key);
    if (claim.state !== 'conflict' && claim.state !== 'busy') await replicated(this.ctx.redis, key);
    switch (claim.state) {
      case 'gone':
        return fail('unknown_id');
      case 'conflict':
        return fail('idempotency_conflict', 'this form was already used for another recharge');
      case 'busy':
        return fail('in_progress');
      case 'done':
        return this.answerOf(await this.records.read(key));
    }
    return claim.own(async () => {
      const r = await this.records.read(key);
      r.tgt ??= target.key;
      return this.run(key, ref, hash, req, r);
    });
  }

  private answerOf(r: RechargeRecord): RechargeResult {
    if (r.st === 'declined') return declinedAnswer(r.reason);
    // A retry: the first recharge's answer, nothing charged or credited again.
    return { ok: true, ...(JSON.parse(r.answer!) as TopupAnswer), duplicate: true };
  }

  private async decline(key: string, reason: string, watched = false): Promise<RechargeResult> {
    await this.records.set(key, { st: 'declined', reason }, watched);
    return declinedAnswer(reason);
  }

  private async voidThenDecline(key: string, ref: string, reason: string): Promise<RechargeResult> {
    if (!(await this.records.giveBack(this.provider, key, ref, reason))) return fail('payment_pending');
    return this.decline(key, reason);
  }

  private async run(
    key: string,
    ref: string,
    hash: string,
    req: RechargeRequest,
    r: RechargeRecord,
  ): Promise<RechargeResult> {
    const paid = await this.records.pay(this.provider, key, ref, r, req);
    if (paid.to === 'pending') return fail('payment_pending');
    if (paid.to === 'decline') return this.decline(key, paid.reason);
    if (paid.to === 'void') return this.voidThenDecline(key, ref, paid.reason);
    return this.credit(key, ref, hash, r);
  }

  /** Paid for: credit the ID, once; if it refuses now, the payment goes back. */
  private async credit(key: string, ref: string, hash: string, r: RechargeRecord): Promise<RechargeResult> {
    const tgt = r.tgt!;
    const t = await this.topups.apply(
      { key: tgt, bucket: bucketOfKey(tgt) },
      {
        source: 'online',
        ref,
        amount: Number(r.price),
        currency: r.cur ?? '',
        note: hash,
        price: Number(r.price),
        commission: Number(r.commission ?? 0),
      },
    );
    if (!t.ok) {
      this.log.warn({ ref, reason: t.reason }, 'paid recharge refused by the ID: voiding the payment');
      return this.voidThenDecline(key, ref, t.reason);
    }
    const { ok: _ok, ...answer } = t;
    await this.records.set(key, { st: 'done', answer: JSON.stringify({ ...answer, duplicate: false }) });
    return t;
  }

  /**
   * Recharges left midway for longer than ABANDON_AFTER_MS are settled from the
   * card company's side: one it captured is credited (the owner paid), one only
   * authorized is voided, and the recharge ends. Every gateway may sweep: the
   * claim's lease makes one win.
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
        const hash = key.slice(key.lastIndexOf(':') + 1);
        const ref = this.records.refOf(key);
        await claim.own(async () => {
          // As it stands now it is ours: a retry may have moved it on (to `voiding`, say) since it was listed.
          const r = await this.records.read(key);
          // One that never learned its ID and never paid ends here: there is nothing to credit.
          if (!r.tgt && r.st === 'new') return void (await this.decline(key, 'abandoned'));
          const s = await this.provider.status(ref);
          if (s.state === 'unknown') return;
          // One already refused (voiding) is voided with its own reason, never credited; so is a
          // capture whose commission is larger than the price, as pay() refuses it.
          const refused = r.st === 'voiding';
          const overCharged = !refused && s.state === 'captured' && this.records.overCharged(ref, r, s.commission ?? 0);
          const reason = refused ? (r.reason ?? 'abandoned') : overCharged ? 'capture_failed' : 'abandoned';
          // One paid without its ID in the record (a resume by b0e8b35, which wrote it on a new claim
          // only) cannot be credited: its payment is given back, not left taken.
          if (s.state === 'captured' && !refused && !overCharged && r.tgt) {
            r.commission = String(s.commission ?? 0);
            await this.credit(key, ref, hash, r);
          } else if (s.state === 'authorized' || s.state === 'captured') {
            if (!(await this.records.giveBack(this.provider, key, ref, reason))) return;
            await this.decline(key, reason);
          } else {
            const late = s.state === 'none' && r.st === 'authorizing';
            if (late) await this.records.watchLate(key, now);
            await this.decline(key, reason, late);
          }
          settled++;
        });
      }
    }
    return settled;
  }
}

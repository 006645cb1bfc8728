/**
 * Where a paid attempt (a purchase, a recharge) stands, kept in Redis under its
 * Idempotency-Key: what a retry, another gateway or the abandoned-attempt sweep
 * resumes from. Both kinds share the record's life: claimed under a lease, each
 * step on a replica before the next card company call, an answer kept for
 * retries once it ends, and an open set (in the record's bucket) that the
 * sweep reads the attempts left midway from.
 */
import { randomBytes } from 'node:crypto';
import type { Context } from '../app/context';
import { isReason, messageOf, type Reason } from '../protocol/reasons';
import { bucketOfKey, keys } from '../redis/keys';
import { replicated } from '../redis/replication';
import type { PaymentProvider } from './provider';
import { HandBacks } from './hand-backs';
import { claimLate, claimPurchase, setLease, type ClaimTerms, type LateWatch, type PurchaseClaim } from './scripts';

/** A record's fields every kind has: its state, the request's fingerprint, its terms and payment, the refusal. */
export interface PaymentRecord {
  st: string;
  fp?: string;
  price?: string;
  cur?: string;
  commission?: string;
  reason?: string;
}

/**
 * Where the card company's side of an attempt ended: captured (go on), no
 * answer yet (the attempt stays as it is, a retry finishes it), declined with
 * nothing held, or refused with money held that must be voided first (an
 * attempt recorded `voiding` is only ever voided from then on).
 */
export type Payment = { to: 'captured' } | { to: 'pending' } | { to: 'decline' | 'void'; reason: string };

/** How a card company's reason is recorded when it is not one of the card declines we name ourselves. */
const CARD = 'card:';

/** The card company's declines the catalogue names, with a message of its own. */
const CARD_DECLINES: ReadonlySet<string> = new Set<Reason>([
  'not_member',
  'insufficient_funds',
  'card_invalid',
  'wrong_card_pin',
]);

/**
 * A card company's decline reason as recorded: one the catalogue names as it
 * is, any other name marked as the card company's, so that its `expired` (a
 * card's) never reads as ours (an ID's, 410), nor its `abandoned` as ours.
 */
function cardReason(reason: string): string {
  return CARD_DECLINES.has(reason) ? reason : CARD + reason;
}

/** A declined attempt's answer: our reasons are the catalogue's, any other is the card company's decline (402). */
export function declinedAnswer(recorded = 'declined'): {
  ok: false;
  reason: string;
  message: string;
  httpStatus?: number;
} {
  const reason = recorded.startsWith(CARD) ? recorded.slice(CARD.length) : recorded;
  if (reason === recorded && isReason(reason)) return { ok: false, reason, message: messageOf(reason) };
  return { ok: false, reason, message: `declined by the card company: ${reason}`, httpStatus: 402 };
}

/** Where a claim found the attempt; `own` runs it, when the claim made this attempt the owner. */
export interface Claimed {
  state: PurchaseClaim;
  /**
   * Runs `fn` as the record's owner (after a `new` or `resume` claim): its
   * lease is renewed while `fn` runs, however long the card company takes, and
   * handed back when it ends, so a retry takes over then and only then (or
   * once this process stalls for a whole PURCHASE_LEASE_MS).
   */
  own<T>(fn: () => Promise<T>): Promise<T>;
}

/** How long a reference the card company did not know is asked after. */
const LATE_WATCH_MS = 86_400_000;
/** How long the declined record of a reference asked after is kept: the watch and a sweep round more. */
const LATE_RECORD_SEC = LATE_WATCH_MS / 1000 + 3600;

export class PaymentRecords<R extends PaymentRecord> {
  /** Leases ended attempts could not hand back at their end, offered again (cleared by stop()). */
  private readonly handBacks: HandBacks;

  constructor(
    private readonly ctx: Context,
    /** The open set of a bucket's attempts of this kind. */
    private readonly openSet: (bucket: number) => string,
    /** How long a finished attempt's answer is kept for retries (a declined one PURCHASE_DECLINED_TTL_SEC). */
    private readonly doneTtlSec: number,
    /** What goes in front of a record key's hash to make its card company reference (`tsp_`, `tsr_`). */
    private readonly refPrefix: string,
  ) {
    this.handBacks = new HandBacks(ctx.scripts);
  }

  /** Drops the hand-backs still pending: the gateway is closing, its Redis connection with it. */
  stop(): void {
    this.handBacks.stop();
  }

  /** An unfinished attempt lives a day past ABANDON_AFTER_MS, by when the sweep has settled it. */
  get openTtlSec(): number {
    return Math.ceil(this.ctx.cfg.abandonAfterMs / 1000) + 86400;
  }

  async read(key: string): Promise<R> {
    return (await this.ctx.redis.hgetall(key)) as unknown as R;
  }

  /**
   * Each step is on a replica before the next (a card company call) is made. An
   * attempt that ended keeps its answer for retries and leaves the open set.
   */
  async set(key: string, fields: { [k: string]: string | number }, watched = false): Promise<void> {
    await this.ctx.redis.hset(key, fields);
    await replicated(this.ctx.redis, key);
    if (fields.st === 'done' || fields.st === 'declined') {
      // A declined attempt whose reference is watched (watchLate) keeps its answer as long as the watch.
      const declinedTtl = Math.max(this.ctx.cfg.purchaseDeclinedTtlSec, watched ? LATE_RECORD_SEC : 0);
      await this.ctx.redis.expire(key, fields.st === 'done' ? this.doneTtlSec : declinedTtl);
      await this.ctx.redis.zrem(this.openSet(bucketOfKey(key)), key);
    }
  }

  /** Claims the attempt under `key` for this gateway (lua/purchase_claim.lua). */
  async claim(key: string, fingerprint: string, terms?: ClaimTerms['terms'], now = Date.now()): Promise<Claimed> {
    const { scripts, cfg, log } = this.ctx;
    const owner = randomBytes(12).toString('base64url');
    const leaseMs = cfg.purchaseLeaseMs;
    const open = this.openSet(bucketOfKey(key));
    const state = await claimPurchase(
      scripts,
      { key, open, fingerprint, leaseMs, ttlSec: this.openTtlSec, terms },
      owner,
      now,
    );
    const own = async <T>(fn: () => Promise<T>): Promise<T> => {
      const renew = setInterval(() => {
        setLease(scripts, key, owner, Date.now() + leaseMs).catch((err: unknown) =>
          log.warn({ err, key }, 'lease not renewed: a retry may take over'),
        );
      }, leaseMs / 3);
      renew.unref();
      try {
        return await fn();
      } finally {
        clearInterval(renew);
        await setLease(scripts, key, owner, 0).catch((err: unknown) => {
          this.handBacks.later(key, owner, Date.now() + leaseMs);
          throw err;
        });
      }
    };
    return { state, own };
  }

  /**
   * The attempts of `bucket` left midway for longer than ABANDON_AFTER_MS, up
   * to 100 a call, with their records; those that ended meanwhile (or expired)
   * are taken out of the open set instead.
   */
  async *abandoned(bucket: number, now: number): AsyncGenerator<{ key: string; record: R }> {
    const open = this.openSet(bucket);
    const before = `(${now - this.ctx.cfg.abandonAfterMs}`;
    for (const key of await this.ctx.redis.zrangebyscore(open, '-inf', before, 'LIMIT', 0, 100)) {
      const record = await this.read(key);
      // Expired unsettled (its card company never answered in a day and more): whatever it holds
      // there is a person's to settle, so it is said, not dropped in silence.
      if (!record.st)
        this.ctx.log.error(
          { ref: this.refOf(key) },
          'a payment attempt expired before it was settled: ask the card company whether it holds money for it',
        );
      if (!record.st || record.st === 'done' || record.st === 'declined') await this.ctx.redis.zrem(open, key);
      else yield { key, record };
    }
  }

  /**
   * Takes the attempt under `key` (its card company reference `ref`) from where
   * its record `r` stands to captured: an attempt that lost its answer first asks
   * the card company what happened. Each step is recorded before the call that
   * makes it. `beforeCapture` runs once authorized, before the capture: a
   * reason it returns refuses the attempt (the authorization is then voided).
   */
  async pay(
    provider: PaymentProvider,
    key: string,
    ref: string,
    r: R,
    card: { card: string; cardPin: string },
    beforeCapture?: () => Promise<string | undefined>,
  ): Promise<Payment> {
    // Refused once (a declined capture, no stock): a retry only asks the void again, never captures.
    if (r.st === 'voiding') return { to: 'void', reason: r.reason ?? 'capture_failed' };
    if (r.st === 'authorizing' || r.st === 'capturing') {
      const s = await provider.status(ref);
      if (s.state === 'unknown') return { to: 'pending' };
      if (s.state === 'declined' || s.state === 'voided')
        return { to: 'decline', reason: cardReason(s.reason ?? s.state) };
      if (s.state === 'none') r.st = 'new';
      if (s.state === 'authorized') r.st = 'authorized';
      if (s.state === 'captured') {
        if (this.overCharged(ref, r, s.commission ?? 0)) return { to: 'void', reason: 'capture_failed' };
        r.st = 'captured';
        r.commission = String(s.commission ?? 0);
        await this.set(key, { st: 'captured', commission: r.commission });
      }
    }
    if (r.st === 'new') {
      await this.set(key, { st: 'authorizing' });
      const a = await provider.authorize({
        reference: ref,
        card: card.card,
        cardPin: card.cardPin,
        amount: Number(r.price),
        currency: r.cur!,
      });
      if (a.status === 'unknown') return { to: 'pending' };
      if (a.status === 'declined') return { to: 'decline', reason: cardReason(a.reason) };
      r.st = 'authorized';
      await this.set(key, { st: 'authorized' });
    }
    if (r.st === 'authorized') {
      const refused = await beforeCapture?.();
      if (refused) return { to: 'void', reason: refused };
      await this.set(key, { st: 'capturing' });
      const c = await provider.capture(ref);
      if (c.status === 'unknown') return { to: 'pending' };
      // Do not leave the payer's credit held for what they will not get.
      if (c.status !== 'captured')
        return { to: 'void', reason: c.status === 'declined' ? cardReason(c.reason) : 'capture_failed' };
      if (this.overCharged(ref, r, c.commission)) return { to: 'void', reason: 'capture_failed' };
      r.st = 'captured';
      r.commission = String(c.commission);
      await this.set(key, { st: 'captured', commission: c.commission });
    }
    if (r.st !== 'captured') throw new Error(`payment ${ref} in unexpected state ${r.st}`);
    return { to: 'captured' };
  }

  /**
   * A commission larger than the price would book a negative net: the card
   * company (or its adapter, in the wrong units) says it keeps more than the
   * buyer paid. Its payment record will say so on every retry, so waiting
   * helps nothing: the payment is given back, and a person told.
   */
  overCharged(ref: string, r: R, commission: number): boolean {
    if (commission <= Number(r.price)) return false;
    this.ctx.log.error(
      { ref, commission, price: Number(r.price) },
      'the card company keeps a commission larger than the price: payment given back, nothing sold',
    );
    return true;
  }

  /**
   * Gives the payment of the attempt under `key` (card company reference
   * `ref`) back, refused for `reason` (voids an authorization, refunds a
   * capture): true once nothing is held on the card. The decision is recorded
   * first (`voiding`), so a retry or the sweep that finds the void unfinished
   * asks it again and never captures, credits or sells instead. A void the
   * card company refuses while it still holds the money is logged for the
   * operator and answers false, like no answer at all: the attempt stays open,
   * and a retry or the abandoned-attempt sweep asks again. Never does an
   * attempt end declined with the buyer's money kept.
   */
  async giveBack(provider: PaymentProvider, key: string, ref: string, reason: string): Promise<boolean> {
    await this.set(key, { st: 'voiding', reason });
    const v = await provider.void(ref);
    if (v.status === 'voided') return true;
    if (v.status !== 'declined') return false;
    // Refused: by its state, not the refusal's name, is anything still held?
    const s = await provider.status(ref);
    if (s.state === 'none' || s.state === 'declined' || s.state === 'voided') return true;
    if (s.state !== 'unknown')
      this.ctx.log.error(
        { ref, reason: v.reason, state: s.state },
        'the card company refused to give a payment back: the attempt stays open and is asked again',
      );
    return false;
  }

  /**
   * The sweep is ending the attempt under `key` while its authorize, sent and
   * never answered, is unknown to the card company: it may still make it (a
   * queue on its side), and nothing would then give it back. Its reference is
   * asked after (sweepLateAuthorizations), first once a wait has passed. Called
   * before the attempt is declined (set with `watched`), so a crash in between
   * leaves it open for the next sweep rather than declined and unwatched; and
   * declined, its record is kept as long as the watch: the reference comes from
   * the record's key, and a retry that found the record gone would start a new
   * attempt under the same reference, whose payment the watch would then void,
   * after its ID was sold or its recharge credited.
   */
  async watchLate(key: string, now: number): Promise<void> {
    await this.ctx.redis.zadd(
      keys.lateAuthorizations(bucketOfKey(key)),
      now + lateWatch(this.ctx).shortestWaitMs,
      `${now}:${this.refOf(key)}`,
    );
  }

  /** The card company reference of the attempt whose record is under `key`. */
  refOf(key: string): string {
    return `${this.refPrefix}${key.slice(key.lastIndexOf(':') + 1)}`;
  }

  /** Takes an attempt out of the open set (its record is gone). */
  async unlist(key: string): Promise<void> {
    await this.ctx.redis.zrem(this.openSet(bucketOfKey(key)), key);
  }
}

/**
 * How a reference the card company did not know is asked after: first a
 * minute after (never sooner than a status and a void can time out, so the
 * gateway that claimed it has asked before it is due again), then after as
 * long as it has been listed (2, 4, 8 … minutes), at most an hour apart,
 * for a day.
 */
const lateWatch = (ctx: Context): LateWatch => ({
  shortestWaitMs: Math.max(60_000, 2 * ctx.cfg.provider.timeoutMs),
  longestWaitMs: 3_600_000,
  watchMs: LATE_WATCH_MS,
});

/** References one gateway asks after per bucket and sweep round: the rest due wait for the next round, in order. */
const LATE_PER_ROUND = 100;

/**
 * Asks the card company after the payments of attempts the sweep ended while
 * it knew nothing of them (watchLate), and voids any it has authorized since:
 * the attempt ended, so nothing else would give the buyer's credit back. A
 * reference is asked after until the card company answers it voided or
 * declined, or for a day, when it is due (lateWatch), and a last time once
 * its day is over, until that check is answered: the one due longest first,
 * by one gateway (its claim moves it to its next check). A round stops
 * at the first call the card company does not answer: the others would only
 * wait out their timeouts too, and hold up the sweep's other work. Returns how
 * many were voided.
 */
export async function sweepLateAuthorizations(
  ctx: Context,
  provider: PaymentProvider,
  now = Date.now(),
): Promise<number> {
  const watch = lateWatch(ctx);
  // `now` moves on with the clock: a round can take a while, and its claims must last from when they are made.
  const start = Date.now();
  const clock = (): number => now + Date.now() - start;
  let voided = 0;
  for (let b = 0; b < ctx.cfg.buckets; b++) {
    const list = keys.lateAuthorizations(b);
    for (let n = 0; n < LATE_PER_ROUND; n++) {
      const at = clock();
      const claimed = await claimLate(ctx.scripts, b, watch, at);
      if (!claimed) break;
      const { member, ref } = claimed;
      // Its day over, this is its last check: listed until the card company has answered it.
      const last = at - Number(member.slice(0, member.indexOf(':'))) >= watch.watchMs;
      const s = await provider.status(ref);
      if (s.state === 'unknown') return voided;
      if (s.state === 'declined' || s.state === 'voided' || (last && s.state === 'none'))
        await ctx.redis.zrem(list, member);
      if (s.state !== 'authorized' && s.state !== 'captured') continue;
      const v = await provider.void(ref);
      if (v.status === 'unknown') return voided;
      if (v.status !== 'voided') continue;
      await ctx.redis.zrem(list, member);
      voided++;
      ctx.log.warn({ ref, was: s.state }, 'the card company made an authorization after its attempt ended: voided');
    }
  }
  return voided;
}

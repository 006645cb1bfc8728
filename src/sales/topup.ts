/**
 * Top-ups: money into an existing talk ID, from a recharge voucher, from the
 * operator, or (src/sales/recharge.ts) from its owner paying online. Every
 * rule (may this product be recharged, the ID's state, the currency, the
 * highest balance, the expiry it extends to) is lua/topup.lua's; this module
 * finds the ID's product terms and drives the steps.
 *
 * A voucher and its target live in different slots, and a script call touches
 * one. So a redemption is a transfer in three idempotent steps: the voucher's
 * value is taken out and marked on its way to the target (lua/voucher_take,
 * voucher slot), the target is credited once per transfer reference
 * (lua/topup, target slot), then the voucher is settled: done, or its value
 * returned when the target refused (lua/voucher_settle). A step left undone by
 * a crash is done by a retry of the same request or by the transfer sweep that
 * every gateway runs, so the value is neither lost nor credited twice.
 */
import { randomUUID } from 'node:crypto';
import type { Context } from '../app/context';
import { topupTerms, type Product } from '../catalog/schema';
import { GuessThrottle } from '../ledger/guess-throttle';
import { locate, type Refusable } from '../ledger/ids';
import { bucketOfKey, idHashOfKey, keys } from '../redis/keys';
import { replicated, replicatedSeen } from '../redis/replication';
import { settleVoucher, takeVoucher, topupId, type TopupSource } from './scripts';
import { idField, idFields } from '../ledger/id-fields';

/** What a top-up did, as its caller is answered. */
export interface TopupAnswer {
  amount: number;
  /** The balance after, and its currency. */
  balance: number;
  currency: string;
  /** The expiry after (ms); absent while the ID's validity still counts from first use. */
  expires?: number;
  record: string;
  /** A retry: the first top-up's answer, nothing credited again. */
  duplicate: boolean;
}

/** `retryAfter` (seconds) comes with throttled. */
export type TopupResult = Refusable<TopupAnswer> | { ok: false; reason: 'throttled'; retryAfter: number };

const throttled = (retryAfter: number): TopupResult => ({ ok: false, reason: 'throttled', retryAfter });

/** A place in Redis: an ID's key and bucket. */
export interface IdLoc {
  key: string;
  bucket: number;
}

/** What the check page's anonymous voucher field answers as an unknown number (Topups.voucherInto). */
const HIDDEN_FROM_ANYONE: ReadonlySet<string> = new Set(['not_voucher', 'not_active']);

/** A sweep leaves a voucher transfer to the request that started it for this long. */
export const TRANSFER_GRACE_MS = 30_000;

export class Topups {
  /** Voucher numbers that do not exist, counted per client (GUESS_LIMIT per GUESS_WINDOW_SEC): no guessing. */
  private readonly guesses: GuessThrottle;

  constructor(
    private readonly ctx: Context,
    /** The catalog's product by name (the gateway's cache, or what the CLI read). */
    private readonly productOf: (name: string) => Product | undefined,
  ) {
    const { guessLimit, guessWindowSec, redis } = ctx.cfg;
    this.guesses = new GuessThrottle(ctx.redis, ctx.ids, {
      limit: guessLimit,
      windowSec: guessWindowSec,
      scope: 'vch',
      turnTimeoutMs: redis.timeoutMs,
    });
  }

  /**
   * Credits `amount` to the ID at `loc`, once per (source, ref); 'check'
   * decides without writing. The ID's product terms come from the catalog.
   */
  async apply(
    loc: IdLoc,
    t: {
      source: TopupSource;
      ref: string;
      amount: number;
      currency: string;
      into?: string;
      note: string;
      price?: number;
      commission?: number;
    },
    mode: 'apply' | 'check' = 'apply',
  ): Promise<TopupResult> {
    const [prod, cur] = await idFields(this.ctx.redis, loc.key, ['prod', 'cur']);
    const terms = topupTerms(this.productOf(prod ?? ''));
    const r = await topupId(this.ctx.scripts, { loc, ...t, into: t.into ?? '', product: prod ?? '', ...terms }, mode);
    if (!r.ok) return r;
    // A credit is acknowledged once a replica has it; a retry's too, whose first try's WAIT may have failed.
    if (mode === 'apply') await (r.duplicate ? replicatedSeen : replicated)(this.ctx.redis, loc.key);
    const { amount, balance, expires, record, duplicate } = r;
    return {
      ok: true,
      amount,
      balance,
      currency: cur ?? t.currency,
      record,
      duplicate,
      ...(expires > 0 ? { expires } : {}),
    };
  }

  /**
   * The operator's top-up (`tessera topup`, the admin API): `key` makes a
   * retry answer the first top-up; without one every call is a new top-up.
   */
  async operator(input: unknown, amount: number, note: string, key?: string): Promise<TopupResult> {
    const loc = locate(this.ctx, input);
    if (!loc.ok) return loc;
    const cur = await idField(this.ctx.redis, loc.key, 'cur');
    if (cur === null) return { ok: false, reason: 'unknown_id' };
    return this.apply(loc, { source: 'operator', ref: key ?? randomUUID(), amount, currency: cur, note });
  }

  /**
   * Redeems the recharge voucher `voucherInput` into the ID `targetInput`:
   * the voucher's whole value, once. Repeating the request for the same two
   * IDs answers the first redemption (finishing it if it was cut short).
   * `client` (a token name, a check link) is who is counted for unknown vouchers.
   */
  async voucher(targetInput: unknown, voucherInput: unknown, channel: string, client: string): Promise<TopupResult> {
    const target = locate(this.ctx, targetInput);
    if (!target.ok) return target;
    return this.voucherInto(target, voucherInput, channel, client);
  }

  /**
   * voucher() into an ID already located (the check page's). `anonymous`: whoever bought one ID may
   * type any number there, so a number that is some other kind of ID (another buyer's talk ID, whose
   * number is all a call needs) or a voucher not sold yet (still in stock: a guesser who found one
   * would watch it until it is sold, and redeem it first) is answered as unknown and counted as a
   * guess, never `not_voucher` or `not_active`.
   */
  voucherInto(
    target: IdLoc,
    voucherInput: unknown,
    channel: string,
    client: string,
    anonymous = false,
  ): Promise<TopupResult> {
    // A slot per lookup, as scanners take (GuessThrottle): a burst of guessed voucher numbers
    // waits its turn instead of reaching Redis before any of its misses is counted.
    return this.guesses.withSlot<TopupResult>(client, throttled, async () => {
      let r = await this.redeemVoucher(target, voucherInput, channel);
      if (anonymous && !r.ok && HIDDEN_FROM_ANYONE.has(r.reason)) r = { ok: false, reason: 'unknown_id' };
      if (!r.ok && r.reason === 'unknown_id') {
        await this.guesses.miss(client);
        // Stricter than scanners and switches: the miss that goes over the limit is refused as well.
        const over = this.guesses.retryAfter(client);
        if (over > 0) return throttled(over);
      }
      return r;
    });
  }

  private async redeemVoucher(target: IdLoc, voucherInput: unknown, channel: string): Promise<TopupResult> {
    const voucher = locate(this.ctx, voucherInput);
    if (!voucher.ok) return voucher;
    if (voucher.key === target.key) return { ok: false, reason: 'not_voucher' };
    // Would the target take it? Asked first, so a refusal leaves the voucher as it was.
    const [st, kind, bal, cur, into, tto] = await idFields(this.ctx.redis, voucher.key, [
      'st',
      'kind',
      'bal',
      'cur',
      'into',
      'tto',
    ]);
    if (st === 'sold' && kind === 'recharge' && !tto && Number(bal) > 0) {
      const would = await this.apply(
        target,
        {
          source: 'voucher',
          ref: 'check',
          amount: Number(bal),
          currency: cur ?? '',
          into: into ?? '',
          note: voucher.hash,
        },
        'check',
      );
      if (!would.ok) return would;
    }
    const taken = await takeVoucher(this.ctx.scripts, voucher, target.key, channel);
    if (!taken.ok) return taken;
    // The voucher's side is on a replica before the target is credited: a failover must not
    // bring the voucher back whole after its value went into the target (a retry's take too).
    await (taken.duplicate ? replicatedSeen : replicated)(this.ctx.redis, voucher.key);
    return this.finish(voucher, target, taken);
  }

  /** Steps 2 and 3 of a transfer: credit the target once per transfer, then settle the voucher. */
  private async finish(
    voucher: IdLoc,
    target: IdLoc,
    t: { ref: string; amount: number; currency: string; into: string },
  ): Promise<TopupResult> {
    const r = await this.apply(target, {
      source: 'voucher',
      ref: t.ref,
      amount: t.amount,
      currency: t.currency,
      into: t.into,
      note: idHashOfKey(voucher.key),
    });
    await settleVoucher(this.ctx.scripts, voucher, t.ref, r.ok ? { done: true } : { done: false, reason: r.reason });
    return r;
  }

  /**
   * Finishes voucher transfers left between their steps for longer than
   * `graceMs` (the request that started them died): the target is credited
   * or, if it refuses, the voucher gets its value back. Safe on every gateway
   * at once, and alongside a retry of the request: every step is idempotent.
   */
  async sweepTransfers(now = Date.now(), graceMs = TRANSFER_GRACE_MS): Promise<number> {
    let settled = 0;
    for (let b = 0; b < this.ctx.cfg.buckets; b++) {
      const open = keys.openTransfers(b);
      for (const key of await this.ctx.redis.zrangebyscore(open, '-inf', `(${now - graceMs}`, 'LIMIT', 0, 100)) {
        const [tto, tn, tst, tamt, cur, into] = await idFields(this.ctx.redis, key, [
          'tto',
          'tn',
          'tst',
          'tamt',
          'cur',
          'into',
        ]);
        if (tst !== 'sent' || !tto || !tn) {
          await this.ctx.redis.zrem(open, key);
          continue;
        }
        const voucher = { key, bucket: b };
        const target = { key: tto, bucket: bucketOfKey(tto) };
        const ref = `${idHashOfKey(key)}:${tn}`;
        await this.finish(voucher, target, { ref, amount: Number(tamt), currency: cur ?? '', into: into ?? '' });
        settled++;
      }
    }
    return settled;
  }
}

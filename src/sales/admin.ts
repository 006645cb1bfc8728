import type { Context } from '../app/context';
import { locate, type Refusable } from '../ledger/ids';
import { keys } from '../redis/keys';
import { replicated, replicatedSeen } from '../redis/replication';
import type { PaymentProvider } from './provider';
import { refundId } from './scripts';

/**
 * The operator's refund, shared by the CLI and the admin API. Refunds an unused ID: blocks it and records the refund in one script call,
 * then voids the payment at the card company. A used ID is refused and nothing
 * changes. Repeating a refund repeats the (idempotent) void; a void the card
 * company did not answer is asked again by every gateway's sweep (sweepRefundVoids).
 */
export async function refundSale(
  ctx: Context,
  provider: PaymentProvider,
  input: unknown,
  reason: string,
  operator: string,
): Promise<Refusable<{ refunded: number; record: string; provider: string; duplicate: boolean }>> {
  const loc = locate(ctx, input);
  if (!loc.ok) return loc;
  const r = await refundId(ctx.scripts, loc, reason, operator);
  if (!r.ok) return r;
  // On a replica before the payment is voided: a refund must not be lost after its money went back.
  // A repeated refund answers the first, which another gateway may have written.
  await (r.duplicate ? replicatedSeen : replicated)(ctx.redis, loc.key);
  const { refunded, record, payment, duplicate } = r;
  const said = payment ? await voidRefund(ctx, provider, loc, payment) : 'not_paid_through_a_provider';
  return { ok: true, refunded, record, provider: said, duplicate };
}

/**
 * How long a refund's unanswered void waits before the sweep asks again: a
 * minute, and never while its refund (or the last sweep) may still be asking.
 */
const voidRetryMs = (ctx: Context): number => Math.max(60_000, 2 * ctx.cfg.provider.timeoutMs);

/**
 * Asks the card company again to void the payments of refunds whose void it
 * never answered (a timeout, a gateway gone mid-refund): the buyer must get
 * the money back without anyone having to notice. Each refund's turn is moved
 * on before it is asked, so gateways seldom ask at once (a void is idempotent
 * anyway). Returns how many were answered.
 */
export async function sweepRefundVoids(ctx: Context, provider: PaymentProvider, now = Date.now()): Promise<number> {
  let answered = 0;
  for (let b = 0; b < ctx.cfg.buckets; b++) {
    const list = keys.refundVoids(b);
    const due = await ctx.redis.zrangebyscore(list, '-inf', now - voidRetryMs(ctx), 'LIMIT', 0, 100);
    if (due.length === 0) continue;
    // The whole batch's turn moves on before the first is asked: another sweep meanwhile takes none of it.
    await ctx.redis.zadd(list, 'XX', ...due.flatMap((idHash) => [now, idHash]));
    for (const idHash of due) {
      const key = keys.id(b, idHash);
      const payment = await ctx.redis.hget(key, 'pref');
      if (!payment) await ctx.redis.zrem(list, idHash);
      else if ((await voidRefund(ctx, provider, { key, hash: idHash, bucket: b }, payment)) !== 'unknown') answered++;
    }
  }
  return answered;
}

/**
 * Voids a refund's payment and keeps the card company's answer on the ID
 * (`refvoid`, the sale lookup's `refund.void`): `voided`, or `void_refused: <reason>`
 * (logged: someone must take it up with the card company). Either takes the
 * refund off the list of voids to ask again; `unknown` (no answer) leaves it there.
 */
async function voidRefund(
  ctx: Context,
  provider: PaymentProvider,
  loc: { key: string; hash: string; bucket: number },
  payment: string,
): Promise<string> {
  const v = await provider.void(payment);
  if (v.status !== 'voided' && v.status !== 'declined') return 'unknown';
  // Voided before (a repeated refund) is what we want too.
  const said = v.status === 'voided' || v.reason === 'payment_voided' ? 'voided' : `void_refused: ${v.reason}`;
  const tx = ctx.redis.multi();
  // A confirmed void is never overwritten by a later refusal.
  if (said === 'voided') tx.hset(loc.key, 'refvoid', said);
  else tx.hsetnx(loc.key, 'refvoid', said);
  await tx.zrem(keys.refundVoids(loc.bucket), loc.hash).exec();
  if (said !== 'voided')
    ctx.log.error({ payment, said }, "the card company refused to void a refund's payment: the buyer is not paid back");
  return said;
}

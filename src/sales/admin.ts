import type { Context } from '../app/context';
import { locate, type Refusable } from '../ledger/ids';
import { replicated, replicatedSeen } from '../redis/replication';
import type { PaymentProvider } from './provider';
import { refundId } from './scripts';

/**
 * The operator's refund, shared by the CLI and the admin API. Refunds an unused ID: blocks it and records the refund in one script call,
 * then voids the payment at the card company. A used ID is refused and nothing
 * changes. Repeating a refund repeats the (idempotent) void.
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
  let providerStatus = 'not_paid_through_a_provider';
  if (payment) {
    const v = await provider.void(payment);
    // Voided before (a repeated refund) is what we want too.
    providerStatus =
      v.status === 'declined' ? (v.reason === 'payment_voided' ? 'voided' : `void_refused: ${v.reason}`) : v.status;
    // Kept on the ID so a lookup still tells a void never confirmed from a done one once this
    // answer is gone; nothing else retries it. A confirmed void is never overwritten by a later failure.
    if (providerStatus === 'voided') await ctx.redis.hset(loc.key, 'refvoid', providerStatus);
    else await ctx.redis.hsetnx(loc.key, 'refvoid', providerStatus);
  }
  return { ok: true, refunded, record, provider: providerStatus, duplicate };
}

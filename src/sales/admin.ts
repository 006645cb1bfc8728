import { idStatus, locate, type IdStatus, type Outcome } from '../ledger/ids';
import { namedFields } from '../ledger/records';
import type { Context } from '../app/context';
import { keys } from '../redis/keys';
import type { PaymentProvider } from './provider';

/** Operator actions on sales: look one up, refund it. Shared by the CLI and the admin API. */
export interface SaleView {
  status: IdStatus;
  sale?: Record<string, string>;
  refund?: Record<string, string>;
}

async function recordAt(ctx: Context, stream: string, id: string | null | undefined): Promise<Record<string, string> | undefined> {
  if (!id) return undefined;
  const [entry] = await ctx.redis.xrange(stream, id, id);
  if (!entry) return undefined;
  return { record: entry[0], ...namedFields(entry[1]) };
}

export async function lookupSale(ctx: Context, input: unknown): Promise<Outcome<SaleView>> {
  const loc = locate(ctx, input);
  if (!loc.ok) return loc;
  const status = await idStatus(ctx, input);
  if (!status.ok) return status;
  const [srec, refrec] = await ctx.redis.hmget(loc.key, 'srec', 'refrec');
  const { ok: _ok, ...s } = status;
  return { ok: true, status: s, sale: await recordAt(ctx, keys.sales(loc.bucket), srec), refund: await recordAt(ctx, keys.sales(loc.bucket), refrec) };
}

/**
 * Refunds an unused ID: blocks it and records the refund in one script call,
 * then voids the payment at the card company. A used ID is refused and nothing
 * changes. Repeating a refund repeats the (idempotent) void.
 */
export async function refundSale(ctx: Context, provider: PaymentProvider, input: unknown, reason: string, operator: string): Promise<Outcome<{ refunded: number; record: string; provider: string; duplicate: boolean }>> {
  const loc = locate(ctx, input);
  if (!loc.ok) return loc;
  const r = await ctx.scripts.run<['ok', number, string, string, number] | ['err', string]>('refund', [loc.key, keys.sales(loc.bucket)], [Date.now(), reason, operator]);
  if (r[0] === 'err') return { ok: false, reason: r[1] };
  const [, refunded, record, ref, dup] = r;
  let providerStatus = 'not_paid_through_a_provider';
  if (ref) {
    const v = await provider.void(ref);
    // Voided before (a repeated refund) is what we want too.
    providerStatus = v.status === 'declined' ? (v.reason === 'payment_voided' ? 'voided' : `void_refused: ${v.reason}`) : v.status;
  }
  return { ok: true, refunded, record, provider: providerStatus, duplicate: dup === 1 };
}

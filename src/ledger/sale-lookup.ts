import type { Context } from '../app/context';
import { keys } from '../redis/keys';
import { idStatus, locate, type IdStatus, type Refusable } from './ids';
import { recordAt } from './records';

/** An ID's sale as the operator looks it up (CLI `sale`, admin API): its status, its sale record and any refund record. */
export interface SaleView {
  status: IdStatus;
  sale?: Record<string, string>;
  refund?: Record<string, string>;
}

export async function lookupSale(ctx: Context, input: unknown): Promise<Refusable<SaleView>> {
  const loc = locate(ctx, input);
  if (!loc.ok) return loc;
  const status = await idStatus(ctx, input);
  if (!status.ok) return status;
  const [srec, refrec, refvoid, pref] = await ctx.redis.hmget(loc.key, 'srec', 'refrec', 'refvoid', 'pref');
  const { ok: _ok, ...s } = status;
  const stream = keys.sales(loc.bucket);
  // A record `archive` trimmed is only in its file: say which, with its record and the ID's hash it is found by.
  const trimmed = (rec: string | null | undefined): Record<string, string> | undefined =>
    rec ? { record: rec, id: loc.hash, archived: `sales/b${loc.bucket}.ndjson` } : undefined;
  const refund = (await recordAt(ctx, stream, refrec)) ?? trimmed(refrec);
  if (refund)
    refund.void = pref ? (refvoid ?? (await voidAsked(ctx, loc.bucket, loc.hash))) : 'not_paid_through_a_provider';
  return { ok: true, status: s, sale: (await recordAt(ctx, stream, srec)) ?? trimmed(srec), refund };
}

/**
 * A card-paid refund's void the card company has not answered: `unknown` while
 * it is listed to be asked again (the gateways' sweep keeps asking; a repeated
 * refund asks at once), `not_recorded` for a refund made before voids were
 * kept: whether its money went back is the card company's to say.
 */
async function voidAsked(ctx: Context, bucket: number, idHash: string): Promise<string> {
  const listed = await ctx.redis.zscore(keys.refundVoids(bucket), idHash);
  return listed === null ? 'not_recorded' : 'unknown';
}

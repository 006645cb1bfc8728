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
  const [srec, refrec] = await ctx.redis.hmget(loc.key, 'srec', 'refrec');
  const { ok: _ok, ...s } = status;
  const stream = keys.sales(loc.bucket);
  return { ok: true, status: s, sale: await recordAt(ctx, stream, srec), refund: await recordAt(ctx, stream, refrec) };
}

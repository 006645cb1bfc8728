import type { Context } from '../app/context';
import { checkId } from '../ids/idnum';
import { keys } from '../redis/keys';
import { replicated, replicatedSeen } from '../redis/replication';
import { activate, setState } from './scripts';
import { idHash } from './id-fields';

/**
 * Operator actions on single IDs, shared by the CLI and the admin HTTP API.
 * Each answers its result, or a refusal with a reason of protocol/reasons.ts.
 */
export type Refusable<T> = ({ ok: true } & T) | { ok: false; reason: string };

export interface IdStatus {
  state: string;
  product: string;
  kind: string;
  currency: string;
  face: number;
  balance: number;
  activeCalls: number;
  minted: number;
  sold?: number;
  firstUse?: number;
  expires?: number;
  blockedWhy?: string;
}

/** An ID as typed, checked, and where it lives in Redis. */
export function locate(ctx: Context, input: unknown): Refusable<{ key: string; hash: string; bucket: number }> {
  const c = checkId(input, ctx.cfg.idLength);
  if (!c.ok) return c;
  const { hash, bucket } = ctx.ids.hash(c.id);
  return { ok: true, key: keys.id(bucket, hash), hash, bucket };
}

const num = (v: string | undefined): number | undefined => (v && v !== '0' ? Number(v) : undefined);

export async function idStatus(ctx: Context, input: unknown): Promise<Refusable<IdStatus>> {
  const loc = locate(ctx, input);
  if (!loc.ok) return loc;
  const h = await idHash(ctx.redis, loc.key);
  if (!h.st) return { ok: false, reason: 'unknown_id' };
  return {
    ok: true,
    state: h.st,
    product: h.prod ?? '',
    kind: h.kind ?? '',
    currency: h.cur ?? '',
    face: Number(h.face),
    balance: Number(h.bal),
    activeCalls: Number(h.act ?? 0),
    minted: Number(h.mint),
    sold: num(h.sold),
    firstUse: num(h.first),
    expires: num(h.exp),
    blockedWhy: h.why,
  };
}

export async function activateId(
  ctx: Context,
  input: unknown,
  opts: { channel?: string; price?: number; ref?: string } = {},
): Promise<Refusable<{ balance: number; record: string }>> {
  const loc = locate(ctx, input);
  if (!loc.ok) return loc;
  const product = await ctx.redis.hget(loc.key, 'prod');
  if (!product) return { ok: false, reason: 'unknown_id' };
  const r = await activate(ctx.scripts, loc, {
    product,
    channel: opts.channel ?? 'manual',
    price: opts.price ?? 0,
    ref: opts.ref ?? '',
  });
  // A sale is acknowledged once a replica has it; so is `already_active`, which a retry of a
  // sale that went through gets (and which another gateway may have written).
  if (r.ok) await replicated(ctx.redis, loc.key);
  else if (r.reason === 'already_active') await replicatedSeen(ctx.redis, loc.key);
  return r;
}

export async function setIdState(
  ctx: Context,
  input: unknown,
  action: 'block' | 'unblock',
  why = '',
): Promise<Refusable<{ state: string }>> {
  const loc = locate(ctx, input);
  if (!loc.ok) return loc;
  // An ID's product never changes: it names the inventory a blocked unsold ID leaves.
  const product = await ctx.redis.hget(loc.key, 'prod');
  if (!product) return { ok: false, reason: 'unknown_id' };
  return setState(ctx.scripts, loc, product, action, why);
}

/**
 * The ledger's Lua scripts (lua/mint, activate, set_state, trim, expire…): one function each,
 * building KEYS/ARGV from named arguments and decoding the reply into a named
 * type. Nothing else in ledger/ calls a script or reads a raw reply.
 */
import { termsVersion } from '../catalog/terms';
import { MAX_CALL_SEC } from '../protocol/switch';
import { keys } from '../redis/keys';
import { num, replyError, str, tagged } from '../redis/reply';
import type { Scripts } from '../redis/scripts';

/** An ID as the scripts find it: its key and bucket. */
export interface IdPlace {
  key: string;
  bucket: number;
}

/**
 * Writes new IDs of one product and one bucket into inventory, each with its
 * sealed clear number and the version of the product's terms (field/value
 * pairs, productTerms), which the bucket keeps once. Answers the indexes
 * (0-based, into `ids`) of hashes that already existed: nothing was written
 * for them and they must be minted again.
 */
export async function mintInto(
  scripts: Scripts,
  bucket: number,
  product: string,
  terms: readonly (string | number)[],
  ids: readonly { key: string; sealed: string }[],
  now = Date.now(),
): Promise<Set<number>> {
  const version = termsVersion(terms);
  const r = await scripts.run(
    'mint',
    [keys.inventory(bucket, product), keys.productTerms(bucket, version), ...ids.map((i) => i.key)],
    [now, product, version, terms.length / 2, ...terms, ...ids.map((i) => i.sealed)],
  );
  if (!Array.isArray(r)) throw replyError('mint', r);
  return new Set(r.map((n) => Number(n) - 1));
}

export type ActivateReply = { ok: true; balance: number; record: string } | { ok: false; reason: string };

export interface Activation {
  /** The product the caller expects the ID to belong to. */
  product: string;
  channel: string;
  price: number;
  ref: string;
}

/** Sells an ID from inventory by hand or through a channel, loading its face value, and records the sale. */
export async function activate(scripts: Scripts, id: IdPlace, a: Activation, now = Date.now()): Promise<ActivateReply> {
  const r = await scripts.run(
    'activate',
    [
      id.key,
      keys.inventory(id.bucket, a.product),
      keys.sales(id.bucket),
      keys.reservations(id.bucket),
      keys.holdOwners(id.bucket),
    ],
    [now, a.product, a.channel, a.price, a.ref],
  );
  if (Array.isArray(r) && r[0] === 'ok') return { ok: true, balance: Number(r[1]), record: String(r[2] ?? '') };
  if (Array.isArray(r) && r[0] === 'err' && typeof r[1] === 'string') return { ok: false, reason: r[1] };
  throw replyError('activate', r);
}

export type SetStateReply = { ok: true; state: string } | { ok: false; reason: string };

/**
 * Blocks an ID (the reason is kept on it) or lifts the block. An unsold ID
 * leaves its product's inventory while blocked: `product` must be its own.
 */
export async function setState(
  scripts: Scripts,
  id: IdPlace,
  product: string,
  action: 'block' | 'unblock',
  why: string,
  now = Date.now(),
): Promise<SetStateReply> {
  const r = await scripts.run(
    'set_state',
    [id.key, keys.inventory(id.bucket, product), keys.reservations(id.bucket), keys.holdOwners(id.bucket)],
    [action, why, now],
  );
  if (Array.isArray(r) && r[0] === 'ok' && typeof r[1] === 'string') return { ok: true, state: r[1] };
  if (Array.isArray(r) && r[0] === 'err' && typeof r[1] === 'string') return { ok: false, reason: r[1] };
  throw replyError('set_state', r);
}

/** The record streams lua/trim knows, by the name it is given. */
export type TrimStream = 'cdr' | 'sales' | 'red';

/**
 * Adds a bucket's records up to `upTo` (a stream id, inclusive) to their IDs'
 * checkpoints and trims them from the stream, in one step. Answers how many
 * were trimmed: 0 when they were already.
 */
export async function trimArchived(
  scripts: Scripts,
  bucket: number,
  stream: TrimStream,
  upTo: string,
): Promise<number> {
  const key = stream === 'cdr' ? keys.cdr(bucket) : stream === 'sales' ? keys.sales(bucket) : keys.redemptions(bucket);
  const r = await scripts.run('trim', [key, keys.checkpoint(bucket)], [stream, upTo]);
  if (typeof r !== 'number') throw replyError('trim', r);
  return r;
}

/** What lua/ani_index answers: for a claim, whether it wrote the index; for a release, whether it deleted it. */
export type AniIndexReply = { state: 'new' | 'same' | 'gone' | 'kept' } | { state: 'taken'; idKey: string };

/**
 * Points a caller number's index at an ID (`claim`, taking it only from `from`
 * when it names another ID), or deletes it when it names this ID (`release`).
 */
export async function aniIndex(
  scripts: Scripts,
  indexKey: string,
  op: 'claim' | 'release',
  idKey: string,
  from = '',
): Promise<AniIndexReply> {
  const r = tagged('ani_index', await scripts.run('ani_index', [indexKey], [op, idKey, from]));
  const state = r[0];
  if (state === 'taken') return { state, idKey: str('ani_index', r, 1) };
  if (state === 'new' || state === 'same' || state === 'gone' || state === 'kept') return { state };
  throw replyError('ani_index', r);
}

export type AniBindReply = { ok: true; change: 'new' | 'same' | 'gone'; count: number } | { ok: false; reason: string };

export interface AniBinding {
  op: 'add' | 'remove';
  aniHash: string;
  /** For an add: the number, sealed. */
  sealed?: string;
  /** For an add: how many numbers the ID may have. */
  max?: number;
  /** Changes allowed per window; 0 for none counted (the operator, a repair). */
  changes: number;
  windowMs: number;
}

/** Adds a caller number to an ID's list or takes it off, within the product's limit and the change rate. */
export async function aniBind(scripts: Scripts, idKey: string, b: AniBinding, now = Date.now()): Promise<AniBindReply> {
  const r = tagged(
    'ani_bind',
    await scripts.run('ani_bind', [idKey], [now, b.op, b.aniHash, b.sealed ?? '', b.max ?? 0, b.changes, b.windowMs]),
  );
  const change = r[1];
  if (r[0] === 'ok' && (change === 'new' || change === 'same' || change === 'gone'))
    return { ok: true, change, count: num('ani_bind', r, 2) };
  if (r[0] === 'err') return { ok: false, reason: str('ani_bind', r, 1) };
  throw replyError('ani_bind', r);
}

/**
 * Counts one change of the ID's caller numbers and changes nothing else (lua/ani_bind.lua's `spend`):
 * an owner's add of a number another ID has; too_many_changes once the day's are spent.
 */
export async function aniSpend(
  scripts: Scripts,
  idKey: string,
  changes: number,
  windowMs: number,
  now = Date.now(),
): Promise<{ ok: true } | { ok: false; reason: string }> {
  const r = tagged('ani_bind', await scripts.run('ani_bind', [idKey], [now, 'spend', '', '', 0, changes, windowMs]));
  if (r[0] === 'ok' && r[1] === 'spent') return { ok: true };
  if (r[0] === 'err') return { ok: false, reason: str('ani_bind', r, 1) };
  throw replyError('ani_bind', r);
}

/** Why lua/expire forfeited nothing (its header says what each means). */
export type ExpireSkip = 'unknown_id' | 'not_sold' | 'blocked' | 'not_due' | 'in_use' | 'empty' | 'done';
const EXPIRE_SKIPS: readonly string[] = ['unknown_id', 'not_sold', 'blocked', 'not_due', 'in_use', 'empty', 'done'];

export type ExpireReply =
  { forfeited: true; amount: number; record: string; expiry: number } | { forfeited: false; why: ExpireSkip };

/**
 * How long past an ID's expiry a call admitted before it may still be live: the most seconds a call
 * reports (MAX_CALL_SEC), its longest ring (RING_TIMEOUT_MS) and silence before it is reaped
 * (STALE_AFTER_MS, each at most an hour). An ID that still counts live calls or holds a reservation
 * after it, with none of its calls in the live set, has lost them (a failover): lua/expire.lua
 * forfeits it all the same.
 */
export const CALLS_END_MS = (MAX_CALL_SEC + 2 * 3600) * 1000;

/**
 * Forfeits what a sold ID has left once it is past its expiry (by Redis' clock, plus
 * `graceMs` for the redemption kinds), with its expiry record and `expired` event: once.
 */
export async function expireId(
  scripts: Scripts,
  bucket: number,
  idHash: string,
  graceMs: number,
  callsEndMs = CALLS_END_MS,
): Promise<ExpireReply> {
  const r = tagged(
    'expire',
    await scripts.run(
      'expire',
      [keys.id(bucket, idHash), keys.sales(bucket), keys.events(bucket), keys.live(bucket)],
      [graceMs, callsEndMs],
    ),
  );
  if (r[0] === 'ok')
    return { forfeited: true, amount: num('expire', r, 1), record: str('expire', r, 2), expiry: num('expire', r, 3) };
  const why = r[1];
  if (r[0] === 'no' && typeof why === 'string' && EXPIRE_SKIPS.includes(why))
    return { forfeited: false, why: why as ExpireSkip };
  throw replyError('expire', r);
}

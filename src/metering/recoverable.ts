/**
 * Whether a lost call can be billed to an ID at all, read before its recovered stop claims the
 * call id: lua/call_recover.lua bills only a talk ID that was sold (sold, exhausted, blocked or
 * expired since), still listing the caller number the stop named, whose plan rates the stop's
 * destination, and refuses any other as it finds it. Refused after the claim, the claim would
 * hold the call id until given back, and the call's own stop (or start), racing on another
 * gateway, would be answered call_conflict meanwhile: the call billed to nobody. call_recover
 * judges it again.
 */
import { idFields } from '../ledger/id-fields';
import type { RedisClient } from '../redis/connect';

/** The states in which call_recover bills a lost call to the ID. */
const BILLED: ReadonlySet<string> = new Set(['sold', 'exhausted', 'blocked', 'expired']);

/** What a recovered stop names: the caller number's hash ('' for an ID), the rates of its destination. */
export interface RecoveredStop {
  aniHash: string;
  /** The destination's tariff in every plan that has one (CatalogCache.tariffArgs): name, descriptor pairs. */
  rates: readonly string[];
  /** The ID's calls of this call id (keys.idCall), which call_recover looks through first. */
  idCall: string;
}

/** call_recover's refusal of this ID for this stop, or undefined when it may bill it. */
export async function unrecoverable(
  redis: RedisClient,
  idKey: string,
  stop: RecoveredStop,
): Promise<'unknown_id' | 'not_active' | 'wrong_kind' | 'unknown_ani' | 'no_rate' | undefined> {
  const [st, kind, plan] = await idFields(redis, idKey, ['st', 'kind', 'plan']);
  if (!st) return 'unknown_id';
  if (!BILLED.has(st)) return 'not_active';
  if (kind !== 'talk') return 'wrong_kind';
  // A call the ID has under this call id (started by another token name) is stopped whatever the
  // caller number and the plan say now: call_recover finds it before it looks at either.
  if ((await redis.exists(stop.idCall)) === 1) return undefined;
  if (stop.aniHash && !(await redis.hexists(idKey, `ani:${stop.aniHash}`))) return 'unknown_ani';
  if (!stop.rates.some((name, i) => i % 2 === 0 && name === plan)) return 'no_rate';
  return undefined;
}

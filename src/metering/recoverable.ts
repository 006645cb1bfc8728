/**
 * Whether a lost call can be billed to an ID at all, read before its recovered stop claims the
 * call id: lua/call_recover.lua bills only a talk ID that was sold (sold, exhausted, blocked or
 * expired since), and refuses any other as it finds it. Refused after the claim, the claim would
 * hold the call id until given back, and the call's own stop, racing on another gateway, would
 * be answered call_conflict meanwhile: the call billed to nobody. call_recover judges it again.
 */
import { idFields } from '../ledger/id-fields';
import type { RedisClient } from '../redis/connect';

/** The states in which call_recover bills a lost call to the ID. */
const BILLED: ReadonlySet<string> = new Set(['sold', 'exhausted', 'blocked', 'expired']);

/** call_recover's refusal of this ID whatever the stop says (unknown_id, not_active, wrong_kind), or undefined. */
export async function unrecoverable(
  redis: RedisClient,
  idKey: string,
): Promise<'unknown_id' | 'not_active' | 'wrong_kind' | undefined> {
  const [st, kind] = await idFields(redis, idKey, ['st', 'kind']);
  if (!st) return 'unknown_id';
  if (!BILLED.has(st)) return 'not_active';
  if (kind !== 'talk') return 'wrong_kind';
  return undefined;
}

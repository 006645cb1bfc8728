/**
 * An ID's hash as TypeScript reads it, its product's terms included, as
 * lua/includes/id_fields.lua reads it for the scripts: the terms live once per
 * product version and bucket (keys.productTerms), and the ID names its version
 * in `pt`. A term the ID's own hash holds wins: an ID minted before the terms
 * moved out keeps them all there. A version never changes, so each is read once
 * per process and kept.
 */
import { TERM_FIELDS } from '../catalog/terms';
import type { RedisClient } from '../redis/connect';
import { bucketOfKey, keys } from '../redis/keys';

type Fields = Record<string, string>;

const KEPT_MAX = 1000;
const kept = new Map<string, Fields>();

async function termsOf(redis: RedisClient, idKey: string, version: string): Promise<Fields> {
  const hit = kept.get(version);
  if (hit) return hit;
  const key = keys.productTerms(bucketOfKey(idKey), version);
  const terms = await redis.hgetall(key);
  if (Object.keys(terms).length === 0) throw new Error(`product terms ${key} missing for ${idKey}`);
  if (kept.size >= KEPT_MAX) kept.clear();
  kept.set(version, terms);
  return terms;
}

/** The named fields of an ID's hash, in order (null where absent), terms read where they live. */
export async function idFields(
  redis: RedisClient,
  idKey: string,
  names: readonly string[],
): Promise<(string | null)[]> {
  const [version, ...values] = await redis.hmget(idKey, 'pt', ...names);
  if (!version || !names.some((n, i) => TERM_FIELDS.has(n) && values[i] === null)) return values;
  const terms = await termsOf(redis, idKey, version);
  return names.map((n, i) => values[i] ?? (TERM_FIELDS.has(n) ? (terms[n] ?? null) : null));
}

/** One field of an ID's hash (see idFields). */
export async function idField(redis: RedisClient, idKey: string, name: string): Promise<string | null> {
  return (await idFields(redis, idKey, [name]))[0]!;
}

/** All of an ID's hash with its product's terms, as if it held them (empty when there is no such ID). */
export async function idHash(redis: RedisClient, idKey: string): Promise<Fields> {
  const h = await redis.hgetall(idKey);
  return h.pt ? { ...(await termsOf(redis, idKey, h.pt)), ...h } : h;
}

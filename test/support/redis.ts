/** Reads of an ID straight from the harness Redis, for assertions. */
import { idHash } from '../../src/ledger/id-fields';
import { keys } from '../../src/redis/keys';
import type { Harness } from './harness';

/** The ID's hash (what keys, streams and records name it by). */
export const hashOf = (h: Harness, id: string): string => h.ctx.ids.hash(id).hash;

export const bucketOf = (h: Harness, id: string): number => h.ctx.ids.hash(id).bucket;

export function idKeyOf(h: Harness, id: string): string {
  const { hash, bucket } = h.ctx.ids.hash(id);
  return keys.id(bucket, hash);
}

/** A token name's unknown-ID count in its throttle window (`sw:<name>` for a switch's), 0 when none. */
export async function guessCount(h: Harness, name: string): Promise<number> {
  return Number(await h.r.get(keys.guesses(h.ctx.ids.bucketOf(name), name)));
}

/** The ID's fields (st, bal, act, exp, first, fven, inside, ...) with its product's terms, as the scripts read them. */
export function idFields(h: Harness, id: string): Promise<Record<string, string>> {
  return idHash(h.r, idKeyOf(h, id));
}

/** The ID's balance field as a number (0 when the ID has none). */
export async function balanceOf(h: Harness, id: string): Promise<number> {
  return Number(await h.r.hget(idKeyOf(h, id), 'bal'));
}

/** A stream entry's flat [field, value, ...] list as an object. */
export function streamFields(flat: string[]): Record<string, string> {
  const rec: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) rec[flat[i]!] = flat[i + 1]!;
  return rec;
}

import type { Redis } from 'ioredis';
import { Cluster } from 'ioredis';
import type { RedisClient } from './connect';
import { bucketOfKey, keys } from './keys';

/**
 * Every ID key (`ts:{bN}:id:<hash>`), as bucket and hash: a SCAN over the Redis,
 * or over each cluster primary as the cluster has them now (a failover may have
 * moved them since this client last looked). `maxPages` stops each node's scan
 * early, for a sample.
 */
export async function* scanIdKeys(
  redis: RedisClient,
  maxPages = Infinity,
): AsyncGenerator<{ bucket: number; hash: string }> {
  let nodes: Redis[] = [redis as Redis];
  if (redis instanceof Cluster) {
    await new Promise<void>((ok, no) => redis.refreshSlotsCache((err) => (err ? no(err) : ok())));
    nodes = redis.nodes('master');
  }
  for (const node of nodes) {
    let cursor = '0';
    for (let page = 0; page < maxPages; page++) {
      const [next, found] = await node.scan(cursor, 'MATCH', 'ts:{b*}:id:*', 'COUNT', 1000);
      for (const key of found) yield { bucket: bucketOfKey(key), hash: key.slice(key.indexOf(':id:') + 4) };
      cursor = next;
      if (cursor === '0') break;
    }
  }
}

/** An ID key of scanIdKeys with the named fields of its hash, in the order asked (null where absent). */
export interface IdFieldsRow {
  bucket: number;
  hash: string;
  values: (string | null)[];
}

/**
 * scanIdKeys in batches of up to `size` IDs, each with the named fields of its hash (one HMGET
 * per ID, a batch's in parallel): what a sweep reads to pick the IDs its script must look at.
 */
export async function* scanIdFields(
  redis: RedisClient,
  fields: readonly string[],
  size: number,
): AsyncGenerator<IdFieldsRow[]> {
  const read = async (batch: { bucket: number; hash: string }[]): Promise<IdFieldsRow[]> => {
    const rows = await Promise.all(batch.map((k) => redis.hmget(keys.id(k.bucket, k.hash), ...fields)));
    return batch.map((k, i) => ({ ...k, values: rows[i]! }));
  };
  let batch: { bucket: number; hash: string }[] = [];
  for await (const k of scanIdKeys(redis)) {
    batch.push(k);
    if (batch.length >= size) {
      yield await read(batch);
      batch = [];
    }
  }
  if (batch.length > 0) yield await read(batch);
}

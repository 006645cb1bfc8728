import { ConfigError, type Config } from '../config/config';
import type { IdKeys } from '../ids/secrets';
import type { RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';
import { scanIdKeys } from '../redis/scan';

/**
 * BUCKETS, ID_LENGTH and the secret decide where every ID lives and how it is
 * found. The first process to open a Redis writes them down (the secret as a
 * keyed fingerprint); any later one configured otherwise refuses to start,
 * instead of answering unknown_id for every ID already sold. True when this
 * process wrote the pin (it is then confirmed on a replica: openContext).
 */
export async function pinLayout(redis: RedisClient, cfg: Config, ids: IdKeys): Promise<boolean> {
  const mine = { buckets: cfg.buckets, idLength: cfg.idLength, secret: ids.mac('tessera:layout').slice(0, 16) };
  // Read first: a start must not need a write where the pin is already (a primary that has lost its
  // replica refuses every write, NOREPLICAS, and would keep every process from starting).
  let prev = await redis.get(keys.layout);
  if (prev === null) {
    await refuseOlderLayout(redis, cfg);
    prev = await redis.set(keys.layout, JSON.stringify(mine), 'NX', 'GET');
    if (prev === null) return true;
  }
  const theirs = JSON.parse(prev) as typeof mine;
  if (theirs.buckets !== mine.buckets)
    throw new ConfigError(
      `BUCKETS=${mine.buckets}, but this Redis holds data laid out in ${theirs.buckets} buckets: set BUCKETS=${theirs.buckets}`,
    );
  if (theirs.idLength !== mine.idLength)
    throw new ConfigError(
      `ID_LENGTH=${mine.idLength}, but this Redis holds IDs of ${theirs.idLength} digits: set ID_LENGTH=${theirs.idLength}`,
    );
  if (theirs.secret !== mine.secret)
    throw new ConfigError("TESSERA_SECRET differs from the one this Redis's IDs were minted with: set that secret");
  return false;
}

/**
 * Data from before the pin (1024 buckets was the default then) has no record of
 * its layout: a look at some of its ID keys tells whether they fit this one.
 */
async function refuseOlderLayout(redis: RedisClient, cfg: Config): Promise<void> {
  for await (const { bucket } of scanIdKeys(redis, 20)) {
    if (bucket >= cfg.buckets)
      throw new ConfigError(
        `BUCKETS=${cfg.buckets}, but this Redis holds IDs in bucket ${bucket}: it was laid out with more buckets (1024 was the default before 64); set BUCKETS to that number`,
      );
  }
}

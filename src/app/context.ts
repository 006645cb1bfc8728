import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/config';
import { IdKeys } from '../ids/secrets';
import { connectRedis, waitReady, type RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';
import { replicated } from '../redis/replication';
import { Scripts } from '../redis/scripts';
import { pinLayout } from './layout';
import { resolveSecret } from './secret';

/** What every part of Tessera (gateway, CLI, benchmarks) opens first. */
export interface Context {
  cfg: Config;
  log: Logger;
  redis: RedisClient;
  scripts: Scripts;
  ids: IdKeys;
  close(): Promise<void>;
}

/** Where the embedded Redis of a running `npm start` listens, for the CLI to find it. */
export const embeddedUrlFile = (cfg: Config): string => join(cfg.dataDir, 'redis.url');

export function redisUrlFor(cfg: Config): string | undefined {
  if (cfg.redis.url || cfg.redis.cluster) return cfg.redis.url;
  const file = embeddedUrlFile(cfg);
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  throw new Error('no Redis configured: set REDIS_URL (or REDIS_CLUSTER), or start the gateway with `npm start` first');
}

export async function openContext(cfg: Config, log: Logger, url = redisUrlFor(cfg)): Promise<Context> {
  const redis = connectRedis(cfg, url, { log });
  const scripts = new Scripts(redis);
  let ids: IdKeys | undefined;
  let pinOwed = false;
  // Ready means the library and the layout are in place, not only a PING: a cluster primary
  // just lost fails them until its replica takes over, and the start waits for that (waitReady).
  // What this start wrote (on a new Redis) is also on a replica, with replicated acknowledgements
  // on: lost in a failover, every later start would write it again on a primary that, short of its
  // replica, refuses writes (NOREPLICAS). A look that could not confirm it confirms it the next time.
  const firstLook = async (): Promise<void> => {
    // A process starting clears the libraries earlier versions left (Scripts.load).
    await scripts.load({ prune: true, confirm: true });
    ids ??= new IdKeys(
      resolveSecret(cfg, (msg) => log.warn(msg)),
      cfg.buckets,
    );
    if (await pinLayout(redis, cfg, ids)) pinOwed = true;
    if (pinOwed) await replicated(redis, keys.layout);
    pinOwed = false;
  };
  try {
    await waitReady(redis, undefined, firstLook);
  } catch (err) {
    redis.disconnect();
    throw err;
  }
  return {
    cfg,
    log,
    redis,
    scripts,
    ids: ids!,
    async close() {
      redis.disconnect();
    },
  };
}

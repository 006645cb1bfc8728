import Redis, { Cluster, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { ConfigError, type Config } from '../config/config';
import { coalesceWrites } from './coalesce';
import { logConnection } from './connection-log';
import { requireReplicas } from './replication';

export { sendNow } from './coalesce';

/** Either a single Redis or a Cluster; both speak the same command API. */
export type RedisClient = Redis | Cluster;

export interface ConnectOptions {
  /** Where the connection's losses and recoveries are logged (src/redis/connection-log.ts). */
  log?: Logger;
  /** The connection's name in those lines ('main', 'subscriber', ...). */
  name?: string;
  /** ioredis options over the defaults below. */
  redis?: RedisOptions;
}

export function connectRedis(cfg: Config, url: string | undefined, o: ConnectOptions = {}): RedisClient {
  const client = open(cfg, url, o.redis ?? {});
  logConnection(client, o.log, o.name ?? 'main');
  return client;
}

function open(cfg: Config, url: string | undefined, extra: RedisOptions): RedisClient {
  const options: RedisOptions = {
    // No auto-pipelining: ioredis keeps one auto-pipeline in flight per node and
    // queues the next behind its whole round trip (stop-and-wait). Under call load
    // that queue, not Redis, set the latency. coalesceWrites() keeps its one good
    // part: one write for many commands.
    enableAutoPipelining: false,
    // Fail fast while Redis is away: the gateway answers `unavailable` rather than queueing calls it cannot meter.
    enableOfflineQueue: false,
    commandTimeout: cfg.redis.timeoutMs,
    maxRetriesPerRequest: 1,
    retryStrategy: (n) => Math.min(50 * n, 1000),
    lazyConnect: true,
    ...extra,
  };
  if (cfg.redis.cluster) {
    const cluster = new Cluster(cfg.redis.cluster, {
      enableAutoPipelining: false,
      enableOfflineQueue: false,
      redisOptions: { ...options, username: cfg.redis.username, password: cfg.redis.password },
      lazyConnect: true,
      clusterRetryStrategy: (n) => Math.min(100 * n, 2000),
    });
    cluster.on('+node', (node: Redis) => {
      coalesceWrites(node);
      settleAsking(node);
    });
    if (cfg.redis.acks.replicated) requireReplicas(cluster, { replicas: 1, timeoutMs: cfg.redis.acks.timeoutMs });
    return cluster;
  }
  if (!url) throw new Error('no Redis URL');
  const client = new Redis(url, options);
  coalesceWrites(client);
  if (cfg.redis.acks.replicated) requireReplicas(client, { replicas: 1, timeoutMs: cfg.redis.acks.timeoutMs });
  return client;
}

/**
 * ioredis follows an ASK redirection (a slot being migrated) by sending ASKING and then
 * the command to the importing node, and leaves ASKING's own promise without a handler.
 * That node holds no slot yet, so a slot table refresh meanwhile disconnects it, and the
 * closed connection rejects ASKING: an unhandled rejection, which ends the process. The
 * command sent behind it fails on its own (the client is answered `unavailable`), so
 * ASKING's failure tells nothing more.
 */
function settleAsking(node: Redis): void {
  const asking = node.asking.bind(node) as (...args: unknown[]) => Promise<unknown>;
  (node as unknown as { asking: typeof asking }).asking = (...args) => {
    const sent = asking(...args);
    sent.catch(() => undefined);
    return sent;
  };
}

/**
 * Redis' answers that say the credentials are wrong (`requirepass`, an ACL user): no retry
 * mends them, so a start waiting for Redis gives up at once rather than after its timeout.
 */
const CREDENTIALS = /\b(WRONGPASS|NOAUTH)\b/;

/**
 * Redis' answers that say the user may not run a command Tessera needs (ACL) or that this Redis has
 * no such command (FUNCTION: before Redis 7): waiting mends neither, as for credentials.
 */
const NOT_ALLOWED = /\bNOPERM\b|^ERR unknown command/;

/** The credentials refusal in a connection error (a Cluster's carries its last node's), if it is one. */
function credentialsRefusal(err: unknown): string | undefined {
  for (let e = err as { message?: unknown; lastNodeError?: unknown } | undefined; e; e = e.lastNodeError as typeof e) {
    if (typeof e.message === 'string' && CREDENTIALS.test(e.message)) return e.message;
  }
  return undefined;
}

/**
 * Connect and wait until Redis answers, with the offline queue off this needs an explicit wait.
 * `check` (a PING unless given) is what answering means: openContext passes its whole first
 * look (script library, layout pin), so a cluster whose slot table still names a primary that
 * is down is waited for until a replica has taken over. A ConfigError from `check` stops the
 * wait at once, as do credentials Redis refuses and a command it refuses the user or does not
 * know (exit code 2: a restart only repeats it);
 * a Redis still away after `timeoutMs` is an error naming the last reason it gave.
 */
export async function waitReady(
  client: RedisClient,
  timeoutMs = 10_000,
  check: () => Promise<unknown> = () => client.ping(),
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  const seen = (err: unknown): void => {
    last = err;
  };
  client.on('error', seen);
  try {
    // Not awaited: a Cluster whose ready check fails (cluster_state:fail, a primary just lost)
    // reconnects on its own and never settles this first connect's promise.
    if (client.status === 'wait') client.connect().catch(seen);
    for (;;) {
      try {
        if (client.status === 'ready') {
          await check();
          return;
        }
      } catch (err) {
        if (err instanceof ConfigError) throw err;
        const msg = (err as { message?: unknown }).message;
        if (typeof msg === 'string' && NOT_ALLOWED.test(msg))
          throw new ConfigError(
            `Redis refused a command Tessera needs (${msg}): use Redis 7 or later, and a REDIS_URL user allowed every command (ACL +@all)`,
          );
        seen(err);
      }
      const refused = credentialsRefusal(last);
      if (refused !== undefined) {
        client.disconnect();
        throw new ConfigError(
          `Redis refused the credentials (${refused}): check the password in REDIS_URL (REDIS_USERNAME and REDIS_PASSWORD with REDIS_CLUSTER)`,
        );
      }
      if (Date.now() > deadline) {
        const why = last instanceof Error ? `: ${last.message}` : '';
        throw new Error(`Redis not ready after ${timeoutMs} ms (status ${client.status})${why}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    client.off('error', seen);
  }
}

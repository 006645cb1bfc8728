import type { Socket } from 'node:net';
import Redis, { Cluster, type RedisOptions } from 'ioredis';
import type { Config } from '../config/config';

/** Either a single Redis or a Cluster; both speak the same command API. */
export type RedisClient = Redis | Cluster;

export function connectRedis(cfg: Config, url: string | undefined, extra: RedisOptions = {}): RedisClient {
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
    cluster.on('+node', (node: Redis) => coalesceWrites(node));
    return cluster;
  }
  if (!url) throw new Error('no Redis URL');
  const client = new Redis(url, options);
  coalesceWrites(client);
  return client;
}

/**
 * Commands issued in one event-loop iteration leave in one write: the socket is
 * corked at the first write and uncorked in the iteration's check phase
 * (setImmediate), after every I/O callback of the poll phase (all the frames and
 * requests that came in, all the replies that were read) has issued its
 * commands. ioredis writes every command as it comes, and a syscall per command
 * cost a redemption more CPU than all the rest of its handling. Code that runs
 * in the check phase itself (the tick batcher) calls sendNow() rather than wait
 * for the next iteration.
 */
const uncorkers = new WeakMap<Redis, () => void>();

function coalesceWrites(client: Redis): void {
  client.on('connect', () => {
    const stream = (client as unknown as { stream: Socket }).stream;
    const write = stream.write.bind(stream);
    let corked = false;
    const uncork = (): void => {
      if (!corked) return;
      corked = false;
      stream.uncork();
    };
    uncorkers.set(client, uncork);
    stream.write = function (this: Socket, ...args: Parameters<Socket['write']>): boolean {
      if (!corked) {
        corked = true;
        stream.cork();
        setImmediate(uncork);
      }
      return write(...args);
    } as Socket['write'];
  });
}

/** Writes what this client holds back now (see coalesceWrites). */
export function sendNow(client: RedisClient): void {
  if (client instanceof Cluster) for (const node of client.nodes('master')) uncorkers.get(node)?.();
  else uncorkers.get(client)?.();
}

/** Connect and wait until Redis answers, with the offline queue off this needs an explicit wait. */
export async function waitReady(client: RedisClient, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  if (client.status === 'wait') await client.connect().catch(() => undefined);
  for (;;) {
    try {
      if (client.status === 'ready') {
        await client.ping();
        return;
      }
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`Redis not ready after ${timeoutMs} ms (status ${client.status})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

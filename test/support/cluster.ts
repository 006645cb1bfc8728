/**
 * A 3+3 Redis Cluster of deploy/cluster/local-cluster.sh for one test file,
 * and the faults its tests make: a node's pid to freeze or kill, the shard
 * serving a key, a replica held behind a write it cannot take yet.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import Redis from 'ioredis';
import { openContext } from '../../src/app/context';
import { loadConfig, type Config } from '../../src/config/config';
import { createLogger } from '../../src/observability/log';
import { freeClusterBase } from '../../src/redis/embedded';
import { openScanWindows } from '../../src/redemption/scan-windows';
import { TEST_SECRET } from './harness';
import { until } from './wait';

const SCRIPT = resolve(__dirname, '../../deploy/cluster/local-cluster.sh');
const run = promisify(execFile);

export interface LocalCluster {
  /** Its data, and the DATA_DIR a test's gateway may use. */
  dir: string;
  /** The REDIS_CLUSTER value. */
  nodes: string;
  pidOf(port: number): number;
  /** Starts a node again (after a SIGKILL): it rejoins with its identity and data. */
  restart(port: number): Promise<void>;
  /** The primary serving `key`'s slot now, and its replica. */
  shardOf(key: string): Promise<{ primary: number; replica: number }>;
  stop(): Promise<void>;
}

/** A process's configuration on the cluster (its DATA_DIR, the test secret, silent), with `extra` on top. */
export function clusterConfig(cluster: LocalCluster, extra: Record<string, string> = {}): Config {
  return loadConfig({
    REDIS_CLUSTER: cluster.nodes,
    TESSERA_SECRET: TEST_SECRET,
    DATA_DIR: cluster.dir,
    LOG_LEVEL: 'silent',
    ...extra,
  });
}

/** What a first gateway leaves: the script library loaded, the layout pinned, the scan windows decided. */
export async function startedOnce(cfg: Config): Promise<void> {
  const ctx = await openContext(cfg, createLogger('silent'));
  await openScanWindows(ctx.redis, cfg);
  await ctx.close();
}

/**
 * Starts the cluster on free ports. Another process may take one of them
 * between the look and the bind (every session of this machine runs
 * clusters): the nodes already started are stopped and the start tried again
 * on other ports, twice; what a failed start left is never left running.
 */
export async function startCluster(prefix: string): Promise<LocalCluster> {
  for (let attempt = 1; ; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    try {
      return await startIn(dir);
    } catch (err) {
      await stopIn(dir);
      if (attempt === 3) throw err;
    }
  }
}

async function stopIn(dir: string): Promise<void> {
  await run('sh', [SCRIPT, 'stop', join(dir, 'nodes')]).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}

async function startIn(dir: string): Promise<LocalCluster> {
  const nodesDir = join(dir, 'nodes');
  const base = await freeClusterBase();
  const { stdout } = await run('sh', [SCRIPT, 'start', nodesDir, String(base)]);
  return {
    dir,
    nodes: /REDIS_CLUSTER=(\S+)/.exec(stdout)![1]!,
    pidOf: (port) => Number(readFileSync(join(nodesDir, String(port), 'redis.pid'), 'utf8')),
    restart: async (port) => void (await run('sh', [SCRIPT, 'node', nodesDir, String(port)])),
    shardOf: (key) =>
      onAnyNode(base, async (r) => {
        const slot = Number(await r.call('CLUSTER', 'KEYSLOT', key));
        const nodes = ((await r.call('CLUSTER', 'NODES')) as string)
          .trim()
          .split('\n')
          .map((l) => l.split(' '));
        const port = (n: string[]): number => Number(/:(\d+)@/.exec(n[1]!)![1]);
        const primary = nodes.find(
          (n) =>
            n[2]!.includes('master') &&
            !n[2]!.includes('fail') &&
            n.slice(8).some((range) => {
              const [from, to = from] = range.split('-').map(Number);
              return slot >= from! && slot <= to!;
            }),
        )!;
        const replica = nodes.find((n) => n[3] === primary[0] && !n[2]!.includes('fail'))!;
        return { primary: port(primary), replica: port(replica) };
      }),
    stop: () => stopIn(dir),
  };
}

/** `f` on a connection of its own to one node. */
export async function onNode<T>(port: number, f: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 500 });
  try {
    await r.connect();
    return await f(r);
  } finally {
    r.disconnect();
  }
}

/** `f` on the first of the cluster's six nodes that answers (one may be down). */
async function onAnyNode<T>(base: number, f: (r: Redis) => Promise<T>): Promise<T> {
  for (let port = base; ; port++) {
    try {
      return await onNode(port, f);
    } catch (err) {
      if (port === base + 5) throw err;
    }
  }
}

/** Whether a node is a primary, and how many replicas it has in sync (a node down is neither). */
export async function roleOf(port: number): Promise<{ master: boolean; replicasOnline: number }> {
  return onNode(port, async (r) => {
    const info = await r.info('replication');
    return { master: /role:master/.test(info), replicasOnline: (info.match(/state=online/g) ?? []).length };
  }).catch(() => ({ master: false, replicasOnline: 0 }));
}

/** Until `port` is a primary with a replica in sync: its slots take writes again. */
export const writable = (port: number): Promise<void> =>
  until(
    async () => {
      const r = await roleOf(port);
      return r.master && r.replicasOnline > 0;
    },
    20_000,
    100,
    `node ${port} a primary with a replica`,
  );

/**
 * Fills a primary's replication stream with a 32 MB write its replica, frozen
 * (SIGSTOP) beforehand, cannot take (the socket buffers hold a few MB): later
 * writes wait behind it in the primary's memory and die with it. The lag the
 * primary tolerates is raised so that it keeps taking writes meanwhile, as it
 * does for any replica a little behind.
 */
export async function holdBackReplication(port: number): Promise<void> {
  await onNode(port, async (probe) => {
    await probe.config('SET', 'min-replicas-max-lag', '30');
    const blob = Buffer.alloc(32 * 1024 * 1024, 120);
    for (let i = 0; ; i++) {
      // A key in one of this primary's slots: the others answer MOVED.
      const ok = await probe.set(`blob{${i}}`, blob).then(
        () => true,
        () => false,
      );
      if (ok) return;
    }
  });
}

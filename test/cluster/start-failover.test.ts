/**
 * A gateway started while a cluster primary is down (killed, not yet failed
 * over): its slot table names the dead primary until a replica takes over, so
 * its first look (script library, layout pin) fails for a few seconds. The
 * start waits for the failover, as it waits for a Redis that does not answer
 * (docs/operations.md, Configuration), and then serves.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openContext } from '../../src/app/context';
import { loadConfig, type Config } from '../../src/config/config';
import { Sandbox } from '../../src/dev/sandbox';
import { startGateway } from '../../src/gateway/server';
import { createLogger } from '../../src/observability/log';
import { freeClusterBase } from '../../src/redis/embedded';
import { keys } from '../../src/redis/keys';
import { openScanWindows } from '../../src/redemption/scan-windows';
import { TEST_SECRET } from '../support/harness';
import { http } from '../support/http';
import { until } from '../support/wait';

const SCRIPT = resolve(__dirname, '../../deploy/cluster/local-cluster.sh');
const run = promisify(execFile);
let dir: string;
let cfg: Config;
let base: number;
const nodesDir = (): string => join(dir, 'nodes');
const pidOf = (port: number): number => Number(readFileSync(join(nodesDir(), String(port), 'redis.pid'), 'utf8'));

async function onNode<T>(port: number, f: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await r.connect();
    return await f(r);
  } finally {
    r.disconnect();
  }
}

/** The primary serving `key`'s slot, and its replica. */
async function shardOf(key: string): Promise<{ primary: number; replica: number }> {
  return onNode(base, async (r) => {
    const slot = Number(await r.call('CLUSTER', 'KEYSLOT', key));
    const nodes = ((await r.call('CLUSTER', 'NODES')) as string)
      .trim()
      .split('\n')
      .map((l) => l.split(' '));
    const port = (n: string[]): number => Number(/:(\d+)@/.exec(n[1]!)![1]);
    const primary = nodes.find(
      (n) =>
        n[2]!.includes('master') &&
        n.slice(8).some((range) => {
          const [from, to = from] = range.split('-').map(Number);
          return slot >= from! && slot <= to!;
        }),
    )!;
    const replica = nodes.find((n) => n[3] === primary[0])!;
    return { primary: port(primary), replica: port(replica) };
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-start-failover-'));
  base = await freeClusterBase();
  const { stdout } = await run('sh', [SCRIPT, 'start', nodesDir(), String(base)]);
  cfg = loadConfig({
    REDIS_CLUSTER: /REDIS_CLUSTER=(\S+)/.exec(stdout)![1]!,
    TESSERA_SECRET: TEST_SECRET,
    DATA_DIR: dir,
    LOG_LEVEL: 'silent',
  });
  // An earlier process loaded the library, pinned the layout and decided the scan windows.
  const ctx = await openContext(cfg, createLogger('silent'));
  await openScanWindows(ctx.redis, cfg);
  await ctx.close();
}, 60_000);

afterAll(async () => {
  if (dir) {
    await run('sh', [SCRIPT, 'stop', nodesDir()]).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('a gateway started while a primary is down', () => {
  it('waits for its replica to take over, then serves', async () => {
    const { primary, replica } = await shardOf(keys.layout);
    // The replica that will take over has what a start reads (else it could never serve it).
    await until(
      () => onNode(replica, async (r) => (await r.call('READONLY')) === 'OK' && (await r.exists(keys.layout)) === 1),
      10_000,
    );
    process.kill(pidOf(primary), 'SIGKILL');
    const sandbox = new Sandbox();
    try {
      const provider = { ...cfg.provider, url: `http://127.0.0.1:${await sandbox.listen()}` };
      // At once: the slot table still names the dead primary (2 s node timeout before the failover).
      const gw = await startGateway({ ...cfg, provider, port: 0, host: '127.0.0.1' }, createLogger('silent'));
      try {
        expect((await http(gw, 'GET', '/readyz')).status).toBe(200);
      } finally {
        await gw.close();
      }
    } finally {
      await sandbox.close();
    }
  }, 40_000);
});

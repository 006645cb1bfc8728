/**
 * A process starting while a primary has no replica in sync: that primary
 * refuses writes (min-replicas-to-write, NOREPLICAS) until its replica is back,
 * but the script library, the layout pin and the scan windows are already on
 * it, so starting (every CLI command: lookup, export, audit; a gateway) must
 * not need a write there.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { openContext } from '../../src/app/context';
import { Sandbox } from '../../src/dev/sandbox';
import { startGateway } from '../../src/gateway/server';
import { loadConfig, type Config } from '../../src/config/config';
import { createLogger } from '../../src/observability/log';
import { freeClusterBase } from '../../src/redis/embedded';
import { keys } from '../../src/redis/keys';
import { openScanWindows } from '../../src/redemption/scan-windows';
import { TEST_SECRET } from '../support/harness';
import { until } from '../support/wait';

const SCRIPT = resolve(__dirname, '../../deploy/cluster/local-cluster.sh');
const run = promisify(execFile);
let dir: string;
let cfg: Config;
let base: number;
const nodesDir = (): string => join(dir, 'nodes');
const pidOf = (port: number): number => Number(readFileSync(join(nodesDir(), String(port), 'redis.pid'), 'utf8'));

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-noreplicas-'));
  base = await freeClusterBase();
  const { stdout } = await run('sh', [SCRIPT, 'start', nodesDir(), String(base)]);
  cfg = loadConfig({
    REDIS_CLUSTER: /REDIS_CLUSTER=(\S+)/.exec(stdout)![1]!,
    TESSERA_SECRET: TEST_SECRET,
    DATA_DIR: dir,
    LOG_LEVEL: 'silent',
  });
  // The first process loads the library everywhere, pins the layout and decides the scan windows.
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

/** The primary serving `key`'s slot, and its replica. */
async function shardOf(key: string): Promise<{ replica: number; primary: number }> {
  const r = new Redis({ port: base, lazyConnect: true, maxRetriesPerRequest: 1 });
  await r.connect();
  const slot = Number(await r.call('CLUSTER', 'KEYSLOT', key));
  const nodes = ((await r.call('CLUSTER', 'NODES')) as string)
    .trim()
    .split('\n')
    .map((l) => l.split(' '));
  r.disconnect();
  const port = (n: string[]): number => Number(/:(\d+)@/.exec(n[1]!)![1]);
  const serves = (n: string[]): boolean =>
    n.slice(8).some((range) => {
      const [from, to = from] = range.split('-').map(Number);
      return slot >= from! && slot <= to!;
    });
  const primary = nodes.find((n) => n[2]!.includes('master') && serves(n))!;
  const replica = nodes.find((n) => n[3] === primary[0])!;
  return { replica: port(replica), primary: port(primary) };
}

describe('a primary without its replica', () => {
  it('does not stop a process from starting: a CLI command’s context (lookup, export, audit), a gateway', async () => {
    // The shards of what every start reads: the layout pin and the scan windows.
    const shards = await Promise.all([keys.layout, keys.scanWindows].map(shardOf));
    const paused = [...new Set(shards.map((s) => s.replica))];
    for (const replica of paused) process.kill(pidOf(replica), 'SIGSTOP');
    try {
      // Past min-replicas-max-lag each of those primaries refuses every write to the key's slot.
      for (const [i, key] of [keys.layout, keys.scanWindows].entries()) {
        const p = new Redis({ port: shards[i]!.primary, lazyConnect: true, maxRetriesPerRequest: 1 });
        await p.connect();
        const refused = (): Promise<boolean> =>
          p.set(`{${key}}probe`, '1').then(
            () => false,
            (e: Error) => /NOREPLICAS/.test(e.message),
          );
        await until(refused, 10_000);
        p.disconnect();
      }
      const ctx = await openContext(cfg, createLogger('silent'));
      try {
        await openScanWindows(ctx.redis, cfg);
      } finally {
        await ctx.close();
      }
      // And a whole gateway.
      const sandbox = new Sandbox();
      const provider = { ...cfg.provider, url: `http://127.0.0.1:${await sandbox.listen()}` };
      try {
        await (await startGateway({ ...cfg, provider, port: 0, host: '127.0.0.1' }, createLogger('silent'))).close();
      } finally {
        await sandbox.close();
      }
    } finally {
      for (const replica of paused) process.kill(pidOf(replica), 'SIGCONT');
    }
  }, 30_000);
});

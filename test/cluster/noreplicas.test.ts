/**
 * A process starting while one primary has no replica in sync: that primary
 * refuses writes (min-replicas-to-write, NOREPLICAS) until its replica is back,
 * but the script library is already on it, so opening a context (every CLI
 * command: lookup, export, audit) must not need a write there.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { openContext } from '../../src/app/context';
import { loadConfig, type Config } from '../../src/config/config';
import { createLogger } from '../../src/observability/log';
import { freeClusterBase } from '../../src/redis/embedded';
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
  // The first process loads the library everywhere.
  await (await openContext(cfg, createLogger('silent'))).close();
}, 60_000);

afterAll(async () => {
  if (dir) {
    await run('sh', [SCRIPT, 'stop', nodesDir()]).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The first replica in the cluster's view, and its primary's port. */
async function replicaAndPrimary(): Promise<{ replica: number; primary: number; firstSlot: number }> {
  const r = new Redis({ port: base, lazyConnect: true, maxRetriesPerRequest: 1 });
  await r.connect();
  const nodes = ((await r.call('CLUSTER', 'NODES')) as string)
    .trim()
    .split('\n')
    .map((l) => l.split(' '));
  r.disconnect();
  const rep = nodes.find((n) => n[2]!.includes('slave'))!;
  const pri = nodes.find((n) => n[0] === rep[3])!;
  const port = (n: string[]): number => Number(/:(\d+)@/.exec(n[1]!)![1]);
  return { replica: port(rep), primary: port(pri), firstSlot: Number(pri[8]!.split('-')[0]) };
}

describe('a primary without its replica', () => {
  it('does not stop a process from opening its context (lookup, export, audit)', async () => {
    const { replica, primary, firstSlot } = await replicaAndPrimary();
    const p = new Redis({ port: primary, lazyConnect: true, maxRetriesPerRequest: 1 });
    await p.connect();
    let key = '';
    for (let i = 0; !key; i++)
      if (Number(await p.call('CLUSTER', 'KEYSLOT', `probe-${i}`)) === firstSlot) key = `probe-${i}`;
    process.kill(pidOf(replica), 'SIGSTOP');
    try {
      // Past min-replicas-max-lag the primary refuses every write.
      await until(
        async () =>
          await p.set(key, '1').then(
            () => false,
            (e: Error) => /NOREPLICAS/.test(e.message),
          ),
        10_000,
      );
      const ctx = await openContext(cfg, createLogger('silent'));
      await ctx.close();
    } finally {
      process.kill(pidOf(replica), 'SIGCONT');
      p.disconnect();
    }
  }, 30_000);
});

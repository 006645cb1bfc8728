/**
 * A process starting while a primary has no replica in sync: that primary
 * refuses writes (min-replicas-to-write, NOREPLICAS) until its replica is back,
 * but the script library, the layout pin and the scan windows are already on
 * it, so starting (every CLI command: lookup, export, audit; a gateway) must
 * not need a write there.
 */
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { openContext } from '../../src/app/context';
import { Sandbox } from '../../src/dev/sandbox';
import { startGateway } from '../../src/gateway/server';
import { type Config } from '../../src/config/config';
import { createLogger } from '../../src/observability/log';
import { keys } from '../../src/redis/keys';
import { openScanWindows } from '../../src/redemption/scan-windows';
import { clusterConfig, startCluster, startedOnce, type LocalCluster } from '../support/cluster';
import { until } from '../support/wait';

let cluster: LocalCluster;
let cfg: Config;

beforeAll(async () => {
  cluster = await startCluster('tessera-noreplicas-');
  cfg = clusterConfig(cluster);
  // The first process loads the library everywhere, pins the layout and decides the scan windows.
  await startedOnce(cfg);
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

describe('a primary without its replica', () => {
  it('does not stop a process from starting: a CLI command’s context (lookup, export, audit), a gateway', async () => {
    // The shards of what every start reads: the layout pin and the scan windows.
    const shards = await Promise.all([keys.layout, keys.scanWindows].map((k) => cluster.shardOf(k)));
    const paused = [...new Set(shards.map((s) => s.replica))];
    for (const replica of paused) process.kill(cluster.pidOf(replica), 'SIGSTOP');
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
      for (const replica of paused) process.kill(cluster.pidOf(replica), 'SIGCONT');
    }
  }, 30_000);
});

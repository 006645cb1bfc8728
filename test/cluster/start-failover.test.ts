/**
 * A gateway started while a cluster primary is down (killed, not yet failed
 * over): its slot table names the dead primary until a replica takes over, so
 * its first look (script library, layout pin) fails for a few seconds. The
 * start waits for the failover, as it waits for a Redis that does not answer
 * (docs/operations.md, Configuration), and then serves.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Config } from '../../src/config/config';
import { Sandbox } from '../../src/dev/sandbox';
import { startGateway } from '../../src/gateway/server';
import { createLogger } from '../../src/observability/log';
import { keys } from '../../src/redis/keys';
import { clusterConfig, onNode, startCluster, startedOnce, type LocalCluster } from '../support/cluster';
import { http } from '../support/http';
import { until } from '../support/wait';

let cluster: LocalCluster;
let cfg: Config;

beforeAll(async () => {
  cluster = await startCluster('tessera-start-failover-');
  cfg = clusterConfig(cluster);
  // An earlier process loaded the library, pinned the layout and decided the scan windows.
  await startedOnce(cfg);
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

describe('a gateway started while a primary is down', () => {
  it('waits for its replica to take over, then serves', async () => {
    const { primary, replica } = await cluster.shardOf(keys.layout);
    // The replica that will take over has what a start reads (else it could never serve it).
    await until(
      () => onNode(replica, async (r) => (await r.call('READONLY')) === 'OK' && (await r.exists(keys.layout)) === 1),
      10_000,
    );
    process.kill(cluster.pidOf(primary), 'SIGKILL');
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

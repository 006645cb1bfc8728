/**
 * The first start on a new cluster writes what every later start reads: the
 * script library on each primary, the layout pin and (a gateway) the scan
 * windows. It goes on only once a replica has them: a failover right after it
 * loses none, and a later start finds them on the promoted replica, which,
 * with no replica of its own, refuses every write (NOREPLICAS) until the old
 * primary is back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openContext, type Context } from '../../src/app/context';
import { type Config } from '../../src/config/config';
import { createLogger } from '../../src/observability/log';
import { keys } from '../../src/redis/keys';
import { readLibrary } from '../../src/redis/scripts';
import { openScanWindows, windowMsFor } from '../../src/redemption/scan-windows';
import {
  clusterConfig,
  holdBackReplication,
  onNode,
  roleOf,
  startCluster,
  writable,
  type LocalCluster,
} from '../support/cluster';
import { sleep, until } from '../support/wait';

/** How long the replica stays frozen: a start that waits for it is done only after. */
const FROZEN_MS = 3_000;
let cluster: LocalCluster;
let cfg: Config;

beforeAll(async () => {
  cluster = await startCluster('tessera-first-start-');
  cfg = clusterConfig(cluster);
  expect(cfg.redis.acks.replicated).toBe(true);
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

/**
 * Runs `first` while the replica of `key`'s primary lags behind a write it
 * cannot take, kills that primary the moment `first` is done (a failover right
 * after it) and thaws the replica FROZEN_MS after `first` began; returns once
 * the replica has taken over (`promoted`). `restore` starts the old primary again.
 */
async function failoverRightAfter(
  key: string,
  first: () => Promise<void>,
): Promise<{ promoted: number; restore: () => Promise<void> }> {
  const { primary, replica } = await cluster.shardOf(key);
  process.kill(cluster.pidOf(replica), 'SIGSTOP');
  try {
    await holdBackReplication(primary);
    const done = first().then(() => process.kill(cluster.pidOf(primary), 'SIGKILL'));
    await sleep(FROZEN_MS);
    process.kill(cluster.pidOf(replica), 'SIGCONT');
    await done;
  } finally {
    process.kill(cluster.pidOf(replica), 'SIGCONT');
  }
  await until(async () => (await roleOf(replica)).master, 20_000, 100, 'replica promoted');
  return {
    promoted: replica,
    restore: async () => {
      await cluster.restart(primary);
      await writable(replica);
    },
  };
}

describe('the first start on a new cluster, then a failover', () => {
  it('the library and the layout pin are on the replica that takes over: a later start reads them', async () => {
    const { promoted, restore } = await failoverRightAfter(keys.layout, async () => {
      await (await openContext(cfg, createLogger('silent'))).close();
    });
    try {
      const ctx = await openContext(cfg, createLogger('silent'));
      try {
        expect(await ctx.redis.get(keys.layout)).toContain('"buckets"');
        const libs = await onNode(promoted, (r) => r.function('LIST', 'LIBRARYNAME', ctx.scripts.library.name));
        expect(libs).toHaveLength(1);
      } finally {
        await ctx.close();
      }
    } finally {
      await restore();
    }
  }, 60_000);

  it('the scan windows are on the replica that takes over: a later gateway reads them', async () => {
    const windows = async (): Promise<number> => {
      const ctx = await openContext(cfg, createLogger('silent'));
      try {
        return (await openScanWindows(ctx.redis, cfg)).windowMs;
      } finally {
        await ctx.close();
      }
    };
    const { restore } = await failoverRightAfter(keys.scanWindows, async () => void (await windows()));
    try {
      expect(await windows()).toBe(windowMsFor(cfg.scanTtlSec));
    } finally {
      await restore();
    }
  }, 60_000);
});

describe('the first start, its connection to a primary broken before a replica confirmed the library', () => {
  it('confirms it again on the connection made since, once the replica is back, and starts', async () => {
    const library = readLibrary().name;
    const { primary, replica } = await cluster.shardOf(keys.layout);
    // A new Redis as far as the library goes: every primary loads it at this start (a replica
    // refuses the DELETE, and has the primary's).
    for (const port of [...cluster.nodes.matchAll(/:(\d+)/g)].map((m) => Number(m[1])))
      await onNode(port, async (r) => void (await r.function('DELETE', library).catch(() => undefined)));
    process.kill(cluster.pidOf(replica), 'SIGSTOP');
    let opened: Promise<Context> | undefined;
    try {
      opened = openContext(cfg, createLogger('silent'));
      opened.catch(() => undefined);
      // Its WAIT for the library, on the primary whose replica is frozen: the connection breaks meanwhile.
      await until(
        () =>
          onNode(primary, async (r) => /cmd=wait\b/.test((await r.call('CLIENT', 'LIST', 'TYPE', 'normal')) as string)),
        10_000,
        5,
        'the start waiting for a replica',
      );
      await onNode(primary, (r) => r.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes'));
      await sleep(500);
    } finally {
      process.kill(cluster.pidOf(replica), 'SIGCONT');
    }
    const ctx = await opened;
    try {
      const libs = await onNode(replica, (r) => r.function('LIST', 'LIBRARYNAME', library));
      expect(libs).toHaveLength(1);
    } finally {
      await ctx.close();
    }
  }, 60_000);
});

/**
 * Growing a Redis Cluster under traffic: a primary added by hand (CLUSTER MEET, so without
 * the function library) takes its first slot while calls of that bucket go on, and the
 * cluster client follows ASK redirections to it.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import Redis, { type Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openContext, type Context } from '../../src/app/context';
import { createToken, putPlans, putProducts } from '../../src/catalog/store';
import { loadConfig } from '../../src/config/config';
import { startGateway, type Gateway } from '../../src/gateway/server';
import { activateId } from '../../src/ledger/ids';
import { mintIds } from '../../src/ledger/mint';
import { createLogger } from '../../src/observability/log';
import { connectRedis } from '../../src/redis/connect';
import { freeClusterBase, freePort } from '../../src/redis/embedded';
import { STD_RATES, talkProduct, TEST_SECRET } from '../support/harness';
import { sleep, until } from '../support/wait';
import { Client } from '../support/ws-client';

const SCRIPT = resolve(__dirname, '../../deploy/cluster/local-cluster.sh');
const run = promisify(execFile);
const TALK = talkProduct({ name: 'talk-grow', face: 1_000_000, price: 1_000_000 });
let dir: string;
let ctx: Context;
let g: Gateway;
let spare: Redis;
let sparePort: number;
let env: Record<string, string>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-reshard-'));
  const { stdout } = await run('sh', [SCRIPT, 'start', join(dir, 'nodes'), String(await freeClusterBase())]);
  env = {
    REDIS_CLUSTER: /REDIS_CLUSTER=(\S+)/.exec(stdout)![1]!,
    TESSERA_SECRET: TEST_SECRET,
    DATA_DIR: dir,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    // No purchase here: the sales service only needs an address.
    PROVIDER_URL: 'http://127.0.0.1:9',
    // The new primary has no replica: a stop on it could never be acknowledged as replicated.
    REDIS_REPLICATED_ACKS: 'off',
  };
  const cfg = loadConfig(env);
  ctx = await openContext(cfg, createLogger('silent'));
  await putPlans(ctx.redis, [{ name: 'std', rates: STD_RATES }]);
  await putProducts(ctx.redis, [TALK]);
  g = await startGateway(cfg, createLogger('silent'));
  // The new primary: no replica needed to take the library (a test of where it is loaded).
  sparePort = await freePort();
  mkdirSync(join(dir, 'spare'));
  await run('redis-server', [
    ...['--port', String(sparePort), '--cluster-port', String(await freePort()), '--bind', '127.0.0.1'],
    ...['--dir', join(dir, 'spare'), '--cluster-enabled', 'yes', '--save', '', '--daemonize', 'yes'],
    ...['--pidfile', join(dir, 'spare', 'redis.pid')],
  ]);
  spare = new Redis({ port: sparePort, lazyConnect: true, maxRetriesPerRequest: 0 });
  for (let i = 0; i < 100 && spare.status !== 'ready'; i++) await spare.connect().catch(() => sleep(50));
}, 60_000);

afterAll(async () => {
  await g?.close();
  await ctx?.close();
  await spare?.shutdown('NOSAVE').catch(() => undefined);
  spare?.disconnect();
  if (dir) {
    await run('sh', [SCRIPT, 'stop', join(dir, 'nodes')]).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The port of the primary serving `slot`. */
async function ownerOf(slot: number): Promise<number> {
  const ranges = await (ctx.redis as Cluster).cluster('SLOTS');
  return ranges.find(([a, b]) => slot >= a && slot <= b)![2]![1];
}

describe('a primary added without the library takes a busy bucket', () => {
  it('a migrated call is billed on it: the library is loaded there when a call finds it missing', async () => {
    const ids: string[] = [];
    await mintIds(ctx, TALK, 1, (id) => ids.push(id));
    const id = ids[0]!;
    expect((await activateId(ctx, id, { price: TALK.price })).ok).toBe(true);
    const tok = (await createToken(ctx.redis, { name: 'sw-grow', role: 'switch' })).token;
    const c = await Client.connect(g.port, tok);
    try {
      expect(await c.request({ op: 'start', ref: 's', call: 'g1', id, dest: '4912345' })).toMatchObject({
        op: 'started',
      });
      const bucket = ctx.ids.hash(id).bucket;
      const slot = Number(await spare.cluster('KEYSLOT', `{b${bucket}}`));
      const src = new Redis({ port: await ownerOf(slot), lazyConnect: true });
      await src.connect();
      try {
        await spare.cluster('MEET', '127.0.0.1', src.options.port!);
        const myId = await spare.cluster('MYID');
        for (let i = 0; i < 200 && !/cluster_state:ok/.test(await spare.cluster('INFO')); i++) await sleep(50);
        expect(await spare.function('LIST')).toEqual([]);
        // Migrate the bucket's keys but do not hand the slot over: its calls are ASKed to the new node.
        const srcId = await src.cluster('MYID');
        await spare.cluster('SETSLOT', slot, 'IMPORTING', srcId);
        await src.cluster('SETSLOT', slot, 'MIGRATING', myId);
        const moved = await src.cluster('GETKEYSINSLOT', slot, 1000);
        await src.migrate('127.0.0.1', sparePort, '', 0, 5000, 'KEYS', ...moved);
        expect(await c.request({ op: 'tick', ref: 't', call: 'g1', sec: 5 })).toMatchObject({
          op: 'ticked',
          balance: 1_000_000 - 500,
        });
        expect(await spare.function('LIST')).toHaveLength(1);
        await spare.cluster('SETSLOT', slot, 'NODE', myId);
        await src.cluster('SETSLOT', slot, 'NODE', myId);
        expect(await c.request({ op: 'stop', ref: 'e', call: 'g1', sec: 7 })).toMatchObject({
          op: 'stopped',
          billedSec: 7,
          balance: 1_000_000 - 700,
        });
      } finally {
        src.disconnect();
      }
    } finally {
      await c.close();
    }
  });

  it('a library missing on a primary with slots is loaded there, whatever another slotless one refuses', async () => {
    // A primary just met, no slot yet and no replica: it refuses every write (min-replicas-to-write),
    // FUNCTION LOAD included. No call reaches it; a call whose own primary lost the library (another
    // version's start pruned it) must not be failed by that refusal when the library is reloaded.
    const lonePort = await freePort();
    mkdirSync(join(dir, 'lone'));
    await run('redis-server', [
      ...['--port', String(lonePort), '--cluster-port', String(await freePort()), '--bind', '127.0.0.1'],
      ...['--dir', join(dir, 'lone'), '--cluster-enabled', 'yes', '--save', '', '--daemonize', 'yes'],
      ...['--pidfile', join(dir, 'lone', 'redis.pid'), '--min-replicas-to-write', '1'],
    ]);
    const lone = new Redis({ port: lonePort, lazyConnect: true, maxRetriesPerRequest: 0 });
    for (let i = 0; i < 100 && lone.status !== 'ready'; i++) await lone.connect().catch(() => sleep(50));
    const ids: string[] = [];
    await mintIds(ctx, TALK, 1, (id) => ids.push(id));
    const id = ids[0]!;
    expect((await activateId(ctx, id, { price: TALK.price })).ok).toBe(true);
    const tok = (await createToken(ctx.redis, { name: 'sw-lone', role: 'switch' })).token;
    const c = await Client.connect(g.port, tok);
    const owner = new Redis({
      port: await ownerOf(Number(await spare.cluster('KEYSLOT', `{b${ctx.ids.hash(id).bucket}}`))),
      lazyConnect: true,
    });
    try {
      await owner.connect();
      await lone.cluster('MEET', '127.0.0.1', owner.options.port!);
      for (let i = 0; i < 200 && !/cluster_state:ok/.test(await lone.cluster('INFO')); i++) await sleep(50);
      const knowsLone = async (): Promise<boolean> => {
        const lists = await Promise.all((ctx.redis as Cluster).nodes('master').map((n) => n.cluster('NODES')));
        return lists.every((l) => String(l).includes(`:${lonePort}@`));
      };
      await until(knowsLone, 10_000, 50, 'every primary knows the new one');
      await owner.function('DELETE', g.ctx.scripts.library.name);
      expect(await c.request({ op: 'start', ref: 's', call: 'l1', id, dest: '4912345' })).toMatchObject({
        op: 'started',
      });
      expect(await owner.function('LIST')).toHaveLength(1);
      expect(await lone.function('LIST')).toEqual([]);
    } finally {
      owner.disconnect();
      await c.close();
      await lone.shutdown('NOSAVE').catch(() => undefined);
      lone.disconnect();
    }
  });

  it('an ASKING whose connection closes before it is answered does not end the process', async () => {
    const client = connectRedis(loadConfig(env), undefined) as Cluster;
    await client.connect();
    try {
      const node = client.nodes('master')[0]!;
      node.disconnect();
      // As the cluster client sends it on an ASK redirection: nobody awaits it.
      void node.asking();
      // An unhandled rejection would fail this file.
      await sleep(100);
    } finally {
      client.disconnect();
    }
  });
});

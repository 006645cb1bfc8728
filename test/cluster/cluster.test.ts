/**
 * Every feature on a real Redis Cluster (3 primaries, 3 replicas started by
 * deploy/cluster/local-cluster.sh) with no code change, only REDIS_CLUSTER:
 * calls started on one gateway and ticked and stopped on another, a catalog
 * change reaching both, redemption with a retry and a reversal, a recharge
 * voucher into an ID of another slot, a purchase through the card company,
 * export and the audit from the CLI.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { activateId } from '../../src/ledger/ids';
import { openContext, type Context } from '../../src/app/context';
import type { GoodsProduct, RechargeProduct } from '../../src/catalog/schema';
import { createToken, putItems, putPlans, putProducts } from '../../src/catalog/store';
import { loadConfig } from '../../src/config/config';
import { startGateway, type Gateway } from '../../src/gateway/server';
import { mintIds } from '../../src/ledger/mint';
import { createLogger } from '../../src/observability/log';
import { freeClusterBase } from '../../src/redis/embedded';
import { DEMO_MEMBERS, Sandbox } from '../../src/dev/sandbox';
import { cli, setEnv } from '../support/cli';
import { STD_RATES, talkProduct, TEST_SECRET } from '../support/harness';
import { jsonCall } from '../support/http';
import { sleep } from '../support/wait';
import { Client } from '../support/ws-client';
import { newKey, purchaseBody } from '../sales/fixtures';

const SCRIPT = resolve(__dirname, '../../deploy/cluster/local-cluster.sh');
const PASSWORD = 'cluster-test-password';
const run = promisify(execFile);
let dir: string;
let ctx: Context;
let sandbox: Sandbox;
let env: Record<string, string>;
let g1: Gateway;
let g2: Gateway;

const TALK = talkProduct({ name: 'talk-c', face: 1_000_000, price: 1_000_000 });
/** 10 s at 100/s; an alert at 5 s left. */
const SHORT = talkProduct({ name: 'talk-short', face: 1000, price: 1000, thresholds: [5] });
const VOUCHER: RechargeProduct = {
  name: 'voucher-c',
  kind: 'recharge',
  currency: 'EUR',
  face: 2_000_000,
  price: 2_000_000,
  into: [],
};
const WALLET: GoodsProduct = {
  name: 'wallet-c',
  kind: 'goods',
  currency: 'EUR',
  face: 10_000_000,
  price: 10_000_000,
  venues: [],
  expiryDays: 0,
};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-cluster-'));
  // The nodes require a password, as production clusters do: the gateway and the CLI get it from REDIS_PASSWORD.
  const { stdout } = await run('sh', [SCRIPT, 'start', join(dir, 'nodes'), String(await freeClusterBase())], {
    env: { ...process.env, REDIS_PASSWORD: PASSWORD },
  });
  const cluster = /REDIS_CLUSTER=(\S+)/.exec(stdout)![1]!;
  sandbox = new Sandbox();
  const sandboxPort = await sandbox.listen();
  env = {
    REDIS_CLUSTER: cluster,
    REDIS_PASSWORD: PASSWORD,
    TESSERA_SECRET: TEST_SECRET,
    DATA_DIR: dir,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    PROVIDER_URL: `http://127.0.0.1:${sandboxPort}`,
  };
  const cfg = loadConfig(env);
  ctx = await openContext(cfg, createLogger('silent'));
  await putPlans(ctx.redis, [{ name: 'std', rates: STD_RATES }]);
  await putProducts(ctx.redis, [TALK, SHORT, WALLET, VOUCHER]);
  await putItems(ctx.redis, [{ venue: 'arena', item: 'beer', price: 4_500_000 }]);
  g1 = await startGateway(cfg, createLogger('silent'));
  g2 = await startGateway(cfg, createLogger('silent'));
}, 60_000);

afterAll(async () => {
  await g1?.close();
  await g2?.close();
  await ctx?.close();
  await sandbox?.close();
  if (dir) {
    await run('sh', [SCRIPT, 'stop', join(dir, 'nodes')]).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
});

async function sold(product: typeof TALK | typeof WALLET, n: number): Promise<string[]> {
  const ids: string[] = [];
  await mintIds(ctx, product, n, (id) => ids.push(id));
  for (const id of ids) expect((await activateId(ctx, id, { price: product.price })).ok).toBe(true);
  return ids;
}

async function runCli(...args: string[]): Promise<{ code: number; out: string }> {
  const restore = setEnv({ ...env, REDIS_URL: undefined, BUCKETS: undefined });
  try {
    return await cli(...args);
  } finally {
    restore();
  }
}

describe('on a 3-primary, 3-replica Redis Cluster', () => {
  it('has six nodes: three primaries, each with a replica', async () => {
    const primary = (ctx.redis as Cluster).nodes('master')[0]!;
    const lines = ((await primary.call('CLUSTER', 'NODES')) as string).trim().split('\n');
    expect(lines).toHaveLength(6);
    expect(lines.filter((l) => / master /.test(l.replace('myself,', '')))).toHaveLength(3);
    expect(lines.filter((l) => / slave /.test(l.replace('myself,', '')))).toHaveLength(3);
  });

  it('the nodes require the password: a client without it is refused, the gateways (REDIS_PASSWORD) are in', async () => {
    const { host, port } = loadConfig(env).redis.cluster![0]!;
    // A raw connection, as any client without credentials: ioredis would give up at its HELLO.
    const answer = await new Promise<string>((resolve, reject) => {
      const sock = createConnection(port, host, () => sock.write('GET ts:layout\r\n'));
      sock.once('data', (d) => (sock.destroy(), resolve(d.toString())));
      sock.once('error', reject);
    });
    expect(answer).toMatch(/^-NOAUTH/);
    expect(JSON.parse((await ctx.redis.get('ts:layout'))!)).toMatchObject({ buckets: 64 });
  });

  it('calls on IDs spread over every primary: started on one gateway, ticked and stopped on another', async () => {
    const ids = await sold(TALK, 24);
    // The IDs' keys live on all three primaries.
    const perNode = await Promise.all((ctx.redis as Cluster).nodes('master').map((n) => n.dbsize()));
    for (const n of perNode) expect(n).toBeGreaterThan(0);

    const swTok = (await createToken(ctx.redis, { name: 'sw-cluster', role: 'switch' })).token;
    const a = await Client.connect(g1.port, swTok);
    const b = await Client.connect(g2.port, swTok);
    try {
      for (const [i, id] of ids.entries()) {
        expect(await a.request({ op: 'start', ref: `s${i}`, call: `c${i}`, id, dest: '4912345' })).toMatchObject({
          op: 'started',
          maxSec: 10_000,
        });
      }
      for (const i of ids.keys())
        expect(await b.request({ op: 'tick', ref: `t${i}`, call: `c${i}`, sec: 3 + i })).toMatchObject({
          op: 'ticked',
          balance: 1_000_000 - (3 + i) * 100,
        });
      for (const i of ids.keys()) {
        expect(await a.request({ op: 'stop', ref: `e${i}`, call: `c${i}`, sec: 5 + i })).toEqual({
          op: 'stopped',
          ref: `e${i}`,
          call: `c${i}`,
          billedSec: 5 + i,
          cost: (5 + i) * 100,
          balance: 1_000_000 - (5 + i) * 100,
        });
      }
    } finally {
      await a.close();
      await b.close();
    }
    const exported = await runCli('export', 'calls', '--format', 'ndjson');
    expect(exported.code).toBe(0);
    expect(exported.out.trim().split('\n')).toHaveLength(ids.length);
  });

  it('an alert and the cut-off go to the connection the ticks come on, on whichever gateway', async () => {
    const [id] = await sold(SHORT, 1);
    const swTok = (await createToken(ctx.redis, { name: 'sw-alert', role: 'switch' })).token;
    const a = await Client.connect(g1.port, swTok);
    const b = await Client.connect(g2.port, swTok);
    try {
      expect(await a.request({ op: 'start', ref: 'as', call: 'al', id, dest: '4912345' })).toMatchObject({
        op: 'started',
        maxSec: 10,
      });
      b.send({ op: 'tick', call: 'al', sec: 6 });
      expect(await b.waitFor((m) => m.op === 'alert' && m.call === 'al')).toEqual({
        op: 'alert',
        call: 'al',
        secLeft: 4,
        balance: 400,
        level: 5,
      });
      b.send({ op: 'tick', call: 'al', sec: 10 });
      expect(await b.waitFor((m) => m.op === 'cutoff' && m.call === 'al')).toEqual({
        op: 'cutoff',
        call: 'al',
        reason: 'exhausted',
        action: 'terminate',
      });
      expect(a.received.filter((m) => m.call === 'al' && (m.op === 'alert' || m.op === 'cutoff'))).toEqual([]);
      expect(await b.request({ op: 'stop', ref: 'ae', call: 'al', sec: 10 })).toMatchObject({
        op: 'stopped',
        billedSec: 10,
        cost: 1000,
        balance: 0,
      });
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a catalog change reaches both gateways', async () => {
    await putProducts(ctx.redis, [{ ...TALK, name: 'talk-new' }]);
    const tok = (await createToken(ctx.redis, { name: 'sales-c', role: 'sales' })).token;
    for (const g of [g1, g2]) {
      let names: string[] = [];
      for (let i = 0; i < 100 && !names.includes('talk-new'); i++) {
        const r = await fetch(`http://127.0.0.1:${g.port}/v1/products`, {
          headers: { Authorization: `Bearer ${tok}` },
        });
        names = ((await r.json()) as { products: { name: string }[] }).products.map((p) => p.name);
        if (!names.includes('talk-new')) await sleep(20);
      }
      expect(names).toContain('talk-new');
    }
  });

  it('redemption: a retry returns the first answer, a reversal gives the value back once', async () => {
    const [wallet] = await sold(WALLET, 1);
    const tok = (await createToken(ctx.redis, { name: 'scn-c', role: 'scanner', venue: 'arena' })).token;
    const first = await jsonCall(g1, 'POST', '/v1/redeem', {
      token: tok,
      body: { scan: 'scan-1', id: wallet, item: 'beer' },
    });
    expect(first).toEqual({
      status: 200,
      json: { kind: 'goods', action: 'spend', amount: 4_500_000, item: 'beer', valueLeft: 5_500_000 },
    });
    expect(
      await jsonCall(g2, 'POST', '/v1/redeem', { token: tok, body: { scan: 'scan-1', id: wallet, item: 'beer' } }),
    ).toMatchObject({ status: 200, json: { valueLeft: 5_500_000, duplicate: true } });
    expect(await jsonCall(g2, 'POST', '/v1/reverse', { token: tok, body: { scan: 'scan-1' } })).toMatchObject({
      status: 200,
      json: { action: 'reverse', valueLeft: 10_000_000 },
    });
    expect(await jsonCall(g1, 'POST', '/v1/reverse', { token: tok, body: { scan: 'scan-1' } })).toMatchObject({
      status: 200,
      json: { valueLeft: 10_000_000, duplicate: true },
    });
  });

  it('a recharge voucher into a talk ID in another slot: credited once, the voucher used up', async () => {
    const [target] = await sold(TALK, 1);
    const vouchers: string[] = [];
    await mintIds(ctx, VOUCHER, 8, (id) => vouchers.push(id));
    // A voucher whose key lives in another slot than the target's.
    const slotOf = (id: string): number => Number(ctx.ids.hash(id).bucket);
    const voucher = vouchers.find((v) => slotOf(v) !== slotOf(target!))!;
    expect((await activateId(ctx, voucher, { price: VOUCHER.price })).ok).toBe(true);
    const till = (await createToken(ctx.redis, { name: 'till-cluster', role: 'sales' })).token;
    const redeem = (g: Gateway): Promise<{ status: number; json: any }> =>
      jsonCall(g, 'POST', '/v1/topups', { token: till, body: { id: target, voucher } });
    expect(await redeem(g1)).toMatchObject({ status: 200, json: { amount: 2_000_000, balance: 3_000_000 } });
    expect(await redeem(g2)).toMatchObject({ status: 200, json: { balance: 3_000_000, duplicate: true } });
  });

  it('a purchase through the card company, then the audit balances every ID', async () => {
    await mintIds(ctx, TALK, 3, () => undefined);
    const tok = (await createToken(ctx.redis, { name: 'sales-c2', role: 'sales' })).token;
    const alice = DEMO_MEMBERS[0]!;
    const r = await fetch(`http://127.0.0.1:${g1.port}/v1/purchases`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${tok}`, 'Content-Type': 'application/json', 'Idempotency-Key': newKey('c') },
      body: JSON.stringify(purchaseBody(TALK.name, { card: alice.card, cardPin: alice.pin })),
    });
    expect(r.status).toBe(200);
    expect(((await r.json()) as { id: string }).id).toMatch(/^\d{16}$/);

    const audit = await runCli('audit', '--json');
    const report = JSON.parse(audit.out) as { ok: boolean; sold: number; problems: unknown[] };
    expect(report.problems).toEqual([]);
    expect(audit.code).toBe(0);
    // 2: the recharge voucher and its target.
    expect(report.sold).toBe(24 + 1 + 1 + 2 + 1);
  });

  it('a primary killed with SIGKILL: its replica takes over and every call goes on, billed exactly; the audit balances', async () => {
    const ids = await sold(TALK, 30);
    const swTok = (await createToken(ctx.redis, { name: 'sw-failover', role: 'switch' })).token;
    const c = await Client.connect(g1.port, swTok);
    try {
      for (const [i, id] of ids.entries())
        expect(await c.request({ op: 'start', ref: `fs${i}`, call: `f${i}`, id, dest: '4912345' })).toMatchObject({
          op: 'started',
        });
      for (const i of ids.keys())
        expect(await c.request({ op: 'tick', ref: `ft${i}`, call: `f${i}`, sec: 3 })).toMatchObject({ op: 'ticked' });
      // Let replication catch up (it is asynchronous), then kill the first primary.
      await sleep(300);
      const primary = (ctx.redis as Cluster).nodes('master')[0]!;
      const pid = Number(/process_id:(\d+)/.exec(await primary.info('server'))![1]);
      process.kill(pid, 'SIGKILL');
      // The promoted replica takes writes once it has a replica again (min-replicas-to-write): bring the node back.
      await sleep(3000);
      const restart = (password: string | undefined): ReturnType<typeof run> =>
        run('sh', [SCRIPT, 'node', join(dir, 'nodes'), String(primary.options.port)], {
          env: { ...process.env, REDIS_PASSWORD: password },
        });
      // Restarted without its password the node would be open to anyone (and never sync): refused.
      await expect(restart(undefined)).rejects.toMatchObject({ code: 2 });
      await restart(PASSWORD);

      // The switch keeps ticking; calls on the dead primary's buckets answer unavailable until the failover.
      const pending = new Set(ids.keys());
      const deadline = Date.now() + 30_000;
      let round = 0;
      while (pending.size > 0 && Date.now() < deadline) {
        round++;
        for (const i of [...pending]) {
          const r = await c.request({ op: 'tick', ref: `fu${round}-${i}`, call: `f${i}`, sec: 6 });
          if (r.op === 'ticked') pending.delete(i);
          else expect(r).toMatchObject({ op: 'error', reason: 'unavailable' });
        }
        if (pending.size > 0) await sleep(250);
      }
      expect([...pending]).toEqual([]);
      for (const i of ids.keys()) {
        expect(await c.request({ op: 'stop', ref: `fe${i}`, call: `f${i}`, sec: 8 })).toMatchObject({
          op: 'stopped',
          billedSec: 8,
          cost: 800,
          balance: 1_000_000 - 800,
        });
      }
    } finally {
      await c.close();
    }
    const audit = await runCli('audit', '--json');
    expect(JSON.parse(audit.out)).toMatchObject({ ok: true, problems: [] });
  }, 60_000);
});

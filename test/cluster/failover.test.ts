/**
 * Faults of a Redis Cluster primary under a load of starts, stops, redemptions
 * and purchases, on the 3+3 cluster of deploy/cluster/local-cluster.sh with
 * the gateway's defaults (replicated acknowledgements on): whatever was
 * acknowledged is there after the failover, every call is stopped with
 * `stopped` (never `unknown_call`), no answer is `internal`, and the audit
 * balances.
 *
 * The first fault is made deterministic: the replica is frozen while the load
 * runs, so the primary has writes its replica has not when it is killed; an
 * acknowledgement that did not wait for the replica would be a lost write.
 */
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openContext, type Context } from '../../src/app/context';
import type { GoodsProduct } from '../../src/catalog/schema';
import { createToken, putItems, putPlans, putProducts } from '../../src/catalog/store';
import { type Config } from '../../src/config/config';
import { DEMO_MEMBERS, Sandbox } from '../../src/dev/sandbox';
import { startGateway, type Gateway } from '../../src/gateway/server';
import { audit } from '../../src/ledger/audit';
import { activateId } from '../../src/ledger/ids';
import { mintIds } from '../../src/ledger/mint';
import { createLogger } from '../../src/observability/log';
import { keys } from '../../src/redis/keys';
import {
  clusterConfig,
  holdBackReplication,
  roleOf,
  startCluster,
  writable,
  type LocalCluster,
} from '../support/cluster';
import { STD_RATES, talkProduct } from '../support/harness';
import { http, jsonCall } from '../support/http';
import { sleep, until } from '../support/wait';
import { Client } from '../support/ws-client';
import { newKey } from '../sales/fixtures';

const TALK = talkProduct({ name: 'talk-f', face: 1_000_000, price: 1_000_000 });
const FOR_SALE = talkProduct({ name: 'talk-sale', face: 1000, price: 1000 });
const WALLET: GoodsProduct = {
  name: 'wallet-f',
  kind: 'goods',
  currency: 'EUR',
  face: 10_000_000,
  price: 10_000_000,
  venues: [],
  expiryDays: 0,
};
const BEER = 4_500_000;
/** How long a retried operation may take to be acknowledged once the fault is over. */
const SETTLE_MS = 30_000;

let cluster: LocalCluster;
let cfg: Config;
let ctx: Context;
let sandbox: Sandbox;
let gw: Gateway;
let sw: Client;
let switchName: string;
let switchTok: string;
let scanTok: string;
let salesTok: string;
/** Every answer the load got, by reason: none may be `internal`. */
const reasons = new Map<string, number>();

beforeAll(async () => {
  cluster = await startCluster('tessera-failover-');
  sandbox = new Sandbox();
  cfg = clusterConfig(cluster, {
    PORT: '0',
    HOST: '127.0.0.1',
    PROVIDER_URL: `http://127.0.0.1:${await sandbox.listen()}`,
    // A purchase whose gateway lost Redis midway may be taken over soon.
    PURCHASE_LEASE_MS: '500',
  });
  expect(cfg.redis.acks.replicated).toBe(true);
  ctx = await openContext(cfg, createLogger('silent'));
  await putPlans(ctx.redis, [{ name: 'std', rates: STD_RATES }]);
  await putProducts(ctx.redis, [TALK, FOR_SALE, WALLET]);
  await putItems(ctx.redis, [{ venue: 'arena', item: 'beer', price: BEER }]);
  await mintIds(ctx, FOR_SALE, 20, () => undefined);
  gw = await startGateway(cfg, createLogger('silent'));
  switchName = 'sw-f';
  switchTok = (await createToken(ctx.redis, { name: switchName, role: 'switch' })).token;
  sw = await Client.connect(gw.port, switchTok);
  scanTok = (await createToken(ctx.redis, { name: 'scn-f', role: 'scanner', venue: 'arena' })).token;
  salesTok = (await createToken(ctx.redis, { name: 'sales-f', role: 'sales' })).token;
}, 60_000);

afterAll(async () => {
  await sw?.close();
  await gw?.close();
  await ctx?.close();
  await sandbox?.close();
  await cluster?.stop();
});

async function sold(product: typeof TALK | typeof WALLET, n: number): Promise<string[]> {
  const ids: string[] = [];
  await mintIds(ctx, product, n, (id) => ids.push(id));
  for (const id of ids) expect((await activateId(ctx, id, { price: product.price })).ok).toBe(true);
  return ids;
}

/** A primary and its replica, as the cluster itself says now. */
async function pair(avoid: number[] = []): Promise<{ primary: number; replica: number }> {
  const base = Number(cluster.nodes.split(',')[0]!.split(':')[1]);
  const probe = new Redis({ port: base, lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await probe.connect();
    const lines = ((await probe.call('CLUSTER', 'NODES')) as string).trim().split('\n');
    const nodes = lines.map((l) => {
      const [id, addr, flags, master] = l.split(' ');
      return { id: id!, port: Number(/:(\d+)@/.exec(addr!)![1]), flags: flags!, master: master! };
    });
    for (const p of nodes.filter((n) => n.flags.includes('master') && !n.flags.includes('fail'))) {
      if (avoid.includes(p.port)) continue;
      const r = nodes.find((n) => n.master === p.id && !n.flags.includes('fail'));
      if (r) return { primary: p.port, replica: r.port };
    }
    throw new Error('no primary with a replica');
  } finally {
    probe.disconnect();
  }
}

/** One operation of the load: sent once under the fault, then retried until acknowledged. */
interface Op {
  what: string;
  send: () => Promise<{ reason: string; body?: Record<string, any> }>;
  acked?: Record<string, any>;
}

function note(reason: string): void {
  reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
}

/** Sends each op once (together); those answered ok are acknowledged. */
async function sendAll(ops: Op[]): Promise<void> {
  await Promise.all(
    ops.map(async (op) => {
      const r = await op.send();
      note(r.reason);
      if (r.reason === 'ok') op.acked = r.body ?? {};
      else expect(['unavailable', 'in_progress'], `${op.what}: ${r.reason}`).toContain(r.reason);
    }),
  );
}

/** Retries every op not yet acknowledged until it is (each is idempotent by its own key). */
async function settle(ops: Op[]): Promise<void> {
  const deadline = Date.now() + SETTLE_MS;
  for (;;) {
    const left = ops.filter((o) => !o.acked);
    if (left.length === 0) return;
    if (Date.now() > deadline) throw new Error(`never acknowledged: ${left.map((o) => o.what).join(', ')}`);
    await sendAll(left);
    if (ops.some((o) => !o.acked)) await sleep(200);
  }
}

let seq = 0;
const wsAnswer = (m: Record<string, any>, ok: string): { reason: string; body?: Record<string, any> } =>
  m.op === ok ? { reason: 'ok', body: m } : { reason: String(m.reason) };

const startOp = (call: string, id: string, via = (): Client => sw): Op => ({
  what: `start ${call}`,
  send: async () =>
    wsAnswer(await via().request({ op: 'start', ref: `r${seq++}`, call, id, dest: '4912345' }), 'started'),
});
/** A stop without the ID: only a call Tessera kept can answer it. */
const stopOp = (call: string, sec: number, via = (): Client => sw): Op => ({
  what: `stop ${call}`,
  send: async () => wsAnswer(await via().request({ op: 'stop', ref: `r${seq++}`, call, sec }), 'stopped'),
});
const redeemOp = (scan: string, id: string, via = (): Gateway => gw): Op => ({
  what: `redeem ${scan}`,
  send: async () => {
    const r = await jsonCall(via(), 'POST', '/v1/redeem', { token: scanTok, body: { scan, id, item: 'beer' } });
    return r.status === 200 ? { reason: 'ok', body: r.json } : { reason: String(r.json?.error?.reason) };
  },
});
const purchaseOp = (key: string): Op => ({
  what: `purchase ${key}`,
  send: async () => {
    const alice = DEMO_MEMBERS[0]!;
    const r = await http(gw, 'POST', '/v1/purchases', {
      token: salesTok,
      idem: key,
      body: { product: FOR_SALE.name, pin: '4711', payment: { card: alice.card, cardPin: alice.pin } },
    });
    return r.status === 200 ? { reason: 'ok', body: r.json } : { reason: String(r.json?.error?.reason) };
  },
});

/**
 * Calls `a` are started before the fault; under it half of them are stopped,
 * calls `b` started, every wallet redeemed once and a few IDs bought; then
 * every call still going is stopped. All of it must be there afterwards.
 */
async function underFault(tag: string, fault: (load: () => Promise<void>) => Promise<void>): Promise<void> {
  reasons.clear();
  const [talk, wallets] = [await sold(TALK, 36), await sold(WALLET, 18)];
  const a = talk.slice(0, 18).map((id, i) => ({ call: `${tag}a${i}`, id }));
  const b = talk.slice(18).map((id, i) => ({ call: `${tag}b${i}`, id }));
  await settle(a.map((c) => startOp(c.call, c.id)));

  const stopsUnder = a.slice(0, 9).map((c) => stopOp(c.call, 5));
  const starts = b.map((c) => startOp(c.call, c.id));
  const redeems = wallets.map((id, i) => redeemOp(`${tag}-scan-${i}`, id));
  const purchases = [0, 1, 2].map(() => purchaseOp(newKey(tag)));
  const load = [...stopsUnder, ...starts, ...redeems, ...purchases];
  await fault(() => sendAll(load));
  await settle(load);

  // Every call acknowledged `started` is there to stop, without its ID.
  const stopsAfter = [...a.slice(9), ...b].map((c) => stopOp(c.call, 7));
  await settle(stopsAfter);
  for (const op of [...stopsUnder, ...stopsAfter]) expect(op.acked, op.what).toMatchObject({ op: 'stopped' });
  for (const c of [...a, ...b]) {
    const { bucket } = ctx.ids.hash(c.id);
    const session = keys.call(bucket, `${switchName}:${c.call}`);
    expect(await ctx.redis.hget(session, 'st'), c.call).toBe('closed');
  }
  for (const [i, id] of wallets.entries()) {
    expect(redeems[i]!.acked).toMatchObject({ valueLeft: WALLET.face - BEER });
    const { hash, bucket } = ctx.ids.hash(id);
    expect(Number(await ctx.redis.hget(keys.id(bucket, hash), 'bal')), `wallet ${i}`).toBe(WALLET.face - BEER);
  }
  for (const p of purchases) {
    const { hash, bucket } = ctx.ids.hash(String(p.acked!.id));
    expect(await ctx.redis.hget(keys.id(bucket, hash), 'st'), p.what).toBe('sold');
  }
  const report = await audit(ctx);
  expect(report.problems).toEqual([]);
  expect(reasons.get('internal')).toBeUndefined();
  expect(reasons.get('unknown_call')).toBeUndefined();
}

describe('a primary fails under load, with replicated acknowledgements', () => {
  it('killed with SIGKILL while its replica lags: every acknowledged start, stop, redemption and purchase is there after the failover', async () => {
    const { primary, replica } = await pair();
    await underFault('k', async (load) => {
      // The replica falls behind, within the lag the primary tolerates: what the
      // primary takes now queues behind a large write it has not passed on yet.
      process.kill(cluster.pidOf(replica), 'SIGSTOP');
      try {
        await holdBackReplication(primary);
        await load();
      } finally {
        process.kill(cluster.pidOf(primary), 'SIGKILL');
        process.kill(cluster.pidOf(replica), 'SIGCONT');
      }
      // The replica is promoted; the old primary comes back as its replica and writes resume.
      await until(async () => (await roleOf(replica)).master, 20_000, 100, 'replica promoted');
      await cluster.restart(primary);
      await writable(replica);
    });
  }, 60_000);

  it('frozen with SIGSTOP until its replica took over: every acknowledged operation is there after it wakes', async () => {
    const { primary, replica } = await pair();
    await underFault('f', async (load) => {
      process.kill(cluster.pidOf(primary), 'SIGSTOP');
      try {
        await Promise.all([load(), until(async () => (await roleOf(replica)).master, 20_000, 100, 'replica promoted')]);
      } finally {
        process.kill(cluster.pidOf(primary), 'SIGCONT');
      }
      // It wakes as a primary that lost its slots, and rejoins as the new primary's replica.
      await writable(replica);
    });
  }, 60_000);
});

/** The IDs whose keys are in a slot `port` serves (the others answer MOVED there). */
async function servedBy(port: number, ids: string[]): Promise<string[]> {
  const probe = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await probe.connect();
    const served: string[] = [];
    for (const id of ids) {
      const { hash, bucket } = ctx.ids.hash(id);
      const here = await probe.exists(keys.id(bucket, hash)).then(
        () => true,
        () => false,
      );
      if (here) served.push(id);
    }
    return served;
  } finally {
    probe.disconnect();
  }
}

/**
 * At least `n` IDs of `product` sold whose buckets `port` serves. Sold 24 at a time until there are:
 * a primary may serve few of the buckets (a third of them at most, fewer after failovers), and a
 * fixed batch then held fewer than `n` of them now and then.
 */
async function soldOn(port: number, product: typeof TALK | typeof WALLET, n: number): Promise<string[]> {
  const served: string[] = [];
  for (let round = 0; served.length < n; round++) {
    if (round === 20) throw new Error(`no ${n} of ${product.name} IDs on the primary at ${port}`);
    served.push(...(await servedBy(port, await sold(product, 24))));
  }
  return served;
}

async function setMaxLag(port: number, sec: number): Promise<void> {
  const probe = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await probe.connect();
    await probe.config('SET', 'min-replicas-max-lag', String(sec));
  } finally {
    probe.disconnect();
  }
}

/**
 * A retry that a script answers from its first try's write (a duplicate) must
 * wait for a replica to have that write, though this gateway did not make it.
 * WAIT counts only the writes of its own connection on Redis 7.2 and later
 * (and Valkey); 7.0 counts everything before the connection's last command,
 * so there this holds even without the fence the gateway writes first.
 */
describe("a retry answered from the first try's write, made by another gateway", () => {
  it('answers a duplicate start, stop or redemption only once a replica has the first write', async () => {
    const { primary, replica } = await pair();
    const talk = await soldOn(primary, TALK, 2);
    const wallets = await soldOn(primary, WALLET, 1);
    const other = await startGateway(cfg, createLogger('silent'));
    const sw2 = await Client.connect(other.port, switchTok);
    try {
      await settle([startOp('dup-stopped', talk[1]!)]);
      const firsts = [
        startOp('dup-started', talk[0]!, () => sw2),
        stopOp('dup-stopped', 5, () => sw2),
        redeemOp('dup-scan', wallets[0]!, () => other),
      ];
      const retries = [startOp('dup-started', talk[0]!), stopOp('dup-stopped', 5), redeemOp('dup-scan', wallets[0]!)];
      // The replica stops taking the primary's writes; the primary keeps taking them meanwhile.
      await setMaxLag(primary, 60);
      process.kill(cluster.pidOf(replica), 'SIGSTOP');
      try {
        // The first tries are written on the primary, and their WAITs time out on the other gateway.
        const first = [];
        for (const op of firsts) first.push(`${op.what}: ${(await op.send()).reason}`);
        expect(first).toEqual(firsts.map((op) => `${op.what}: unavailable`));
        // Their retries find them written, as duplicates: no replica has them, so no acknowledgement.
        const retried = [];
        for (const op of retries) retried.push(`${op.what}: ${(await op.send()).reason}`);
        expect(retried).toEqual(retries.map((op) => `${op.what}: unavailable`));
      } finally {
        process.kill(cluster.pidOf(replica), 'SIGCONT');
        await setMaxLag(primary, 2);
      }
      // Once the replica has caught up, the retries answer what the first tries did.
      await settle(retries);
      expect(retries[0]!.acked).toMatchObject({ op: 'started' });
      expect(retries[1]!.acked).toMatchObject({ op: 'stopped', billedSec: 5 });
      expect(retries[2]!.acked).toMatchObject({ valueLeft: WALLET.face - BEER });
      await settle([stopOp('dup-started', 3)]);
      expect((await audit(ctx)).problems).toEqual([]);
    } finally {
      await sw2.close();
      await other.close();
    }
  }, 60_000);
});

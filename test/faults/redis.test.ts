/**
 * Redis faults, with the persistence production uses (AOF, appendfsync
 * everysec): Redis frozen for 5 s (the gateway answers `unavailable` within
 * REDIS_TIMEOUT_MS, never hangs, and carries on by itself, billing the call by
 * the seconds the switch reports), and Redis killed with SIGKILL and started
 * again on its data (everything acknowledged more than the fsync second before
 * the kill is there). That last test's audit covers every ID of the file, so it
 * checks the faults before it too.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openContext, type Context } from '../../src/app/context';
import { putPlans, putProducts } from '../../src/catalog/store';
import { loadConfig, type Config } from '../../src/config/config';
import { startGateway, type Gateway } from '../../src/gateway/server';
import { createLogger } from '../../src/observability/log';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../src/redis/embedded';
import { Sandbox } from '../../src/dev/sandbox';
import { activateId } from '../../src/ledger/ids';
import { mintIds } from '../../src/ledger/mint';
import { generateId } from '../../src/ids/idnum';
import { createToken } from '../../src/catalog/store';
import { runCliIn } from '../support/cli';
import { STD_RATES, talkProduct, TEST_SECRET } from '../support/harness';
import { sleep, until } from '../support/wait';
import { Client, Scanner } from '../support/ws-client';

const TALK = talkProduct({ name: 'talk-f', face: 10_000_000, price: 10_000_000, thresholds: [] });
const DEST = '4912345'; // 100 micro-units a second
const TIMEOUT_MS = 400;
let dir: string;
let redis: EmbeddedRedis;
let sandbox: Sandbox;
let cfg: Config;
let ctx: Context;
let gw: Gateway;
let sw: Client;
let n = 0;
/** What the gateway logged (info and up), parsed. */
const gwLog: { msg: string; redis?: string }[] = [];

async function startRedis(port?: number): Promise<EmbeddedRedis> {
  return startEmbeddedRedis({ dir: join(dir, 'redis'), persist: true, port });
}

/** The redis-server process itself (the embedded one runs under a small sh watchdog). */
async function redisPid(): Promise<number> {
  const r = new Redis(redis.url);
  try {
    return Number(/process_id:(\d+)/.exec(await r.info('server'))![1]);
  } finally {
    r.disconnect();
  }
}

async function sold(count: number): Promise<string[]> {
  const ids: string[] = [];
  await mintIds(ctx, TALK, count, (id) => ids.push(id));
  for (const id of ids) expect((await activateId(ctx, id, { price: TALK.price })).ok).toBe(true);
  return ids;
}

async function audit(): Promise<{ code: number; report: { ok: boolean; problems: unknown[]; sold: number } }> {
  const r = await runCliIn({ redis, cfg, dir }, 'audit', '--json');
  return { code: r.code, report: JSON.parse(r.out) };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-faults-'));
  redis = await startRedis();
  sandbox = new Sandbox();
  const sandboxPort = await sandbox.listen();
  cfg = loadConfig({
    REDIS_URL: redis.url,
    TESSERA_SECRET: TEST_SECRET,
    DATA_DIR: dir,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    PROVIDER_URL: `http://127.0.0.1:${sandboxPort}`,
    REDIS_TIMEOUT_MS: String(TIMEOUT_MS),
  });
  ctx = await openContext(cfg, createLogger('silent'), redis.url);
  await putPlans(ctx.redis, [{ name: 'std', rates: STD_RATES }]);
  await putProducts(ctx.redis, [TALK]);
  gw = await startGateway(
    cfg,
    pino({ level: 'info' }, { write: (line: string) => gwLog.push(JSON.parse(line)) }),
    redis.url,
  );
  sw = await Client.connect(gw.port, (await createToken(ctx.redis, { name: 'sw-f', role: 'switch' })).token);
}, 30_000);

afterAll(async () => {
  await sw?.close();
  await gw?.close();
  await ctx?.close();
  await sandbox?.close();
  await redis?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('Redis frozen for 5 s', () => {
  it('ticks and starts are answered unavailable within the timeout, nothing hangs, and the call bills on afterwards', async () => {
    const [id, late] = await sold(2);
    const call = `frz-${++n}`;
    expect(await sw.request({ op: 'start', ref: 's', call, id, dest: DEST })).toMatchObject({ op: 'started' });
    expect(await sw.request({ op: 'tick', ref: 't1', call, sec: 1 })).toMatchObject({
      op: 'ticked',
      balance: 10_000_000 - 100,
    });

    const pid = await redisPid();
    process.kill(pid, 'SIGSTOP');
    const frozenAt = Date.now();
    try {
      const answers: { ms: number; m: Record<string, unknown> }[] = [];
      // The switch keeps ticking once a second, and another call tries to start.
      for (let sec = 2; sec <= 5; sec++) {
        const t0 = Date.now();
        const ticks = sw.request({ op: 'tick', ref: `t${sec}`, call, sec }, 5000);
        const start = sw.request(
          { op: 'start', ref: `s${sec}`, call: `frz-late-${n}-${sec}`, id: late!, dest: DEST },
          5000,
        );
        for (const m of await Promise.all([ticks, start])) answers.push({ ms: Date.now() - t0, m });
        await sleep(Math.max(0, frozenAt + (sec - 1) * 1000 - Date.now()));
      }
      for (const a of answers) {
        expect(a.m).toMatchObject({ op: 'error', reason: 'unavailable' });
        // REDIS_TIMEOUT_MS and a margin for the event loop: quickly, never a hang.
        expect(a.ms).toBeLessThan(TIMEOUT_MS + 1000);
      }
      expect(Date.now() - frozenAt).toBeGreaterThanOrEqual(4000);
    } finally {
      process.kill(pid, 'SIGCONT');
    }

    // Back by itself: the next tick bills every second since the last one that was billed.
    let next: Record<string, unknown> = {};
    for (let i = 0; i < 50; i++) {
      next = await sw.request({ op: 'tick', ref: `t6-${i}`, call, sec: 6 });
      if (next.op === 'ticked') break;
      await sleep(100);
    }
    expect(next).toMatchObject({ op: 'ticked', balance: 10_000_000 - 600 });
    expect(await sw.request({ op: 'stop', ref: 'e', call, sec: 7 })).toMatchObject({
      op: 'stopped',
      billedSec: 7,
      cost: 700,
    });
  }, 30_000);
});

describe('Redis frozen while a scanner bursts', () => {
  it('lookups waiting their turn behind the token name’s bound are answered unavailable within the timeout too', async () => {
    const tok = (await createToken(ctx.redis, { name: 'scan-f', role: 'scanner', venue: 'arena' })).token;
    const s = await Scanner.connect(gw.port, tok);
    const pid = await redisPid();
    process.kill(pid, 'SIGSTOP');
    try {
      // Twenty times the lookups a token name may have waiting on Redis (GUESS_LIMIT + 1 = 21).
      const answers = Promise.all(
        Array.from({ length: 420 }, (_, i) => s.request({ op: 'validate', ref: `v${i}`, id: generateId(16) })),
      );
      // Frozen for less than the queue would take were it served a slot's worth per timeout (20 × 400 ms).
      await Promise.race([answers, sleep(5000)]);
      process.kill(pid, 'SIGCONT');
      const reasons = new Set((await answers).map((m) => `${String(m.op)} ${String(m.reason)}`));
      expect([...reasons]).toEqual(['error unavailable']);
    } finally {
      process.kill(pid, 'SIGCONT');
      await s.close();
    }
  }, 30_000);
});

describe('Redis slow to answer', () => {
  it('requests past the in-flight bound are refused overloaded at once instead of queueing; the rest finish when Redis is back', async () => {
    const small = await startGateway(
      { ...cfg, maxInflightTotal: 100, redis: { ...cfg.redis, timeoutMs: 3000 } },
      createLogger('silent'),
      redis.url,
    );
    const c = await Client.connect(
      small.port,
      (await createToken(ctx.redis, { name: 'sw-slow', role: 'switch' })).token,
    );
    try {
      const [id] = await sold(1);
      expect(await c.request({ op: 'start', ref: 'slow-s', call: 'slow', id, dest: DEST })).toMatchObject({
        op: 'started',
      });
      const pid = await redisPid();
      process.kill(pid, 'SIGSTOP');
      const t0 = Date.now();
      try {
        c.send(Array.from({ length: 1000 }, (_, i) => ({ op: 'tick', ref: `tk-${i}`, call: 'slow', sec: 1 + i })));
        // 900 refused at once, while Redis still sleeps.
        const refused = () =>
          c.received.filter((m) => String(m.ref).startsWith('tk-') && m.reason === 'overloaded').length;
        for (let i = 0; i < 100 && refused() < 900; i++) await sleep(10);
        expect(refused()).toBe(900);
        expect(Date.now() - t0).toBeLessThan(1000);
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      // The 100 admitted are answered once Redis is back, and the call is billed to the highest second admitted.
      const answered = () => c.received.filter((m) => String(m.ref).startsWith('tk-')).length;
      for (let i = 0; i < 300 && answered() < 1000; i++) await sleep(10);
      expect(answered()).toBe(1000);
      const ticked = c.received.filter((m) => String(m.ref).startsWith('tk-') && m.op === 'ticked');
      expect(ticked).toHaveLength(100);
      expect(await c.request({ op: 'stop', ref: 'slow-e', call: 'slow', sec: 100 })).toMatchObject({
        op: 'stopped',
        billedSec: 100,
        cost: 10_000,
      });
    } finally {
      await c.close();
      await small.close();
    }
  }, 30_000);
});

describe('Redis slow to answer readiness probes', () => {
  it('probes past the in-flight bound are refused overloaded at once, and those admitted share one PING a connection', async () => {
    const small = await startGateway(
      { ...cfg, maxInflightTotal: 5, redis: { ...cfg.redis, timeoutMs: 3000 } },
      createLogger('silent'),
      redis.url,
    );
    const probe = new Redis(redis.url);
    const pings = async (): Promise<number> =>
      Number(/cmdstat_ping:calls=(\d+)/.exec(await probe.info('commandstats'))?.[1] ?? 0);
    try {
      const pingsBefore = await pings();
      const pid = await redisPid();
      const answered: { status: number; reason: unknown }[] = [];
      process.kill(pid, 'SIGSTOP');
      let all: Promise<unknown>;
      try {
        // Anyone may send these: 50 at once, ten times the bound.
        all = Promise.all(
          Array.from({ length: 50 }, async () => {
            const r = await fetch(`http://127.0.0.1:${small.port}/readyz`);
            const body = (await r.json()) as { reason?: unknown };
            answered.push({ status: r.status, reason: body.reason });
          }),
        );
        // The 45 past the bound are answered while Redis still sleeps, not queued until its timeout.
        await until(() => answered.length >= 45, 2500, 20, '45 probes answered while Redis sleeps');
        expect(answered).toHaveLength(45);
        expect(new Set(answered.map((a) => `${a.status} ${String(a.reason)}`))).toEqual(new Set(['503 overloaded']));
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      await all;
      expect(answered.slice(45).map((a) => a.status)).toEqual([200, 200, 200, 200, 200]);
      // The five admitted shared one PING on each of the two command connections.
      expect((await pings()) - pingsBefore).toBe(2);
    } finally {
      probe.disconnect();
      await small.close();
    }
  }, 30_000);
});

describe('Redis killed with SIGKILL and started again on its AOF', () => {
  it('everything acknowledged more than a second before the kill is back, the gateway reconnects, the audit balances', async () => {
    const ids = await sold(50);
    for (const [i, id] of ids.entries()) {
      const call = `k-${i}`;
      expect(await sw.request({ op: 'start', ref: `ks${i}`, call, id, dest: DEST })).toMatchObject({ op: 'started' });
      expect(await sw.request({ op: 'stop', ref: `ke${i}`, call, sec: 10 + i })).toMatchObject({
        op: 'stopped',
        cost: (10 + i) * 100,
      });
    }
    // The loss window of appendfsync everysec: about a second. Wait it out, then kill.
    await sleep(1500);
    const port = redis.port;
    const unhandled = vi.spyOn(console, 'error');
    const logged = gwLog.length;
    process.kill(await redisPid(), 'SIGKILL');
    await new Promise<void>((r) => (redis.process.exitCode !== null ? r() : redis.process.once('exit', () => r())));
    redis = await startRedis(port);

    // The gateway reconnects by itself and finds every call closed, billed as acknowledged.
    let again: Record<string, unknown> = {};
    for (let i = 0; i < 100; i++) {
      again = await sw.request({ op: 'stop', ref: `again-${i}`, call: 'k-0', sec: 10 });
      if (again.op === 'stopped') break;
      await sleep(100);
    }
    expect(again).toMatchObject({ op: 'stopped', billedSec: 10, cost: 1000, balance: 10_000_000 - 1000 });
    // Each of the gateway's connections said once that it was lost and once that it was back, in
    // its log; not a line per retry, and nothing on stderr behind the log's back.
    const since = (msg: string): string[] =>
      gwLog
        .slice(logged)
        .filter((l) => l.msg === msg)
        .map((l) => l.redis!)
        .sort();
    await until(() => since('redis: connected again').length >= 3, 10_000, 50, 'every connection back');
    expect(since('redis: connection lost; reconnecting')).toEqual(['claims', 'main', 'subscriber']);
    expect(since('redis: connected again')).toEqual(['claims', 'main', 'subscriber']);
    expect(unhandled.mock.calls.filter((c) => String(c[0]).includes('Unhandled error event'))).toEqual([]);
    unhandled.mockRestore();
    const r = new Redis(redis.url);
    try {
      for (const [i, id] of ids.entries()) {
        const { hash, bucket } = ctx.ids.hash(id);
        expect(await r.hget(`ts:{b${bucket}}:id:${hash}`, 'bal')).toBe(String(10_000_000 - (10 + i) * 100));
      }
    } finally {
      r.disconnect();
    }
    const { code, report } = await audit();
    expect(report.problems).toEqual([]);
    expect(code).toBe(0);
    expect(report.sold).toBeGreaterThanOrEqual(52);
  }, 60_000);
});

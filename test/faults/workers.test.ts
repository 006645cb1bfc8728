/**
 * `npm start -- --workers 2`: two gateway processes on one port. A worker
 * killed with SIGKILL in the middle of 1,000 live calls: the switch connections
 * it held drop, reconnect (to whichever worker the kernel picks), and every
 * call goes on and is billed exactly what the switch measured; the dead worker
 * is replaced; the audit balances; SIGTERM stops them all. The port is theirs
 * alone: a gateway or another set of workers started on it is refused.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/redis/embedded';
import { runCliIn } from '../support/cli';
import {
  gateway,
  seedCatalog,
  soldIds,
  startHarness,
  talkProduct,
  TEST_SECRET,
  token,
  type Harness,
} from '../support/harness';
import { until } from '../support/wait';
import { Client } from '../support/ws-client';

const ROOT = resolve(__dirname, '../..');
const TALK = talkProduct({ name: 'talk-w', face: 10_000_000, price: 10_000_000, thresholds: [] });
const DEST = '4912345'; // 100 micro-units a second
const CALLS = 1000;
const CONNS = 20;
let h: Harness;
let dir: string;
let port: number;
let primary: ChildProcess;
let log = '';

/** The gateway processes the primary runs (not, say, the esbuild service tsx starts on a cold cache). */
function workerPids(): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(primary.pid)], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes('src/main.ts'))
      .map((l) => Number(l.trim().split(/\s+/)[0]))
      .filter((n) => n > 0);
  } catch {
    return []; // ps exits 1 when there is none
  }
}

/**
 * The worker holding the switch's connections to `port` (one of them), from
 * /proc: a worker that was not yet listening when they connected holds none,
 * and killing it would drop nothing.
 */
function workerWithConnections(pids: number[]): number | undefined {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // local address, state 01 (established), inode
      if (f[1]?.endsWith(`:${hexPort}`) && f[3] === '01') inodes.add(f[9]!);
    }
  }
  return pids.find((pid) =>
    readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return inodes.has(/^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1] ?? '');
      } catch {
        return false; // closed meanwhile
      }
    }),
  );
}

/** Polls until fn holds (up to ms), with the gateway's log in the error when it does not. */
async function waitUntil(what: string, fn: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  try {
    await until(fn, ms, 50, what);
  } catch (e) {
    throw new Error(`${(e as Error).message}; gateway log: ${log.slice(-2000)}`, { cause: e });
  }
}

/** `tessera --workers 2` on `port`, on the harness' Redis. */
function startWorkers(): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), '--workers', '2'], {
    cwd: ROOT,
    env: {
      ...process.env,
      REDIS_URL: h.redis.url,
      PROVIDER_URL: h.cfg.provider.url,
      TESSERA_SECRET: TEST_SECRET,
      BUCKETS: String(h.cfg.buckets),
      DATA_DIR: dir,
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

const healthy = (): Promise<boolean> =>
  fetch(`http://127.0.0.1:${port}/readyz`)
    .then((r) => r.status === 200)
    .catch(() => false);

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK]);
  dir = mkdtempSync(join(tmpdir(), 'tessera-workers-'));
  port = await freePort();
  primary = startWorkers();
  primary.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  primary.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  // Generous: on a clean clone tsx compiles the sources for three processes first.
  await waitUntil('two workers', async () => workerPids().length === 2 && (await healthy()), 80_000);
}, 90_000);

afterAll(async () => {
  if (primary && primary.exitCode === null) primary.kill('SIGKILL');
  await h?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('--workers 2, one of them killed with SIGKILL mid-traffic', () => {
  it('every call continues through another worker and is billed exactly; the worker is replaced; the audit balances', async () => {
    const swTok = await token(h, 'switch', 'sw-workers');
    const ids = await soldIds(h, TALK, CALLS);
    const conns: Client[] = [];
    for (let i = 0; i < CONNS; i++) conns.push(await Client.connect(port, swTok));
    const connOf = (i: number): number => i % CONNS;

    // 1,000 calls, answered and ticked to second 3.
    await Promise.all(
      ids.map((id, i) => conns[connOf(i)]!.request({ op: 'start', ref: `s${i}`, call: `c${i}`, id, dest: DEST })),
    );
    for (const sec of [1, 2, 3]) {
      await Promise.all(
        ids.map((_, i) => conns[connOf(i)]!.request({ op: 'tick', ref: `t${sec}-${i}`, call: `c${i}`, sec })),
      );
    }

    // One worker dies. Its connections drop; the switch reconnects them.
    const pids = workerPids();
    const victim = workerWithConnections(pids);
    expect(victim).toBeDefined();
    const survivor = pids.find((p) => p !== victim);
    process.kill(victim!, 'SIGKILL');
    await waitUntil('the dropped connections', () => conns.some((c) => c.ws.readyState === c.ws.CLOSED));
    // Once the victim is gone, a connection that answers a ping is on the survivor; any other one
    // (closed, or not yet seen to close) is reconnected. Checking readyState alone raced the close events.
    await waitUntil('the killed worker to be gone', () => !workerPids().includes(victim!));
    for (let i = 0; i < CONNS; i++) {
      const alive =
        conns[i]!.ws.readyState === conns[i]!.ws.OPEN &&
        (await conns[i]!.request({ op: 'ping', ref: `p${i}` }, 2000).then(
          () => true,
          () => false,
        ));
      if (!alive) {
        await waitUntil('a worker taking connections', async () => await healthy());
        conns[i] = await Client.connect(port, swTok);
      }
    }
    expect(conns.every((c) => c.ws.readyState === c.ws.OPEN)).toBe(true);

    // The switch goes on: ticks 4 and 5, then the stop at 5 s. Ticks sent while the worker
    // died were never answered; the next tick carries the elapsed seconds, so nothing is lost.
    for (const sec of [4, 5]) {
      const r = await Promise.all(
        ids.map((_, i) => conns[connOf(i)]!.request({ op: 'tick', ref: `u${sec}-${i}`, call: `c${i}`, sec })),
      );
      expect(r.every((m) => m.op === 'ticked')).toBe(true);
    }
    const stops = await Promise.all(
      ids.map((_, i) => conns[connOf(i)]!.request({ op: 'stop', ref: `e${i}`, call: `c${i}`, sec: 5 })),
    );
    for (const s of stops)
      expect(s).toMatchObject({ op: 'stopped', billedSec: 5, cost: 500, balance: 10_000_000 - 500 });
    for (const c of conns) await c.close();

    // The primary replaced the dead worker.
    await waitUntil('a new worker', () => workerPids().length === 2 && !workerPids().includes(victim!));
    expect(workerPids()).toContain(survivor);
    // The line names the worker that died, in a field of its own: the line's `pid` is the
    // primary's (pino's base), and a second `pid` would make it JSON with a key twice.
    const exitLine = log.split('\n').find((l) => l.includes('gateway worker exited; starting another'));
    expect(exitLine?.match(/"pid":/g)).toHaveLength(1);
    expect(JSON.parse(exitLine!)).toMatchObject({ pid: primary.pid, workerPid: victim, signal: 'SIGKILL' });

    const audit = await runCliIn(h, 'audit', '--json');
    expect(JSON.parse(audit.out)).toMatchObject({ ok: true, problems: [] });
    expect(audit.code).toBe(0);
  }, 120_000);

  it('keeps its port: a gateway, or another --workers, started on it is refused, not let in beside them', async () => {
    await expect(gateway(h, { host: '127.0.0.1', port })).rejects.toThrow(`cannot listen on 127.0.0.1:${port}`);
    const second = startWorkers();
    let err = '';
    second.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => second.once('exit', r));
    expect({ code, err }).toMatchObject({
      code: 2,
      err: expect.stringContaining(`cannot listen on 127.0.0.1:${port}`),
    });
    expect(await healthy()).toBe(true);
  }, 60_000);

  it('/metrics, whichever worker the kernel gives the scrape, counts what every worker did', async () => {
    // Both workers listening (the one the first test started too), so that the requests below
    // are spread over the two of them.
    await waitUntil('both workers listening', () => {
      const pids = workerPids();
      return (
        pids.length === 2 &&
        pids.every(
          (pid) => log.includes(`"pid":${pid},`) && new RegExp(`"pid":${pid},.*"msg":"gateway listening"`).test(log),
        )
      );
    });
    const onNewConnection = (method: string, path: string): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        // agent: false: a connection of its own each, for the kernel to hand to either worker.
        const req = request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end();
      });
    const REFUSALS = 40;
    for (let i = 0; i < REFUSALS; i++)
      expect((await onNewConnection('POST', '/v1/admin/ids/1/block')).status).toBe(401);
    const counted = /^tessera_admin_refusals_total\{route="ids\/block",reason="unauthorized"\} (\d+)$/m;
    for (let i = 0; i < 10; i++) {
      const scrape = await onNewConnection('GET', '/metrics');
      expect(scrape.status).toBe(200);
      expect(Number(counted.exec(scrape.body)?.[1])).toBe(REFUSALS);
      // A count of what Redis holds is each worker's alike: taken once, not once per worker.
      expect(scrape.body).toMatch(/^tessera_active_calls 0$/m);
    }
  }, 60_000);

  it('SIGTERM stops the primary and every worker', async () => {
    const pids = workerPids();
    const exited = new Promise<number | null>((r) => primary.once('exit', (code) => r(code)));
    primary.kill('SIGTERM');
    expect(await exited).toBe(0);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  }, 30_000);
});

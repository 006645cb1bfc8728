/**
 * bench/redeem.ts: redemption benchmark, `npm run bench:redeem [-- flags]`.
 *
 * Sets everything up from nothing: its own redis-server (AOF, appendfsync
 * everysec, as in production), a goods product with a venue item, scanner
 * tokens, N sold IDs; runs the gateway as a separate child process; then
 *   1. WebSocket: M scanner connections, each keeping W frames of F redeem
 *      messages in flight (MessagePack), every scan a new scan id, so every
 *      message is a real debit;
 *   2. HTTP: autocannon against POST /v1/redeem, every request a new scan id;
 *   3. ticks: a short bench:switch max-mode phase on the same Redis and
 *      gateway (bench/lib/tick-cost.ts), for the CPU a tick costs; a
 *      redemption's cost is stated as a ratio of it (Redis ≤ 1.5×, gateway
 *      ≤ 2× over WebSocket, HTTP ≤ 2× the WebSocket cost in the gateway);
 *   4. the ceilings: autocannon alone against a no-op endpoint (what the load
 *      generator leaves room for on this machine), and redis-benchmark FCALL
 *      of lua/redeem.lua (debit path) on the same Redis with the gateway idle,
 *      one scan per call and eight.
 * Prints redemptions/s and p50/p99 for each, the ceiling and the ratios, the
 * rate at which the measured CPU per redemption would fill both cores, then
 * one JSON line.
 *
 * Each WebSocket connection and each autocannon connection has a scanner
 * token of its own, as each device has in a deployment: a token name's
 * lookups are bounded in flight (the guess throttle, docs/scanners.md), so
 * one token for the whole load would measure that bound, not the gateway.
 *
 * --cluster: a local 3+3 Redis Cluster instead (bench/lib/cluster.ts), one
 * gateway per --acks mode (REDIS_REPLICATED_ACKS on, off), the WebSocket load
 * run in turns off, on, off, on; prints redemptions/s of each mode and on/off
 * (no HTTP load, no ceilings: those are one node's).
 *
 * Flags: see USAGE below, or `npm run bench:redeem -- --help`.
 */
import { spawnSync } from 'node:child_process';
import autocannon from 'autocannon';
import { Packr } from 'msgpackr';
import uWS from 'uWebSockets.js';
import WebSocket from 'ws';
import type { Context } from '../src/app/context';
import type { GoodsProduct } from '../src/catalog/schema';
import { createToken, putItems, putProducts } from '../src/catalog/store';
import { keys } from '../src/redis/keys';
import { ScanWindows } from '../src/redemption/scan-windows';
import { openContext } from '../src/app/context';
import { loadConfig } from '../src/config/config';
import { createLogger } from '../src/observability/log';
import {
  acksUsage,
  ackRates,
  acksFlag,
  ackTurns,
  clusterPids,
  printAckRates,
  startAckGateways,
  startLocalCluster,
  type AckMode,
  type AckTurn,
  type LocalCluster,
} from './lib/cluster';
import {
  cpuPct,
  cpuSec,
  cpuSecTree,
  cpuUsed,
  fmtRedisCpu,
  ownCpuSec,
  perPrimary,
  readCpu,
  redisCpuSources,
  type CpuReading,
} from './lib/cpu';
import { intFlag, parseFlags } from './lib/flags';
import { connLimits, startGatewayChild, type GatewayChild } from './lib/gateway';
import { fmtLatency, newHist, recordMs, summarize, type Hist, type LatencySummary } from './lib/hist';
import { cleanUpOnExit, makeTmp, removeTmp, runMain, stopChild } from './lib/process';
import { mintSold, startBenchRedis, usedMemory, type BenchRedis } from './lib/redis';
import { printJsonLine } from './lib/report';
import { TARGETS } from './lib/targets';
import { measureTickCost, prepareTicks, type TickCost, type TickPhase } from './lib/tick-cost';

const SECRET = 'cd'.repeat(32);
const VENUE = 'bench-venue';
const PRICE = 1000;
/** Scans per script call for the batched ceiling. */
const BATCH = 8;
/** Open loop: scans one connection may have in flight before the pacer sheds (counts) the next frames. */
const MAX_BACKLOG = 5_000;

const USAGE = `npm run bench:redeem -- [flags]

  --ids N            sold IDs the scans pick from at random [2000]
  --duration S       seconds of WebSocket load [10]
  --conns M          scanner connections [20]
  --frame F          redeem messages per frame [10]
  --window W         closed loop: frames in flight per connection [1]
                     (200 scans in flight; thousands only add queueing and GC)
  --rate R           open loop: R scans/s over all connections on a schedule,
                     latency from the scheduled send time; 0 is closed loop [0]
  --http-conns C     autocannon connections [64]
  --http-duration S  seconds of HTTP load; 0 skips it [as --duration]
  --workers N        gateway processes on one port, as npm start -- --workers N [1]
  --tick-calls N     calls of the tick phase, which prices a tick [2000]
  --tick-duration S  seconds of ticking; 0 skips the phase and the cost ratios [5]
  --rb-requests N    redis-benchmark -n for the ceilings [200000]
  --keep             keep the temp dir (Redis or cluster data, gateway logs)
${acksUsage(21)}  --help

Prints redemptions/s and latency for each load, the CPU of every process per
redemption, the 2-core bound, the ceilings and the ratios, and the CPU of a
redemption over a tick's measured in the same run; last line: JSON.
With --cluster: redemptions/s of each turn, then with replicated
acknowledgements on and off and on/off; last line: JSON.
`;

interface Options {
  ids: number;
  duration: number;
  conns: number;
  frame: number;
  window: number;
  /** Scans per second over all scanner connections (open loop); 0: closed loop, `window` frames in flight per connection. */
  rate: number;
  httpConns: number;
  httpDuration: number;
  workers: number;
  tickCalls: number;
  tickDuration: number;
  rbRequests: number;
  keep: boolean;
  /** Against a local 3+3 cluster, one gateway per ack mode, measured in turns. */
  cluster: boolean;
  acks: AckMode[];
  rounds: number;
}

function options(argv: string[]): Options {
  const flags = parseFlags(
    argv,
    {
      ids: { type: 'string', default: '2000' },
      duration: { type: 'string', default: '10' },
      conns: { type: 'string', default: '20' },
      frame: { type: 'string', default: '10' },
      window: { type: 'string', default: '1' },
      rate: { type: 'string', default: '0' },
      'http-conns': { type: 'string', default: '64' },
      workers: { type: 'string', default: '1' },
      'http-duration': { type: 'string' },
      'tick-calls': { type: 'string', default: '2000' },
      'tick-duration': { type: 'string', default: '5' },
      'rb-requests': { type: 'string', default: '200000' },
      keep: { type: 'boolean', default: false },
      cluster: { type: 'boolean', default: false },
      acks: { type: 'string' },
      rounds: { type: 'string', default: '2' },
    },
    USAGE,
  );
  const duration = intFlag('duration', flags.duration, 1);
  return {
    ids: intFlag('ids', flags.ids, 1),
    duration,
    conns: intFlag('conns', flags.conns, 1),
    frame: intFlag('frame', flags.frame, 1),
    window: intFlag('window', flags.window, 1),
    rate: intFlag('rate', flags.rate, 0),
    httpConns: intFlag('http-conns', flags['http-conns'], 1),
    httpDuration: intFlag('http-duration', flags['http-duration'] ?? String(duration), 0),
    workers: intFlag('workers', flags.workers, 1),
    tickCalls: intFlag('tick-calls', flags['tick-calls'], 1),
    // The CPU per tick leaves out the first and last ticking seconds: fewer than 3 leave none.
    tickDuration: flags['tick-duration'] === '0' ? 0 : intFlag('tick-duration', flags['tick-duration'], 3),
    rbRequests: intFlag('rb-requests', flags['rb-requests'], 1),
    keep: flags.keep ?? false,
    cluster: flags.cluster ?? false,
    acks: acksFlag(flags.acks, flags.cluster ?? false),
    rounds: intFlag('rounds', flags.rounds, 1, 100),
  };
}

const pct = (share: number): string => `${(share * 100).toFixed(0)}%`;
/** CPU time per operation in µs, from a process's share of a core and the rate. */
const us = (share: number, perSec: number): string => `${((share / Math.max(1, perSec)) * 1e6).toFixed(1)} µs`;
/** The rate two fully busy cores would reach at the measured CPU per operation (all processes summed): no run can pass it. */
const coreBound = (share: number, perSec: number): number =>
  Math.round((2 * Math.max(1, perSec)) / Math.max(share, 1e-9));

cleanUpOnExit();

// ------------------------------------------------------------------ set up

interface Setup {
  br: BenchRedis;
  ctx: Context;
  tokens: Tokens;
  ids: string[];
  gw: GatewayChild;
  /** The tick phase's catalog and calls, unless --tick-duration 0. */
  ticks?: TickPhase;
  /** A new scan id each call. */
  nextScan(): string;
  /** A sold ID at random. */
  pick(): string;
}

/** Where the scanners go and what they scan: a new scan id each call, a sold ID at random. */
type Target = Pick<Setup, 'gw' | 'tokens' | 'nextScan' | 'pick'>;

/** A scanner token per connection: WebSocket (--conns) and autocannon (--http-conns). */
interface Tokens {
  ws: string[];
  http: string[];
}

/** A goods product with its venue item, the scanner tokens, the sold IDs. */
async function loadWallets(ctx: Context, opts: Options): Promise<{ tokens: Tokens; ids: string[] }> {
  const product: GoodsProduct = {
    name: 'bench-wallet',
    kind: 'goods',
    currency: 'EUR',
    face: 1e12,
    price: 1e12,
    venues: [VENUE],
    expiryDays: 0,
  };
  await putProducts(ctx.redis, [product]);
  await putItems(ctx.redis, [{ venue: VENUE, item: 'coffee', price: PRICE }]);
  const scanners = async (tag: string, n: number): Promise<string[]> => {
    const tokens: string[] = [];
    for (let i = 0; i < n; i++)
      tokens.push((await createToken(ctx.redis, { name: `bench-${tag}-${i}`, role: 'scanner', venue: VENUE })).token);
    return tokens;
  };
  const tokens = { ws: await scanners('scanner', opts.conns), http: await scanners('till', opts.httpConns) };
  const ids = await mintSold(ctx, product, opts.ids, { price: 0, ref: 'bench' });
  return { tokens, ids };
}

/** What a Target needs besides the gateway. */
function scans(ids: string[]): Pick<Setup, 'nextScan' | 'pick'> {
  let scanSeq = 0;
  return {
    nextScan: () => `s${(scanSeq++).toString(36)}`,
    pick: () => ids[Math.floor(Math.random() * ids.length)]!,
  };
}

/** Redis, the catalog (loadWallets), then the gateway (GW_PROF=DIR: under --cpu-prof). */
async function setUp(opts: Options): Promise<Setup> {
  const dir = makeTmp('tessera-bench-redeem-', opts.keep);
  const br = await startBenchRedis({ TESSERA_SECRET: SECRET, DATA_DIR: dir, LOG_LEVEL: 'warn', BUCKETS: '64' }, 'warn');
  const { ctx } = br;
  const { tokens, ids } = await loadWallets(ctx, opts);
  const ticks = opts.tickDuration
    ? await prepareTicks(ctx, br.redis.url, opts.tickCalls, opts.tickDuration)
    : undefined;
  const prof = process.env.GW_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.GW_PROF] : [];
  const gw = await startGatewayChild({
    redisUrl: br.redis.url,
    dataDir: dir,
    secret: SECRET,
    env: { BUCKETS: '64', PROVIDER_URL: 'http://127.0.0.1:9', ...connLimits(opts.conns) },
    nodeArgs: prof,
    args: ['--workers', String(opts.workers)],
    inheritOutput: true,
  });
  return { br, ctx, tokens, ids, gw, ticks, ...scans(ids) };
}

// -------------------------------------------------------- 1. WebSocket scanners

interface Scanner {
  inFlight: number;
  sendFrame(at: number): void;
  /** Resolves once the connection has no scan in flight after the run's end, and closes it. */
  finish(): Promise<void>;
}

/** What every scanner connection adds to, and the run's clock. */
interface WsLoad {
  hist: Hist;
  outcomes: Record<string, number>;
  done: number;
  frames: number;
  until: number;
  /** Open loop: the pacer may still send; a connection closes only after it has stopped. */
  pacing: boolean;
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'auto' as 'number' });

/** One scanner connection, open. Closed loop: it keeps its window full until the time is up, then drains. */
function openScanner(c: number, opts: Options, s: Target, load: WsLoad): Promise<Scanner> {
  return new Promise<Scanner>((opened, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${s.gw.port}/v1/scanner`, {
      headers: { Authorization: `Bearer ${s.tokens.ws[c]}` },
    });
    const sentAt = new Map<number, number>();
    let ref = c * 1e9;
    let drained = (): void => undefined;
    const done = new Promise<void>((resolve) => (drained = resolve));
    const close = (): void => {
      ws.close();
      drained();
    };
    // `at`: when the frame was meant to leave (open loop), so a backlog counts in the latency.
    const sendFrame = (at: number): void => {
      const msgs = [];
      for (let i = 0; i < opts.frame; i++) {
        ref++;
        sentAt.set(ref, at);
        msgs.push({ op: 'redeem', ref, scan: s.nextScan(), id: s.pick(), item: 'coffee' });
      }
      scanner.inFlight += opts.frame;
      ws.send(packr.pack(msgs));
    };
    const scanner: Scanner = {
      inFlight: 0,
      sendFrame,
      finish: () => {
        if (scanner.inFlight === 0) close();
        return done;
      },
    };
    ws.on('open', () => opened(scanner));
    ws.on('error', reject);
    ws.on('message', (data: Buffer) => {
      load.frames++;
      const body = packr.unpack(data) as Record<string, unknown> | Record<string, unknown>[];
      const now = performance.now();
      for (const m of Array.isArray(body) ? body : [body]) {
        const at = sentAt.get(m.ref as number);
        if (at === undefined) continue;
        sentAt.delete(m.ref as number);
        recordMs(load.hist, now - at);
        const outcome = m.op === 'redeemed' ? 'ok' : String(m.reason);
        load.outcomes[outcome] = (load.outcomes[outcome] ?? 0) + 1;
        load.done++;
        scanner.inFlight--;
      }
      while (!opts.rate && now < load.until && scanner.inFlight <= (opts.window - 1) * opts.frame)
        sendFrame(performance.now());
      if (scanner.inFlight === 0 && now >= load.until && !load.pacing) close();
    });
  });
}

/**
 * Open loop: frames leave on a schedule, round robin, whatever the answers do,
 * as people reach gates. Resolves with the scans shed because a connection had
 * MAX_BACKLOG in flight.
 */
function pace(scanners: Scanner[], opts: Options, load: WsLoad, t0: number): Promise<number> {
  const frameMs = (1000 * opts.frame) / opts.rate;
  let frames = 0;
  let shed = 0;
  return new Promise<number>((resolve) => {
    const timer = setInterval(() => {
      const now = performance.now();
      const due = Math.floor((Math.min(now, load.until) - t0) / frameMs);
      for (; frames < due; frames++) {
        const s = scanners[frames % opts.conns]!;
        if (s.inFlight >= MAX_BACKLOG) shed += opts.frame;
        else s.sendFrame(t0 + frames * frameMs);
      }
      if (now >= load.until) {
        clearInterval(timer);
        load.pacing = false;
        resolve(shed);
      }
    }, 1);
  });
}

interface WsResult {
  perSec: number;
  done: number;
  frames: number;
  sec: number;
  latency: LatencySummary;
  outcomes: Record<string, number>;
  shed: number;
  /** Each process' share of a core: gateway (and its workers), redis, this process. */
  cpu: { gw: number; rd: number; lg: number };
  /** Redis memory a redemption keeps: the claim and the scan record (both until SCAN_TTL_SEC) and the stream entry. */
  bytes: number;
  /** Script calls per redemption (scan_claim + redeem): the size of the gateway's batches. */
  scripts: number;
}

type CpuSource = 'gw' | 'rd' | 'lg';
const cpuSources = (s: Setup): Record<CpuSource, () => number> => ({
  gw: () => cpuSecTree(s.gw.proc.pid),
  rd: () => cpuSec(s.br.pid),
  lg: ownCpuSec,
});
/** Each process' share of one core since `from`, over sec seconds. */
function cpuShares(from: CpuReading<CpuSource>, s: Setup, sec: number): { gw: number; rd: number; lg: number } {
  const used = cpuUsed(from, readCpu(cpuSources(s)));
  return { gw: used.gw / sec, rd: used.rd / sec, lg: used.lg / sec };
}

/** The scanners' run against one gateway: their counts, the seconds it took, the scans shed (open loop). */
async function driveScanners(opts: Options, s: Target): Promise<{ load: WsLoad; sec: number; shed: number }> {
  const load: WsLoad = { hist: newHist(), outcomes: {}, done: 0, frames: 0, until: Infinity, pacing: opts.rate > 0 };
  load.until = performance.now() + opts.duration * 1000;
  const scanners = await Promise.all(Array.from({ length: opts.conns }, (_, c) => openScanner(c, opts, s, load)));
  const t0 = performance.now();
  load.until = t0 + opts.duration * 1000;
  let shed = 0;
  if (opts.rate) shed = await pace(scanners, opts, load, t0);
  else for (const sc of scanners) for (let w = 0; w < opts.window; w++) sc.sendFrame(performance.now());
  await Promise.all(scanners.map((sc) => sc.finish()));
  return { load, sec: (performance.now() - t0) / 1000, shed };
}

async function runScanners(opts: Options, s: Setup): Promise<WsResult> {
  const { ctx } = s;
  const cpu0 = readCpu(cpuSources(s));
  await ctx.redis.config('RESETSTAT');
  const mem0 = await usedMemory(ctx);
  const { load, sec, shed } = await driveScanners(opts, s);
  const cpu = cpuShares(cpu0, s, sec);
  const bytes = ((await usedMemory(ctx)) - mem0) / Math.max(1, load.done);
  const scripts =
    Number(/cmdstat_fcall:calls=(\d+)/.exec(await ctx.redis.info('commandstats'))?.[1] ?? 0) / Math.max(1, load.done);
  return {
    perSec: Math.round(load.done / sec),
    done: load.done,
    frames: load.frames,
    sec,
    latency: summarize(load.hist),
    outcomes: load.outcomes,
    shed,
    cpu,
    bytes,
    scripts,
  };
}

// ------------------------------------------------------------------ 2. HTTP

interface HttpResult {
  result: autocannon.Result;
  perSec: number;
  cpu: { gw: number; rd: number; lg: number };
}

/** undefined with --http-duration 0 (e.g. to profile the WebSocket path alone): no request is sent. */
async function runHttp(opts: Options, s: Setup): Promise<HttpResult | undefined> {
  if (opts.httpDuration === 0) return undefined;
  const cpu0 = readCpu(cpuSources(s));
  let clients = 0;
  const result = await autocannon({
    url: `http://127.0.0.1:${s.gw.port}/v1/redeem`,
    method: 'POST',
    connections: opts.httpConns,
    duration: opts.httpDuration,
    headers: { 'content-type': 'application/json' },
    // A token of its own for each connection, as each till has (merged with the headers above).
    setupClient: (client) => client.setHeaders({ authorization: `Bearer ${s.tokens.http[clients++]}` }),
    requests: [
      {
        setupRequest: (req) => ({ ...req, body: JSON.stringify({ scan: s.nextScan(), id: s.pick(), item: 'coffee' }) }),
      },
    ],
  });
  const perSec = Math.round(result.requests.average);
  return { result, perSec, cpu: cpuShares(cpu0, s, (performance.now() - cpu0.t) / 1000) };
}

// ------------------------------------------------------------------ 3. ticks

/** The tick phase on this gateway and Redis: the CPU a tick costs each. */
async function runTicks(s: Setup): Promise<TickCost | undefined> {
  if (!s.ticks) return undefined;
  console.log(
    `ticks: ${s.ticks.opts.calls} calls ticking as fast as the gateway answers for ${s.ticks.opts.duration} s`,
  );
  return measureTickCost(s.ticks, s.gw.port, s.gw.proc.pid!, s.br.pid);
}

/** A redemption's CPU over a tick's, in the same run: the targets' ratios. */
interface CostRatios {
  /** CPU µs per operation. */
  us: {
    tick: { gw: number; rd: number };
    ws: { gw: number; rd: number };
    http?: { gw: number; rd: number };
  };
  /** Redis per WebSocket redemption ÷ per tick (target ≤ 1.5). */
  redis: number;
  /** Gateway per WebSocket redemption ÷ per tick (target ≤ 2). */
  gateway: number;
  /** Gateway per HTTP redemption ÷ per WebSocket redemption (target ≤ 2): Redis runs the same script for both. */
  http?: number;
  met: { redis: boolean; gateway: boolean; http?: boolean };
}

const ratio = (a: number, b: number): number => Math.round((a / b) * 100) / 100;

function costRatios(ws: WsResult, h: HttpResult | undefined, t: TickCost): CostRatios {
  const per = (share: number, perSec: number): number => Math.round((share / Math.max(1, perSec)) * 1e7) / 10;
  const us = {
    tick: { gw: Math.round(t.gatewayUs * 10) / 10, rd: Math.round(t.redisUs * 10) / 10 },
    ws: { gw: per(ws.cpu.gw, ws.perSec), rd: per(ws.cpu.rd, ws.perSec) },
    http: h && { gw: per(h.cpu.gw, h.perSec), rd: per(h.cpu.rd, h.perSec) },
  };
  const r = {
    redis: ratio(us.ws.rd, us.tick.rd),
    gateway: ratio(us.ws.gw, us.tick.gw),
    http: us.http && ratio(us.http.gw, us.ws.gw),
  };
  const met = {
    redis: TARGETS.redeemRedisPerTick.met(r.redis) === true,
    gateway: TARGETS.redeemGatewayPerTick.met(r.gateway) === true,
    http: r.http === undefined ? undefined : TARGETS.redeemHttpPerWs.met(r.http) === true,
  };
  return { us, ...r, met };
}

function printCostRatios(c: CostRatios, t: TickCost): void {
  const met = (ok: boolean): string => (ok ? 'met' : 'NOT met');
  console.log(
    `  tick             ${t.ticksPerSec.toLocaleString('en')} ticks/s over the ${t.ticks.toLocaleString('en')} ticks of the seconds with nothing else; CPU per tick: gateway ${c.us.tick.gw} µs, redis ${c.us.tick.rd} µs${Object.keys(t.errors).length ? `; errors ${JSON.stringify(t.errors)}` : ''}`,
  );
  console.log(
    `  cost ratios      redis per websocket redemption ÷ per tick ${c.redis} (${c.us.ws.rd} ÷ ${c.us.tick.rd} µs; target ${TARGETS.redeemRedisPerTick.text}: ${met(c.met.redis)}); ` +
      `gateway ${c.gateway} (${c.us.ws.gw} ÷ ${c.us.tick.gw} µs; target ${TARGETS.redeemGatewayPerTick.text}: ${met(c.met.gateway)}); ` +
      (c.us.http
        ? `gateway per http ÷ per websocket redemption ${c.http} (${c.us.http.gw} ÷ ${c.us.ws.gw} µs; target ${TARGETS.redeemHttpPerWs.text}: ${met(c.met.http === true)})`
        : 'http skipped (--http-duration 0)'),
  );
}

// ------------------------------------------------------------- 4. ceilings

/**
 * autocannon's own rate on this machine, with the same connections and body,
 * against an endpoint that answers at once: the HTTP figure above cannot pass it.
 */
async function autocannonAlone(connections: number, duration: number): Promise<{ perSec: number; cpu: number }> {
  const app = uWS.App().post('/*', (res) => {
    res.onAborted(() => undefined);
    res.onData((_chunk, last) => {
      if (last)
        res.cork(() =>
          res
            .writeHeader('content-type', 'application/json')
            .end('{"kind":"goods","action":"spend","amount":1000,"valueLeft":0,"item":"coffee"}'),
        );
    });
  });
  const listen = await new Promise<uWS.us_listen_socket>((resolve, reject) =>
    app.listen('127.0.0.1', 0, (ls) => (ls ? resolve(ls) : reject(new Error('listen failed')))),
  );
  const port = uWS.us_socket_local_port(listen);
  const cpu0 = readCpu({ lg: ownCpuSec });
  const r = await autocannon({
    url: `http://127.0.0.1:${port}/v1/redeem`,
    method: 'POST',
    connections,
    duration,
    headers: { authorization: 'Bearer x', 'content-type': 'application/json' },
    requests: [
      {
        setupRequest: (req) => ({
          ...req,
          body: JSON.stringify({ scan: 'alone', id: '4000000000000002', item: 'coffee' }),
        }),
      },
    ],
  });
  const cpu1 = readCpu({ lg: ownCpuSec });
  uWS.us_listen_socket_close(listen);
  return { perSec: Math.round(r.requests.average), cpu: cpuUsed(cpu0, cpu1).lg / ((cpu1.t - cpu0.t) / 1000) };
}

/**
 * redis-benchmark FCALL of redeem.lua, batch scans per call, every scan a
 * fresh scan key (random up to 1e9): the debit path, as in the runs above.
 */
function redeemCeiling(s: Setup, opts: Options, batch: number): number {
  const redeem = s.ctx.scripts.library.functions.get('redeem')!;
  const { hash, bucket } = s.ctx.ids.hash(s.ids[0]!);
  const windows = new ScanWindows(s.ctx.cfg.scanTtlSec);
  const at = windows.at(Date.now());
  const keysArgs: string[] = [keys.redemptions(bucket), ...at.map((w) => keys.scans(bucket, w))];
  const scanArgs: string[] = [];
  for (let i = 0; i < batch; i++) {
    keysArgs.push(keys.id(bucket, hash));
    scanArgs.push(VENUE, '', 'coffee', String(PRICE), '1', 'in', 'rb', `${i}:__rand_int__`, hash);
  }
  const requests = Math.ceil(opts.rbRequests / batch);
  const rb = spawnSync(
    'redis-benchmark',
    [
      '-p',
      String(s.br.redis.port),
      '-n',
      String(requests),
      '-c',
      '50',
      '-P',
      '16',
      '-r',
      '1000000000',
      '--csv',
      'FCALL',
      redeem,
      String(keysArgs.length),
      ...keysArgs,
      String(Date.now()),
      String(at.length),
      String(windows.expiresAt(at[0]!)),
      '1',
      ...scanArgs,
    ],
    { encoding: 'utf8' },
  );
  return (
    batch *
    Math.round(Number(/"([\d.]+)"/.exec(rb.stdout.split('\n').find((l) => l.includes('FCALL')) ?? '')?.[1] ?? 0))
  );
}

interface Ceilings {
  httpAlone: { perSec: number; cpu: number };
  /** One scan per call, and BATCH: what batching saves Redis (the gateway's batches hold fewer, 'script calls per redemption' says how many). */
  ceiling: number;
  ceilingBatched: number;
  /** Redemption records in Redis once everything ran. */
  records: number;
}

/** The gateway stopped: autocannon alone, then redis-benchmark. */
async function measureCeilings(opts: Options, s: Setup): Promise<Ceilings> {
  await stopChild(s.gw.proc);
  const httpAlone = await autocannonAlone(opts.httpConns, Math.min(5, opts.duration));
  const ceiling = redeemCeiling(s, opts, 1);
  const ceilingBatched = redeemCeiling(s, opts, BATCH);
  const records = (
    await Promise.all(Array.from({ length: s.ctx.cfg.buckets }, (_, b) => s.ctx.redis.xlen(keys.redemptions(b))))
  ).reduce((a, b) => a + b, 0);
  return { httpAlone, ceiling, ceilingBatched, records };
}

// ------------------------------------------------------------------ report

/** The HTTP phase's line, or that it was skipped. */
function httpLine(h: HttpResult | undefined): string {
  if (!h) return '  http             skipped (--http-duration 0)';
  const http = h.result;
  const httpCpu = `gateway CPU ${pct(h.cpu.gw)}, redis ${pct(h.cpu.rd)}, load generator ${pct(h.cpu.lg)}; CPU per request: gateway ${us(h.cpu.gw, h.perSec)}, redis ${us(h.cpu.rd, h.perSec)}, load generator ${us(h.cpu.lg, h.perSec)}`;
  return `  http             ${h.perSec.toLocaleString('en')} req/s  p50 ${http.latency.p50} ms  p99 ${http.latency.p99} ms  (2xx ${http['2xx']}, non-2xx ${http.non2xx}, errors ${http.errors}, timeouts ${http.timeouts}; ${httpCpu})`;
}

function report(opts: Options, ws: WsResult, h: HttpResult | undefined, t: TickCost | undefined, c: Ceilings): object {
  console.log('\nresults');
  console.log(
    `  websocket        ${ws.perSec.toLocaleString('en')} redemptions/s  (${ws.done.toLocaleString('en')} in ${ws.sec.toFixed(1)} s; outcomes ${JSON.stringify(ws.outcomes)}${opts.rate ? `; offered ${opts.rate.toLocaleString('en')}/s, shed ${ws.shed.toLocaleString('en')}` : ''}; gateway CPU ${pct(ws.cpu.gw)}, redis ${pct(ws.cpu.rd)}, load generator ${pct(ws.cpu.lg)}; CPU per redemption: gateway ${us(ws.cpu.gw, ws.perSec)}, redis ${us(ws.cpu.rd, ws.perSec)}, load generator ${us(ws.cpu.lg, ws.perSec)}; ${ws.scripts.toFixed(2)} script calls per redemption, ${(ws.done / Math.max(1, ws.frames)).toFixed(1)} answers per frame)`,
  );
  console.log(`  ${fmtLatency('ws redeem', ws.latency)}`);
  console.log(
    `  memory           ${Math.round(ws.bytes)} bytes of Redis memory per redemption (claim and scan record for SCAN_TTL_SEC, stream entry until trimmed)`,
  );
  console.log(httpLine(h));
  console.log(
    `  http, alone      ${c.httpAlone.perSec.toLocaleString('en')} req/s from autocannon against a no-op uWS endpoint in this process (${pct(c.httpAlone.cpu)} CPU): what the load generator leaves room for`,
  );
  console.log(
    `  ceiling          ${c.ceiling.toLocaleString('en')} FCALL/s of redeem.lua (redis-benchmark -c 50 -P 16, debit path)`,
  );
  console.log(`  ceiling, batched ${c.ceilingBatched.toLocaleString('en')} redemptions/s, ${BATCH} scans per FCALL`);
  const hCpu = h?.cpu ?? { gw: 0, rd: 0, lg: 0 };
  const hPerSec = h?.perSec ?? 0;
  const [wsCpu, httpCpuAll] = [ws.cpu.gw + ws.cpu.rd + ws.cpu.lg, hCpu.gw + hCpu.rd + hCpu.lg];
  const bound = { ws: coreBound(wsCpu, ws.perSec), http: h && coreBound(httpCpuAll, hPerSec) };
  console.log(
    `  2-core bound     websocket ${bound.ws.toLocaleString('en')}/s (${us(wsCpu, ws.perSec)} in all)${bound.http === undefined ? '' : `, http ${bound.http.toLocaleString('en')}/s (${us(httpCpuAll, hPerSec)} in all)`}: the rate at which these CPU costs per redemption would fill both cores (the targets need at most 50 µs over WebSocket, 100 µs over HTTP)`,
  );
  console.log(
    `  ratio            websocket/ceiling ${(ws.perSec / c.ceiling).toFixed(3)}${h ? `, http/ceiling ${(hPerSec / c.ceiling).toFixed(3)}` : ''}`,
  );
  console.log(
    `  records          ${c.records.toLocaleString('en')} redemption records in Redis (ws ok + http 2xx + ceiling calls)`,
  );
  const costs = t && costRatios(ws, h, t);
  if (t && costs) printCostRatios(costs, t);
  const target =
    h !== undefined && ws.perSec >= 40_000 && h.perSec >= 20_000 && ws.latency.p99 < 20 && h.result.latency.p99 < 20;
  console.log(
    `\ntarget (≥ 40,000/s over WebSocket and ≥ 20,000 req/s over HTTP, p99 < 20 ms, 2 cores, load generator included): ${target ? 'met' : 'NOT met'}`,
  );
  return {
    bench: 'redeem',
    ws: {
      perSec: ws.perSec,
      latencyMs: ws.latency,
      outcomes: ws.outcomes,
      gatewayCpu: ws.cpu.gw,
      redisCpu: ws.cpu.rd,
      loadCpu: ws.cpu.lg,
      scriptsPerRedemption: ws.scripts,
      offered: opts.rate || undefined,
      shed: ws.shed,
      answersPerFrame: ws.done / Math.max(1, ws.frames),
      bytesPerRedemption: Math.round(ws.bytes),
    },
    http: h && { perSec: h.perSec, p50: h.result.latency.p50, p99: h.result.latency.p99, non2xx: h.result.non2xx },
    ceiling: c.ceiling,
    ceilingBatched: c.ceilingBatched,
    httpAlone: c.httpAlone.perSec,
    bound,
    tick: t && { perSec: t.ticksPerSec, ticks: t.ticks, errors: t.errors },
    costRatios: costs,
    targetMet: target,
  };
}

// ------------------------------------------- --cluster: replicated acks on and off

interface ClusterSetup {
  cluster: LocalCluster;
  tokens: Tokens;
  ids: string[];
  gws: Map<AckMode, GatewayChild>;
}

/** The cluster, the catalog and sold IDs on it, a gateway per ack mode. */
async function setUpCluster(opts: Options): Promise<ClusterSetup> {
  const dir = makeTmp('tessera-bench-redeem-', opts.keep);
  const cluster = await startLocalCluster(dir);
  const env = { REDIS_CLUSTER: cluster.url, TESSERA_SECRET: SECRET, DATA_DIR: dir, LOG_LEVEL: 'warn', BUCKETS: '64' };
  const ctx = await openContext(loadConfig(env), createLogger('warn'));
  const { tokens, ids } = await loadWallets(ctx, opts);
  await ctx.close();
  const gws = await startAckGateways(cluster, opts.acks, {
    dataDir: dir,
    secret: SECRET,
    env: { BUCKETS: '64', PROVIDER_URL: 'http://127.0.0.1:9', ...connLimits(opts.conns) },
    args: ['--workers', String(opts.workers)],
  });
  console.log(
    `cluster ${cluster.url}; gateways: ${[...gws].map(([acks, g]) => `acks ${acks} on port ${g.port}`).join(', ')}`,
  );
  return { cluster, tokens, ids, gws };
}

async function clusterMain(opts: Options): Promise<void> {
  console.log(
    `tessera bench:redeem --cluster  ids=${opts.ids} duration=${opts.duration}s conns=${opts.conns} frame=${opts.frame} ${opts.rate ? `rate=${opts.rate}/s` : `window=${opts.window}`} acks=${opts.acks.join(',')} rounds=${opts.rounds}`,
  );
  const s = await setUpCluster(opts);
  const turns: AckTurn[] = [];
  const target = { tokens: s.tokens, ...scans(s.ids) };
  for (const [i, acks] of ackTurns(opts.acks, opts.rounds).entries()) {
    const gw = s.gws.get(acks)!;
    const redis = clusterPids(s.cluster);
    const sources: Record<string, () => number> = { gw: () => cpuSecTree(gw.proc.pid), ...redisCpuSources(redis) };
    const cpu0 = readCpu(sources);
    const { load, sec } = await driveScanners(opts, { ...target, gw });
    const pct = cpuPct(cpu0, readCpu(sources));
    const ok = load.outcomes.ok ?? 0;
    console.log(
      `turn ${i + 1} acks ${acks}: ${Math.round(ok / sec)} redemptions/s  p99 ${summarize(load.hist).p99.toFixed(1)} ms  ${JSON.stringify(load.outcomes)}` +
        `  cpu: gateway ${pct.gw}%, ${fmtRedisCpu(redis, pct)}`,
    );
    const cpu = {
      gateway: pct.gw ?? 0,
      redis: pct.rd ?? 0,
      redisPerPrimary: perPrimary(redis, pct),
      replicas: pct.rp ?? 0,
    };
    turns.push({ acks, counts: { redemptions: { n: ok, sec } }, cpuPct: cpu });
  }
  for (const gw of s.gws.values()) await stopChild(gw.proc);
  s.cluster.stop();
  removeTmp();
  const rates = ackRates(turns);
  printAckRates(rates);
  printJsonLine({
    bench: 'redeem',
    cluster: true,
    ids: opts.ids,
    duration: opts.duration,
    conns: opts.conns,
    frame: opts.frame,
    window: opts.window,
    rate: opts.rate,
    rounds: opts.rounds,
    turns,
    acks: rates,
  });
}

// -------------------------------------------------------------------- main

async function main(): Promise<void> {
  const opts = options(process.argv.slice(2));
  if (opts.cluster) return clusterMain(opts);
  const setup = await setUp(opts);
  console.log(
    `tessera bench:redeem  ids=${opts.ids} duration=${opts.duration}s ws: conns=${opts.conns} frame=${opts.frame} ${opts.rate ? `rate=${opts.rate}/s (open loop)` : `window=${opts.window}`}  http: conns=${opts.httpConns}  (node ${process.version})`,
  );
  const ws = await runScanners(opts, setup);
  const http = await runHttp(opts, setup);
  const ticks = await runTicks(setup);
  const ceilings = await measureCeilings(opts, setup);
  const figures = report(opts, ws, http, ticks, ceilings);
  await setup.br.stop();
  removeTmp();
  printJsonLine(figures);
}

runMain(main);

/**
 * bench/switch.ts — switch-protocol benchmark: `npm run bench:switch [-- flags]`.
 *
 * Sets everything up from nothing: its own redis-server (AOF, appendfsync
 * everysec, as in production) in a temp dir, a catalog, a switch token, N
 * minted and sold IDs; runs the gateway as a separate child process
 * (the compiled dist/src/main.js, as `npm start` runs it) so the load generator
 * and the gateway never share an event loop; drives it with simulated switches
 * over WebSocket (MessagePack binary frames); then measures redis-benchmark's
 * FCALL rate for lua/call_tick.lua on the same Redis as the ceiling.
 *
 * Modes
 *   calls (default)  N calls over M connections: start, one tick a second
 *                    (sec=1..D), stop. Messages of one connection in one timer
 *                    turn leave as one array frame. Offered load = N ticks/s,
 *                    so `--calls 60000` is the paced 60k ticks/s test.
 *   max              every connection keeps W frames of F ticks in flight
 *                    (sec+1 per call each round: real debits), for D seconds;
 *                    throughput counted from `ticked` replies.
 *
 * Flags (defaults in brackets)
 *   --mode calls|max       [calls]
 *   --calls N              simulated calls = sold IDs [10000]
 *   --conns M              switch WebSocket connections [20]
 *   --duration S           seconds of ticking [30]
 *   --ref-every K          1 tick in K carries a ref (1 = all) [calls: 10, max: 1]
 *   --alert-frac F         share of calls on the alert product, which crosses
 *                          thresholds during the run [0.2]
 *   --ramp S               calls mode: starts spread over S seconds [1]
 *   --slot-ms MS           calls mode: timer granularity [10]
 *   --frame F              max mode: ticks per frame [25] (500 ticks in flight over 20
 *                          connections: by Little's law about 8 ms at 60,000 ticks/s)
 *   --window W             max mode: frames in flight per connection [1]
 *                          (ticks in flight = conns × window × frame; by Little's law
 *                          tick latency ≈ in flight ÷ ticks/s: lower it for latency)
 *   --workers K            load generator threads (worker_threads) [1]
 *   --gw-env K=V           extra gateway environment (repeatable), e.g. BUCKETS=64
 *   --gw-node-arg ARG      extra node flag for the gateway (repeatable), e.g.
 *                          --gw-node-arg=--max-semi-space-size=64 or --gw-node-arg=--trace-gc
 *   --gw-log FILE          also write the gateway's stdout/stderr to FILE
 *   --profile              run the gateway under node --cpu-prof; print its hot spots
 *   --profile-dir DIR      where the .cpuprofile goes [a temp dir, kept]
 *   --rb-requests N        redis-benchmark -n [200000]
 *   --rb-clients C         redis-benchmark -c [50]
 *   --rb-pipeline P        redis-benchmark -P [16]
 *   --rb-batch B           also measure B ticks per FCALL, as the gateway batches (0 = skip) [64]
 *   --no-ceiling           skip the redis-benchmark part
 *   --keep                 keep the temp dir (Redis data, gateway logs)
 *   --quiet                no per-second timeline
 *   --help
 *
 * Output: human-readable lines, then one final line of JSON with every figure.
 * Latencies: start→started, tick→ticked, tick→alert (from sending the tick that
 * crosses a threshold to receiving its alert), stop→stopped, in ms (HdrHistogram).
 * Profiling the load generator itself: `node --import tsx --cpu-prof bench/switch.ts ...`.
 *
 * --cluster: a local 3+3 Redis Cluster instead (bench/lib/cluster.ts), one
 * gateway per --acks mode (REDIS_REPLICATED_ACKS on, off), the load run in
 * turns off, on, off, on on the same IDs; prints starts/s, ticks/s and stops/s
 * of each mode and on/off. No ceiling.
 *
 * Pieces: bench/switch/ (flags, catalog, load generator, ceiling, report) and
 * what every benchmark shares, bench/lib/.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openContext, type Context } from '../src/app/context';
import { loadConfig } from '../src/config/config';
import { createLogger } from '../src/observability/log';
import {
  ackRates,
  ackTurns,
  clusterPids,
  printAckRates,
  startAckGateways,
  startLocalCluster,
  type AckMode,
  type AckTurn,
  type LocalCluster,
} from './lib/cluster';
import { singleRedis, statusKb } from './lib/cpu';
import { connLimits, startGatewayChild, warningLines, type GatewayChild } from './lib/gateway';
import { cleanUpOnExit, makeTmp, removeTmp, runMain, stopChild } from './lib/process';
import { summarizeProfile } from './lib/profile';
import { delayedFsyncs, lastForkMs, startBenchRedis, totalForks, type BenchRedis } from './lib/redis';
import { resetSlowlog, slowestCommands } from './lib/slowlog';
import { fmtInt, printJsonLine } from './lib/report';
import { loadCatalog, SWITCH_NAME, type SwitchCatalog } from './switch/catalog';
import { measureCeiling, openCeilingCall, type CeilingCall } from './switch/ceiling';
import { mergeResults, runLoad, spanSec, splitEngines, steadyTickRate } from './switch/load';
import { perLiveCall, readMemory, type MemoryReading } from './switch/memory';
import { scrapeMetrics } from './switch/metrics';
import { options, type Options } from './switch/options';
import { report, type CeilingPhase, type LoadPhase, type Throughput } from './switch/report';

const SECRET = 'be'.repeat(32);

cleanUpOnExit();

// ------------------------------------------------------------------ set up

interface SwitchGateway extends GatewayChild {
  profileDir?: string;
}

async function startGateway(redisUrl: string, dataDir: string, opts: Options): Promise<SwitchGateway> {
  const profileDir = opts.profile ? (opts.profileDir ?? mkdtempSync(join(tmpdir(), 'tessera-bench-prof-'))) : undefined;
  const nodeArgs = [...opts.gwNodeArgs, ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [])];
  const gw = await startGatewayChild({
    redisUrl,
    dataDir,
    secret: SECRET,
    // Metering only: nothing is sold, but a gateway does not start without a card company.
    // TICK_INTERVAL_MS sets how long a silent call lives (STALE_AFTER_MS): it must match the ticks.
    env: {
      PROVIDER_URL: 'http://127.0.0.1:9',
      TICK_INTERVAL_MS: String(opts.tickEvery * 1000),
      ...connLimits(opts.conns),
    },
    gwEnv: opts.gwEnv,
    nodeArgs,
    logFile: opts.gwLog,
  });
  return { ...gw, profileDir };
}

/** Stops the gateway; returns its newest .cpuprofile when profiled. */
async function stopGateway(gw: SwitchGateway): Promise<string | undefined> {
  await stopChild(gw.proc);
  if (!gw.profileDir) return undefined;
  const files = readdirSync(gw.profileDir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => join(gw.profileDir!, f))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  return files[0];
}

interface Setup {
  tStart: number;
  br: BenchRedis;
  catalog: SwitchCatalog;
  gw: SwitchGateway;
  setupSec: number;
}

/** Redis as in production (AOF, appendfsync everysec), the catalog and sold IDs, the gateway. */
async function setUp(opts: Options): Promise<Setup> {
  const tStart = performance.now();
  const tmp = makeTmp('tessera-bench-', opts.keep);
  console.log(
    `tessera bench:switch  mode=${opts.mode} calls=${opts.calls} conns=${opts.conns} duration=${opts.duration}s ref-every=${opts.refEvery} alert-frac=${opts.alertFrac}${opts.quota ? ' quota' : ''} tariff=${opts.tariff}` +
      (opts.mode === 'max'
        ? ` frame=${opts.frame} window=${opts.window}`
        : ` ramp=${opts.ramp}s tick-every=${opts.tickEvery}s`) +
      ` workers=${opts.workers}  (node ${process.version}, ${spawnSync('nproc', { encoding: 'utf8' }).stdout.trim()} cores)`,
  );
  // Same settings as the gateway (BUCKETS must match), but patient: setup and cloning are bulk work.
  const br = await startBenchRedis({
    TESSERA_SECRET: SECRET,
    DATA_DIR: join(tmp, 'cli'),
    LOG_LEVEL: 'silent',
    HOST: '127.0.0.1',
    PORT: '0',
    ...opts.gwEnv,
    REDIS_TIMEOUT_MS: '60000',
  });
  for (const [k, v] of Object.entries(opts.redisConfig)) await br.ctx.redis.config('SET', k, v);
  const catalog = await loadCatalog(br.ctx, br.redis.url, opts);
  const gw = await startGateway(br.redis.url, join(tmp, 'gateway'), opts);
  const setupSec = (performance.now() - tStart) / 1000;
  console.log(
    `gateway: pid ${gw.proc.pid} on port ${gw.port}${gw.profileDir ? ` (cpu profile → ${gw.profileDir})` : ''}`,
  );
  return { tStart, br, catalog, gw, setupSec };
}

// -------------------------------------------------------------------- run

interface Measured extends LoadPhase {
  /** The ceiling's live call, opened through the gateway before it stops. */
  ceilingCall?: CeilingCall;
  ceilingError?: string;
  profileFile?: string;
}

/** The load, what Redis and the gateway say about it, the ceiling's live call; then stops the gateway. */
async function measureLoad(opts: Options, s: Setup): Promise<Measured> {
  const { br, gw, catalog } = s;
  const { ctx } = br;
  console.log(
    opts.mode === 'calls'
      ? `calls: start, ${opts.duration / opts.tickEvery} ticks every ${opts.tickEvery} s, stop; offered ≈ ${fmtInt(opts.calls / opts.tickEvery)} ticks/s`
      : `max: ${opts.window} × ${opts.frame} ticks in flight per connection for ${opts.duration} s`,
  );
  const engines = splitEngines(opts, catalog.calls, `ws://127.0.0.1:${gw.port}/v1/switch`, catalog.token);
  const forks0 = await totalForks(ctx);
  const fsync0 = await delayedFsyncs(ctx);
  const mem0 = await readMemory(ctx, gw.proc.pid);
  await resetSlowlog(ctx);
  let memLive: Promise<MemoryReading> | undefined;
  const load = await runLoad(
    engines,
    gw.proc.pid!,
    singleRedis(br.pid),
    opts,
    () => void (memLive = readMemory(ctx, gw.proc.pid)),
  );
  const memory = perLiveCall(opts.calls, mem0, await memLive);
  const slowCommands = await slowestCommands(ctx);
  const loadForks = (await totalForks(ctx)) - forks0;
  const loadForkMs = loadForks > 0 ? await lastForkMs(ctx) : 0;
  const loadDelayedFsyncs = (await delayedFsyncs(ctx)) - fsync0;
  const merged = mergeResults(load.results);
  const scraped = await scrapeMetrics(gw.port);
  const gwPeakRssMb = Math.round(statusKb(gw.proc.pid, 'VmHWM') / 1024);
  const gwLogs = warningLines(gw.logs);
  let ceilingCall: CeilingCall | undefined;
  let ceilingError: string | undefined;
  if (opts.ceiling) {
    try {
      ceilingCall = await openCeilingCall(ctx, br.redis.url, gw.port, catalog.token, SWITCH_NAME, catalog.rbId);
    } catch (err) {
      ceilingError = err instanceof Error ? err.message : String(err);
    }
  }
  const profileFile = await stopGateway(gw);
  return {
    load,
    merged,
    loadForks,
    loadForkMs,
    loadDelayedFsyncs,
    memory,
    slowCommands,
    startsPerSec: Math.round(merged.counters.started / (spanSec(load.results, 'starts') || Infinity)),
    scraped,
    gwPeakRssMb,
    gwLogs,
    ceilingCall,
    ceilingError,
    profileFile,
  };
}

/**
 * max: ticks answered over the ticking window. calls: the offered rate is
 * fixed, so ticks sent over the window in which the load is steady (every
 * call live, whole tick intervals: steadyTickRate).
 */
function throughput(opts: Options, m: Measured): Throughput {
  const c = m.merged.counters;
  const tickWindowSec =
    m.merged.tickEnd > m.merged.tickStart ? (m.merged.tickEnd - m.merged.tickStart) / 1000 : m.load.wallSec;
  const peak = Math.max(0, ...m.load.timeline.map((r) => r.ticks));
  if (opts.mode === 'max') return { ticksPerSec: Math.round(c.ticksDone / tickWindowSec), peak, tickWindowSec };
  const window = steadyTickRate(m.load.samples, opts.calls, opts.tickEvery);
  return { ticksPerSec: window?.perSec ?? 0, peak, tickWindowSec, window };
}

/** redis-benchmark on the call the gateway opened, the gateway stopped. */
async function ceilingPhase(opts: Options, s: Setup, m: Measured): Promise<CeilingPhase> {
  let ceiling: CeilingPhase['ceiling'];
  let ceilingError = m.ceilingError;
  const tCeiling = performance.now();
  if (opts.ceiling) {
    console.log('\nceiling: redis-benchmark FCALL lua/call_tick.lua (gateway stopped)');
    try {
      if (!m.ceilingCall) throw new Error(ceilingError ?? 'no live call for the ceiling');
      ceiling = await measureCeiling(s.br.ctx, s.br.redis.port, m.ceilingCall, opts);
    } catch (err) {
      ceilingError = err instanceof Error ? err.message : String(err);
      console.log(`  failed: ${ceilingError}`);
    }
  }
  return { ceiling, ceilingError, ceilingSec: (performance.now() - tCeiling) / 1000 };
}

// ------------------------------------------- --cluster: replicated acks on and off

interface ClusterSetup {
  cluster: LocalCluster;
  ctx: Context;
  catalog: SwitchCatalog;
  gws: Map<AckMode, GatewayChild>;
}

/** The cluster, the catalog and sold IDs on it, a gateway per ack mode. */
async function setUpCluster(opts: Options): Promise<ClusterSetup> {
  const tmp = makeTmp('tessera-bench-', opts.keep);
  console.log(
    `tessera bench:switch --cluster  mode=${opts.mode} calls=${opts.calls} conns=${opts.conns} duration=${opts.duration}s acks=${opts.acks.join(',')} rounds=${opts.rounds}`,
  );
  const cluster = await startLocalCluster(tmp);
  const env = {
    REDIS_CLUSTER: cluster.url,
    TESSERA_SECRET: SECRET,
    DATA_DIR: join(tmp, 'cli'),
    LOG_LEVEL: 'silent',
    ...opts.gwEnv,
    REDIS_TIMEOUT_MS: '60000',
  };
  const ctx = await openContext(loadConfig(env), createLogger('silent'));
  const catalog = await loadCatalog(ctx, cluster.url, opts);
  const gws = await startAckGateways(cluster, opts.acks, {
    dataDir: tmp,
    secret: SECRET,
    env: { PROVIDER_URL: 'http://127.0.0.1:9', ...connLimits(opts.conns) },
    gwEnv: opts.gwEnv,
    nodeArgs: opts.gwNodeArgs,
  });
  console.log(`gateways: ${[...gws].map(([acks, g]) => `acks ${acks} on port ${g.port}`).join(', ')}`);
  return { cluster, ctx, catalog, gws };
}

/** One measured turn against the gateway of `acks`: new call names, the same IDs. */
async function clusterTurn(opts: Options, s: ClusterSetup, acks: AckMode, turn: number): Promise<AckTurn> {
  const gw = s.gws.get(acks)!;
  const url = `ws://127.0.0.1:${gw.port}/v1/switch`;
  const load = await runLoad(
    splitEngines(opts, s.catalog.calls, url, s.catalog.token, `t${turn}.`),
    gw.proc.pid!,
    clusterPids(s.cluster),
    opts,
  );
  const m = mergeResults(load.results);
  const tickSec = m.tickEnd > m.tickStart ? (m.tickEnd - m.tickStart) / 1000 : load.wallSec;
  const counts = {
    starts: { n: m.counters.started, sec: spanSec(load.results, 'starts') },
    ticks: { n: m.counters.ticksDone, sec: tickSec },
    stops: { n: m.counters.stopped, sec: spanSec(load.results, 'stops') },
  };
  const rate = (c: { n: number; sec: number }): string => fmtInt(c.sec ? Math.round(c.n / c.sec) : 0);
  const share = (sec: number): number => Math.round((sec / load.wallSec) * 100);
  const cpuPct = {
    gateway: share(load.gwCpuSec),
    redis: share(load.redisCpuSec),
    redisPerPrimary: load.redisPerPrimaryCpuSec.map(share),
    replicas: share(load.replicaCpuSec),
  };
  console.log(
    `turn ${turn + 1} acks ${acks}: starts ${rate(counts.starts)}/s  ticks ${rate(counts.ticks)}/s  stops ${rate(counts.stops)}/s  errors ${JSON.stringify(m.errors)}` +
      `  cpu: gateway ${cpuPct.gateway}%, redis primaries ${cpuPct.redis}% (${cpuPct.redisPerPrimary.join('+')}), replicas ${cpuPct.replicas}%`,
  );
  return { acks, counts, cpuPct };
}

async function clusterMain(opts: Options): Promise<void> {
  const s = await setUpCluster(opts);
  const turns: AckTurn[] = [];
  for (const [i, acks] of ackTurns(opts.acks, opts.rounds).entries()) turns.push(await clusterTurn(opts, s, acks, i));
  for (const gw of s.gws.values()) await stopChild(gw.proc);
  await s.ctx.close();
  s.cluster.stop();
  removeTmp();
  const rates = ackRates(turns);
  printAckRates(rates);
  const { mode, calls, conns, duration, rounds } = opts;
  printJsonLine({ bench: 'switch', cluster: true, mode, calls, conns, duration, rounds, acks: rates, turns });
}

// ------------------------------------------------------------------- main

async function main(): Promise<void> {
  const opts = options(process.argv.slice(2));
  if (opts.cluster) return clusterMain(opts);
  const setup = await setUp(opts);
  const measured = await measureLoad(opts, setup);
  const rate = throughput(opts, measured);
  const profile = measured.profileFile ? summarizeProfile(measured.profileFile) : undefined;
  const ceiling = await ceilingPhase(opts, setup, measured);
  const figures = report({
    opts,
    phase: measured,
    rate,
    ceiling,
    profile,
    setupSec: setup.setupSec,
    tStart: setup.tStart,
  });
  await setup.br.stop();
  removeTmp();
  printJsonLine(figures);
}

runMain(main);

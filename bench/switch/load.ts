/**
 * bench:switch's load phase: the load generator's engines (in this thread, or
 * one per worker thread with --workers K), a per-second timeline of the rates
 * and every process' CPU, and the engines' results merged.
 */
import { Worker } from 'node:worker_threads';
import {
  cpuPct,
  cpuPressurePct,
  cpuSec,
  cpuStallUs,
  cpuUsed,
  fmtRedisCpu,
  ownCpuSec,
  perPrimary,
  readCpu,
  redisCpuSources,
  statusKb,
  type CpuReading,
  type RedisPids,
} from '../lib/cpu';
import { decodeHist, newHist, summarize, type LatencySummary } from '../lib/hist';
import { alertPlan } from './catalog';
import {
  Engine,
  LOADGEN_FILE,
  type CallSpec,
  type Counters,
  type EngineConfig,
  type EngineResult,
  type FromWorker,
  type HistName,
} from './loadgen';
import type { Options } from './options';

export interface TimelineRow {
  t: number;
  ticks: number;
  ticked: number;
  starts: number;
  gwCpu: number;
  /** Redis, % of a core: the server, or a cluster's primaries summed. */
  redisCpu: number;
  /** A cluster's: each primary (%), and the replicas summed. */
  redisPerPrimary?: number[];
  replicaCpu?: number;
  loadgenCpu: number;
  gwRssMb: number;
}

/** The engines' counters at one timeline second, ms after the load began: what steadyTickRate reads. */
export interface LoadSample {
  t: number;
  ticksDone: number;
  started: number;
  stopsSent: number;
}

export interface LoadOutcome {
  results: EngineResult[];
  timeline: TimelineRow[];
  /** The counters behind the timeline, from a zero sample at t = 0. */
  samples: LoadSample[];
  wallSec: number;
  gwCpuSec: number;
  /** The server's, or a cluster's primaries' summed. */
  redisCpuSec: number;
  /** A cluster's replicas', summed (0 for one server). */
  replicaCpuSec: number;
  /** Each primary's (one entry for one server). */
  redisPerPrimaryCpuSec: number[];
  loadgenCpuSec: number;
  /** Share of the load's wall time in which some task waited for a core (%), where the kernel says. */
  cpuPressurePct?: number;
}

/** Engines connected and waiting: `snapshot` reads their counters so far, `go` runs them to the end. */
interface Engines {
  snapshot(): Counters[];
  go(): Promise<EngineResult[]>;
}

export function sumCounters(list: Counters[]): Counters {
  const out = { ...list[0]! };
  for (const c of list.slice(1)) for (const k of Object.keys(out) as (keyof Counters)[]) out[k] += c[k];
  return out;
}

/** Splits the calls and connections among --workers engines, each with its own call prefix (after `prefix`: one per measured turn) and seed. */
export function splitEngines(
  opts: Options,
  calls: CallSpec[],
  url: string,
  token: string,
  prefix = '',
): EngineConfig[] {
  const a = alertPlan(opts);
  const W = opts.workers;
  return Array.from({ length: W }, (_, w) => {
    // Worker w owns connections w, w+W, …; a call on global connection g = i % conns goes with it.
    const conns = Math.floor(opts.conns / W) + (w < opts.conns % W ? 1 : 0);
    const mine = calls.filter((_, i) => (i % opts.conns) % W === w);
    return {
      mode: opts.mode,
      url,
      token,
      conns,
      calls: mine,
      callPrefix: `${prefix}w${w}.`,
      duration: opts.duration,
      tickEvery: opts.tickEvery,
      refEvery: opts.refEvery,
      quota: opts.quota,
      ...(opts.tariff === '60/6-peak' ? { blocks: [60, 6] as const } : {}),
      ramp: opts.ramp,
      slotMs: opts.slotMs,
      frame: opts.frame,
      window: opts.window,
      setupFrame: 500,
      alertMaxSec: a.maxSec,
      crossings: a.crossings,
      seed: 0x7e55e7a + w,
    };
  });
}

async function engineInThread(cfg: EngineConfig): Promise<Engines> {
  const engine = new Engine(cfg);
  await engine.connect();
  return { snapshot: () => [engine.c], go: async () => [await engine.run()] };
}

/**
 * A worker thread running loadgen.ts. Run from TypeScript sources, the thread
 * registers tsx itself: Node 20 applies `--import tsx` hooks to the main thread only.
 */
function startWorker(cfg: EngineConfig): Worker {
  const entry = LOADGEN_FILE.endsWith('.ts') ? `require(${JSON.stringify(require.resolve('tsx/cjs'))}); ` : '';
  return new Worker(`${entry}require(${JSON.stringify(LOADGEN_FILE)});`, {
    eval: true,
    workerData: { role: 'loadgen', cfg },
  });
}

async function enginesInWorkers(cfgs: EngineConfig[]): Promise<Engines> {
  const latest: Counters[] = [];
  const workers = cfgs.map(startWorker);
  const results: Promise<EngineResult>[] = [];
  const ready = workers.map(
    (w, k) =>
      new Promise<void>((resolve, reject) => {
        results[k] = new Promise<EngineResult>((res, rej) => {
          w.on('message', (m: FromWorker) => {
            if (m.type === 'ready') resolve();
            else if (m.type === 'progress') latest[k] = m.counters;
            else if (m.type === 'result') {
              latest[k] = m.result.counters;
              res(m.result);
            } else if (m.type === 'error') {
              reject(new Error(m.message));
              rej(new Error(m.message));
            }
          });
          w.on('error', (e) => (reject(e), rej(e)));
        });
        results[k].catch(() => undefined);
      }),
  );
  await Promise.all(ready);
  return {
    snapshot: () => latest.filter(Boolean),
    go: async () => {
      for (const w of workers) w.postMessage({ type: 'go' });
      const r = await Promise.all(results);
      await Promise.all(workers.map((w) => w.terminate()));
      return r;
    },
  };
}

type CpuSource = string;

/** Once a second: a timeline row from the engines' counters and the processes' CPU, printed unless --quiet. */
function timelineSampler(
  engines: Engines,
  read: () => CpuReading<CpuSource>,
  gwPid: number,
  redis: RedisPids,
  t0: CpuReading<CpuSource>,
  quiet: boolean,
  allLive?: { calls: number; then: () => void },
): { timeline: TimelineRow[]; samples: LoadSample[]; sample: () => void } {
  const timeline: TimelineRow[] = [];
  const samples: LoadSample[] = [{ t: 0, ticksDone: 0, started: 0, stopsSent: 0 }];
  const cluster = redis.primaries.length > 1 || redis.replicas.length > 0;
  let live = allLive;
  let prev = { cpu: t0, ticks: 0, ticked: 0, starts: 0 };
  const sample = (): void => {
    const snap = engines.snapshot();
    if (snap.length === 0) return;
    const c = sumCounters(snap);
    if (live && c.started >= live.calls && c.stopsSent === 0) {
      live.then();
      live = undefined;
    }
    const cpu = read();
    const dt = (cpu.t - prev.cpu.t) / 1000;
    const pct = cpuPct(prev.cpu, cpu);
    const row: TimelineRow = {
      t: Math.round((cpu.t - t0.t) / 1000),
      ticks: Math.round((c.ticksDone - prev.ticks) / dt),
      ticked: Math.round((c.ticked - prev.ticked) / dt),
      starts: Math.round((c.startsSent - prev.starts) / dt),
      gwCpu: pct.gw ?? 0,
      redisCpu: pct.rd ?? 0,
      ...(cluster ? { redisPerPrimary: perPrimary(redis, pct), replicaCpu: pct.rp ?? 0 } : {}),
      loadgenCpu: pct.lg ?? 0,
      gwRssMb: Math.round(statusKb(gwPid, 'VmRSS') / 1024),
    };
    timeline.push(row);
    samples.push({ t: cpu.t - t0.t, ticksDone: c.ticksDone, started: c.started, stopsSent: c.stopsSent });
    prev = { cpu, ticks: c.ticksDone, ticked: c.ticked, starts: c.startsSent };
    if (!quiet) {
      console.log(
        `  t=${String(row.t).padStart(3)}s  ticks ${String(row.ticks).padStart(7)}/s  ticked ${String(row.ticked).padStart(7)}/s  starts ${String(row.starts).padStart(6)}/s` +
          `  cpu: gateway ${String(row.gwCpu).padStart(3)}%  ${fmtRedisCpu(redis, pct)}  loadgen ${String(row.loadgenCpu).padStart(3)}%  gw rss ${row.gwRssMb} MB`,
      );
    }
  };
  return { timeline, samples, sample };
}

/**
 * Connects the engines, runs them to the end with the timeline going, and
 * measures every process' CPU. `onAllLive` runs at the first timeline second
 * that finds every call started and none stopped.
 */
export async function runLoad(
  cfgs: EngineConfig[],
  gwPid: number,
  redis: RedisPids,
  opts: Options,
  onAllLive?: () => void,
): Promise<LoadOutcome> {
  const engines = cfgs.length === 1 ? await engineInThread(cfgs[0]!) : await enginesInWorkers(cfgs);
  const read = (): CpuReading<CpuSource> =>
    readCpu({ gw: () => cpuSec(gwPid), lg: ownCpuSec, ...redisCpuSources(redis) });
  const cpu0 = read();
  const stall0 = { us: cpuStallUs(), t: cpu0.t };
  const calls = cfgs.reduce((n, c) => n + c.calls.length, 0);
  const allLive = onAllLive && { calls, then: onAllLive };
  const { timeline, samples, sample } = timelineSampler(engines, read, gwPid, redis, cpu0, opts.quiet, allLive);
  const timer = setInterval(sample, 1000);
  const results = await engines.go();
  clearInterval(timer);
  const wallSec = (performance.now() - cpu0.t) / 1000;
  const used = cpuUsed(cpu0, read());
  return {
    results,
    timeline,
    samples,
    wallSec,
    gwCpuSec: used.gw ?? 0,
    redisCpuSec: used.rd ?? 0,
    replicaCpuSec: used.rp ?? 0,
    redisPerPrimaryCpuSec: redis.primaries.map((_, i) => used[`rd${i}`] ?? 0),
    loadgenCpuSec: used.lg ?? 0,
    cpuPressurePct: cpuPressurePct(stall0),
  };
}

export interface MergedResults {
  counters: Counters;
  errors: Record<string, number>;
  lat: Record<HistName, LatencySummary>;
  /** Date.now() of the first tick sent and of the last tick done, over every engine. */
  tickStart: number;
  tickEnd: number;
}

export function mergeResults(results: EngineResult[]): MergedResults {
  const counters = sumCounters(results.map((r) => r.counters));
  const errors: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
  const names: HistName[] = ['start', 'tick', 'tickSteady', 'alert', 'stop', 'lag'];
  const lat = {} as Record<HistName, LatencySummary>;
  for (const n of names) {
    const h = newHist();
    for (const r of results) h.add(decodeHist(r.hist[n]));
    lat[n] = summarize(h);
  }
  const starts = results.map((r) => r.tickStart).filter((t) => t > 0);
  return {
    counters,
    errors,
    lat,
    tickStart: starts.length ? Math.min(...starts) : 0,
    tickEnd: Math.max(...results.map((r) => r.tickEnd)),
  };
}

/** Seconds from the first message of a kind sent to the last answer of that kind, over every engine. */
export function spanSec(results: EngineResult[], kind: 'starts' | 'stops'): number {
  const firsts = results.map((r) => r[kind].first).filter((t) => t > 0);
  const last = Math.max(...results.map((r) => r[kind].last));
  return firsts.length && last > 0 ? Math.max(0.001, (last - Math.min(...firsts)) / 1000) : 0;
}

/** Where calls mode's ticks/s was counted: seconds since the load began, and whether the load was steady there. */
export interface TickWindow {
  fromSec: number;
  toSec: number;
  /** Every call live (started, none stopped) over whole tick intervals; false: the fallback, first tick to last. */
  steady: boolean;
  /** Whole tick intervals in the window (steady only). */
  intervals: number;
  ticks: number;
  perSec: number;
}

/**
 * calls mode: ticks sent per second over a window in which the load is
 * steady, from the first timeline second at which every call's start was
 * answered to the last before any stop was sent, cut to a whole number of
 * tick intervals: each call then sends exactly one tick per interval in it,
 * whatever the phases. Counting every second that had a tick instead
 * overstates the rate when the starts (--ramp) are spread over less than
 * an interval: the ticks then come in bursts of `ramp` seconds, and the
 * seconds between bursts are left out. Without such a window (a run
 * shorter than its ramp plus an interval), the ticks over the seconds from
 * the first tick sent to the last, marked not steady.
 */
export function steadyTickRate(samples: LoadSample[], calls: number, tickEvery: number): TickWindow | undefined {
  const periodMs = tickEvery * 1000;
  const a = samples.findIndex((x) => x.started >= calls);
  let b = -1;
  for (let i = samples.length - 1; i >= 0; i--)
    if (samples[i]!.stopsSent === 0) {
      b = i;
      break;
    }
  // The sampler's seconds drift by a few ms each: allow 10% of an interval short.
  const intervals = a >= 0 && b > a ? Math.floor((samples[b]!.t - samples[a]!.t) / periodMs + 0.1) : 0;
  if (intervals >= 1) {
    const want = samples[a]!.t + intervals * periodMs;
    let end = a + 1;
    for (let i = a + 1; i <= b; i++) if (Math.abs(samples[i]!.t - want) < Math.abs(samples[end]!.t - want)) end = i;
    return windowOf(samples[a]!, samples[end]!, true, intervals);
  }
  const first = samples.findIndex((x) => x.ticksDone > 0);
  if (first < 1) return undefined;
  const total = samples[samples.length - 1]!.ticksDone;
  const last = samples.findIndex((x) => x.ticksDone === total);
  return windowOf(samples[first - 1]!, samples[last]!, false, 0);
}

function windowOf(from: LoadSample, to: LoadSample, steady: boolean, intervals: number): TickWindow {
  const ticks = to.ticksDone - from.ticksDone;
  const sec = (to.t - from.t) / 1000;
  return {
    fromSec: Math.round(from.t / 100) / 10,
    toSec: Math.round(to.t / 100) / 10,
    steady,
    intervals,
    ticks,
    perSec: sec > 0 ? Math.round(ticks / sec) : 0,
  };
}

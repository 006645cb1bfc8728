/** bench:switch's report: the results lines, the gateway's CPU profile, the target, and the JSON line's figures. */
import { fmtLatency } from '../lib/hist';
import type { ProfileSummary } from '../lib/profile';
import { fmtSlowCommands, type SlowCommand } from '../lib/slowlog';
import { fmtInt, round1 } from '../lib/report';
import { fmtMet, TARGETS } from '../lib/targets';
import type { Ceiling } from './ceiling';
import type { LoadOutcome, MergedResults, TickWindow } from './load';
import type { LiveCallMemory } from './memory';
import type { GatewayMetrics } from './metrics';
import type { Options } from './options';

/** What the load phase measured, the gateway stopped. */
export interface LoadPhase {
  load: LoadOutcome;
  merged: MergedResults;
  loadForks: number;
  /** How long the last of them took to fork (ms), when there was one. */
  loadForkMs: number;
  loadDelayedFsyncs: number;
  /** Redis and gateway memory before the first start and with every call live. */
  memory: LiveCallMemory;
  /** Redis' slowest commands during the load (SLOWLOG). */
  slowCommands: SlowCommand[];
  /** Calls started over the seconds from the first start sent to the last `started`. */
  startsPerSec: number;
  /** The gateway's /metrics, or why they could not be read. */
  scraped: GatewayMetrics | string;
  gwPeakRssMb: number;
  /** The gateway's warning and error lines. */
  gwLogs: string[];
}

export interface Throughput {
  ticksPerSec: number;
  peak: number;
  tickWindowSec: number;
  /** calls mode: the window ticksPerSec was counted over. */
  window?: TickWindow;
}

export interface CeilingPhase {
  ceiling?: Ceiling;
  ceilingError?: string;
  ceilingSec: number;
}

export interface SwitchRun {
  opts: Options;
  phase: LoadPhase;
  rate: Throughput;
  ceiling: CeilingPhase;
  profile?: ProfileSummary;
  setupSec: number;
  tStart: number;
}

const pct = (sec: number, wall: number): number => Math.round((sec / wall) * 100);

function printCounts(r: SwitchRun): void {
  const { opts, phase, rate } = r;
  const { merged } = phase;
  const c = merged.counters;
  console.log(
    `  ticks/s          ${fmtInt(rate.ticksPerSec)}  ${opts.mode === 'max' ? `(${fmtInt(c.ticksDone)} ticks answered in ${rate.tickWindowSec.toFixed(1)} s)` : `(${fmtWindow(rate.window, opts.tickEvery)}; peak ${fmtInt(rate.peak)} in one second; ${fmtInt(c.ticksSent)} ticks sent in all)`}`,
  );
  console.log(
    `  calls            ${fmtInt(c.started)} started, ${fmtInt(c.stopped)} stopped, ${fmtInt(c.unfinished)} unfinished, billedSec ≠ last sec on ${fmtInt(c.billingMismatch)}` +
      (opts.tariff === 'flat' ? `, cost ≠ fee + billedSec × rate on ${fmtInt(c.costMismatch)}` : ''),
  );
  console.log(
    `  starts/s         ${fmtInt(r.phase.startsPerSec)}  (first start sent to last started; ${opts.mode === 'max' ? 'every call started at once' : `paced over ${round1(opts.ramp)} s`})`,
  );
  console.log(`  ${fmtLatency('start→started', merged.lat.start)}`);
  console.log(`  ${fmtLatency('tick→ticked', merged.lat.tick)}`);
  if (opts.mode === 'calls')
    console.log(
      `  ${fmtLatency('  after starts', merged.lat.tickSteady)}   (ticks sent once every start was answered)`,
    );
  console.log(`  ${fmtLatency('tick→alert', merged.lat.alert)}`);
  console.log(`  ${fmtLatency('stop→stopped', merged.lat.stop)}`);
  if (opts.mode === 'calls')
    console.log(`  ${fmtLatency('send lag', merged.lat.lag)}   (load generator behind its schedule)`);
  console.log(
    `  alerts           ${fmtInt(c.alerts)} received (${fmtInt(c.alertsUnmatched)} unmatched), cut-offs ${fmtInt(c.cutoffs)}, start answered late ${fmtInt(c.startPending)}×`,
  );
  const errs = Object.entries(merged.errors).sort((x, y) => y[1] - x[1]);
  console.log(`  errors           ${errs.length ? errs.map(([k, v]) => `${k}=${v}`).join(' ') : 'none'}`);
}

/** calls mode: the window ticks/s was counted over, in words. */
function fmtWindow(w: TickWindow | undefined, tickEvery: number): string {
  if (!w) return 'no tick sent';
  const span = `${fmtInt(w.ticks)} ticks sent from t=${w.fromSec} to t=${w.toSec} s`;
  return w.steady
    ? `${span}: ${w.intervals} whole tick interval${w.intervals > 1 ? 's' : ''} of ${tickEvery} s, every call live and none stopped`
    : `${span}, first tick to last: NOT steady (no whole tick interval of ${tickEvery} s with every call live and none stopped; lengthen --duration)`;
}

function printMemory(m: LiveCallMemory): void {
  if (!m.live) {
    console.log('  memory           not measured: the calls were never all live at once');
    return;
  }
  const mb = (b: number): string => `${(b / 1048576).toFixed(0)} MB`;
  console.log(
    `  memory per call  Redis ${fmtInt(m.redisBytesPerCall!)} B used_memory (${mb(m.before.redisUsed)} → ${mb(m.live.redisUsed)}), ${fmtInt(m.redisRssBytesPerCall!)} B RSS;` +
      ` gateway ${fmtInt(m.gwRssBytesPerCall!)} B RSS (${mb(m.before.gwRss)} → ${mb(m.live.gwRss)}); ${fmtInt(m.calls)} calls live`,
  );
}

function printGateway(phase: LoadPhase): void {
  const { scraped, gwLogs, load } = phase;
  if (typeof scraped === 'string') console.log(`  gateway metrics  unavailable: ${scraped}`);
  else {
    console.log(
      `  gateway ticks    ${Object.entries(scraped.tickOutcomes)
        .map(([k, v]) => `${k}=${v}`)
        .join(
          ' ',
        )}; ${fmtInt(scraped.tickScriptCalls)} call_tick scripts, ${scraped.ticksPerScript} ticks/script, ${scraped.tickScriptAvgMs} ms avg round trip`,
    );
    const ge = Object.entries(scraped.errorOutcomes);
    if (ge.length) console.log(`  gateway errors   ${ge.map(([k, v]) => `${k}=${v}`).join(' ')}`);
  }
  if (gwLogs.length) console.log(`  gateway warnings ${gwLogs.length}, last: ${gwLogs[gwLogs.length - 1]}`);
  console.log(
    `  gateway          peak RSS ${phase.gwPeakRssMb} MB, CPU ${load.gwCpuSec.toFixed(1)} s = ${pct(load.gwCpuSec, load.wallSec)}% of one core over ${load.wallSec.toFixed(1)} s` +
      `; redis ${pct(load.redisCpuSec, load.wallSec)}% (${phase.loadForks} AOF rewrite/RDB forks${phase.loadForks ? `, the last one ${phase.loadForkMs} ms to fork` : ''}, ${phase.loadDelayedFsyncs} delayed AOF fsyncs); load generator ${pct(load.loadgenCpuSec, load.wallSec)}%`,
  );
  console.log(`  redis slowest    ${fmtSlowCommands(phase.slowCommands)}`);
  if (load.cpuPressurePct !== undefined)
    console.log(
      `  machine          CPU pressure ${load.cpuPressurePct}%: the share of the load's time in which some task waited for a core (/proc/pressure/cpu)`,
    );
}

/** gateway ticks/s over the ceiling, one tick per FCALL and batched. */
function ratios(r: SwitchRun): { ratio?: number; ratioBatched?: number } {
  const { ceiling } = r.ceiling;
  const t = r.rate.ticksPerSec;
  return {
    ratio: ceiling ? Math.round((t / ceiling.debitPathPerSec) * 1000) / 1000 : undefined,
    ratioBatched: ceiling?.batched ? Math.round((t / ceiling.batched.ticksPerSec) * 1000) / 1000 : undefined,
  };
}

function printCeiling(r: SwitchRun): void {
  const { ceiling } = r.ceiling;
  const { ratio, ratioBatched } = ratios(r);
  if (ceiling) {
    console.log(
      `  ceiling          ${fmtInt(ceiling.debitPathPerSec)} ticks/s (one tick per FCALL, debit path); gateway/ceiling = ${ratio}`,
    );
    if (ceiling.batched)
      console.log(
        `  ceiling batched  ${fmtInt(ceiling.batched.ticksPerSec)} ticks/s (${ceiling.batched.batch} ticks per FCALL); gateway/batched = ${ratioBatched}`,
      );
    if (ceiling.reference)
      console.log(
        `  tick cost        call_tick's Redis time per tick = ${ceiling.reference.tickCostRatio} × a reference debit's, once per FCALL (target ${TARGETS.tickCostRatio.text}); ${ceiling.reference.tickCostRatioBatched} × batched alike; a steady tick ${ceiling.reference.steadyTickCostRatio} ×`,
      );
  }
}

function printProfile(profile: ProfileSummary): void {
  console.log(
    `\ngateway CPU profile ${profile.file}: ${fmtInt(profile.busyMs)} ms busy, ${fmtInt(profile.idleMs)} ms idle`,
  );
  console.log('  self time by module:');
  for (const m of profile.byModule.slice(0, 12))
    console.log(`    ${String(m.pct).padStart(5)}%  ${fmtInt(m.selfMs).padStart(7)} ms  ${m.module}`);
  console.log('  hottest functions (self time):');
  for (const f of profile.topFunctions.slice(0, 20))
    console.log(`    ${String(f.pct).padStart(5)}%  ${fmtInt(f.selfMs).padStart(7)} ms  ${f.name}  ${f.where}`);
}

/**
 * --mode max: ticks/s ≥ 1.0 × the batched ceiling of the same run and
 * tick→ticked p99 ≤ 10 ms, judged by the targets `npm run bench` uses
 * (bench/lib/targets.ts); undefined in calls mode, or without a batched ceiling.
 */
function targetMet(r: SwitchRun): boolean | undefined {
  if (r.opts.mode !== 'max') return undefined;
  const tick = r.phase.merged.lat.tick;
  const rate = TARGETS.maxTicksPerCeiling.met(ratios(r).ratioBatched);
  const p99 = TARGETS.maxTickP99Ms.met(tick.count > 0 ? tick.p99 : undefined);
  return rate === undefined || p99 === undefined ? undefined : rate && p99;
}

/** --tick-every: every call started, held to its stop and billed exactly, tick→ticked p99 within target, no error. */
function holdTargetMet(r: SwitchRun): boolean {
  const { counters: c, errors, lat } = r.phase.merged;
  const n = r.opts.calls;
  return (
    c.started === n &&
    c.stopped === n &&
    c.unfinished === 0 &&
    c.billingMismatch === 0 &&
    c.costMismatch === 0 &&
    Object.keys(errors).length === 0 &&
    lat.tick.count > 0 &&
    TARGETS.holdTickP99Ms.met(lat.tick.p99) === true
  );
}

function printTarget(r: SwitchRun): void {
  const { opts, rate } = r;
  const tick = r.phase.merged.lat.tick;
  if (opts.tickEvery > 1) {
    console.log(
      `\ntarget (every call held and billed exactly, tick→ticked p99 ${TARGETS.holdTickP99Ms.text}, no error): ${holdTargetMet(r) ? 'met' : 'NOT met'}` +
        ` — ${fmtInt(opts.calls)} calls, a tick every ${opts.tickEvery} s, p99 ${tick.p99.toFixed(2)} ms`,
    );
    return;
  }
  if (opts.mode !== 'max') return;
  const { ratioBatched } = ratios(r);
  const met = targetMet(r);
  console.log(
    `\ntarget (ticks/s ÷ batched ceiling ${TARGETS.maxTicksPerCeiling.text} and tick→ticked p99 ${TARGETS.maxTickP99Ms.text}, as \`npm run bench\` judges): ${fmtMet(met)}` +
      ` — ${fmtInt(rate.ticksPerSec)} ticks/s = ${ratioBatched ?? '-'} × the batched ceiling` +
      ` (${fmtMet(TARGETS.maxTicksPerCeiling.met(ratioBatched))}), p99 ${tick.p99.toFixed(2)} ms (${fmtMet(TARGETS.maxTickP99Ms.met(tick.count > 0 ? tick.p99 : undefined))})` +
      (ratioBatched === undefined ? '; no batched ceiling measured (--no-ceiling or --rb-batch 0): not judged' : ''),
  );
  const cost = r.ceiling.ceiling?.reference?.tickCostRatio;
  console.log(
    `  also             call_tick's Redis time ÷ reference debit's ${cost ?? '-'} (${TARGETS.tickCostRatio.text}: ${fmtMet(TARGETS.tickCostRatio.met(cost))}); ` +
      `starts/s ${fmtInt(r.phase.startsPerSec)} (${TARGETS.startsAtOncePerSec.text}: ${fmtMet(TARGETS.startsAtOncePerSec.met(r.phase.startsPerSec))})`,
  );
}

function figures(r: SwitchRun, totalSec: number): object {
  const { opts, phase, rate } = r;
  const { load, merged } = phase;
  const { ceiling, ceilingError, ceilingSec } = r.ceiling;
  const { profile } = r;
  return {
    bench: 'switch',
    mode: opts.mode,
    params: {
      calls: opts.calls,
      conns: opts.conns,
      duration: opts.duration,
      tickEvery: opts.tickEvery,
      refEvery: opts.refEvery,
      quota: opts.quota,
      tariff: opts.tariff,
      alertFrac: opts.alertFrac,
      ramp: opts.ramp,
      frame: opts.frame,
      window: opts.window,
      workers: opts.workers,
      gwEnv: opts.gwEnv,
      redisConfig: opts.redisConfig,
      gwNodeArgs: opts.gwNodeArgs,
    },
    ticksPerSec: rate.ticksPerSec,
    tickWindow: rate.window,
    startsPerSec: phase.startsPerSec,
    memoryPerLiveCall: phase.memory,
    ticksPeakPerSec: rate.peak,
    ticksSent: merged.counters.ticksSent,
    ticksAnswered: merged.counters.ticked,
    latencyMs: merged.lat,
    counters: merged.counters,
    errors: merged.errors,
    gateway: {
      peakRssMb: phase.gwPeakRssMb,
      cpuSec: round1(load.gwCpuSec),
      cpuPct: pct(load.gwCpuSec, load.wallSec),
      metrics: typeof phase.scraped === 'string' ? { error: phase.scraped } : phase.scraped,
    },
    redisCpuPct: pct(load.redisCpuSec, load.wallSec),
    redisSlowest: phase.slowCommands,
    redisForksDuringLoad: phase.loadForks,
    redisLastForkMs: phase.loadForkMs,
    redisDelayedFsyncsDuringLoad: phase.loadDelayedFsyncs,
    loadgenCpuPct: pct(load.loadgenCpuSec, load.wallSec),
    cpuPressurePct: load.cpuPressurePct,
    wallSec: round1(load.wallSec),
    timeline: load.timeline,
    ceiling: ceiling ?? (ceilingError ? { error: ceilingError } : undefined),
    ...ratios(r),
    targetMet: targetMet(r),
    holdTargetMet: opts.tickEvery > 1 ? holdTargetMet(r) : undefined,
    timeSec: {
      setup: round1(r.setupSec),
      load: round1(load.wallSec),
      ceiling: round1(ceilingSec),
      total: round1(totalSec),
    },
    profile: profile
      ? { file: profile.file, byModule: profile.byModule, topFunctions: profile.topFunctions.slice(0, 15) }
      : undefined,
  };
}

/** Prints the results; returns the figures of the JSON line. */
export function report(r: SwitchRun): object {
  console.log('\nresults');
  printCounts(r);
  printMemory(r.phase.memory);
  printGateway(r.phase);
  printCeiling(r);
  if (r.profile) printProfile(r.profile);
  printTarget(r);
  const totalSec = (performance.now() - r.tStart) / 1000;
  console.log(
    `time: setup ${r.setupSec.toFixed(1)} s, load ${r.phase.load.wallSec.toFixed(1)} s, ceiling ${r.ceiling.ceilingSec.toFixed(1)} s, total ${totalSec.toFixed(1)} s`,
  );
  return figures(r, totalSec);
}

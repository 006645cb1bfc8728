/**
 * `npm run bench:kamailio`: prepaid calls through a real Kamailio
 * (deploy/kamailio/kamailio.cfg), sipp caller → Kamailio → sipp callee, metered
 * by the connector (`tessera kamailio`, built) against a gateway child and the
 * bench's own Redis; everything on this machine. Each workload also runs
 * through the same configuration with metering switched off (-A METERING_OFF),
 * in the same run, as the baseline Tessera's figures are a ratio to.
 *
 * Modes:
 *   rate         each rate of --rates for --step-sec: calls without failure, setup
 *                latency (INVITE to 200 OK at the caller) p50/p99, CPU of each
 *                process, and (metered) calls billed exactly by the started-second rule
 *   cutoff       --cutoff-calls calls whose balance runs out after 2 s, under
 *                --bg-rate calls/s of background load (1,000, as the target asks): BYE minus the moment the
 *                balance ran out, p50/p99/min/max (never early is the target)
 *   concurrency  --hold-rate calls/s that talk --hold-sec: the most dialogs held at once
 */
import { randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { createToken, putPlans, putProducts } from '../src/catalog/store';
import type { TalkProduct } from '../src/catalog/schema';
import { billedSeconds } from '../src/kamailio/billing';
import { sipCallIdOf } from '../src/kamailio/call-id';
import { exportRecords } from '../src/ledger/export';
import { cpuSec, cpuSecTree } from './lib/cpu';
import { intFlag, parseFlags } from './lib/flags';
import { printJsonLine, round1 } from './lib/report';
import { startGatewayChild, type GatewayChild } from './lib/gateway';
import { children, cleanUpOnExit, makeTmp, removeTmp, ROOT, runMain, sleep, stopChild, watchdog } from './lib/process';
import { mintSold, startBenchRedis, type BenchRedis } from './lib/redis';
import {
  connectorsAttached,
  runUac,
  startKamailio,
  startUas,
  stopAll,
  type KamailioChild,
  type SippCall,
  type Uas,
} from '../test/kamailio/stack';

const USAGE = `npm run bench:kamailio -- [--mode all|rate|cutoff|concurrency] [--rates 1000,2000,3000,4000,5000,6000,7000]
  [--step-sec 6] [--talk-ms 1500] [--cutoff-calls 60] [--bg-rate 1000] [--hold-rate 500] [--hold-sec 16]
  [--children 4] [--gw-node-arg ARG (repeatable; e.g. --max-semi-space-size=32)] [--keep]

--keep keeps the temp dir (Redis data, sipp's and Kamailio's files), as every benchmark's
--keep does; --keep-tmp is its old name, still accepted.
PROFILE_DIR=DIR runs the gateway and each connector under --cpu-prof, their profiles in DIR.
`;

const DEST = '33612345678';
/** Rate plan "flat": 100 micro-units a second anywhere. */
const RATE = 100;
const BULK: TalkProduct = {
  name: 'bench-bulk',
  kind: 'talk',
  currency: 'EUR',
  face: 1e12,
  price: 1,
  plan: 'flat',
  thresholds: [],
  expiryDays: 365,
  maxCalls: 100,
};
/** Two seconds of credit. */
const CUT_SEC = 2;
const SHORT: TalkProduct = { ...BULK, name: 'bench-2s', face: CUT_SEC * RATE, maxCalls: 1 };

interface Stack {
  br: BenchRedis;
  gw: GatewayChild;
  uas: Uas;
  tok: string;
  dir: string;
  children: number;
}

/** PROFILE_DIR=DIR: the gateway and each connector run under --cpu-prof, their profiles written there. */
const profileArgs = (name: string): string[] =>
  process.env.PROFILE_DIR ? ['--cpu-prof', '--cpu-prof-dir', join(process.env.PROFILE_DIR, name)] : [];

interface Side {
  k: KamailioChild;
  connector?: ChildProcess;
}

const pct = (xs: number[], p: number): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
};
const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '-');

async function startSide(s: Stack, metered: boolean): Promise<Side> {
  const k = await startKamailio({
    dir: s.dir,
    pstnPort: s.uas.port,
    shmMb: 1024,
    children: s.children,
    defines: metered ? [] : ['METERING_OFF'],
  });
  watchdog(-k.proc.pid!);
  if (!metered) return { k };
  const connector = spawn(
    process.execPath,
    [
      ...profileArgs('connector'),
      join(ROOT, 'dist', 'src', 'cli', 'main.js'),
      'kamailio',
      '--evapi',
      `127.0.0.1:${k.evapiPort}`,
      '--rpc',
      k.rpcUrl,
      '--gateway',
      `ws://127.0.0.1:${s.gw.port}/v1/switch`,
      '--token',
      s.tok,
    ],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, LOG_LEVEL: 'warn' } },
  );
  children.add(connector);
  watchdog(connector.pid);
  const deadline = Date.now() + 20_000;
  while ((await connectorsAttached(k).catch(() => 0)) < 1) {
    if (Date.now() > deadline) throw new Error('the connector did not attach to Kamailio');
    await sleep(100);
  }
  return { k, connector };
}

async function stopSide(side: Side): Promise<void> {
  if (side.connector && side.connector.exitCode === null) {
    side.connector.kill('SIGTERM');
    await new Promise((r) => side.connector!.once('exit', r));
  }
  await side.k.stop();
}

/** CPU seconds of every process of the run, sampled until stopped (sipp exits before it can be read at the end). */
function cpuSampler(
  pids: Record<string, () => number | undefined>,
  tree: Set<string>,
): { stop(): Record<string, number> } {
  const first: Record<string, number> = {};
  const last: Record<string, number> = {};
  const read = (): void => {
    for (const [name, pid] of Object.entries(pids)) {
      const p = pid();
      if (!p) continue;
      const v = tree.has(name) ? cpuSecTree(p) : cpuSec(p);
      if (v > 0) {
        first[name] ??= v;
        last[name] = v;
      }
    }
  };
  read();
  const t = setInterval(read, 250);
  const t0 = performance.now();
  return {
    stop() {
      clearInterval(t);
      read();
      const dt = (performance.now() - t0) / 1000;
      const out: Record<string, number> = {};
      for (const k of Object.keys(last)) out[k] = Math.round(((last[k]! - (first[k] ?? 0)) / dt) * 100);
      return out;
    },
  };
}

async function records(s: Stack, callIds: Set<string>, want: number): Promise<Map<string, Record<string, string>>> {
  const found = new Map<string, Record<string, string>>();
  const deadline = Date.now() + 30_000;
  while (found.size < want && Date.now() < deadline) {
    await exportRecords(s.br.ctx, 'calls', 'ndjson', (text) => {
      for (const line of text.split('\n')) {
        if (!line) continue;
        const r = JSON.parse(line) as Record<string, string>;
        const ci = sipCallIdOf(r.call!);
        if (ci !== undefined && callIds.has(ci)) found.set(ci, r);
      }
    });
    if (found.size < want) await sleep(500);
  }
  return found;
}

/** The most calls up at the same moment, from each call's answer and hang-up at the caller. */
function heldAtOnce(ok: SippCall[]): number {
  const edges = ok.flatMap((c) => [
    [c.answerUs!, 1],
    [c.hangupUs!, -1],
  ]);
  edges.sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!);
  let up = 0;
  let most = 0;
  for (const [, d] of edges) most = Math.max(most, (up += d!));
  return most;
}

/** Calls whose billed seconds are sipp's answered duration by the started-second rule; the others, over and under. */
function exactness(ok: SippCall[], recs: Map<string, Record<string, string>>): string {
  let exact = 0;
  let over = 0;
  let under = 0;
  let missing = 0;
  for (const c of ok) {
    const rec = recs.get(c.ci);
    if (!rec) {
      missing++;
      continue;
    }
    const want = billedSeconds(c.answerUs!, c.hangupUs!);
    const got = Number(rec.sec);
    if (got === want) exact++;
    else if (got > want) over++;
    else under++;
  }
  return `${exact}/${ok.length}${over + under + missing ? ` (over ${over}, under ${under}, no record ${missing})` : ''}`;
}

interface RateResult {
  rate: number;
  calls: number;
  failed: number;
  failures: string;
  setupP50: number;
  setupP99: number;
  cpu: Record<string, number>;
  exact?: string;
}

async function rateStep(
  s: Stack,
  side: Side,
  rows: [string, string][],
  rate: number,
  stepSec: number,
  talkMs: number,
): Promise<RateResult> {
  const calls = rate * stepSec;
  let uac: ChildProcess | undefined;
  const cpu = cpuSampler(
    {
      kamailio: () => side.k.proc.pid,
      connector: () => side.connector?.pid,
      gateway: () => s.gw.proc.pid,
      redis: () => s.br.pid,
      'sipp-uac': () => uac?.pid,
      'sipp-uas': () => s.uas.proc.pid,
    },
    new Set(['kamailio']),
  );
  const run = await runUac({
    dir: s.dir,
    kamailio: side.k,
    scenario: 'uac-hangup',
    rows,
    rate,
    calls,
    talkMs,
    timeoutSec: stepSec + 60,
    onStart: (p) => (uac = p),
  });
  const usage = cpu.stop();
  const ok = [...run.calls.values()].filter((c) => c.answerUs && c.hangupUs && !c.refused);
  const setup = ok.map((c) => (c.answerUs! - c.inviteUs!) / 1000);
  // Why calls failed: a SIP code, never answered, or not logged at all.
  const why = new Map<string, number>();
  for (const c of run.calls.values()) {
    const k = c.refused ? String(c.refused) : !c.answerUs ? 'no-answer' : !c.hangupUs ? 'no-hangup' : '';
    if (k) why.set(k, (why.get(k) ?? 0) + 1);
  }
  if (run.calls.size < calls) why.set('unlogged', calls - run.calls.size);
  const result: RateResult = {
    rate,
    calls,
    // Every call not answered and hung up normally: sipp counts a refusal its scenario
    // expects (the 503 of an admission timeout) as a successful call.
    failed: calls - ok.length,
    failures: [...why].map(([k, n]) => `${k} ${n}`).join(', '),
    setupP50: pct(setup, 50),
    setupP99: pct(setup, 99),
    cpu: usage,
  };
  if (side.connector) {
    const recs = await records(s, new Set(ok.map((c) => c.ci)), ok.length);
    result.exact = exactness(ok, recs);
  }
  return result;
}

const printRate = (label: string, r: RateResult): void =>
  console.log(
    `${label.padEnd(9)} ${String(r.rate).padStart(5)}/s ${String(r.calls).padStart(6)} calls ${String(r.failed).padStart(5)} failed${r.failures ? ` (${r.failures})` : ''}  setup p50 ${f1(r.setupP50).padStart(6)} ms p99 ${f1(r.setupP99).padStart(7)} ms` +
      `  cpu% ${Object.entries(r.cpu)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}${r.exact ? `  billed exactly ${r.exact}` : ''}`,
  );

/** The rate mode's figures: every step, and the highest rate each side passed without a failed call. */
interface RateFigures {
  steps: (RateResult & { metered: boolean })[];
  best: { plain: number; metered: number };
}

async function rateMode(
  s: Stack,
  rows: [string, string][],
  rates: number[],
  stepSec: number,
  talkMs: number,
): Promise<RateFigures> {
  console.log(`\n== rate: ${stepSec} s a step, calls talk ${talkMs} ms`);
  const best = { plain: 0, metered: 0 };
  const plain = new Map<number, RateResult>();
  const steps: RateFigures['steps'] = [];
  for (const metered of [false, true]) {
    const side = await startSide(s, metered);
    for (const rate of rates) {
      const r = await rateStep(s, side, rows, rate, stepSec, talkMs);
      steps.push({ metered, ...r });
      printRate(metered ? 'metered' : 'plain', r);
      if (metered) printRatio(r, plain.get(rate)!);
      else plain.set(rate, r);
      if (r.failed === 0) best[metered ? 'metered' : 'plain'] = Math.max(best[metered ? 'metered' : 'plain'], rate);
      await sleep(talkMs + 1000);
    }
    await stopSide(side);
  }
  console.log(
    `highest rate with zero failed calls: plain ${best.plain}/s, metered ${best.metered}/s (ratio ${best.plain ? (best.metered / best.plain).toFixed(2) : '-'}${best.plain === Math.max(...rates) ? `; plain passed the highest rate tried: its own limit is higher, and the ratio may be lower` : ''})`,
  );
  return { steps, best };
}

const times = (a: number, b: number): string => (b > 0 && Number.isFinite(a / b) ? `${(a / b).toFixed(2)}×` : '-');

/** A metered step as a ratio to the plain step of the same rate: calls completed, setup latency, Kamailio's CPU. */
/** CPU µs per call of the step's rate from a process's % of a core. */
const usPerCall = (pct: number | undefined, rate: number): number => Math.round(((pct ?? 0) / 100) * (1e6 / rate));

/**
 * A metered step as a ratio to the plain step of the same rate (calls completed, setup latency,
 * Kamailio's CPU), and what metering costs a call in CPU: its own processes, and Kamailio's extra.
 */
const printRatio = (m: RateResult, p: RateResult): void => {
  console.log(
    `  ÷ plain  calls completed ${times(m.calls - m.failed, p.calls - p.failed)}, setup p50 ${times(m.setupP50, p.setupP50)} p99 ${times(m.setupP99, p.setupP99)}, ` +
      `Kamailio CPU ${times(m.cpu.kamailio ?? NaN, p.cpu.kamailio ?? NaN)}`,
  );
  const us = (name: string): number => usPerCall(m.cpu[name], m.rate);
  const own = us('connector') + us('gateway') + us('redis');
  const extra = us('kamailio') - usPerCall(p.cpu.kamailio, p.rate);
  console.log(
    `  metering CPU per call: connector ${us('connector')}, gateway ${us('gateway')}, Redis ${us('redis')} µs (${own} in all), ` +
      `Kamailio ${extra >= 0 ? '+' : ''}${extra} µs over plain; SIP alone (plain Kamailio and both sipps) ${usPerCall((p.cpu.kamailio ?? 0) + (p.cpu['sipp-uac'] ?? 0) + (p.cpu['sipp-uas'] ?? 0), p.rate)} µs`,
  );
};

/** The cut-off mode's figures: BYE minus the moment the balance ran out (ms), the calls billed exactly, the background. */
interface CutoffFigures {
  errorMs: { p50: number; p99: number; min: number; max: number };
  calls: number;
  billedExactly: number;
  background?: { completed: number; offered: number };
}

async function cutoffMode(s: Stack, bulk: [string, string][], n: number, bgRate: number): Promise<CutoffFigures> {
  console.log(
    `\n== cut-off: ${n} calls with ${CUT_SEC} s of credit, ${bgRate} calls/s in the background (metered only: without metering nothing is cut)`,
  );
  const short = (await mintSold(s.br.ctx, SHORT, n, { price: 1, ref: 'bench' })).map((id): [string, string] => [
    `${id}*${DEST}`,
    'X-Bench: cutoff',
  ]);
  const side = await startSide(s, true);
  const cutRate = 20;
  const bgSec = Math.ceil(n / cutRate) + CUT_SEC + 2;
  const [cut, bg] = await Promise.all([
    runUac({ dir: s.dir, kamailio: side.k, scenario: 'uac-wait', rows: short, rate: cutRate, timeoutSec: 60 }),
    bgRate > 0
      ? runUac({
          dir: s.dir,
          kamailio: side.k,
          scenario: 'uac-hangup',
          rows: bulk,
          rate: bgRate,
          calls: bgRate * bgSec,
          talkMs: 1500,
          timeoutSec: 90,
        })
      : undefined,
  ]);
  const answered = [...cut.calls.values()].filter(
    (c): c is SippCall & { answerUs: number; byeUs: number } => !!c.answerUs && !!c.byeUs,
  );
  const err = answered.map((c) => (c.byeUs - c.answerUs) / 1000 - CUT_SEC * 1000);
  const recs = await records(s, new Set(answered.map((c) => c.ci)), answered.length);
  const billed = answered.filter((c) => Number(recs.get(c.ci)?.sec) === CUT_SEC).length;
  console.log(
    `cut-off error (BYE at the caller − balance out): p50 ${f1(pct(err, 50))} ms p99 ${f1(pct(err, 99))} ms min ${f1(Math.min(...err))} ms max ${f1(Math.max(...err))} ms over ${err.length} calls; ` +
      `billed ${CUT_SEC} s: ${billed}/${answered.length}; background ${bg ? `${[...bg.calls.values()].filter((c) => c.hangupUs).length}/${bgRate * bgSec} calls completed` : 'none'}`,
  );
  await stopSide(side);
  return {
    errorMs: {
      p50: round1(pct(err, 50)),
      p99: round1(pct(err, 99)),
      min: round1(Math.min(...err)),
      max: round1(Math.max(...err)),
    },
    calls: answered.length,
    billedExactly: billed,
    background: bg && {
      completed: [...bg.calls.values()].filter((c) => c.hangupUs).length,
      offered: bgRate * bgSec,
    },
  };
}

/** The concurrency mode's figures: answered calls held at once, per side, and the calls that failed. */
interface ConcurrencyFigures {
  held: { plain: number; metered: number };
  failed: { plain: number; metered: number };
  meteredDialogsPeak: number;
}

async function concurrencyMode(
  s: Stack,
  rows: [string, string][],
  rate: number,
  holdSec: number,
): Promise<ConcurrencyFigures> {
  console.log(`\n== concurrency: ${rate} calls/s talking ${holdSec} s`);
  const held = { plain: 0, metered: 0 };
  const failed = { plain: 0, metered: 0 };
  let meteredDialogsPeak = 0;
  for (const metered of [false, true]) {
    const side = await startSide(s, metered);
    let peak = 0;
    const poll = setInterval(() => {
      side.k
        .rpc('dlg.stats_active')
        .then((r: { result?: { all?: number } }) => (peak = Math.max(peak, Number(r.result?.all ?? 0))))
        .catch(() => undefined);
    }, 250);
    const calls = rate * holdSec;
    const run = await runUac({
      dir: s.dir,
      kamailio: side.k,
      scenario: 'uac-hangup',
      rows,
      rate,
      calls,
      talkMs: holdSec * 1000,
      timeoutSec: holdSec * 3 + 60,
    });
    clearInterval(poll);
    const ok = [...run.calls.values()].filter((c) => c.answerUs && c.hangupUs && !c.refused);
    let exact = '';
    if (metered) {
      const recs = await records(s, new Set(ok.map((c) => c.ci)), ok.length);
      exact = `, billed exactly ${exactness(ok, recs)}`;
    }
    held[metered ? 'metered' : 'plain'] = heldAtOnce(ok);
    failed[metered ? 'metered' : 'plain'] = calls - ok.length;
    if (metered) meteredDialogsPeak = peak;
    console.log(
      `${(metered ? 'metered' : 'plain').padEnd(9)} held at most ${heldAtOnce(ok)} answered calls at once (sipp)` +
        `${metered ? `, ${peak} dialogs (Kamailio)` : ''}; ${calls - ok.length} of ${calls} calls failed${exact}`,
    );
    await stopSide(side);
  }
  console.log(`  ÷ plain  held at once ${times(held.metered, held.plain)}`);
  return { held, failed, meteredDialogsPeak };
}

const MODES = ['all', 'rate', 'cutoff', 'concurrency'];

/** The command line, checked: a mistyped mode or number fails here rather than measuring nothing or NaN. */
function options(argv: string[]) {
  const v = parseFlags(
    argv,
    {
      mode: { type: 'string', default: 'all' },
      rates: { type: 'string', default: '1000,2000,3000,4000,5000,6000,7000' },
      'step-sec': { type: 'string', default: '6' },
      'talk-ms': { type: 'string', default: '1500' },
      'cutoff-calls': { type: 'string', default: '60' },
      'bg-rate': { type: 'string', default: '1000' },
      'hold-rate': { type: 'string', default: '500' },
      'hold-sec': { type: 'string', default: '16' },
      children: { type: 'string', default: '4' },
      'gw-node-arg': { type: 'string', multiple: true, default: [] },
      keep: { type: 'boolean', default: false },
      'keep-tmp': { type: 'boolean', default: false },
    },
    USAGE,
  );
  if (!MODES.includes(v.mode)) throw new Error(`--mode: one of ${MODES.join(', ')}, got ${v.mode}`);
  return {
    mode: v.mode,
    rates: v.rates.split(',').map((r) => intFlag('rates', r, 1)),
    stepSec: intFlag('step-sec', v['step-sec'], 1),
    talkMs: intFlag('talk-ms', v['talk-ms'], 1),
    cutoffCalls: intFlag('cutoff-calls', v['cutoff-calls'], 1),
    bgRate: intFlag('bg-rate', v['bg-rate'], 0),
    holdRate: intFlag('hold-rate', v['hold-rate'], 1),
    holdSec: intFlag('hold-sec', v['hold-sec'], 1),
    children: intFlag('children', v.children, 1),
    gwNodeArgs: v['gw-node-arg'] ?? [],
    keep: (v.keep ?? false) || (v['keep-tmp'] ?? false),
  };
}

async function main(): Promise<void> {
  const o = options(process.argv.slice(2));
  cleanUpOnExit();
  process.on('exit', () => void stopAll());
  const dir = makeTmp('tessera-bench-kamailio-', o.keep);
  const secret = randomBytes(32).toString('hex');
  const br = await startBenchRedis({ TESSERA_SECRET: secret, DATA_DIR: dir });
  await putPlans(br.ctx.redis, [{ name: 'flat', rates: [{ prefix: '', rate: RATE, fee: 0 }] }]);
  await putProducts(br.ctx.redis, [BULK, SHORT]);
  const tok = (await createToken(br.ctx.redis, { name: 'bench-kamailio', role: 'switch' })).token;
  const rows = (await mintSold(br.ctx, BULK, 256, { price: 1, ref: 'bench' })).map((id): [string, string] => [
    `${id}*${DEST}`,
    'X-Bench: rate',
  ]);
  // No sales here: a card company address that is never called lets the gateway start.
  const gw = await startGatewayChild({
    redisUrl: br.redis.url,
    dataDir: dir,
    secret,
    env: { PROVIDER_URL: 'http://127.0.0.1:9' },
    nodeArgs: [...o.gwNodeArgs, ...profileArgs('gateway')],
  });
  const uas = await startUas(dir);
  watchdog(uas.proc.pid);
  const s: Stack = { br, gw, uas, tok, dir, children: o.children };
  console.log(
    `kamailio ${s.children} SIP workers; gateway :${gw.port}; sipp callee :${uas.port}; ${new Date().toISOString()}; ` +
      `${cpus().length} cores, load average ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')} (other processes compete for the same cores)`,
  );
  const { mode } = o;
  const rate = mode === 'all' || mode === 'rate' ? await rateMode(s, rows, o.rates, o.stepSec, o.talkMs) : undefined;
  const cutoff = mode === 'all' || mode === 'cutoff' ? await cutoffMode(s, rows, o.cutoffCalls, o.bgRate) : undefined;
  const concurrency =
    mode === 'all' || mode === 'concurrency' ? await concurrencyMode(s, rows, o.holdRate, o.holdSec) : undefined;
  await stopAll();
  await stopChild(gw.proc);
  await br.stop();
  removeTmp();
  const { rates, stepSec, talkMs, cutoffCalls, bgRate, holdRate, holdSec, children } = o;
  printJsonLine({
    bench: 'kamailio',
    mode,
    params: { rates, stepSec, talkMs, cutoffCalls, bgRate, holdRate, holdSec, children },
    rate,
    cutoff,
    concurrency,
  });
}

runMain(main);

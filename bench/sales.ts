/**
 * bench/sales.ts — purchase benchmark: `npm run bench:sales [-- flags]`.
 *
 * Sets everything up from nothing: its own redis-server (AOF, appendfsync
 * everysec, as in production) in a temp dir, a talk product with N minted IDs
 * in inventory, a sales token; the sandbox card company as a child process
 * (`tessera sandbox-provider`, the same command operators run) with one bench
 * member whose credit never runs out; the gateway as another child process
 * (the compiled dist/src/main.js, PROVIDER_URL pointing at the sandbox).
 * Then autocannon drives POST /v1/purchases over keep-alive connections, a
 * fresh Idempotency-Key on every request, for --duration seconds: every 200
 * is a real purchase (reserve, authorize, capture, scrypt of the buyer's PIN,
 * sell script with its sale record).
 *
 * When the load stops, requests still in flight lose their answers (the
 * gateway finishes them anyway): they are settled the way a real client would,
 * by retrying with the same Idempotency-Key, and counted apart. Checked at the
 * end: sale records in Redis = 200 answers, no ID handed out twice, inventory
 * down by exactly as many.
 *
 * Flags (defaults in brackets)
 *   --duration S               seconds of load [15]
 *   --connections C            concurrent connections, one purchase in flight each [16]
 *   --ids N                    IDs minted into inventory; more than can be sold [20000]
 *   --price MICRO              product price, micro-units [1000000]
 *   --provider-latency-ms MS   the sandbox's added latency per call (authorize and capture) [0]
 *   --gw-env K=V               extra gateway environment, repeatable (e.g. UV_THREADPOOL_SIZE=2)
 *   --keep                     keep the temp dir (Redis data, logs)
 *   --quiet                    no per-second timeline
 *   --help
 *
 * Output: human-readable lines, then one final line of JSON with every figure.
 * The buyer's PIN is hashed with scrypt on every purchase (memory-hard on
 * purpose): that hash, not Redis or the provider, bounds purchases/s.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import type { Context } from '../src/app/context';
import type { RatePlan, TalkProduct } from '../src/catalog/schema';
import { createToken, putPlans, putProducts } from '../src/catalog/store';
import { luhnDigit } from '../src/ids/luhn';
import { mintIds } from '../src/ledger/mint';
import { keys } from '../src/redis/keys';
import { hashPin } from '../src/sales/pin';
import { cpuPct, cpuSec, cpuUsed, ownCpuSec, readCpu, statusKb, type CpuReading } from './lib/cpu';
import { gwEnvFlag, intFlag, parseFlags } from './lib/flags';
import { startGatewayChild, warningLines, type GatewayChild } from './lib/gateway';
import { fmtLatency, newHist, recordMs, summarize } from './lib/hist';
import {
  children,
  cleanUpOnExit,
  keepLogs,
  makeTmp,
  removeTmp,
  ROOT,
  runMain,
  sleep,
  stopChild,
  watchdog,
} from './lib/process';
import { startBenchRedis, type BenchRedis } from './lib/redis';
import { count, fmtCounts, fmtInt, printJsonLine, round1 } from './lib/report';

const USAGE = `npm run bench:sales -- [flags]

  --duration S               seconds of load [15]
  --connections C            concurrent connections, one purchase in flight each [16]
  --ids N                    IDs minted into inventory; must exceed what can be sold [20000]
  --price MICRO              product price in micro-units [1000000]
  --provider-latency-ms MS   sandbox card company latency per call (authorize, capture) [0]
  --gw-env K=V               extra gateway environment, repeatable (e.g. UV_THREADPOOL_SIZE=2)
  --keep                     keep the temp dir
  --quiet                    no per-second timeline
  --help

Prints purchases/s, latency p50/p90/p99/p999, status codes and refusal reasons,
sale records in Redis (must equal the 200s), CPU of the gateway, Redis and the
sandbox; last line: JSON.
`;

interface Options {
  duration: number;
  connections: number;
  ids: number;
  price: number;
  providerLatencyMs: number;
  gwEnv: Record<string, string>;
  keep: boolean;
  quiet: boolean;
}

function options(argv: string[]): Options {
  const values = parseFlags(
    argv,
    {
      duration: { type: 'string', default: '15' },
      connections: { type: 'string', default: '16' },
      ids: { type: 'string', default: '20000' },
      price: { type: 'string', default: '1000000' },
      'provider-latency-ms': { type: 'string', default: '0' },
      'gw-env': { type: 'string', multiple: true, default: [] },
      keep: { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
    },
    USAGE,
  );
  return {
    duration: intFlag('duration', values.duration, 1, 86_400),
    connections: intFlag('connections', values.connections, 1, 10_000),
    ids: intFlag('ids', values.ids, 1, 10_000_000),
    price: intFlag('price', values.price, 1, 1e12),
    providerLatencyMs: intFlag('provider-latency-ms', values['provider-latency-ms'], 0, 60_000),
    gwEnv: gwEnvFlag(values['gw-env']),
    keep: values.keep ?? false,
    quiet: values.quiet ?? false,
  };
}

// ------------------------------------------------------------------ set up

const SECRET = '5a'.repeat(32);
const PRODUCT = 'bench-talk';
const PIN = '4711';
/** The bench's card holder: Luhn-valid, never one of the demo members, credit beyond reach. */
const CARD = ((body: string) => body + String(luhnDigit(body)))('400000000099000');
const CARD_PIN = '2580';
/** The compiled CLI, as `npx tessera` runs it. */
const CLI_MAIN = join(ROOT, 'dist', 'src', 'cli', 'main.js');

cleanUpOnExit();

interface Sandbox {
  proc: ChildProcess;
  url: string;
  logs: string[];
}

/** `tessera sandbox-provider` (the compiled CLI) with the bench member; resolves with its URL. */
async function startSandbox(dir: string, opts: Options): Promise<Sandbox> {
  mkdirSync(dir, { recursive: true });
  const members = join(dir, 'members.json');
  writeFileSync(
    members,
    JSON.stringify([{ name: 'Bench Buyer', card: CARD, pin: CARD_PIN, limit: 9_000_000_000_000_000 }]),
  );
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, DATA_DIR: dir, LOG_LEVEL: 'warn' };
  const proc = spawn(
    process.execPath,
    [CLI_MAIN, 'sandbox-provider', '--port', '0', '--members', members, '--latency-ms', String(opts.providerLatencyMs)],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.add(proc);
  watchdog(proc.pid);
  const logs = keepLogs(proc);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const m = logs.map((l) => /sandbox payment provider on (http:\/\/\S+)/.exec(l)).find(Boolean);
    if (m) return { proc, url: m[1]!, logs };
    if (proc.exitCode !== null || proc.signalCode !== null)
      throw new Error(`sandbox provider exited (${proc.exitCode ?? proc.signalCode}):\n${logs.join('\n')}`);
    if (Date.now() > deadline) throw new Error(`sandbox provider printed no URL after 20 s:\n${logs.join('\n')}`);
    await sleep(20);
  }
}

async function saleRecords(ctx: Context): Promise<number> {
  const n = await Promise.all(Array.from({ length: ctx.cfg.buckets }, (_, b) => ctx.redis.xlen(keys.sales(b))));
  return n.reduce((a, b) => a + b, 0);
}

async function inventory(ctx: Context): Promise<number> {
  const n = await Promise.all(
    Array.from({ length: ctx.cfg.buckets }, (_, b) => ctx.redis.scard(keys.inventory(b, PRODUCT))),
  );
  return n.reduce((a, b) => a + b, 0);
}

/** Redis, the plan and product, the IDs minted into inventory, the sales token. */
async function prepareRedis(opts: Options, tmp: string): Promise<{ br: BenchRedis; token: string }> {
  const br = await startBenchRedis({
    TESSERA_SECRET: SECRET,
    DATA_DIR: join(tmp, 'cli'),
    LOG_LEVEL: 'silent',
    ...opts.gwEnv,
    REDIS_TIMEOUT_MS: '60000',
  });
  const { ctx } = br;
  const plan: RatePlan = { name: 'bench', rates: [{ prefix: '', rate: 1000, fee: 0 }] };
  const product: TalkProduct = {
    name: PRODUCT,
    kind: 'talk',
    currency: 'EUR',
    face: opts.price,
    price: opts.price,
    plan: 'bench',
    thresholds: [60],
    expiryDays: 180,
    maxCalls: 1,
  };
  await putPlans(ctx.redis, [plan]);
  await putProducts(ctx.redis, [product]);
  const { token } = await createToken(ctx.redis, { name: 'bench-shop', role: 'sales' });
  const tMint = performance.now();
  await mintIds(ctx, product, opts.ids, () => undefined);
  console.log(
    `setup: redis ${br.redis.url} (AOF everysec), ${fmtInt(opts.ids)} IDs of ${PRODUCT} minted in ${((performance.now() - tMint) / 1000).toFixed(1)} s`,
  );
  return { br, token };
}

interface ScryptCost {
  N: string;
  r: string;
  p: string;
  /** CPU ms (the libuv thread's included) and wall ms of one PIN hash. */
  hashMs: number;
  hashWallMs: number;
  /** Purchases/s the hash alone allows on min(cores, UV_THREADPOOL_SIZE) cores. */
  hashCeiling: number;
}

/** What one PIN hash costs here, one at a time. */
async function measureScrypt(opts: Options, cores: number): Promise<ScryptCost> {
  let encoded = await hashPin(PIN);
  const HASHES = 16;
  const hashCpu0 = ownCpuSec();
  const hashWall0 = performance.now();
  for (let i = 0; i < HASHES; i++) encoded = await hashPin(PIN);
  const hashMs = ((ownCpuSec() - hashCpu0) * 1000) / HASHES;
  const hashWallMs = (performance.now() - hashWall0) / HASHES;
  const [scheme, n = '', r = '', p = ''] = encoded.split('$');
  // The compact form (s$…) stores log2 N: print N itself, as the docs give it (16384).
  const N = scheme === 's' ? String(2 ** Number(n)) : n;
  const pool = Number(opts.gwEnv.UV_THREADPOOL_SIZE ?? process.env.UV_THREADPOOL_SIZE ?? 4);
  const hashCeiling = Math.round((Math.min(cores, pool) * 1000) / hashMs);
  console.log(
    `scrypt: one PIN hash (N=${N}, r=${r}, p=${p}) costs ${hashMs.toFixed(1)} ms of CPU (${hashWallMs.toFixed(1)} ms wall) here` +
      ` → at most ~${fmtInt(hashCeiling)} purchases/s on ${Math.min(cores, pool)} core(s) for the hash alone`,
  );
  return { N, r, p, hashMs, hashWallMs, hashCeiling };
}

interface Setup {
  tStart: number;
  cores: number;
  br: BenchRedis;
  token: string;
  scrypt: ScryptCost;
  sandbox: Sandbox;
  gw: GatewayChild;
  base: string;
}

/** Redis and the catalog, the cost of a PIN hash, then the card company and the gateway, each its own process. */
async function setUp(opts: Options): Promise<Setup> {
  const tStart = performance.now();
  const cores = availableParallelism();
  const tmp = makeTmp('tessera-bench-sales-', opts.keep);
  console.log(
    `tessera bench:sales  duration=${opts.duration}s connections=${opts.connections} ids=${opts.ids} price=${opts.price} provider-latency=${opts.providerLatencyMs}ms` +
      `${
        Object.keys(opts.gwEnv).length
          ? ` gw-env=${Object.entries(opts.gwEnv)
              .map(([k, v]) => `${k}=${v}`)
              .join(',')}`
          : ''
      }  (node ${process.version}, ${cores} cores)`,
  );
  const { br, token } = await prepareRedis(opts, tmp);
  const scrypt = await measureScrypt(opts, cores);
  const sandbox = await startSandbox(join(tmp, 'sandbox'), opts).catch((err: unknown) => {
    throw new Error(
      `${err instanceof Error ? err.message : String(err)}\n(is dist/ built? npm run bench:sales builds it)`,
    );
  });
  const gw = await startGatewayChild({
    redisUrl: br.redis.url,
    dataDir: join(tmp, 'gateway'),
    secret: SECRET,
    env: { PROVIDER_URL: sandbox.url },
    gwEnv: opts.gwEnv,
    unset: ['PUBLIC_URL'],
  });
  console.log(
    `sandbox provider: ${sandbox.url} (pid ${sandbox.proc.pid}); gateway: pid ${gw.proc.pid} on port ${gw.port}`,
  );
  return { tStart, cores, br, token, scrypt, sandbox, gw, base: `http://127.0.0.1:${gw.port}` };
}

// -------------------------------------------------------------------- load

const BODY = JSON.stringify({ product: PRODUCT, pin: PIN, payment: { card: CARD, cardPin: CARD_PIN } });

interface Answer {
  status: number;
  reason?: string;
  id?: string;
}

function readAnswer(status: number, body: string): Answer {
  try {
    const j = JSON.parse(body) as { id?: string; error?: { reason?: string } };
    return status === 200 ? { status, id: j.id } : { status, reason: j.error?.reason ?? 'unreadable' };
  } catch {
    return { status, reason: 'unreadable' };
  }
}

/** One purchase with fetch (warm-up, settling): the same request autocannon sends. */
async function purchase(base: string, token: string, key: string): Promise<Answer> {
  const res = await fetch(`${base}/v1/purchases`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', 'Idempotency-Key': key },
    body: BODY,
    signal: AbortSignal.timeout(30_000),
  });
  return readAnswer(res.status, await res.text());
}

/** JIT, connection pools, scrypt's first allocations: two rounds of purchases, counted apart. Returns how many sold. */
async function warmUp(opts: Options, s: Setup): Promise<number> {
  const warm = new Map<string, number>();
  for (let round = 0; round < 2; round++) {
    const answers = await Promise.all(
      Array.from({ length: opts.connections }, (_, i) => purchase(s.base, s.token, `warm-${round}-${i}`)),
    );
    for (const a of answers) count(warm, String(a.status));
  }
  const warmOk = warm.get('200') ?? 0;
  if (warmOk === 0) throw new Error(`warm-up sold nothing: ${fmtCounts(warm)}\n${s.gw.logs.slice(-10).join('\n')}`);
  console.log(`warm-up: ${fmtInt(warmOk)} purchases (${fmtCounts(warm)})`);
  return warmOk;
}

/** Every answer of the run, the IDs they handed out, and the keys whose answer is still due. */
class Tally {
  readonly hist = newHist();
  readonly statuses = new Map<string, number>();
  readonly reasons = new Map<string, number>();
  readonly ids = new Set<string>();
  dupIds = 0;
  readonly sent = new Set<string>();
  okThisSecond = 0;
  otherThisSecond = 0;

  /** An ID sold: counted twice if it was handed out before. */
  sold(id: string | undefined): void {
    if (id && this.ids.has(id)) this.dupIds++;
    if (id) this.ids.add(id);
  }

  record(a: Answer): void {
    count(this.statuses, String(a.status));
    if (a.status === 200) this.sold(a.id);
    else count(this.reasons, a.reason ?? 'unreadable');
  }
}

interface TimelineRow {
  t: number;
  ok: number;
  other: number;
  gwCpu: number;
  redisCpu: number;
  sandboxCpu: number;
  benchCpu: number;
}

type CpuSource = 'gw' | 'rd' | 'sb' | 'me';
const cpuSources = (s: Setup): Record<CpuSource, () => number> => ({
  gw: () => cpuSec(s.gw.proc.pid),
  rd: () => cpuSec(s.br.pid),
  sb: () => cpuSec(s.sandbox.proc.pid),
  me: ownCpuSec,
});

/** Once a second: purchases/s and every process' CPU, printed unless --quiet. */
function startTimeline(
  opts: Options,
  s: Setup,
  tally: Tally,
  cpu0: CpuReading<CpuSource>,
): { timeline: TimelineRow[]; stop: () => void } {
  const timeline: TimelineRow[] = [];
  let prev = cpu0;
  const timer = setInterval(() => {
    const cur = readCpu(cpuSources(s));
    const dt = (cur.t - prev.t) / 1000;
    const pct = cpuPct(prev, cur);
    const row: TimelineRow = {
      t: Math.round((cur.t - cpu0.t) / 1000),
      ok: Math.round(tally.okThisSecond / dt),
      other: Math.round(tally.otherThisSecond / dt),
      gwCpu: pct.gw,
      redisCpu: pct.rd,
      sandboxCpu: pct.sb,
      benchCpu: pct.me,
    };
    timeline.push(row);
    tally.okThisSecond = 0;
    tally.otherThisSecond = 0;
    prev = cur;
    if (!opts.quiet) {
      console.log(
        `  t=${String(row.t).padStart(3)}s  sold ${String(row.ok).padStart(5)}/s  other ${String(row.other).padStart(5)}/s` +
          `  cpu: gateway ${String(row.gwCpu).padStart(3)}%  redis ${String(row.redisCpu).padStart(3)}%  sandbox ${String(row.sandboxCpu).padStart(3)}%  bench ${String(row.benchCpu).padStart(3)}%`,
      );
    }
  }, 1000);
  return { timeline, stop: () => clearInterval(timer) };
}

/** autocannon, one purchase in flight per connection, a new Idempotency-Key each time. */
function autocannonLoad(opts: Options, s: Setup, tally: Tally): Promise<autocannon.Result> {
  let seq = 0;
  return new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: s.base,
        connections: opts.connections,
        duration: opts.duration,
        timeout: 30,
        requests: [
          {
            method: 'POST',
            path: '/v1/purchases',
            headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' },
            body: BODY,
            setupRequest: (req, context) => {
              const key = `bench-${(++seq).toString(36).padStart(8, '0')}`;
              tally.sent.add(key);
              (context as { key?: string }).key = key;
              return { ...req, headers: { ...req.headers, 'idempotency-key': key } };
            },
            onResponse: (status, body, context) => {
              tally.sent.delete((context as { key?: string }).key ?? '');
              tally.record(readAnswer(status, body));
              if (status === 200) tally.okThisSecond++;
              else tally.otherThisSecond++;
            },
          },
        ],
      },
      (err, res) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(res)),
    );
    instance.on('response', (_client, _status, _bytes, responseTime) => recordMs(tally.hist, responseTime));
  });
}

interface LoadResult {
  result: autocannon.Result;
  timeline: TimelineRow[];
  loadSec: number;
  /** CPU seconds each process used during the load. */
  cpu: Record<CpuSource, number>;
  /** Keys sent when the load stopped and still unanswered. */
  inFlightAtEnd: number;
}

async function runLoad(opts: Options, s: Setup, tally: Tally): Promise<LoadResult> {
  console.log(`load: POST /v1/purchases for ${opts.duration} s over ${opts.connections} connections`);
  const cpu0 = readCpu(cpuSources(s));
  const { timeline, stop } = startTimeline(opts, s, tally, cpu0);
  const result = await autocannonLoad(opts, s, tally);
  stop();
  const loadSec = (performance.now() - cpu0.t) / 1000;
  return { result, timeline, loadSec, cpu: cpuUsed(cpu0, readCpu(cpuSources(s))), inFlightAtEnd: tally.sent.size };
}

/**
 * Requests cut off by the end of the load: settled as a client would, the same
 * key again until the answer is final. Returns the answers by status, and how
 * many were 200.
 */
async function settle(
  s: Setup,
  tally: Tally,
): Promise<{ settled: Map<string, number>; settledOk: number; unsettled: number }> {
  const settled = new Map<string, number>();
  let settledOk = 0;
  const pending = [...tally.sent];
  for (let attempt = 0; attempt < 50 && pending.length; attempt++) {
    if (attempt) await sleep(200);
    const answers = await Promise.all(pending.map((k) => purchase(s.base, s.token, k)));
    for (let i = answers.length - 1; i >= 0; i--) {
      const a = answers[i]!;
      if (a.status === 409 && a.reason === 'in_progress') continue; // still being processed: ask again
      count(settled, String(a.status));
      if (a.status === 200) {
        settledOk++;
        tally.sold(a.id);
      }
      pending.splice(i, 1);
    }
  }
  if (pending.length) count(settled, 'unsettled');
  return { settled, settledOk, unsettled: pending.length };
}

// ------------------------------------------------------------------ report

interface Outcome {
  warmOk: number;
  load: LoadResult;
  settled: Map<string, number>;
  settledOk: number;
  unsettled: number;
  /** Sale records written and IDs taken from inventory during the load and the settling. */
  records: number;
  sold: number;
  gwPeakRss: number;
  gwLogs: string[];
}

function printResults(opts: Options, s: Setup, t: Tally, o: Outcome, consistent: boolean): void {
  const loadOk = t.statuses.get('200') ?? 0;
  const answered = [...t.statuses.values()].reduce((a, b) => a + b, 0);
  const pct = (sec: number): number => Math.round((sec / o.load.loadSec) * 100);
  const { cpu } = o.load;
  console.log('\nresults');
  console.log(
    `  purchases/s      ${Math.round((loadOk / opts.duration) * 10) / 10}  (${fmtInt(loadOk)} sold in ${opts.duration} s; ${fmtInt(answered)} answers, ${fmtInt(answered - loadOk)} not 200)`,
  );
  console.log(`  ${fmtLatency('latency', summarize(t.hist))}`);
  console.log(`  status codes     ${fmtCounts(t.statuses)}`);
  console.log(`  refusals         ${fmtCounts(t.reasons)}`);
  console.log(
    `  in flight at end ${fmtInt(o.load.inFlightAtEnd)}, settled by retrying with the same Idempotency-Key: ${fmtCounts(o.settled)}`,
  );
  console.log(
    `  sale records     ${fmtInt(o.records)} in Redis for ${fmtInt(loadOk + o.settledOk)} answers 200 (${fmtInt(loadOk)} + ${fmtInt(o.settledOk)} settled); inventory down ${fmtInt(o.sold)}; IDs handed out twice: ${t.dupIds}` +
      `  → ${consistent ? 'consistent' : 'MISMATCH'}`,
  );
  if ((t.reasons.get('out_of_stock') ?? 0) > 0)
    console.log(`  warning          inventory ran out: give more --ids (purchases/s is then not the gateway's rate)`);
  if (o.gwLogs.length) console.log(`  gateway warnings ${o.gwLogs.length}, last: ${o.gwLogs[o.gwLogs.length - 1]}`);
  console.log(
    `  CPU              gateway ${pct(cpu.gw)}% of one core (peak RSS ${o.gwPeakRss} MB), redis ${pct(cpu.rd)}%, sandbox ${pct(cpu.sb)}%, bench + autocannon ${pct(cpu.me)}%, over ${o.load.loadSec.toFixed(1)} s on ${s.cores} cores`,
  );
  const { N, r, p, hashMs, hashCeiling } = s.scrypt;
  const perPurchaseMs = loadOk ? (cpu.gw * 1000) / loadOk : 0;
  console.log(
    `\nnote: every purchase hashes the buyer's PIN with scrypt (N=${N}, r=${r}, p=${p}; ${hashMs.toFixed(1)} ms of CPU here), on purpose: a Redis dump must not give PINs away.` +
      `\n      That hash dominates the gateway's CPU: ${perPurchaseMs.toFixed(1)} ms of gateway CPU per purchase, against ${hashMs.toFixed(1)} ms for one hash measured alone` +
      `\n      (both noisy on a shared machine), while Redis and the card company idle. purchases/s is bounded by cores ÷ hash time` +
      `\n      (~${fmtInt(hashCeiling)}/s here); more connections only add latency. Compare runs on an idle machine.`,
  );
}

function figures(opts: Options, s: Setup, t: Tally, o: Outcome, consistent: boolean, totalSec: number): object {
  const loadOk = t.statuses.get('200') ?? 0;
  const { cpu, loadSec, result } = o.load;
  const pct = (sec: number): number => Math.round((sec / loadSec) * 100);
  const { N, r, p, hashMs, hashWallMs, hashCeiling } = s.scrypt;
  return {
    bench: 'sales',
    params: {
      duration: opts.duration,
      connections: opts.connections,
      ids: opts.ids,
      price: opts.price,
      providerLatencyMs: opts.providerLatencyMs,
      gwEnv: opts.gwEnv,
    },
    cores: s.cores,
    purchasesPerSec: Math.round((loadOk / opts.duration) * 10) / 10,
    sold: loadOk,
    answers: [...t.statuses.values()].reduce((a, b) => a + b, 0),
    latencyMs: summarize(t.hist),
    statusCodes: Object.fromEntries(t.statuses),
    refusals: Object.fromEntries(t.reasons),
    autocannon: { errors: result.errors, timeouts: result.timeouts, non2xx: result.non2xx },
    warmup: { sold: o.warmOk },
    inFlightAtEnd: o.load.inFlightAtEnd,
    settled: Object.fromEntries(o.settled),
    saleRecords: o.records,
    inventorySold: o.sold,
    duplicateIds: t.dupIds,
    consistent,
    scrypt: {
      N: Number(N),
      r: Number(r),
      p: Number(p),
      cpuMsPerHash: round1(hashMs),
      wallMsPerHash: round1(hashWallMs),
      ceilingPerSec: hashCeiling,
    },
    gateway: {
      cpuPct: pct(cpu.gw),
      cpuMsPerPurchase: round1(loadOk ? (cpu.gw * 1000) / loadOk : 0),
      peakRssMb: o.gwPeakRss,
    },
    redisCpuPct: pct(cpu.rd),
    sandboxCpuPct: pct(cpu.sb),
    benchCpuPct: pct(cpu.me),
    timeline: o.load.timeline,
    timeSec: { load: round1(loadSec), total: round1(totalSec) },
  };
}

// -------------------------------------------------------------------- main

async function main(): Promise<void> {
  const opts = options(process.argv.slice(2));
  const s = await setUp(opts);
  const warmOk = await warmUp(opts, s);
  const { ctx } = s.br;
  const records0 = await saleRecords(ctx);
  const inventory0 = await inventory(ctx);
  const tally = new Tally();
  const load = await runLoad(opts, s, tally);
  const { settled, settledOk, unsettled } = await settle(s, tally);
  const records = (await saleRecords(ctx)) - records0;
  const sold = inventory0 - (await inventory(ctx));
  const gwPeakRss = Math.round(statusKb(s.gw.proc.pid, 'VmHWM') / 1024);
  const gwLogs = warningLines(s.gw.logs);
  await stopChild(s.gw.proc);
  await stopChild(s.sandbox.proc);

  const outcome: Outcome = { warmOk, load, settled, settledOk, unsettled, records, sold, gwPeakRss, gwLogs };
  const totalOk = (tally.statuses.get('200') ?? 0) + settledOk;
  const consistent = records === totalOk && sold === totalOk && tally.dupIds === 0 && unsettled === 0;
  printResults(opts, s, tally, outcome, consistent);
  const totalSec = (performance.now() - s.tStart) / 1000;
  console.log(`time: total ${totalSec.toFixed(1)} s`);
  const json = figures(opts, s, tally, outcome, consistent, totalSec);
  await s.br.stop();
  removeTmp();
  printJsonLine(json);
  if (!consistent) process.exitCode = 1;
}

runMain(main);

/**
 * bench/sales.ts — purchase benchmark: `npm run bench:sales [-- flags]`.
 *
 * Sets everything up from nothing: its own redis-server (AOF, appendfsync
 * everysec, as in production) in a temp dir, a talk product with N minted IDs
 * in inventory, a sales token; the sandbox card company as a child process
 * (`tessera sandbox-provider`, the same command operators run) with one bench
 * member whose credit never runs out; the gateway as another child process
 * (dist/src/main.js through bench/gateway-child.js, PROVIDER_URL pointing at
 * the sandbox). Then autocannon drives POST /v1/purchases over keep-alive
 * connections, a fresh Idempotency-Key on every request, for --duration
 * seconds: every 200 is a real purchase (reserve, authorize, capture, scrypt
 * of the buyer's PIN, sell script with its sale record).
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
import { children, cleanUpOnExit, cpuSec, fmtInt, gwEnvFlag, intFlag, keepLogs, makeTmp, ownCpuSec, parseFlags, removeTmp, runMain, startBenchRedis, startGatewayChild, statusKb, stopChild, watchdog } from './common';
import { fmtLatency, newHist, recordMs, summarize } from './hist';

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

// --------------------------------------------------------- child processes

const SECRET = '5a'.repeat(32);
const PRODUCT = 'bench-talk';
const PIN = '4711';
/** The bench's card holder: Luhn-valid, never one of the demo members, credit beyond reach. */
const CARD = ((body: string) => body + String(luhnDigit(body)))('400000000099000');
const CARD_PIN = '2580';

cleanUpOnExit();

/** `tessera sandbox-provider` (the compiled CLI) with the bench member; resolves with its URL. */
async function startSandbox(dir: string, opts: Options): Promise<{ proc: ChildProcess; url: string; logs: string[] }> {
  mkdirSync(dir, { recursive: true });
  const members = join(dir, 'members.json');
  writeFileSync(members, JSON.stringify([{ name: 'Bench Buyer', card: CARD, pin: CARD_PIN, limit: 9_000_000_000_000_000 }]));
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, DATA_DIR: dir, LOG_LEVEL: 'warn' };
  const proc = spawn(
    process.execPath,
    [join(__dirname, '..', 'src', 'cli', 'main.js'), 'sandbox-provider', '--port', '0', '--members', members, '--latency-ms', String(opts.providerLatencyMs)],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.add(proc);
  watchdog(proc.pid);
  const logs = keepLogs(proc);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const m = logs.map((l) => /sandbox payment provider on (http:\/\/\S+)/.exec(l)).find(Boolean);
    if (m) return { proc, url: m[1]!, logs };
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`sandbox provider exited (${proc.exitCode ?? proc.signalCode}):\n${logs.join('\n')}`);
    if (Date.now() > deadline) throw new Error(`sandbox provider printed no URL after 20 s:\n${logs.join('\n')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ------------------------------------------------------------------ Redis

async function saleRecords(ctx: Context): Promise<number> {
  const n = await Promise.all(Array.from({ length: ctx.cfg.buckets }, (_, b) => ctx.redis.xlen(keys.sales(b))));
  return n.reduce((a, b) => a + b, 0);
}

async function inventory(ctx: Context): Promise<number> {
  const n = await Promise.all(Array.from({ length: ctx.cfg.buckets }, (_, b) => ctx.redis.scard(keys.inventory(b, PRODUCT))));
  return n.reduce((a, b) => a + b, 0);
}

// ------------------------------------------------------------------- load

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

const count = (m: Map<string, number>, k: string): void => void m.set(k, (m.get(k) ?? 0) + 1);
const entries = (m: Map<string | number, number>): string => [...m].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}=${fmtInt(v)}`).join(' ') || 'none';

async function main(): Promise<void> {
  const opts = options(process.argv.slice(2));
  const tStart = performance.now();
  const cores = availableParallelism();
  const tmp = makeTmp('tessera-bench-sales-', opts.keep);
  console.log(
    `tessera bench:sales  duration=${opts.duration}s connections=${opts.connections} ids=${opts.ids} price=${opts.price} provider-latency=${opts.providerLatencyMs}ms` +
      `${Object.keys(opts.gwEnv).length ? ` gw-env=${Object.entries(opts.gwEnv).map(([k, v]) => `${k}=${v}`).join(',')}` : ''}  (node ${process.version}, ${cores} cores)`,
  );

  // Redis, catalog, inventory, token.
  const br = await startBenchRedis({ TESSERA_SECRET: SECRET, DATA_DIR: join(tmp, 'cli'), LOG_LEVEL: 'silent', ...opts.gwEnv, REDIS_TIMEOUT_MS: '60000' });
  const { redis, ctx, pid: redisPid } = br;
  const plan: RatePlan = { name: 'bench', rates: [{ prefix: '', rate: 1000, fee: 0 }] };
  const product: TalkProduct = { name: PRODUCT, kind: 'talk', currency: 'EUR', face: opts.price, price: opts.price, plan: 'bench', thresholds: [60], expiryDays: 180, maxCalls: 1 };
  await putPlans(ctx.redis, [plan]);
  await putProducts(ctx.redis, [product]);
  const { token } = await createToken(ctx.redis, { name: 'bench-shop', role: 'sales' });
  const tMint = performance.now();
  await mintIds(ctx, product, opts.ids, () => undefined);
  console.log(`setup: redis ${redis.url} (AOF everysec), ${fmtInt(opts.ids)} IDs of ${PRODUCT} minted in ${((performance.now() - tMint) / 1000).toFixed(1)} s`);

  // What one PIN hash costs here: CPU time (the libuv thread's included), one at a time.
  let encoded = await hashPin(PIN);
  const HASHES = 16;
  const hashCpu0 = ownCpuSec();
  const hashWall0 = performance.now();
  for (let i = 0; i < HASHES; i++) encoded = await hashPin(PIN);
  const hashMs = ((ownCpuSec() - hashCpu0) * 1000) / HASHES;
  const hashWallMs = (performance.now() - hashWall0) / HASHES;
  const [, N, r, p] = encoded.split('$');
  const pool = Number(opts.gwEnv.UV_THREADPOOL_SIZE ?? process.env.UV_THREADPOOL_SIZE ?? 4);
  const hashCeiling = Math.round((Math.min(cores, pool) * 1000) / hashMs);
  console.log(
    `scrypt: one PIN hash (N=${N}, r=${r}, p=${p}) costs ${hashMs.toFixed(1)} ms of CPU (${hashWallMs.toFixed(1)} ms wall) here` +
      ` → at most ~${fmtInt(hashCeiling)} purchases/s on ${Math.min(cores, pool)} core(s) for the hash alone`,
  );

  // The card company and the gateway, each its own process.
  const sandbox = await startSandbox(join(tmp, 'sandbox'), opts).catch((err: unknown) => {
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n(is dist/ built? npm run bench:sales builds it)`);
  });
  const gw = await startGatewayChild({ redisUrl: redis.url, dataDir: join(tmp, 'gateway'), secret: SECRET, env: { PROVIDER_URL: sandbox.url }, gwEnv: opts.gwEnv, unset: ['PUBLIC_URL'] });
  const base = `http://127.0.0.1:${gw.port}`;
  console.log(`sandbox provider: ${sandbox.url} (pid ${sandbox.proc.pid}); gateway: pid ${gw.proc.pid} on port ${gw.port}`);

  // Warm-up: JIT, connection pools, scrypt's first allocations. Counted apart.
  const warm = new Map<string, number>();
  for (let round = 0; round < 2; round++) {
    const answers = await Promise.all(Array.from({ length: opts.connections }, (_, i) => purchase(base, token, `warm-${round}-${i}`)));
    for (const a of answers) count(warm, String(a.status));
  }
  const warmOk = warm.get('200') ?? 0;
  if (warmOk === 0) throw new Error(`warm-up sold nothing: ${entries(warm)}\n${gw.logs.slice(-10).join('\n')}`);
  console.log(`warm-up: ${fmtInt(warmOk)} purchases (${entries(warm)})`);

  const records0 = await saleRecords(ctx);
  const inventory0 = await inventory(ctx);

  // The load: autocannon, one purchase in flight per connection, a new Idempotency-Key each time.
  const hist = newHist();
  const statuses = new Map<string, number>();
  const reasons = new Map<string, number>();
  const ids = new Set<string>();
  let dupIds = 0;
  const sent = new Set<string>();
  let seq = 0;
  let okThisSecond = 0;
  let otherThisSecond = 0;
  const timeline: { t: number; ok: number; other: number; gwCpu: number; redisCpu: number; sandboxCpu: number; benchCpu: number }[] = [];
  const record = (a: Answer): void => {
    count(statuses, String(a.status));
    if (a.status === 200) {
      if (a.id && ids.has(a.id)) dupIds++;
      if (a.id) ids.add(a.id);
    } else count(reasons, a.reason ?? 'unreadable');
  };

  console.log(`load: POST /v1/purchases for ${opts.duration} s over ${opts.connections} connections`);
  const cpu0 = { gw: cpuSec(gw.proc.pid), rd: cpuSec(redisPid), sb: cpuSec(sandbox.proc.pid), me: ownCpuSec() };
  let prev = { t: performance.now(), ...cpu0 };
  const t0 = prev.t;
  const sample = setInterval(() => {
    const now = performance.now();
    const dt = (now - prev.t) / 1000;
    const cur = { t: now, gw: cpuSec(gw.proc.pid), rd: cpuSec(redisPid), sb: cpuSec(sandbox.proc.pid), me: ownCpuSec() };
    const pct = (a: number, b: number): number => Math.round(((a - b) / dt) * 100);
    const row = {
      t: Math.round((now - t0) / 1000),
      ok: Math.round(okThisSecond / dt),
      other: Math.round(otherThisSecond / dt),
      gwCpu: pct(cur.gw, prev.gw),
      redisCpu: pct(cur.rd, prev.rd),
      sandboxCpu: pct(cur.sb, prev.sb),
      benchCpu: pct(cur.me, prev.me),
    };
    timeline.push(row);
    okThisSecond = 0;
    otherThisSecond = 0;
    prev = cur;
    if (!opts.quiet) {
      console.log(
        `  t=${String(row.t).padStart(3)}s  sold ${String(row.ok).padStart(5)}/s  other ${String(row.other).padStart(5)}/s` +
          `  cpu: gateway ${String(row.gwCpu).padStart(3)}%  redis ${String(row.redisCpu).padStart(3)}%  sandbox ${String(row.sandboxCpu).padStart(3)}%  bench ${String(row.benchCpu).padStart(3)}%`,
      );
    }
  }, 1000);

  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: base,
        connections: opts.connections,
        duration: opts.duration,
        timeout: 30,
        requests: [
          {
            method: 'POST',
            path: '/v1/purchases',
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: BODY,
            setupRequest: (req, context) => {
              const key = `bench-${(++seq).toString(36).padStart(8, '0')}`;
              sent.add(key);
              (context as { key?: string }).key = key;
              return { ...req, headers: { ...req.headers, 'idempotency-key': key } };
            },
            onResponse: (status, body, context) => {
              sent.delete((context as { key?: string }).key ?? '');
              const a = readAnswer(status, body);
              record(a);
              if (status === 200) okThisSecond++;
              else otherThisSecond++;
            },
          },
        ],
      },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    instance.on('response', (_client, _status, _bytes, responseTime) => recordMs(hist, responseTime));
  });
  clearInterval(sample);
  const loadSec = (performance.now() - t0) / 1000;
  const cpu1 = { gw: cpuSec(gw.proc.pid), rd: cpuSec(redisPid), sb: cpuSec(sandbox.proc.pid), me: ownCpuSec() };
  const loadOk = statuses.get('200') ?? 0;
  const answered = [...statuses.values()].reduce((a, b) => a + b, 0);

  // Requests cut off by the end of the load: settle them as a client would, same key again.
  const settled = new Map<string, number>();
  let settledOk = 0;
  const pending = [...sent];
  for (let attempt = 0; attempt < 50 && pending.length; attempt++) {
    if (attempt) await new Promise((r) => setTimeout(r, 200));
    const answers = await Promise.all(pending.map((k) => purchase(base, token, k)));
    for (let i = answers.length - 1; i >= 0; i--) {
      const a = answers[i]!;
      if (a.status === 409 && a.reason === 'in_progress') continue; // still being processed: ask again
      count(settled, String(a.status));
      if (a.status === 200) {
        settledOk++;
        if (a.id && ids.has(a.id)) dupIds++;
        if (a.id) ids.add(a.id);
      }
      pending.splice(i, 1);
    }
  }
  if (pending.length) count(settled, 'unsettled');

  const records = (await saleRecords(ctx)) - records0;
  const sold = inventory0 - (await inventory(ctx));
  const totalOk = loadOk + settledOk;
  const recordsMatch = records === totalOk && sold === totalOk && dupIds === 0 && pending.length === 0;
  const lat = summarize(hist);
  const purchasesPerSec = Math.round((loadOk / opts.duration) * 10) / 10;
  const gwPeakRss = Math.round(statusKb(gw.proc.pid, 'VmHWM') / 1024);
  const gwLogs = gw.logs.filter((l) => /"level":(40|50|60)/.test(l));
  await stopChild(gw.proc);
  await stopChild(sandbox.proc);

  const pct = (sec: number): number => Math.round((sec / loadSec) * 100);
  const gwCpuPct = pct(cpu1.gw - cpu0.gw);
  console.log('\nresults');
  console.log(`  purchases/s      ${purchasesPerSec}  (${fmtInt(loadOk)} sold in ${opts.duration} s; ${fmtInt(answered)} answers, ${fmtInt(answered - loadOk)} not 200)`);
  console.log(`  ${fmtLatency('latency', lat)}`);
  console.log(`  status codes     ${entries(statuses)}`);
  console.log(`  refusals         ${entries(reasons)}`);
  console.log(`  in flight at end ${fmtInt(sent.size)}, settled by retrying with the same Idempotency-Key: ${entries(settled)}`);
  console.log(
    `  sale records     ${fmtInt(records)} in Redis for ${fmtInt(totalOk)} answers 200 (${fmtInt(loadOk)} + ${fmtInt(settledOk)} settled); inventory down ${fmtInt(sold)}; IDs handed out twice: ${dupIds}` +
      `  → ${recordsMatch ? 'consistent' : 'MISMATCH'}`,
  );
  if ((reasons.get('out_of_stock') ?? 0) > 0) console.log(`  warning          inventory ran out: give more --ids (purchases/s is then not the gateway's rate)`);
  if (gwLogs.length) console.log(`  gateway warnings ${gwLogs.length}, last: ${gwLogs[gwLogs.length - 1]}`);
  console.log(
    `  CPU              gateway ${gwCpuPct}% of one core (peak RSS ${gwPeakRss} MB), redis ${pct(cpu1.rd - cpu0.rd)}%, sandbox ${pct(cpu1.sb - cpu0.sb)}%, bench + autocannon ${pct(cpu1.me - cpu0.me)}%, over ${loadSec.toFixed(1)} s on ${cores} cores`,
  );
  const perPurchaseMs = loadOk ? ((cpu1.gw - cpu0.gw) * 1000) / loadOk : 0;
  console.log(
    `\nnote: every purchase hashes the buyer's PIN with scrypt (N=${N}, r=${r}, p=${p}; ${hashMs.toFixed(1)} ms of CPU here), on purpose: a Redis dump must not give PINs away.` +
      `\n      That hash dominates the gateway's CPU: ${perPurchaseMs.toFixed(1)} ms of gateway CPU per purchase, against ${hashMs.toFixed(1)} ms for one hash measured alone` +
      `\n      (both noisy on a shared machine), while Redis and the card company idle. purchases/s is bounded by cores ÷ hash time` +
      `\n      (~${fmtInt(hashCeiling)}/s here); more connections only add latency. Compare runs on an idle machine.`,
  );
  const totalSec = (performance.now() - tStart) / 1000;
  console.log(`time: total ${totalSec.toFixed(1)} s`);

  const json = {
    bench: 'sales',
    params: { duration: opts.duration, connections: opts.connections, ids: opts.ids, price: opts.price, providerLatencyMs: opts.providerLatencyMs, gwEnv: opts.gwEnv },
    cores,
    purchasesPerSec,
    sold: loadOk,
    answers: answered,
    latencyMs: lat,
    statusCodes: Object.fromEntries(statuses),
    refusals: Object.fromEntries(reasons),
    autocannon: { errors: result.errors, timeouts: result.timeouts, non2xx: result.non2xx },
    warmup: { sold: warmOk },
    inFlightAtEnd: sent.size,
    settled: Object.fromEntries(settled),
    saleRecords: records,
    inventorySold: sold,
    duplicateIds: dupIds,
    consistent: recordsMatch,
    scrypt: { N: Number(N), r: Number(r), p: Number(p), cpuMsPerHash: Math.round(hashMs * 10) / 10, wallMsPerHash: Math.round(hashWallMs * 10) / 10, ceilingPerSec: hashCeiling },
    gateway: { cpuPct: gwCpuPct, cpuMsPerPurchase: Math.round(perPurchaseMs * 10) / 10, peakRssMb: gwPeakRss },
    redisCpuPct: pct(cpu1.rd - cpu0.rd),
    sandboxCpuPct: pct(cpu1.sb - cpu0.sb),
    benchCpuPct: pct(cpu1.me - cpu0.me),
    timeline,
    timeSec: { load: Math.round(loadSec * 10) / 10, total: Math.round(totalSec * 10) / 10 },
  };

  await br.stop();
  removeTmp();
  console.log(JSON.stringify(json));
  if (!recordsMatch) process.exitCode = 1;
}

runMain(main);

/**
 * bench:switch's ceiling: redis-benchmark calling lua/call_tick.lua (FCALL) on
 * the bench's Redis with the gateway stopped, the rate the gateway's ticks are
 * compared with.
 */
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import WebSocket from 'ws';
import type { Context } from '../../src/app/context';
import { callKeysFor } from '../../src/metering/call-keys';
import { keys } from '../../src/redis/keys';
import { children } from '../lib/process';
import { quiesce, totalForks } from '../lib/redis';
import { ALERT_DEST } from './catalog';
import type { Options } from './options';

export interface RbRun {
  command: string;
  callsPerSec: number;
  ticksPerSec: number;
  /** Share of ticks that took the debit path (sec > billed), from Redis' HSET count. */
  debitShare: number;
  /** Redis' own time per FCALL (INFO commandstats usec_per_call), without protocol and I/O. */
  serverUsecPerCall: number;
  /** AOF rewrites / RDB snapshots that started during the run. */
  forks: number;
}

export interface Ceiling {
  /** call_tick's function in the gateway's library. */
  fn: string;
  dupPath: RbRun;
  mixed: RbRun;
  /** Single-tick FCALL rate had every tick debited, solved from the two runs above. */
  debitPathPerSec: number;
  debitPathDerived: boolean;
  batched?: RbRun & { batch: number };
  /**
   * The reference debit function (REFERENCE_LIBRARY), once per FCALL (`single`, the
   * reference the tick-cost target is stated against) and in the batched run's
   * shape (`batched`), with the batched call_tick's Redis time per tick as a
   * multiple of each: what billing costs beyond reading, subtracting and
   * writing a balance.
   */
  reference?: {
    single: RbRun;
    batched: RbRun & { batch: number };
    tickCostRatio: number;
    tickCostRatioBatched: number;
    /**
     * The batch again on sessions already answered and billed, with a grant and a reservation
     * that carry them further than any sec the run sends: every debit is a steady tick (the
     * short path of lua/includes/charge.lua), as nearly all of a call's ticks are. The
     * batched run above is mostly calls' first ticks, each priced by the general path.
     */
    steady: RbRun & { batch: number };
    steadyTickCostRatio: number;
    /**
     * The reference debit once per FCALL on one of K copies of the ID hash at random: the
     * keyspace and cache misses of reaching K keys, which every tick above has and the
     * reference on one hot key has not. The two ratios divide the batched and steady ticks by it.
     */
    spread: RbRun;
    spreadTickCostRatio: number;
    spreadSteadyTickCostRatio: number;
  };
}

export interface CeilingCall {
  session: string;
  bucket: number;
  /** The session hash as call_start wrote it (nothing billed yet). */
  template: Record<string, string>;
  fn: string;
  /** What the gateway sent after FCALL <fn> for this call's tick at sec 1: numkeys, KEYS, ARGV. */
  tickArgs: string[];
}

// ------------------------------------------------------------ the live call

type Reply = Record<string, unknown>;

/** A JSON switch connection to the gateway that waits for the answer to each request (10 s at most). */
async function jsonSwitch(
  gwPort: number,
  token: string,
): Promise<{ ws: WebSocket; request: (m: Reply) => Promise<Reply> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${gwPort}/v1/switch`, {
    headers: { Authorization: `Bearer ${token}` },
    perMessageDeflate: false,
  });
  const replies: Reply[] = [];
  let wake: (() => void) | undefined;
  ws.on('message', (data: Buffer) => {
    const body = JSON.parse(data.toString('utf8')) as Reply | Reply[];
    replies.push(...(Array.isArray(body) ? body : [body]));
    wake?.();
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const request = async (m: Reply): Promise<Reply> => {
    ws.send(JSON.stringify(m));
    const deadline = Date.now() + 10_000;
    for (;;) {
      const r = replies.find((x) => x.ref === m.ref && x.op !== 'alert' && x.op !== 'cutoff');
      if (r) return r;
      if (Date.now() > deadline) throw new Error(`no answer to ${String(m.op)} from the gateway`);
      await new Promise<void>((res) => {
        wake = res;
        setTimeout(res, 50);
      });
    }
  };
  return { ws, request };
}

/** The quoted arguments of one MONITOR line (`<time> [<db> <client>] "FCALL" "fn" …`), unescaped. */
export function monitorArgs(line: string): string[] {
  const out: string[] = [];
  for (const m of line.matchAll(/"((?:[^"\\]|\\.)*)"/g))
    out.push(
      m[1]!.replace(/\\(x[0-9a-fA-F]{2}|.)/g, (_, e: string) =>
        e[0] === 'x' && e.length === 3
          ? String.fromCharCode(parseInt(e.slice(1), 16))
          : (({ n: '\n', r: '\r', t: '\t', a: '\x07', b: '\b' } as Record<string, string>)[e] ?? e),
      ),
    );
  return out;
}

/**
 * Sends the tick at sec 1 and captures, with MONITOR, the FCALL the gateway sends for it. A socket
 * of its own, not ioredis' monitor(): under load ioredis reads the lines that follow MONITOR's +OK
 * in the same chunk before it knows it is monitoring, and throws "Command queue state error".
 */
async function captureTick(
  redisUrl: string,
  fn: string,
  session: string,
  tick: () => Promise<Reply>,
): Promise<string[] | undefined> {
  const url = new URL(redisUrl);
  const sock = connect(Number(url.port || 6379), url.hostname);
  sock.on('error', () => undefined);
  let tickArgs: string[] | undefined;
  let pending = '';
  let monitoring = false;
  sock.on('data', (chunk: Buffer) => {
    pending += chunk.toString('latin1');
    let nl: number;
    while ((nl = pending.indexOf('\r\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 2);
      if (line === '+OK') monitoring = true;
      if (tickArgs || !line.startsWith('+')) continue;
      const args = monitorArgs(line);
      if (args[0]?.toLowerCase() === 'fcall' && args[1] === fn && args.includes(session)) tickArgs = args.slice(2);
    }
  });
  await new Promise<void>((r, j) => sock.once('connect', r).once('error', j));
  sock.write('MONITOR\r\n');
  for (let i = 0; i < 40 && !monitoring; i++) await new Promise((r) => setTimeout(r, 25));
  try {
    const ticked = await tick();
    if (ticked.op !== 'ticked') throw new Error(`tick for the ceiling: ${String(ticked.reason)}`);
    for (let i = 0; i < 40 && !tickArgs; i++) await new Promise((r) => setTimeout(r, 25));
  } finally {
    sock.destroy();
  }
  return tickArgs;
}

/**
 * Opens the ceiling's live call through the gateway itself (start, then one
 * tick at sec 1), so the session is exactly what a switch's call produces;
 * the template is read between the two, before anything was billed. The
 * gateway's FCALL for that tick is captured with MONITOR: redis-benchmark
 * then repeats exactly what the gateway sends (KEYS and ARGV layout included,
 * whatever lua/call_tick.lua currently takes).
 */
export async function openCeilingCall(
  ctx: Context,
  redisUrl: string,
  gwPort: number,
  token: string,
  switchName: string,
  rbId: string,
): Promise<CeilingCall> {
  const fn = ctx.scripts.library.functions.get('call_tick');
  if (!fn) throw new Error('lua/call_tick.lua not found');
  const { ws, request } = await jsonSwitch(gwPort, token);
  try {
    const call = 'rb-live-1';
    const started = await request({ op: 'start', ref: 'rb1', call, id: rbId, dest: ALERT_DEST });
    if (started.op !== 'started') throw new Error(`start for the ceiling: ${String(started.reason)}`);
    const { hash, bucket } = ctx.ids.hash(rbId);
    const ck = callKeysFor(keys.id(bucket, hash), `${switchName}:${call}`);
    const template = await ctx.redis.hgetall(ck.session);
    if (!template.st)
      throw new Error(
        `no session at ${ck.session}: has the session key scheme changed? (bench/switch/ceiling.ts openCeilingCall)`,
      );
    const tickArgs = await captureTick(redisUrl, fn, ck.session, () =>
      request({ op: 'tick', ref: 'rb2', call, sec: 1 }),
    );
    if (!tickArgs) throw new Error(`MONITOR did not show the gateway's FCALL ${fn} for ${ck.session}`);
    return { session: ck.session, bucket: ck.bucket, template, fn, tickArgs };
  } finally {
    ws.terminate();
  }
}

// ------------------------------------------------------------ redis-benchmark

function redisBenchmark(
  port: number,
  opts: Options,
  n: number,
  random: number | undefined,
  cmd: string[],
): Promise<number> {
  const args = [
    '-h',
    '127.0.0.1',
    '-p',
    String(port),
    '-n',
    String(n),
    '-c',
    String(opts.rbClients),
    '-P',
    String(opts.rbPipeline),
    '-q',
  ];
  if (random) args.push('-r', String(random));
  args.push(...cmd);
  return new Promise((resolve, reject) => {
    const p = spawn('redis-benchmark', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(p);
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('exit', (code) => {
      children.delete(p);
      const all = [...out.matchAll(/([\d.]+) requests per second/g)];
      const last = all[all.length - 1];
      if (code !== 0 || !last) return reject(new Error(`redis-benchmark failed (${code}): ${out.slice(-500)}`));
      if (/ERR/.test(out)) return reject(new Error(`redis-benchmark got errors: ${out.slice(-500)}`));
      resolve(Number(last[1]));
    });
  });
}

async function commandCalls(ctx: Context): Promise<{ hset: number; fcall: number; fcallUsec: number }> {
  const info = await ctx.redis.info('commandstats');
  const stat = (cmd: string, field: string): number =>
    Number(new RegExp(`^cmdstat_${cmd}:.*\\b${field}=([\\d.]+)`, 'm').exec(info)?.[1] ?? 0);
  return {
    hset: stat('hset', 'calls'),
    fcall: stat('fcall', 'calls'),
    fcallUsec: stat('fcall', 'usec_per_call'),
  };
}

/** One redis-benchmark run, with Redis' own counts of what it did; prints a line. */
async function rbRun(
  ctx: Context,
  redisPort: number,
  opts: Options,
  label: string,
  n: number,
  random: number | undefined,
  cmd: string[],
  ticksPer: number,
  hsetsPerDebit = 2,
): Promise<RbRun> {
  await quiesce(ctx);
  await ctx.redis.config('RESETSTAT');
  const forks0 = await totalForks(ctx);
  const rate = await redisBenchmark(redisPort, opts, n, random, cmd);
  const c = await commandCalls(ctx);
  const forks = (await totalForks(ctx)) - forks0;
  const debits = c.hset / hsetsPerDebit;
  const ticks = c.fcall * ticksPer;
  const r: RbRun = {
    command: `redis-benchmark -n ${n} -c ${opts.rbClients} -P ${opts.rbPipeline}${random ? ` -r ${random}` : ''} ${cmd.slice(0, 8).join(' ')}${cmd.length > 8 ? ' …' : ''}`,
    callsPerSec: Math.round(rate),
    ticksPerSec: Math.round(rate * ticksPer),
    debitShare: ticks ? Math.round((debits / ticks) * 1000) / 1000 : 0,
    serverUsecPerCall: c.fcallUsec,
    forks,
  };
  console.log(
    `  ${label.padEnd(12)} ${String(r.callsPerSec).padStart(8)} FCALL/s = ${String(r.ticksPerSec).padStart(8)} ticks/s  debit share ${(r.debitShare * 100).toFixed(1).padStart(5)}%` +
      `  Redis time ${r.serverUsecPerCall.toFixed(1)} µs/FCALL = ${(r.serverUsecPerCall / ticksPer).toFixed(1)} µs/tick${forks ? `  (${forks} AOF rewrite/RDB fork during the run)` : ''}`,
  );
  return r;
}

/**
 * Bench-only: writes copies of one session hash under `prefix + 12-digit index`
 * for indexes from..to-1, with its `call` field renamed to match (keys not
 * declared: fine on the single Redis the bench runs).
 */
const CLONE_LUA = `
local prefix, from, to = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local fv, callAt = {}, nil
for i = 4, #ARGV do fv[#fv + 1] = ARGV[i] end
for i = 1, #fv, 2 do if fv[i] == 'call' then callAt = i + 1 end end
for k = from, to - 1 do
  local id = string.format('%012d', k)
  if callAt then fv[callAt] = 'rb-' .. id end
  redis.call('HSET', prefix .. id, unpack(fv))
end
return to - from`;

/** K fresh copies of the session (nothing billed) under clonePrefix; prints how long it took. */
async function cloneSessions(
  ctx: Context,
  template: Record<string, string>,
  clonePrefix: string,
  K: number,
): Promise<void> {
  const t0 = performance.now();
  // Server-side, 5,000 per script call: sending 100k HSETs from here took seconds on a busy machine.
  const flat = Object.entries(template).flat();
  for (let i = 0; i < K; i += 5000) await ctx.redis.eval(CLONE_LUA, 0, clonePrefix, i, Math.min(K, i + 5000), ...flat);
  console.log(`  (${K} sessions cloned for the next run in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
}

/**
 * The reference debit: what any per-second billing does, and nothing else (read
 * the balance, subtract, write it), once per key. call_tick's cost is judged
 * as a multiple of this one's, measured in the same run, called the same way
 * (a function of a library).
 */
const REFERENCE_FN = 'bench_reference_debit';
const REFERENCE_LIBRARY = `#!lua name=bench_reference
redis.register_function('${REFERENCE_FN}', function(KEYS, ARGV)
  for i = 1, #KEYS do
    local bal = tonumber(redis.call('HGET', KEYS[i], 'bal'))
    redis.call('HSET', KEYS[i], 'bal', string.format('%d', bal - 1))
  end
  return #KEYS
end)`;

/**
 * The session a few seconds into its talk: answered, billed to sec 1, with a reservation and a
 * grant beyond any sec the runs send (the bench ID's balance covers them), so that every tick
 * above what a session has billed is a steady one.
 */
function steadyTemplate(template: Record<string, string>): Record<string, string> {
  return { ...template, used: '1', ans: String(Date.now()), cov: String(1e14), gnt: String(1e9) };
}

/** The single-tick rate had every tick debited, solved from the dup-path and mixed runs; prints a line. */
function solveDebitPath(dupPath: RbRun, mixed: RbRun): { debitPathPerSec: number; derived: boolean } {
  const f = mixed.debitShare;
  let debitPathPerSec = mixed.callsPerSec;
  let derived = false;
  if (f > 0 && f < 0.999 && dupPath.callsPerSec > 0) {
    const tDebit = (1 / mixed.callsPerSec - (1 - f) / dupPath.callsPerSec) / f;
    // The debit path cannot be faster than the dup path; noise can make the solve say so.
    if (tDebit > 0 && 1 / tDebit <= dupPath.callsPerSec * 1.02) {
      debitPathPerSec = Math.round(1 / tDebit);
      derived = true;
    }
  }
  console.log(
    `  ${'debit path'.padEnd(12)} ${String(debitPathPerSec).padStart(8)} FCALL/s ${derived ? '(solved from the two runs above)' : '(mixed run as is: the solve was not usable)'}`,
  );
  return { debitPathPerSec, derived };
}

/**
 * The gateway's single-tick call, checked: numkeys 4, KEYS live, session, ID,
 * events stream; ARGV now, the refresh flags, sec.
 */
async function checkedTickLayout(
  ctx: Context,
  call: CeilingCall,
): Promise<{ live: string; idKey: string; events: string; fixed: string[] }> {
  const [numkeys, live, keySess, idKey, events, ...argv] = call.tickArgs;
  if (
    numkeys !== '4' ||
    keySess !== call.session ||
    argv.length !== 3 ||
    argv[2] !== '1' ||
    !live ||
    !idKey ||
    !events
  ) {
    throw new Error(
      `unexpected call_tick layout from the gateway: ${call.tickArgs.join(' ').slice(0, 300)} (bench/switch/ceiling.ts measureCeiling)`,
    );
  }
  // That very command again, by hand: a repeat of sec 1 must be a dup. call_tick answers
  // flat (packed: Scripts unpacks it), four entries per tick: the first is the code (1: dup,
  // plus 8 when the grant is final).
  const probe = await ctx.scripts.runFlat<unknown[]>('call_tick', [...call.tickArgs]);
  if ((Number(probe[0]) & 7) !== 1)
    throw new Error(
      `call_tick answered ${JSON.stringify(probe).slice(0, 200)} to a repeated sec 1 (bench/switch/ceiling.ts measureCeiling)`,
    );
  // ARGV: now, the calls whose live-set place is due ('1' for this first tick), sec. The runs
  // ask for none, as the gateway does for a call it refreshed less than 2 s ago (a first tick
  // is refreshed anyway): a ZADD per repeat would price the dup path at a refresh's cost.
  return { live, idKey, events, fixed: [argv[0]!, '0'] };
}

/**
 * The ceiling, with the gateway stopped.
 *
 * A tick only takes the debit path (HSET balance and session, threshold check)
 * when its sec is above what the session has billed; a repeated sec takes the
 * cheaper 'dup' path (reads and a ZADD). redis-benchmark cannot send a
 * monotonic counter, so:
 *  1. dupPath: -n --rb-requests repeats of the very FCALL the gateway sent
 *     (captured with MONITOR) for the tick at sec 1 of a call started through
 *     it: same keys, same sec, so every one is a dup.
 *  2. mixed: that session (as call_start wrote it) cloned to K = --rb-requests/2
 *     sessions, K ticks, the session key and sec both __rand_int__ in 0..K-1
 *     (sec bounded like the protocol's). Each session's first hit always
 *     debits, later hits debit only above the highest sec seen: about 80% of
 *     ticks debit. The exact share is measured, not assumed: each debit does
 *     two HSETs and nothing else in the tick does one (INFO commandstats).
 *  3. debit path: with f the debit share, time per tick t_mix = f·t_debit +
 *     (1-f)·t_dup, solved for t_debit. This is the figure the gateway's ticks
 *     (all debits) are compared with.
 *  4. batched (--rb-batch B): B ticks per FCALL on random sessions, the shape
 *     of the gateway's per-bucket batches at their largest.
 */
export async function measureCeiling(
  ctx: Context,
  redisPort: number,
  call: CeilingCall,
  opts: Options,
): Promise<Ceiling> {
  const { bucket, template, fn } = call;
  const { live, idKey, events, fixed } = await checkedTickLayout(ctx, call);
  // Sessions for the mixed and batched runs: as many as that run's ticks (half of -n, to keep a short
  // run short), which is what gives the ~80% debit share. Unlike production, where a bucket's live set
  // holds tens of calls, they all sit in one bucket: its ZADD works on a K-member sorted set (a few µs).
  const K = Math.max(1000, Math.floor(opts.rbRequests / 2));
  const clonePrefix = keys.call(bucket, 'bench-rb:rb-');
  const run = (
    label: string,
    n: number,
    random: number | undefined,
    cmd: string[],
    ticksPer: number,
    hsetsPerDebit?: number,
  ): Promise<RbRun> => rbRun(ctx, redisPort, opts, label, n, random, cmd, ticksPer, hsetsPerDebit);

  const dupPath = await run(
    'dup path',
    opts.rbRequests,
    undefined,
    ['FCALL', fn, '4', live, call.session, idKey, events, ...fixed, '1'],
    1,
  );
  await cloneSessions(ctx, template, clonePrefix, K);
  const mixed = await run(
    'mixed',
    K,
    K,
    ['FCALL', fn, '4', live, `${clonePrefix}__rand_int__`, idKey, events, ...fixed, '__rand_int__'],
    1,
  );
  const { debitPathPerSec, derived } = solveDebitPath(dupPath, mixed);

  let batched: Ceiling['batched'];
  let reference: Ceiling['reference'];
  if (opts.rbBatch > 1) {
    await cloneSessions(ctx, template, clonePrefix, K); // fresh sessions (billed 0) so the batch debits as much as the mixed run did
    const B = opts.rbBatch;
    const n = Math.max(500, Math.ceil(K / B));
    const cmd = ['FCALL', fn, String(2 * B + 2), live];
    for (let j = 0; j < B; j++) cmd.push(`${clonePrefix}__rand_int__`, idKey);
    cmd.push(events, ...fixed);
    for (let j = 0; j < B; j++) cmd.push('__rand_int__');
    const r = await run(`batch of ${B}`, n, K, cmd, B);
    batched = { ...r, batch: B };
    // The reference debit on the same ID hash: once per FCALL, then B per FCALL as the batch.
    await ctx.redis.call('FUNCTION', 'LOAD', 'REPLACE', REFERENCE_LIBRARY);
    const single = await run('reference', opts.rbRequests, undefined, ['FCALL', REFERENCE_FN, '1', idKey], 1, 1);
    // And on K copies of that ID hash at random, as the ticks above reach K sessions: the same
    // debit with the keyspace and CPU cache misses a tick meets, to tell those from the script's work.
    const idPrefix = `${keys.id(bucket, 'bench-rb-')}`;
    await cloneSessions(ctx, await ctx.redis.hgetall(idKey), idPrefix, K);
    const spread = await run(
      'reference, K IDs',
      opts.rbRequests,
      K,
      ['FCALL', REFERENCE_FN, '1', `${idPrefix}__rand_int__`],
      1,
      1,
    );
    const refBatch = await run(
      `reference ×${B}`,
      n,
      undefined,
      ['FCALL', REFERENCE_FN, String(B), ...Array<string>(B).fill(idKey)],
      B,
      1,
    );
    await cloneSessions(ctx, steadyTemplate(template), clonePrefix, K);
    const steady = await run(`steady ×${B}`, n, K, cmd, B);
    const perTick = r.serverUsecPerCall / B;
    const perSteadyTick = steady.serverUsecPerCall / B;
    const ratio = (x: number, per = perTick): number => Math.round((per / x) * 100) / 100;
    reference = {
      single,
      batched: { ...refBatch, batch: B },
      tickCostRatio: ratio(single.serverUsecPerCall),
      tickCostRatioBatched: ratio(refBatch.serverUsecPerCall / B),
      steady: { ...steady, batch: B },
      steadyTickCostRatio: ratio(single.serverUsecPerCall, perSteadyTick),
      spread,
      spreadTickCostRatio: ratio(spread.serverUsecPerCall, perTick),
      spreadSteadyTickCostRatio: ratio(spread.serverUsecPerCall, perSteadyTick),
    };
    console.log(
      `  ${'tick cost'.padEnd(12)} call_tick ${perTick.toFixed(1)} µs/tick = ${reference.tickCostRatio} × the reference debit ` +
        `once per FCALL (${single.serverUsecPerCall.toFixed(1)} µs), ${reference.tickCostRatioBatched} × it ${B} per FCALL; ` +
        `a steady tick ${perSteadyTick.toFixed(1)} µs = ${reference.steadyTickCostRatio} ×; against the debit of one of ` +
        `K IDs at random (${spread.serverUsecPerCall.toFixed(1)} µs) ${reference.spreadTickCostRatio} and ${reference.spreadSteadyTickCostRatio} ×`,
    );
  }
  return { fn, dupPath, mixed, debitPathPerSec, debitPathDerived: derived, batched, reference };
}

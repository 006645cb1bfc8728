/**
 * bench/common.ts — what the benchmarks share: their child processes (the
 * gateway through bench/gateway-child.js, watchdogs, tools), killing them and
 * the temp dir on exit or interrupt, CPU and memory of a process read from
 * /proc, and the flag helpers of their option parsers.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { openContext, type Context } from '../src/app/context';
import { loadConfig } from '../src/config/config';
import { createLogger } from '../src/observability/log';
import type { RedisClient } from '../src/redis/connect';
import { freePort, startEmbeddedRedis, type EmbeddedRedis } from '../src/redis/embedded';

// --------------------------------------------------------- child processes

/** Every child still to kill when the bench goes away. */
export const children = new Set<ChildProcess>();

/** What cleanup removes and kills besides `children`; a bench fills it in as it goes. */
export const cleanup: {
  tmp: string;
  keepTmp: boolean;
  redis?: EmbeddedRedis;
  /** redis-server's own pid (startEmbeddedRedis may run it under a wrapper shell). */
  redisPid?: number;
} = { tmp: '', keepTmp: false };

export function killChildren(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  const { redis, redisPid } = cleanup;
  if (redis && redis.process.exitCode === null) redis.process.kill('SIGKILL');
  if (redisPid) {
    try {
      process.kill(redisPid, 'SIGKILL');
    } catch {
      /* gone already */
    }
  }
}

export function cleanupAndExit(code: number): never {
  killChildren();
  if (cleanup.tmp && !cleanup.keepTmp) rmSync(cleanup.tmp, { recursive: true, force: true });
  process.exit(code);
}

/** Kills the children on exit, and cleans up on SIGINT / SIGTERM. */
export function cleanUpOnExit(): void {
  process.on('exit', killChildren);
  process.on('SIGINT', () => {
    process.stderr.write('\nbench: interrupted, cleaning up\n');
    cleanupAndExit(130);
  });
  process.on('SIGTERM', () => cleanupAndExit(143));
}

/** Runs main; exits with process.exitCode (0 unless set) or, when it throws, prints the error and cleans up. */
export function runMain(main: () => Promise<void>): void {
  main().then(
    () => process.exit(process.exitCode ?? 0),
    (err: unknown) => {
      process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
      cleanupAndExit(1);
    },
  );
}

/**
 * Kills pid when this process goes away, even by SIGKILL: a shell holding our
 * stdin pipe does it on EOF. (startEmbeddedRedis kills its redis-server when
 * this process exits, but not if it is SIGKILLed; the gateway child watches its
 * own stdin.)
 */
export function watchdog(pid: number | undefined): ChildProcess | undefined {
  if (!pid) return undefined;
  const w = spawn('sh', ['-c', `read _ || true; kill -KILL ${pid} 2>/dev/null`], { stdio: ['pipe', 'ignore', 'ignore'] });
  w.on('error', () => undefined);
  children.add(w);
  w.once('exit', () => children.delete(w));
  return w;
}

/** redis-server's own pid, from INFO server (it may run under a wrapper shell). */
export async function redisServerPid(r: RedisClient, redis: EmbeddedRedis): Promise<number | undefined> {
  return Number(/^process_id:(\d+)/m.exec((await r.info('server')) as string)?.[1]) || redis.process.pid;
}

/** A temp dir of the bench's own (`cleanup` removes it on failure unless keep). */
export function makeTmp(prefix: string, keep: boolean): string {
  cleanup.tmp = mkdtempSync(join(tmpdir(), prefix));
  cleanup.keepTmp = keep;
  return cleanup.tmp;
}

/** Removes the temp dir at the end of a run, or says where it was kept. */
export function removeTmp(): void {
  if (!cleanup.keepTmp) rmSync(cleanup.tmp, { recursive: true, force: true });
  else console.log(`kept ${cleanup.tmp}`);
}

export interface BenchRedis {
  redis: EmbeddedRedis;
  /** redis-server's own pid. */
  pid: number | undefined;
  /** A silent context on it (config from env, REDIS_URL its URL). */
  ctx: Context;
  /** Closes the context and stops redis-server. */
  stop(): Promise<void>;
}

/**
 * The bench's own redis-server in the temp dir's redis/ (AOF, appendfsync
 * everysec, as in production), killed with the bench even if that is SIGKILLed.
 */
export async function startBenchRedis(env: Record<string, string>): Promise<BenchRedis> {
  const redis = await startEmbeddedRedis({ dir: join(cleanup.tmp, 'redis'), persist: true });
  cleanup.redis = redis;
  const ctx = await openContext(loadConfig({ REDIS_URL: redis.url, ...env }), createLogger('silent'), redis.url);
  const pid = await redisServerPid(ctx.redis, redis);
  cleanup.redisPid = pid;
  const dog = watchdog(pid);
  return {
    redis,
    pid,
    ctx,
    async stop() {
      await ctx.close();
      await redis.stop();
      cleanup.redis = undefined;
      cleanup.redisPid = undefined;
      dog?.kill('SIGKILL');
    },
  };
}

/** Keeps the last 200 lines (each cut at 400 characters) a child writes to stdout and stderr. */
export function keepLogs(proc: ChildProcess): string[] {
  const logs: string[] = [];
  const keep = (d: Buffer): void => {
    for (const line of d.toString().split('\n')) if (line.trim()) logs.push(line.length > 400 ? line.slice(0, 400) + '…' : line);
    if (logs.length > 200) logs.splice(0, logs.length - 200);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  return logs;
}

export interface GatewayChild {
  proc: ChildProcess;
  port: number;
  /** The last lines it wrote (empty with `inheritOutput`). */
  logs: string[];
}

export interface GatewayChildOptions {
  redisUrl: string;
  dataDir: string;
  secret: string;
  /** More environment, after the bench's own and before gwEnv. */
  env?: NodeJS.ProcessEnv;
  /** The --gw-env of the bench's command line: last, over everything else. */
  gwEnv?: Record<string, string>;
  /** Variables taken out of the environment (REDIS_CLUSTER always is, unless `cluster` is given). */
  unset?: string[];
  /** REDIS_CLUSTER for the gateway, instead of redisUrl. */
  cluster?: string;
  /** Node flags before the script (--cpu-prof, ...). */
  nodeArgs?: string[];
  /** The gateway's own arguments (`--workers N`). */
  args?: string[];
  /** Also write its stdout and stderr to this file. */
  logFile?: string;
  /** Its stdout and stderr go to ours instead of being kept. */
  inheritOutput?: boolean;
}

/**
 * Starts the gateway (dist/src/main.js through gateway-child.js) on a free port
 * as a child process (LOG_LEVEL warn) and resolves once /readyz answers 200.
 */
export async function startGatewayChild(o: GatewayChildOptions): Promise<GatewayChild> {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...(o.cluster ? { REDIS_CLUSTER: o.cluster } : { REDIS_URL: o.redisUrl }),
    PORT: String(port),
    HOST: '127.0.0.1',
    TESSERA_SECRET: o.secret,
    LOG_LEVEL: 'warn',
    DATA_DIR: o.dataDir,
    ...o.env,
    ...o.gwEnv,
  };
  for (const k of [o.cluster ? 'REDIS_URL' : 'REDIS_CLUSTER', ...(o.unset ?? [])]) delete env[k];
  const proc = spawn(process.execPath, [...(o.nodeArgs ?? []), join(__dirname, 'gateway-child.js'), ...(o.args ?? [])], { env, stdio: ['pipe', o.inheritOutput ? 'inherit' : 'pipe', o.inheritOutput ? 'inherit' : 'pipe'] });
  children.add(proc);
  const logs = o.inheritOutput ? [] : keepLogs(proc);
  if (o.logFile && !o.inheritOutput) {
    const file = createWriteStream(o.logFile);
    file.on('error', (err) => process.stderr.write(`bench: --gw-log: ${err.message}\n`));
    proc.stdout!.pipe(file, { end: false });
    proc.stderr!.pipe(file, { end: false });
    proc.once('exit', () => setTimeout(() => file.end(), 100));
  }
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`gateway exited (${proc.exitCode ?? proc.signalCode}):\n${logs.join('\n')}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`gateway not ready on ${port} after 20 s:\n${logs.join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { proc, port, logs };
}

/** Stops a child gracefully (SIGKILL after 15 s) and waits for it to exit. */
export async function stopChild(proc: ChildProcess, signal: NodeJS.Signals = 'SIGINT'): Promise<void> {
  if (proc.exitCode === null && proc.signalCode === null) {
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill(signal);
    const t = setTimeout(() => proc.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(t);
  }
  children.delete(proc);
}

// ------------------------------------------------------------ cpu and memory

const CLK_TCK = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
})();

/** CPU seconds (user + system, all threads) a process has used so far. */
export function cpuSec(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** CPU seconds of a process and every process below it (the workers of `--workers N`). */
export function cpuSecTree(pid: number | undefined): number {
  if (!pid) return 0;
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    /* gone */
  }
  return cpuSec(pid) + children.reduce((sum, c) => sum + cpuSecTree(c), 0);
}

/** A kB field of /proc/PID/status: VmHWM (peak RSS) or VmRSS. */
export function statusKb(pid: number | undefined, field: 'VmHWM' | 'VmRSS'): number {
  if (!pid) return 0;
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** CPU seconds this process has used so far. */
export const ownCpuSec = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

// ------------------------------------------------------------------ flags

/** The command line's flags (strict, no positionals), plus --help: prints usage and exits 0. */
export function parseFlags<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O, usage: string) {
  const { values } = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', default: false } }, strict: true, allowPositionals: false });
  if ((values as { help?: boolean }).help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  return values;
}

/** An integer flag value in min..max, else an error naming the flag. */
export function intFlag(name: string, v: string | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name}: expected an integer in ${min}..${max}, got ${v}`);
  return n;
}

/** The repeatable --gw-env K=V flag as an environment. */
export function gwEnvFlag(list: string[] | undefined): Record<string, string> {
  const gwEnv: Record<string, string> = {};
  for (const kv of list ?? []) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new Error(`--gw-env: K=V, got ${kv}`);
    gwEnv[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return gwEnv;
}

export const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US');

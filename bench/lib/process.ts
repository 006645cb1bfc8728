/**
 * The benchmarks' child processes (gateways, redis-server, watchdogs, tools):
 * killing them and removing the temp dir on exit, failure or interrupt, and
 * the run-main wrapper every benchmark ends with.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The repository's root (bench/lib/../..): where dist/, lua/ and deploy/ are. */
export const ROOT = join(__dirname, '..', '..');

/** Every child still to kill when the bench goes away. */
export const children = new Set<ChildProcess>();

/** What cleanup removes and kills besides `children`; a bench fills it in as it goes. */
export const cleanup: {
  tmp: string;
  keepTmp: boolean;
  /** The bench's redis-server, from the moment it is spawned (it writes into the temp dir). */
  redisPid?: number;
} = { tmp: '', keepTmp: false };

export function killChildren(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  const { redisPid } = cleanup;
  if (redisPid) {
    try {
      process.kill(redisPid, 'SIGKILL');
    } catch {
      /* gone already */
    }
  }
}

/** Whether process `pid` still runs: gone, or a zombie not yet reaped, it writes nothing more. */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

export function cleanupAndExit(code: number): never {
  killChildren();
  if (cleanup.tmp && !cleanup.keepTmp) {
    // A SIGKILL is sent, not yet done: a redis-server still writing into the dir for a moment made
    // the removal fail (ENOTEMPTY) and left the dir behind. Its end is waited for (2 s at most; this
    // runs in a signal handler, so synchronously), and the removal retried.
    const { redisPid } = cleanup;
    const until = Date.now() + 2000;
    while (redisPid && running(redisPid) && Date.now() < until)
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    rmSync(cleanup.tmp, { recursive: true, force: true, maxRetries: 20, retryDelay: 25 });
  }
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
      process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      cleanupAndExit(1);
    },
  );
}

/**
 * Sends pid `signal` when this process goes away, even by SIGKILL: a shell
 * holding our stdin pipe does it on EOF. (startEmbeddedRedis kills its
 * redis-server when this process exits, but not if it is SIGKILLed.)
 */
export function watchdog(pid: number | undefined, signal: 'KILL' | 'INT' = 'KILL'): ChildProcess | undefined {
  if (!pid) return undefined;
  const w = spawn('sh', ['-c', `read _ || true; kill -${signal} ${pid} 2>/dev/null`], {
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  w.on('error', () => undefined);
  children.add(w);
  w.once('exit', () => children.delete(w));
  return w;
}

/** Keeps the last 200 lines (each cut at 400 characters) a child writes to stdout and stderr. */
export function keepLogs(proc: ChildProcess): string[] {
  const logs: string[] = [];
  const keep = (d: Buffer): void => {
    for (const line of d.toString().split('\n'))
      if (line.trim()) logs.push(line.length > 400 ? line.slice(0, 400) + '…' : line);
    if (logs.length > 200) logs.splice(0, logs.length - 200);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  return logs;
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

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A redis-server child process for development and tests: persistence on
 * (AOF, fsync every second), data in its own directory, bound to loopback.
 * A small sh watchdog stops it when our stdin pipe closes, so it ends with the
 * gateway even when the gateway is killed with SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import Redis from 'ioredis';

export interface EmbeddedRedis {
  url: string;
  port: number;
  dir: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** Whether a TCP listener can take `port` on loopback now. */
export const tcpPortFree = (port: number): Promise<boolean> =>
  new Promise((ok) => {
    const s = createServer().once('error', () => ok(false));
    s.listen(port, '127.0.0.1', () => s.close(() => ok(true)));
  });

/**
 * A base port for deploy/cluster/local-cluster.sh: six free ports from it, and
 * free cluster bus ports (each +10000) too.
 */
export async function freeClusterBase(): Promise<number> {
  for (;;) {
    const base = 20000 + Math.floor(Math.random() * 30000);
    let all = true;
    for (let i = 0; i < 6 && all; i++) all = (await tcpPortFree(base + i)) && (await tcpPortFree(base + i + 10000));
    if (all) return base;
  }
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? res(addr.port) : rej(new Error('no port'))));
    });
  });
}

export interface EmbeddedOptions {
  dir: string;
  port?: number;
  /** false for throwaway test instances: no AOF, no RDB. */
  persist?: boolean;
  extraArgs?: string[];
  /**
   * Called with redis-server's process as soon as it is spawned, before it answers: a caller
   * interrupted while Redis boots (a benchmark's Ctrl-C) can kill it and wait for its end.
   */
  onSpawn?: (process: ChildProcess) => void;
}

export async function startEmbeddedRedis(opts: EmbeddedOptions): Promise<EmbeddedRedis> {
  const dir = resolve(opts.dir);
  mkdirSync(dir, { recursive: true });
  const port = opts.port || (await freePort());
  const persist = opts.persist ?? true;
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    // The AOF is the persistence. No timed RDB snapshots on top: each one forks the
    // whole dataset while calls tick (backups take an explicit BGSAVE, docs/operations.md).
    // Every tick appends to the AOF, so its rewrite waits for real growth, not the 64mb default.
    '--save',
    '',
    '--appendonly',
    persist ? 'yes' : 'no',
    '--appendfsync',
    'everysec',
    '--auto-aof-rewrite-min-size',
    '512mb',
    // A window of scan claims or records is one hash that expires whole: freed in the background.
    '--lazyfree-lazy-expire',
    'yes',
    '--daemonize',
    'no',
    '--protected-mode',
    'yes',
    '--loglevel',
    'warning',
    ...(opts.extraArgs ?? []),
  ];
  // A reader kills redis-server on EOF from us; sh then becomes redis-server (exec, same pid), so
  // our child process is the server itself: killing it, or waiting for it, is killing or waiting
  // for Redis. (A background job's stdin is /dev/null, hence our pipe kept on fd 3 for the reader.)
  const watchdog = 'exec 3<&0; (read _ <&3; kill -TERM $$ 2>/dev/null) & exec redis-server "$@"';
  const child = spawn('sh', ['-c', watchdog, 'tessera-redis', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  opts.onSpawn?.(child);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const killOnExit = (): void => void child.stdin?.destroy();
  process.once('exit', killOnExit);

  const url = `redis://127.0.0.1:${port}`;
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', () => undefined); // refused while redis-server boots: expected
  const deadline = Date.now() + 10_000;
  try {
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`redis-server exited (${child.exitCode ?? child.signalCode}): ${stderr.trim()}`);
      try {
        if (probe.status !== 'ready') await probe.connect();
        // LOADING while the AOF replays: wait for it.
        if ((await probe.ping()) === 'PONG') break;
      } catch {
        probe.disconnect();
      }
      if (Date.now() > deadline) throw new Error(`redis-server did not start on ${port}: ${stderr.trim()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  } finally {
    probe.disconnect();
  }

  return {
    url,
    port,
    dir,
    process: child,
    async stop() {
      process.removeListener('exit', killOnExit);
      if (child.exitCode === null) {
        child.stdin?.end();
        await exited;
      }
    },
  };
}

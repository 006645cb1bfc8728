/**
 * `node dist/src/main.js [--sandbox] [--workers N]` (`npm start` passes
 * --sandbox): the gateway, with its own Redis child process when none is
 * configured. --sandbox runs the sandbox card company beside it when
 * PROVIDER_URL is unset (never with NODE_ENV=production); without either the
 * gateway refuses to start. With --workers N, this process keeps the embedded
 * Redis and the sandbox card company and runs N gateway processes that all
 * listen on PORT (SO_REUSEPORT: the kernel spreads the connections); a worker
 * that dies is started again. A port another process holds is refused, with
 * or without --workers.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Logger } from 'pino';
import { embeddedUrlFile } from './app/context';
import { resolveSecret } from './app/secret';
import { ConfigError, loadConfig, paymentSetup, type Config } from './config/config';
import { startGateway } from './gateway/server';
import { createLogger } from './observability/log';
import { WorkerMetrics, workerScrape } from './observability/worker-metrics';
import { startEmbeddedRedis } from './redis/embedded';
import { DEMO_MEMBERS, Sandbox } from './dev/sandbox';

/** Set in the environment of the gateways --workers starts: they share PORT. */
const WORKER_ENV = 'TESSERA_WORKER';

async function main(): Promise<void> {
  const { cfg, workers, sandboxed } = readCommandLine();
  const log = createLogger(cfg.logLevel);
  if (workers > 1) await portFree(cfg);
  const redis = await startOwnRedis(cfg, log);
  const sandbox = sandboxed ? await startSandbox(cfg, log) : undefined;
  let stopGateways = async (): Promise<void> => undefined;
  const stopper = stopOnce(log, async () => {
    await stopGateways();
    await sandbox?.close();
    if (redis) {
      await redis.stop();
      rmSync(join(cfg.dataDir, 'provider.url'), { force: true });
    }
  });
  stopGateways =
    workers === 1
      ? await runGateway(cfg, log, redis?.url ?? cfg.redis.url, stopper)
      : runWorkers(cfg, log, workers, redis?.url, stopper);
  process.on('SIGINT', () => void stopper.shutdown('SIGINT'));
  process.on('SIGTERM', () => void stopper.shutdown('SIGTERM'));
}

/** The configuration and the command line, checked before anything starts. */
function readCommandLine(): { cfg: Config; workers: number; sandboxed: boolean } {
  const { values } = parseArgs({
    options: { workers: { type: 'string', default: '1' }, sandbox: { type: 'boolean', default: false } },
    strict: true,
  });
  const workers = Number(values.workers);
  const cfg = loadConfig();
  // Before anything starts: a configuration that cannot sell safely stops here (exit code 2).
  const payments = paymentSetup(cfg, values.sandbox);
  if (!Number.isInteger(workers) || workers < 1 || workers > 64)
    throw new ConfigError(`--workers must be 1 to 64, not ${values.workers}`);
  if (workers > 1 && cfg.port === 0) throw new ConfigError('--workers needs a fixed PORT: the workers share it');
  return { cfg, workers, sandboxed: payments === 'sandbox' };
}

/** Our own Redis child process when none is configured; its exit ends this process, unless we stop it. */
async function startOwnRedis(cfg: Config, log: Logger): Promise<{ url: string; stop(): Promise<void> } | undefined> {
  if (cfg.redis.url || cfg.redis.cluster) return undefined;
  const onRedisExit = (code: number | null, signal: NodeJS.Signals | null): void => {
    log.fatal({ code, signal }, 'embedded Redis exited');
    process.exit(1);
  };
  const embedded = await startEmbeddedRedis({
    dir: join(cfg.dataDir, 'redis'),
    port: cfg.redis.embeddedPort || undefined,
  });
  writeFileSync(embeddedUrlFile(cfg), embedded.url + '\n');
  log.info(
    { url: embedded.url, dir: embedded.dir },
    'embedded Redis started (AOF, appendfsync everysec); set REDIS_URL to use your own',
  );
  embedded.process.once('exit', onRedisExit);
  const stop = async (): Promise<void> => {
    // Only our own listener: the one inside stop() must still see Redis exit.
    embedded.process.removeListener('exit', onRedisExit);
    await embedded.stop();
    rmSync(embeddedUrlFile(cfg), { force: true });
  };
  return { url: embedded.url, stop };
}

/** --sandbox: the sandbox card company on a local port, which becomes PROVIDER_URL. */
async function startSandbox(cfg: Config, log: Logger): Promise<Sandbox> {
  const sandbox = new Sandbox();
  const port = await sandbox.listen(cfg.provider.sandboxPort);
  cfg.provider.url = `http://127.0.0.1:${port}`;
  mkdirSync(cfg.dataDir, { recursive: true });
  writeFileSync(join(cfg.dataDir, 'provider.url'), cfg.provider.url + '\n');
  log.warn(
    { url: cfg.provider.url, members: DEMO_MEMBERS.map((m) => ({ name: m.name, card: m.card, pin: m.pin })) },
    '--sandbox: the sandbox card company runs beside the gateway (test cards, no real money); set PROVIDER_URL for a real one',
  );
  return sandbox;
}

interface Stopper {
  /** Set from the first shutdown on: workers that exit then are not started again. */
  stopping(): boolean;
  shutdown(signal: string, exitCode?: number): Promise<void>;
}

/** Stops everything once (`stopAll`), then exits. */
function stopOnce(log: Logger, stopAll: () => Promise<void>): Stopper {
  let stopping = false;
  const shutdown = async (signal: string, exitCode = 0): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    await stopAll();
    process.exit(exitCode);
  };
  return { stopping: () => stopping, shutdown };
}

/** The gateway in this process; returns what stops it. */
async function runGateway(
  cfg: Config,
  log: Logger,
  redisUrl: string | undefined,
  stopper: Stopper,
): Promise<() => Promise<void>> {
  const gw = await startGateway(cfg, log, redisUrl, { sharedPort: process.env[WORKER_ENV] === '1' });
  // A worker's scrape is answered with every worker's metrics, added up by the primary.
  if (process.env[WORKER_ENV] === '1') gw.metrics.scrape = workerScrape(gw.metrics.registry);
  // The demo is worth a word only to a gateway with nothing to sell yet.
  const empty = gw.catalog.products.length === 0;
  log.info(
    { url: `ws://localhost:${gw.port}/v1/switch` },
    `ready: switches connect here${empty ? '; `npx tessera demo` loads a demo catalog and ID' : ''}`,
  );
  // A worker of --workers: when the process that started it is gone (even by kill -9), so is it.
  if (process.channel) process.once('disconnect', () => void stopper.shutdown('parent gone'));
  return (): Promise<void> => gw.close();
}

/**
 * The workers share PORT with one another (SO_REUSEPORT) and so would with
 * anything else that set it: refuse to start them on a port already in use,
 * as a single gateway refuses (src/gateway/server.ts).
 */
async function portFree(cfg: Config): Promise<void> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen({ host: cfg.host, port: cfg.port }, resolve);
  }).catch((err: NodeJS.ErrnoException) => {
    throw new ConfigError(`cannot listen on ${cfg.host}:${cfg.port}: ${err.code ?? err.message}`);
  });
  await new Promise((resolve) => probe.close(resolve));
}

/** --workers N: N gateway processes (this program again) on one port; returns what stops them. */
function runWorkers(
  cfg: Config,
  log: Logger,
  workers: number,
  redisUrl: string | undefined,
  stopper: Stopper,
): () => Promise<void> {
  // Written now, so that every worker reads the same development secret.
  resolveSecret(cfg, (msg) => log.warn(msg));
  const env = {
    ...process.env,
    PROVIDER_URL: cfg.provider.url,
    ...(redisUrl ? { REDIS_URL: redisUrl } : {}),
    [WORKER_ENV]: '1',
  };
  const running = new Set<ChildProcess>();
  const metrics = new WorkerMetrics();
  const startWorker = (n: number): void => {
    const child = fork(__filename, [], { env });
    running.add(child);
    metrics.add(child);
    child.once('exit', (code, signal) => {
      running.delete(child);
      if (stopper.stopping()) return;
      // A configuration error would only repeat: stop instead of restarting it forever.
      if (code === 2) {
        log.fatal({ worker: n }, 'gateway worker refused its configuration; stopping');
        return void stopper.shutdown('worker configuration error', 2);
      }
      log.error({ worker: n, workerPid: child.pid, code, signal }, 'gateway worker exited; starting another');
      setTimeout(() => startWorker(n), 500).unref();
    });
  };
  for (let n = 1; n <= workers; n++) startWorker(n);
  log.info({ workers, url: `ws://localhost:${cfg.port}/v1/switch` }, 'started gateway workers on one port');
  return async (): Promise<void> => {
    const exited = [...running].map((c) => new Promise((r) => c.once('exit', r)));
    for (const c of running) c.kill('SIGTERM');
    await Promise.all(exited);
  };
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`tessera: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`tessera: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});

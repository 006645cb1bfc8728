import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { embeddedUrlFile } from './app/context';
import { resolveSecret } from './app/secret';
import { ConfigError, loadConfig, paymentSetup } from './config/config';
import { startGateway } from './gateway/server';
import { createLogger } from './observability/log';
import { startEmbeddedRedis, type EmbeddedRedis } from './redis/embedded';
import { DEMO_MEMBERS, Sandbox } from './dev/sandbox';

/**
 * `node dist/src/main.js [--sandbox] [--workers N]` (`npm start` passes
 * --sandbox): the gateway, with its own Redis child process when none is
 * configured. --sandbox runs the sandbox card company beside it when
 * PROVIDER_URL is unset (never with NODE_ENV=production); without either the
 * gateway refuses to start. With --workers N, this process keeps the embedded
 * Redis and the sandbox card company and runs N gateway processes that all
 * listen on PORT (SO_REUSEPORT: the kernel spreads the connections); a worker
 * that dies is started again.
 */
async function main(): Promise<void> {
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
  const log = createLogger(cfg.logLevel);

  let embedded: EmbeddedRedis | undefined;
  const onRedisExit = (code: number | null): void => {
    log.fatal({ code }, 'embedded Redis exited');
    process.exit(1);
  };
  if (!cfg.redis.url && !cfg.redis.cluster) {
    embedded = await startEmbeddedRedis({ dir: join(cfg.dataDir, 'redis'), port: cfg.redis.embeddedPort || undefined });
    writeFileSync(embeddedUrlFile(cfg), embedded.url + '\n');
    log.info(
      { url: embedded.url, dir: embedded.dir },
      'embedded Redis started (AOF, appendfsync everysec); set REDIS_URL to use your own',
    );
    embedded.process.once('exit', onRedisExit);
  }

  let sandbox: Sandbox | undefined;
  if (payments === 'sandbox') {
    sandbox = new Sandbox();
    const port = await sandbox.listen(cfg.provider.sandboxPort);
    cfg.provider.url = `http://127.0.0.1:${port}`;
    mkdirSync(cfg.dataDir, { recursive: true });
    writeFileSync(join(cfg.dataDir, 'provider.url'), cfg.provider.url + '\n');
    log.warn(
      { url: cfg.provider.url, members: DEMO_MEMBERS.map((m) => ({ name: m.name, card: m.card, pin: m.pin })) },
      '--sandbox: the sandbox card company runs beside the gateway (test cards, no real money); set PROVIDER_URL for a real one',
    );
  }

  let stopping = false;
  let stopGateways: () => Promise<void>;
  if (workers === 1) {
    const gw = await startGateway(cfg, log, embedded?.url ?? cfg.redis.url);
    log.info(
      { url: `ws://localhost:${gw.port}/v1/switch` },
      'ready: switches connect here; `npx tessera demo` loads a demo catalog and ID',
    );
    stopGateways = () => gw.close();
    // A worker of --workers: when the process that started it is gone (even by kill -9), so is it.
    if (process.channel) process.once('disconnect', () => void shutdown('parent gone'));
  } else {
    // Written now, so that every worker reads the same development secret.
    resolveSecret(cfg, (msg) => log.warn(msg));
    const env = { ...process.env, PROVIDER_URL: cfg.provider.url, ...(embedded ? { REDIS_URL: embedded.url } : {}) };
    const running = new Set<ChildProcess>();
    const startWorker = (n: number): void => {
      const child = fork(__filename, [], { env });
      running.add(child);
      child.once('exit', (code, signal) => {
        running.delete(child);
        if (stopping) return;
        // A configuration error would only repeat: stop instead of restarting it forever.
        if (code === 2) {
          log.fatal({ worker: n }, 'gateway worker refused its configuration; stopping');
          return void shutdown('worker configuration error', 2);
        }
        log.error({ worker: n, pid: child.pid, code, signal }, 'gateway worker exited; starting another');
        setTimeout(() => startWorker(n), 500).unref();
      });
    };
    for (let n = 1; n <= workers; n++) startWorker(n);
    log.info({ workers, url: `ws://localhost:${cfg.port}/v1/switch` }, 'started gateway workers on one port');
    stopGateways = async () => {
      const exited = [...running].map((c) => new Promise((r) => c.once('exit', r)));
      for (const c of running) c.kill('SIGTERM');
      await Promise.all(exited);
    };
  }

  const shutdown = async (signal: string, exitCode = 0): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    await stopGateways();
    await sandbox?.close();
    if (embedded) {
      // Only our own listener: the one inside stop() must still see Redis exit.
      embedded.process.removeListener('exit', onRedisExit);
      await embedded.stop();
      rmSync(embeddedUrlFile(cfg), { force: true });
      rmSync(join(cfg.dataDir, 'provider.url'), { force: true });
    }
    process.exit(exitCode);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`tessera: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`tessera: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});

import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { embeddedUrlFile } from './app/context';
import { ConfigError, loadConfig, type Config } from './config/config';
import { startGateway } from './gateway/server';
import { createLogger } from './observability/log';
import { startEmbeddedRedis, type EmbeddedRedis } from './redis/embedded';
import { DEMO_MEMBERS, Sandbox } from './sandbox/server';

/** `npm start`: the gateway, with its own Redis child process when none is configured. */
async function main(): Promise<void> {
  let cfg: Config;
  try {
    cfg = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`tessera: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger(cfg.logLevel);

  let embedded: EmbeddedRedis | undefined;
  const onRedisExit = (code: number | null): void => {
    log.fatal({ code }, 'embedded Redis exited');
    process.exit(1);
  };
  if (!cfg.redis.url && !cfg.redis.cluster) {
    embedded = await startEmbeddedRedis({ dir: join(cfg.dataDir, 'redis'), port: cfg.redis.embeddedPort || undefined });
    writeFileSync(embeddedUrlFile(cfg), embedded.url + '\n');
    log.info({ url: embedded.url, dir: embedded.dir }, 'embedded Redis started (AOF, appendfsync everysec); set REDIS_URL to use your own');
    embedded.process.once('exit', onRedisExit);
  }

  let sandbox: Sandbox | undefined;
  if (!cfg.provider.url) {
    sandbox = new Sandbox();
    const port = await sandbox.listen(cfg.provider.sandboxPort);
    cfg.provider.url = `http://127.0.0.1:${port}`;
    mkdirSync(cfg.dataDir, { recursive: true });
    writeFileSync(join(cfg.dataDir, 'provider.url'), cfg.provider.url + '\n');
    log.warn(
      { url: cfg.provider.url, members: DEMO_MEMBERS.map((m) => ({ name: m.name, card: m.card, pin: m.pin })) },
      'PROVIDER_URL not set: the sandbox payment provider runs beside the gateway (no real money); set PROVIDER_URL for a real one',
    );
  }

  const gw = await startGateway(cfg, log, embedded?.url ?? cfg.redis.url);
  log.info({ url: `ws://localhost:${gw.port}/v1/switch` }, 'ready: switches connect here; `npx tessera demo` loads a demo catalog and ID');

  let stopping = false;
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    await gw.close();
    await sandbox?.close();
    if (embedded) {
      // Only our own listener: the one inside stop() must still see Redis exit.
      embedded.process.removeListener('exit', onRedisExit);
      await embedded.stop();
      rmSync(embeddedUrlFile(cfg), { force: true });
      rmSync(join(cfg.dataDir, 'provider.url'), { force: true });
    }
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`tessera: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`tessera: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});

/**
 * The gateway process: WebSocket endpoints for switches and scanners, the HTTP
 * API, the buyer's pages, health and metrics. It holds no state that matters;
 * everything lives in Redis, so any copy can serve any event. This file only
 * composes: the services, then the endpoints and routes, then listen and close.
 */
import uWS, { type TemplatedApp, type us_listen_socket } from 'uWebSockets.js';
import type { Logger } from 'pino';
import { openContext, type Context } from '../app/context';
import { CatalogCache } from '../catalog/cache';
import { ConfigError, type Config } from '../config/config';
import { HookDelivery } from '../hooks/delivery';
import { ExpiringSweep } from '../hooks/expiring';
import { ExpirySweep } from '../ledger/expiry-sweep';
import { AniRegistry, aniTermsOf } from '../ledger/anis';
import { Reaper } from '../metering/reaper';
import { Metering } from '../metering/service';
import { Metrics } from '../observability/metrics';
import { connectRedis, waitReady, type RedisClient } from '../redis/connect';
import { failureCode } from '../redis/failure';
import { proxyTrust } from '../protocol/client-address';
import { openScanWindows } from '../redemption/scan-windows';
import { RedisClock } from '../redis/clock';
import { Redemption } from '../redemption/service';
import { sweepRefundVoids } from '../sales/admin';
import { sweepLateAuthorizations } from '../sales/payment-record';
import { CheckLinks } from '../sales/check';
import { Inventory } from '../sales/inventory';
import { HttpProvider } from '../sales/provider';
import { Purchases } from '../sales/purchase';
import { Recharges } from '../sales/recharge';
import { Topups } from '../sales/topup';
import { Load } from './dispatch';
import { authorizeFresh } from './http';
import { HttpApi } from './http-api';
import { adminRoutes } from './routes/admin';
import { opsRoutes } from './routes/ops';
import { pageRoutes } from './routes/pages';
import { methodRouter } from './router';
import { OutputBudget } from './output-budget';
import { salesRoutes } from './routes/sales';
import { scannerHttp, scannerRoutes } from './routes/scanner';
import { switchRoutes } from './routes/switch';
import { topupRoutes } from './routes/topup';
import { WsEndpoints } from './ws-endpoint';

export interface Gateway {
  port: number;
  ctx: Context;
  catalog: CatalogCache;
  metering: Metering;
  redemption: Redemption;
  purchases: Purchases;
  topups: Topups;
  recharges: Recharges;
  /** The check links' PIN checks. */
  checks: CheckLinks;
  inventory: Inventory;
  reaper: Reaper;
  metrics: Metrics;
  /** Webhook delivery of balance events, and the sweep that emits `expiring`. */
  hooks: HookDelivery;
  expiring: ExpiringSweep;
  /** The sweep that forfeits what IDs past their expiry have left, with a record each. */
  expiry: ExpirySweep;
  close(): Promise<void>;
}

/** What the endpoints serve: Redis connections, the catalog and the domain services. */
interface Services {
  ctx: Context;
  /** Catalog announcements (pub/sub needs a connection of its own). */
  subscriber: RedisClient;
  /** Scan claims get a connection of their own (src/redemption/service.ts says why). */
  claimRedis: RedisClient;
  /** Redis' time, which places scans in their windows on every gateway alike. */
  scanClock: RedisClock;
  catalog: CatalogCache;
  metrics: Metrics;
  metering: Metering;
  reaper: Reaper;
  hooks: HookDelivery;
  expiring: ExpiringSweep;
  expiry: ExpirySweep;
  redemption: Redemption;
  provider: HttpProvider;
  inventory: Inventory;
  purchases: Purchases;
  topups: Topups;
  recharges: Recharges;
  checks: CheckLinks;
}

/**
 * `sharedPort`: a worker of `--workers`, which listens on PORT beside its
 * siblings (SO_REUSEPORT). Any other gateway holds its port alone: a second
 * one started on it by mistake must fail, not take half of its connections.
 */
export async function startGateway(
  cfg: Config,
  log: Logger,
  redisUrl?: string,
  { sharedPort = false } = {},
): Promise<Gateway> {
  let port = 0;
  const publicUrl = (): string => cfg.publicUrl ?? `http://localhost:${port}`;
  const s = await openServices(cfg, log, redisUrl, publicUrl);
  const holdSweep = startHoldSweep(cfg, log, s);

  const app = uWS.App();
  const load = new Load(cfg.maxInflightTotal, cfg.maxInflightPerToken);
  // Whose X-Forwarded-For names the client, for every endpoint that reads a client address.
  const trust = proxyTrust(cfg.trustProxy);
  // Unsent output of WebSocket connections and HTTP answers together (MAX_BACKPRESSURE_TOTAL_BYTES).
  const output = new OutputBudget(cfg.maxBackpressureTotalBytes, (op) => s.metrics.event(op, 'backpressure_total'));
  s.metrics.unsentBytes = () => output.total;
  const ws = new WsEndpoints(app, { cfg, catalog: s.catalog, metrics: s.metrics, log, load, trust, output });
  ws.serve('/v1/switch', 'switch', switchRoutes(s.metering, s.metrics));
  ws.serve('/v1/scanner', 'scanner', scannerRoutes(s.redemption, s.metrics));
  const router = methodRouter(app, output, log);
  router.webSockets(ws.paths);
  opsRoutes(router, { ...s, trust, load });
  const api = new HttpApi(router, (tok, roles) => authorizeFresh(s.catalog, tok, roles), log, load, s.metrics);
  adminRoutes(api, s.ctx, s.redemption);
  scannerHttp(api, s.redemption, s.metrics);
  salesRoutes(api, s.ctx, s.catalog, s.inventory, s.purchases, s.provider);
  topupRoutes(api, s.topups);
  pageRoutes(router, {
    catalog: s.catalog,
    inventory: s.inventory,
    scripts: s.ctx.scripts,
    purchases: s.purchases,
    topups: s.topups,
    recharges: s.recharges,
    checks: s.checks,
    anis: new AniRegistry(s.ctx, (product) => aniTermsOf(s.catalog.product(product))),
    publicUrl,
    hstsMaxAgeSec: cfg.hstsMaxAgeSec,
    trust,
    log,
    formMac: (cookie) => s.ctx.ids.mac(`form:${cookie}`).slice(0, 32),
    load,
    // An attempt at work is at most an authorize and a capture away from its answer.
    settleMs: 2 * cfg.provider.timeoutMs + 1000,
  });
  router.fallbacks();

  const stopServices = async (): Promise<void> => {
    clearInterval(holdSweep);
    s.reaper.stop();
    s.metering.locator.stop();
    await s.hooks.stop();
    s.expiring.stop();
    s.expiry.stop();
    s.catalog.stop();
    s.scanClock.stop();
    s.purchases.stop();
    s.recharges.stop();
    s.subscriber.disconnect();
    s.claimRedis.disconnect();
    await s.ctx.close();
  };
  const listenSocket = await listen(app, cfg, sharedPort).catch(async (err: unknown) => {
    await stopServices();
    throw err;
  });
  port = uWS.us_socket_local_port(listenSocket);
  log.info({ port }, 'gateway listening');

  const {
    ctx,
    catalog,
    metering,
    redemption,
    purchases,
    topups,
    recharges,
    checks,
    inventory,
    reaper,
    metrics,
    hooks,
    expiring,
    expiry,
  } = s;
  return {
    port,
    ctx,
    catalog,
    metering,
    redemption,
    purchases,
    topups,
    recharges,
    checks,
    inventory,
    reaper,
    metrics,
    hooks,
    expiring,
    expiry,
    async close() {
      uWS.us_listen_socket_close(listenSocket);
      ws.closeAll();
      await stopServices();
    },
  };
}

async function openServices(
  cfg: Config,
  log: Logger,
  redisUrl: string | undefined,
  publicUrl: () => string,
): Promise<Services> {
  const ctx = await openContext(cfg, log, redisUrl);
  const subscriber = connectRedis(cfg, redisUrl, {
    log,
    name: 'subscriber',
    redis: { enableOfflineQueue: true, commandTimeout: undefined, maxRetriesPerRequest: null },
  });
  await waitReady(subscriber);
  const catalog = new CatalogCache(ctx.redis, subscriber, log, cfg.catalogPollMs);
  await catalog.start();
  // eslint-disable-next-line prefer-const -- assigned after Metrics, which reads it lazily
  let metering!: Metering;
  const metrics = new Metrics(() => metering.countActive());
  // Before any service is built: the redemption service copies it onto its claim connection's scripts.
  ctx.scripts.timer = (script, ms) => metrics.scriptTime(script, ms);
  ctx.scripts.failed = (script, err) => metrics.scriptFailures.inc({ script, code: failureCode(err) });
  metering = new Metering(cfg, ctx.redis, ctx.scripts, ctx.ids, catalog, metrics, log);
  const reaper = new Reaper(cfg, ctx.redis, ctx.scripts, metrics, log);
  reaper.start();
  const hooks = new HookDelivery(ctx.redis, ctx.scripts, catalog, metrics, log, cfg.hooks, cfg.buckets);
  hooks.start();
  const expiring = new ExpiringSweep(ctx.redis, ctx.scripts, () => catalog.products, log, cfg.hooks.expiringSweepMs);
  expiring.start();
  const expiry = new ExpirySweep(ctx.redis, ctx.scripts, log, cfg.expirySweepMs, cfg.offlineMaxAgeMs);
  expiry.start();
  const claimRedis = connectRedis(cfg, redisUrl, { log, name: 'claims' });
  await waitReady(claimRedis);
  const scanClock = new RedisClock(ctx.redis);
  await scanClock.start();
  const redemption = new Redemption(ctx, catalog, metrics, claimRedis, await openScanWindows(ctx.redis, cfg), () =>
    scanClock.now(),
  );
  if (!cfg.provider.url)
    throw new Error('no payment provider: set PROVIDER_URL (`npm start` runs the sandbox card company with --sandbox)');
  const provider = new HttpProvider(cfg.provider.url, cfg.provider.timeoutMs, cfg.provider.key);
  const inventory = new Inventory(ctx);
  const purchases = new Purchases(ctx, catalog, inventory, provider, publicUrl, log, metrics);
  const checks = new CheckLinks(ctx);
  const productOf = (name: string): ReturnType<CatalogCache['product']> => catalog.product(name);
  const topups = new Topups(ctx, productOf);
  const recharges = new Recharges(ctx, productOf, topups, provider, log);
  return {
    ctx,
    subscriber,
    claimRedis,
    scanClock,
    catalog,
    metrics,
    metering,
    reaper,
    hooks,
    expiring,
    expiry,
    redemption,
    provider,
    inventory,
    purchases,
    topups,
    recharges,
    checks,
  };
}

/**
 * Settles purchases and online recharges left midway, finishes voucher transfers cut short, returns
 * holds that ran out to stock, asks again for refunds' unanswered voids and voids authorizations the
 * card company made after their attempts ended, on every gateway (the scripts make one win).
 */
function startHoldSweep(cfg: Config, log: Logger, s: Services): NodeJS.Timeout {
  // One round at a time: with the card company down a round takes its timeouts, and rounds started
  // meanwhile would pile up on it.
  let running = false;
  const sweep = setInterval(
    () => {
      if (running) return;
      running = true;
      void (async () => {
        await s.purchases.sweepAbandoned();
        await s.recharges.sweepAbandoned();
        await s.topups.sweepTransfers();
        await s.inventory.sweepHolds();
        await sweepRefundVoids(s.ctx, s.provider);
        await sweepLateAuthorizations(s.ctx, s.provider);
      })()
        .catch((err: unknown) => log.warn({ err }, 'hold sweep failed'))
        .finally(() => (running = false));
    },
    Math.min(cfg.holdMs, 30_000),
  );
  sweep.unref();
  return sweep;
}

/** uWS' listen options: by default it sets SO_REUSEPORT, which lets any later process share the port. */
const LISTEN_SHARED = 0;
const LISTEN_EXCLUSIVE = 1;

function listen(app: TemplatedApp, cfg: Config, shared: boolean): Promise<us_listen_socket> {
  return new Promise((resolve, reject) => {
    const done = (sock: us_listen_socket | false): void =>
      sock ? resolve(sock) : reject(new ConfigError(`cannot listen on ${cfg.host}:${cfg.port} (in use?)`));
    // uWS takes (host, port, options, cb); its typings lack that form.
    const listenOn = app.listen.bind(app) as unknown as (h: string, p: number, o: number, cb: typeof done) => void;
    listenOn(cfg.host, cfg.port, shared ? LISTEN_SHARED : LISTEN_EXCLUSIVE, done);
  });
}

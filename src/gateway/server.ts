import uWS, { type TemplatedApp, type us_listen_socket } from 'uWebSockets.js';
import type { Logger } from 'pino';
import { openContext, type Context } from '../app/context';
import { CatalogCache } from '../catalog/cache';
import type { Role } from '../catalog/schema';
import type { Config } from '../config/config';
import { Reaper } from '../metering/reaper';
import { Metering } from '../metering/service';
import { Metrics } from '../observability/metrics';
import { connectRedis, waitReady } from '../redis/connect';
import { Conn, type ConnData } from './connection';
import { Dispatcher, type Routes } from './dispatch';
import { authorize, bearer, clientAddress, replyFor, type AuthResult } from './http';
import { HttpApi } from './http-api';
import { adminRoutes } from './routes/admin';
import { scannerHttp, scannerRoutes } from './routes/scanner';
import { Redemption } from '../redemption/service';
import { CheckLinks } from '../sales/check';
import { Inventory } from '../sales/inventory';
import { HttpProvider } from '../sales/provider';
import { Purchases } from '../sales/purchase';
import { pageRoutes } from './routes/pages';
import { salesRoutes } from './routes/sales';
import { switchRoutes } from './routes/switch';

export interface Gateway {
  port: number;
  ctx: Context;
  catalog: CatalogCache;
  metering: Metering;
  redemption: Redemption;
  purchases: Purchases;
  inventory: Inventory;
  reaper: Reaper;
  metrics: Metrics;
  close(): Promise<void>;
}

/**
 * The gateway process: WebSocket endpoints for switches, operator HTTP
 * endpoints, health and metrics. It holds no state that matters; everything
 * lives in Redis, so any copy can serve any event.
 */
export async function startGateway(cfg: Config, log: Logger, redisUrl?: string): Promise<Gateway> {
  const ctx = await openContext(cfg, log, redisUrl);
  const subscriber = connectRedis(cfg, redisUrl, { enableOfflineQueue: true, commandTimeout: undefined, maxRetriesPerRequest: null });
  await waitReady(subscriber);
  const catalog = new CatalogCache(ctx.redis, subscriber, log, cfg.catalogPollMs);
  await catalog.start();
  let metering!: Metering;
  const metrics = new Metrics(() => metering.countActive());
  metering = new Metering(cfg, ctx.redis, ctx.scripts, ctx.ids, catalog, metrics);
  const reaper = new Reaper(cfg, ctx.redis, ctx.scripts, metrics, log);
  reaper.start();

  const app = uWS.App();
  const load = { inflight: 0, max: cfg.maxInflightTotal };
  const conns = new Set<Conn>();
  /** Open WebSocket connections by client address (MAX_CONNECTIONS_PER_CLIENT). */
  const perClient = new Map<string, number>();
  // Scan claims get a connection of their own (src/redemption/service.ts says why).
  const claimRedis = connectRedis(cfg, redisUrl);
  await waitReady(claimRedis);
  const redemption = new Redemption(ctx, catalog, metrics, claimRedis);
  if (!cfg.provider.url) throw new Error('no payment provider: set PROVIDER_URL (npm start runs the sandbox provider when it is unset)');
  const provider = new HttpProvider(cfg.provider.url, cfg.provider.timeoutMs, cfg.provider.key);
  const inventory = new Inventory(ctx);
  let port = 0;
  const publicUrl = (): string => cfg.publicUrl ?? `http://localhost:${port}`;
  const purchases = new Purchases(ctx, catalog, inventory, provider, publicUrl, log, metrics);
  const checks = new CheckLinks(ctx);
  const holdSweep = setInterval(
    () =>
      void (async () => {
        await purchases.sweepAbandoned();
        await inventory.sweepHolds();
      })().catch((err: unknown) => log.warn({ err }, 'hold sweep failed')),
    Math.min(cfg.holdMs, 30_000),
  );
  holdSweep.unref();
  wsEndpoint(app, '/v1/switch', 'switch', switchRoutes(metering, metrics));
  wsEndpoint(app, '/v1/scanner', 'scanner', scannerRoutes(redemption, metrics));

  function wsEndpoint(app: TemplatedApp, path: string, role: Role, routes: Routes): void {
    const dispatcher = new Dispatcher(routes, cfg, metrics, log, load);
    app.ws<ConnData>(path, {
      compression: uWS.DISABLED,
      // The hard limit: past it uWS closes the connection. Frames between the soft
      // limit (MAX_FRAME_BYTES) and this get an error and the connection stays up.
      maxPayloadLength: Math.max(cfg.maxFrameBytes * 4, 1024 * 1024),
      maxBackpressure: cfg.maxBackpressureBytes,
      closeOnBackpressureLimit: 1,
      idleTimeout: cfg.wsIdleTimeoutSec,
      sendPingsAutomatically: true,
      upgrade(res, req, context) {
        // Headers must be read before any await: uWS reuses req afterwards.
        const tok = bearer(req) || new URLSearchParams(req.getQuery() ?? '').get('token') || '';
        const client = clientAddress(res, req, cfg.trustProxy);
        // Refused before the token is even looked at: a flood must cost us as little as possible.
        const full = conns.size >= cfg.maxConnections ? 'the gateway' : (perClient.get(client) ?? 0) >= cfg.maxConnectionsPerClient ? 'this client' : '';
        if (full) {
          metrics.event('upgrade', 'too_many_connections');
          res.writeStatus('503 Service Unavailable').writeHeader('Content-Type', 'application/json')
            .end(JSON.stringify({ error: { reason: 'too_many_connections', message: `${full} has as many connections as it may` } }));
          return;
        }
        const key = req.getHeader('sec-websocket-key');
        const protocol = req.getHeader('sec-websocket-protocol');
        const extensions = req.getHeader('sec-websocket-extensions');
        const finish = (auth: AuthResult): void => {
          if (!auth.ok) {
            metrics.event('upgrade', auth.reason);
            res.writeStatus(auth.status === 401 ? '401 Unauthorized' : '403 Forbidden')
              .writeHeader('Content-Type', 'application/json')
              .end(JSON.stringify({ error: { reason: auth.reason, message: auth.message } }));
            return;
          }
          res.upgrade<ConnData>({ token: auth.token, path, client }, key, protocol, extensions, context);
        };
        // A token the cache knows is upgraded here and now. The async path is only for a token
        // created a moment ago, and it upgrades uncorked: uWS' cork() after an async upgrade can
        // misread the reallocated socket and close the new WebSocket right after open
        // (uNetworking/uWebSockets#1928, fixed upstream in #1929, not in the build we pin).
        if (!tok || catalog.token(tok)) return finish(authorize(catalog, tok, [role]));
        let aborted = false;
        res.onAborted(() => (aborted = true));
        void authorizeFresh(tok, [role]).then((auth) => {
          if (aborted) return;
          if (auth.ok) finish(auth);
          else res.cork(() => finish(auth));
        });
      },
      open(ws) {
        const data = ws.getUserData();
        data.conn = new Conn(ws, data.token);
        conns.add(data.conn);
        perClient.set(data.client, (perClient.get(data.client) ?? 0) + 1);
        metrics.connections.inc({ path });
      },
      message(ws, message, isBinary) {
        dispatcher.onFrame(ws.getUserData().conn!, message, isBinary);
      },
      close(ws) {
        const conn = ws.getUserData().conn!;
        conn.closed = true;
        conns.delete(conn);
        const client = ws.getUserData().client;
        const left = (perClient.get(client) ?? 1) - 1;
        if (left > 0) perClient.set(client, left);
        else perClient.delete(client);
        metrics.connections.dec({ path });
      },
    });
  }

  /**
   * Authorizes from the cached catalog; a token the cache does not know yet (created
   * a moment ago, announcement still in flight) is looked up in Redis once.
   */
  async function authorizeFresh(tok: string, roles: Role[]): Promise<AuthResult> {
    if (tok && !catalog.token(tok)) await catalog.refreshIfTokenKnown(tok).catch(() => undefined);
    return authorize(catalog, tok, roles);
  }

  app.get('/healthz', (res) => {
    res.writeHeader('Content-Type', 'application/json').end('{"ok":true}');
  });

  app.get('/readyz', (res) => {
    const reply = replyFor(res);
    Promise.all([ctx.redis.ping(), claimRedis.ping()]).then(
      () => (ctx.scripts.loaded ? reply.json(200, { ok: true, catalogVersion: catalog.version }) : reply.json(503, { ok: false, reason: 'scripts_not_loaded' })),
      () => reply.json(503, { ok: false, reason: 'redis_unreachable' }),
    );
  });

  app.get('/metrics', (res) => {
    const reply = replyFor(res);
    metrics.registry.metrics().then(
      (text) => reply.send(200, text, metrics.registry.contentType),
      (err: unknown) => reply.error(500, 'internal', String(err)),
    );
  });

  const api = new HttpApi(app, authorizeFresh, log, load);
  adminRoutes(api, ctx, redemption);
  scannerHttp(api, redemption, metrics);
  salesRoutes(api, ctx, catalog, inventory, purchases, provider);
  pageRoutes(app, { catalog, inventory, purchases, checks, publicUrl, trustProxy: cfg.trustProxy, log });

  app.any('/*', (res) => {
    res.writeStatus('404 Not Found').writeHeader('Content-Type', 'application/json').end('{"error":{"reason":"not_found","message":"no such endpoint"}}');
  });

  const listenSocket = await new Promise<us_listen_socket>((resolve, reject) => {
    app.listen(cfg.host, cfg.port, (sock) => (sock ? resolve(sock) : reject(new Error(`cannot listen on ${cfg.host}:${cfg.port}`))));
  });
  port = uWS.us_socket_local_port(listenSocket);
  log.info({ port }, 'gateway listening');

  return {
    port,
    ctx,
    catalog,
    metering,
    redemption,
    purchases,
    inventory,
    reaper,
    metrics,
    async close() {
      clearInterval(holdSweep);
      reaper.stop();
      catalog.stop();
      uWS.us_listen_socket_close(listenSocket);
      for (const c of conns) if (!c.closed) c.ws.end(1001, 'gateway shutting down');
      subscriber.disconnect();
      claimRedis.disconnect();
      await ctx.close();
    },
  };
}

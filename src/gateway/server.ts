import uWS, { type HttpResponse, type TemplatedApp, type us_listen_socket } from 'uWebSockets.js';
import type { Logger } from 'pino';
import { activateId, idStatus, setIdState, type Outcome } from '../admin/ids';
import { openContext, type Context } from '../app/context';
import { CatalogCache } from '../catalog/cache';
import type { Role } from '../catalog/schema';
import type { Config } from '../config/config';
import { Reaper } from '../metering/reaper';
import { Metering } from '../metering/service';
import { Metrics } from '../observability/metrics';
import { connectRedis, waitReady } from '../redis/connect';
import { Conn, type ConnData } from './connection';
import { Dispatcher, failureReason, type Routes } from './dispatch';
import { authorize, bearer, BodyError, readJson, replyFor, type AuthResult, type Reply } from './http';
import { switchRoutes } from './switch';

export interface Gateway {
  port: number;
  ctx: Context;
  catalog: CatalogCache;
  metering: Metering;
  reaper: Reaper;
  metrics: Metrics;
  close(): Promise<void>;
}

/** A malformed percent-escape is the client's problem: it becomes a value no lookup accepts. */
function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return '\u0000';
  }
}

const REASON_STATUS: Record<string, number> = {
  bad_format: 400,
  bad_checksum: 400,
  unknown_id: 404,
  already_active: 409,
  wrong_product: 409,
  not_blocked: 409,
};

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
  const conns = new Set<Conn>();
  wsEndpoint(app, '/v1/switch', 'switch', switchRoutes(metering, metrics));

  function wsEndpoint(app: TemplatedApp, path: string, role: Role, routes: Routes): void {
    const dispatcher = new Dispatcher(routes, cfg, metrics, log);
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
        const key = req.getHeader('sec-websocket-key');
        const protocol = req.getHeader('sec-websocket-protocol');
        const extensions = req.getHeader('sec-websocket-extensions');
        let aborted = false;
        res.onAborted(() => (aborted = true));
        void authorizeFresh(tok, [role]).then((auth) => {
          if (aborted) return;
          res.cork(() => {
            if (!auth.ok) {
              metrics.event('upgrade', auth.reason);
              res.writeStatus(auth.status === 401 ? '401 Unauthorized' : '403 Forbidden')
                .writeHeader('Content-Type', 'application/json')
                .end(JSON.stringify({ error: { reason: auth.reason, message: auth.message } }));
              return;
            }
            res.upgrade<ConnData>({ token: auth.token, path }, key, protocol, extensions, context);
          });
        });
      },
      open(ws) {
        const data = ws.getUserData();
        data.conn = new Conn(ws, data.token);
        conns.add(data.conn);
        metrics.connections.inc({ path });
      },
      message(ws, message, isBinary) {
        dispatcher.onFrame(ws.getUserData().conn!, message, isBinary);
      },
      close(ws) {
        const conn = ws.getUserData().conn!;
        conn.closed = true;
        conns.delete(conn);
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
    ctx.redis.ping().then(
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

  /** Runs an authenticated JSON endpoint; maps reasons and failures to status codes in one place. */
  function api(
    method: 'get' | 'post',
    pattern: string,
    roles: Role[],
    params: number,
    fn: (args: { body: unknown; params: string[] }) => Promise<Outcome<object>>,
  ): void {
    app[method](pattern, (res: HttpResponse, req) => {
      const reply = replyFor(res);
      const tok = bearer(req);
      const p = Array.from({ length: params }, (_, i) => safeDecode(req.getParameter(i) ?? ''));
      const body = method === 'post' ? readJson(res, 64 * 1024) : Promise.resolve({});
      body.catch(() => undefined); // reported by run(), once authorized
      void (async () => {
        const auth = await authorizeFresh(tok, roles);
        if (!auth.ok) return reply.error(auth.status, auth.reason, auth.message);
        await run(reply, async () => fn({ body: await body, params: p }));
      })();
    });
  }

  async function run(reply: Reply, fn: () => Promise<Outcome<object>>): Promise<void> {
    try {
      const r = await fn();
      if (r.ok) {
        const { ok: _ok, ...rest } = r;
        return reply.json(200, rest);
      }
      reply.error(REASON_STATUS[r.reason] ?? 422, r.reason, r.reason.replace(/_/g, ' '));
    } catch (err) {
      if (err instanceof BodyError) return reply.error(err.status, err.reason, err.message);
      const reason = failureReason(err);
      if (reason === 'internal') log.error({ err }, 'http handler failed');
      reply.error(reason === 'unavailable' ? 503 : 500, reason, reason === 'unavailable' ? 'storage unavailable, try again' : 'internal error');
    }
  }

  const str = (body: unknown, field: string): string | undefined => {
    const v = (body as Record<string, unknown> | null)?.[field];
    return typeof v === 'string' ? v : undefined;
  };

  api('get', '/v1/ids/:id/status', ['admin'], 1, ({ params }) => idStatus(ctx, params[0]));
  api('post', '/v1/admin/ids/:id/activate', ['admin'], 1, ({ params, body }) => {
    const price = (body as Record<string, unknown>)?.price;
    if (price !== undefined && !(Number.isSafeInteger(price) && (price as number) >= 0)) return Promise.resolve({ ok: false, reason: 'bad_price' });
    return activateId(ctx, params[0], { channel: 'admin', price: price as number | undefined, ref: str(body, 'ref') });
  });
  api('post', '/v1/admin/ids/:id/block', ['admin'], 1, ({ params, body }) => setIdState(ctx, params[0], 'block', str(body, 'reason') ?? ''));
  api('post', '/v1/admin/ids/:id/unblock', ['admin'], 1, ({ params }) => setIdState(ctx, params[0], 'unblock'));

  app.any('/*', (res) => {
    res.writeStatus('404 Not Found').writeHeader('Content-Type', 'application/json').end('{"error":{"reason":"not_found","message":"no such endpoint"}}');
  });

  const listenSocket = await new Promise<us_listen_socket>((resolve, reject) => {
    app.listen(cfg.host, cfg.port, (sock) => (sock ? resolve(sock) : reject(new Error(`cannot listen on ${cfg.host}:${cfg.port}`))));
  });
  const port = uWS.us_socket_local_port(listenSocket);
  log.info({ port }, 'gateway listening');

  return {
    port,
    ctx,
    catalog,
    metering,
    reaper,
    metrics,
    async close() {
      reaper.stop();
      catalog.stop();
      uWS.us_listen_socket_close(listenSocket);
      for (const c of conns) if (!c.closed) c.ws.end(1001, 'gateway shutting down');
      subscriber.disconnect();
      await ctx.close();
    },
  };
}

/** Endpoints for the orchestrator and the monitoring: liveness, readiness, Prometheus metrics; and the 404 for the rest. */
import type { TemplatedApp } from 'uWebSockets.js';
import type { Context } from '../../app/context';
import type { CatalogCache } from '../../catalog/cache';
import type { Metrics } from '../../observability/metrics';
import type { RedisClient } from '../../redis/connect';
import { replyFor } from '../http';

export interface OpsDeps {
  ctx: Context;
  /** Readiness needs the scan-claim connection too: redemptions stop without it. */
  claimRedis: RedisClient;
  catalog: CatalogCache;
  metrics: Metrics;
}

export function opsRoutes(app: TemplatedApp, d: OpsDeps): void {
  app.get('/healthz', (res) => {
    res.writeHeader('Content-Type', 'application/json').end('{"ok":true}');
  });

  app.get('/readyz', (res) => {
    const reply = replyFor(res);
    Promise.all([d.ctx.redis.ping(), d.claimRedis.ping()]).then(
      () =>
        d.ctx.scripts.loaded
          ? reply.json(200, { ok: true, catalogVersion: d.catalog.version })
          : reply.json(503, { ok: false, reason: 'scripts_not_loaded' }),
      () => reply.json(503, { ok: false, reason: 'redis_unreachable' }),
    );
  });

  app.get('/metrics', (res) => {
    const reply = replyFor(res);
    d.metrics.registry.metrics().then(
      (text) => reply.send(200, text, d.metrics.registry.contentType),
      (err: unknown) => reply.error('internal', String(err)),
    );
  });
}

/** Any path no route serves: a JSON 404. Registered after every other route. */
export function notFoundRoute(app: TemplatedApp): void {
  app.any('/*', (res) => {
    res
      .writeStatus('404 Not Found')
      .writeHeader('Content-Type', 'application/json')
      .end('{"error":{"reason":"not_found","message":"no such endpoint"}}');
  });
}

/** Endpoints for the orchestrator and the monitoring: liveness, readiness, Prometheus metrics. */
import type { Context } from '../../app/context';
import type { CatalogCache } from '../../catalog/cache';
import type { Metrics } from '../../observability/metrics';
import type { RedisClient } from '../../redis/connect';
import { replyFor } from '../http';
import type { Router } from '../router';

export interface OpsDeps {
  ctx: Context;
  /** Readiness needs the scan-claim connection too: redemptions stop without it. */
  claimRedis: RedisClient;
  catalog: CatalogCache;
  metrics: Metrics;
}

export function opsRoutes(app: Router, d: OpsDeps): void {
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

/**
 * Endpoints for the orchestrator and the monitoring: liveness, readiness,
 * Prometheus metrics. The metrics tell sales and call volumes to whoever
 * reads them: only a client holding METRICS_TOKEN, or with none set, one on
 * this machine (the client address, behind a trusted proxy its forwarded one).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { BlockList, isIPv4 } from 'node:net';
import type { Context } from '../../app/context';
import type { CatalogCache } from '../../catalog/cache';
import type { Metrics } from '../../observability/metrics';
import type { RedisClient } from '../../redis/connect';
import { statusOf } from '../../protocol/reasons';
import type { Load } from '../dispatch';
import { bearer, clientAddress, replyFor } from '../http';
import type { ProxyTrust } from '../../protocol/client-address';
import type { Router } from '../router';

export interface OpsDeps {
  ctx: Context;
  /** Readiness needs the scan-claim connection too: redemptions stop without it. */
  claimRedis: RedisClient;
  catalog: CatalogCache;
  metrics: Metrics;
  /** Whose X-Forwarded-For names the client (TRUST_PROXY): who is on this machine. */
  trust: ProxyTrust;
  /** MAX_INFLIGHT_TOTAL, which readiness probes count against like any request. */
  load: Load;
}

export function opsRoutes(app: Router, d: OpsDeps): void {
  app.get('/healthz', (res) => {
    replyFor(res).send(200, '{"ok":true}');
  });

  // Anyone who reaches the port may ask, and each probe waits on Redis: probes asked together share
  // one PING a connection, and each is counted in flight like any request, so a flood while Redis
  // is slow is refused at once rather than queued until REDIS_TIMEOUT_MS.
  let pinging: Promise<unknown> | undefined;
  const ping = (): Promise<unknown> =>
    (pinging ??= Promise.all([d.ctx.redis.ping(), d.claimRedis.ping()]).finally(() => (pinging = undefined)));
  app.get('/readyz', (res) => {
    const reply = replyFor(res);
    if (!d.load.enter()) return reply.json(statusOf('overloaded'), { ok: false, reason: 'overloaded' });
    // Everything after enter() is in the promise, so that its place is given back however it ends.
    return Promise.resolve()
      .then(ping)
      .then(
        () =>
          d.ctx.scripts.loaded
            ? reply.json(200, { ok: true, catalogVersion: d.catalog.version })
            : reply.json(503, { ok: false, reason: 'scripts_not_loaded' }),
        () => reply.json(503, { ok: false, reason: 'redis_unreachable' }),
      )
      .finally(() => d.load.leave());
  });

  const { cfg } = d.ctx;
  const allowed = metricsReaders(cfg.metricsToken);
  const [refusal, why] = cfg.metricsToken
    ? (['unauthorized', '/metrics needs Authorization: Bearer <METRICS_TOKEN>'] as const)
    : (['forbidden', '/metrics answers this machine only; set METRICS_TOKEN to read it from elsewhere'] as const);
  app.get('/metrics', (res, req) => {
    const reply = replyFor(res);
    if (!allowed(bearer(req), clientAddress(res, req, d.trust))) return reply.error(refusal, why);
    // A failure is the router's to answer (500 internal) and log.
    return d.metrics.scrape().then((text) => reply.send(200, text, d.metrics.registry.contentType));
  });
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

/** Who may read /metrics: the token's holders, or with none set, loopback clients. */
function metricsReaders(token: string | undefined): (presented: string, address: string) => boolean {
  if (token === undefined) return (_, address) => LOOPBACK.check(address, isIPv4(address) ? 'ipv4' : 'ipv6');
  const want = createHash('sha256').update(token).digest();
  return (presented) => timingSafeEqual(createHash('sha256').update(presented).digest(), want);
}

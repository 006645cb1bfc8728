import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** One registry per gateway instance, so several gateways in one process (tests) never collide. */
export class Metrics {
  readonly registry = new Registry();
  /** op -> outcome -> messages since the last scrape: a number bump per message, handed to prom-client when scraped. */
  private readonly eventCounts = new Map<string, Map<string, { n: number }>>();
  readonly events: Counter<'op' | 'outcome'>;
  readonly scriptSeconds = new Histogram({
    name: 'tessera_script_duration_seconds',
    help: 'Round-trip time of Lua script calls, by script',
    labelNames: ['script'] as const,
    buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 2],
    registers: [this.registry],
  });
  readonly scriptFailures = new Counter({
    name: 'tessera_script_failures_total',
    help: 'Lua script calls that failed, by script and kind: a Redis error code (OOM: memory full, READONLY, NOREPLICAS...), unreachable, or other',
    labelNames: ['script', 'code'] as const,
    registers: [this.registry],
  });
  readonly alerts = new Counter({
    name: 'tessera_alerts_total',
    help: 'Low-balance alerts fired, by threshold (seconds left)',
    labelNames: ['level'] as const,
    registers: [this.registry],
  });
  readonly cutoffs = new Counter({
    name: 'tessera_cutoffs_total',
    help: 'Cut-off orders sent to switches, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly reaped = new Counter({
    name: 'tessera_reaped_calls_total',
    help: 'Stale calls closed by the reaper',
    registers: [this.registry],
  });
  readonly recovered = new Counter({
    name: 'tessera_recovered_stops_total',
    help: 'Stops naming ID and destination of a call the token name had no session of (lost, or started under another name)',
    registers: [this.registry],
  });
  readonly shortCalls = new Counter({
    name: 'tessera_short_calls_total',
    help: 'Call records with a short (charged, not paid: a switch talked past what the ID could pay), by how the call closed',
    labelNames: ['close'] as const,
    registers: [this.registry],
  });
  readonly unknownIds = new Counter({
    name: 'tessera_unknown_id_scans_total',
    help: 'Scans answered unknown_id (guessing shows here first)',
    registers: [this.registry],
  });
  readonly throttled = new Counter({
    name: 'tessera_scanner_throttled_total',
    help: 'Times a scanner went over the unknown_id limit and was throttled (once per window and gateway)',
    registers: [this.registry],
  });
  readonly unknownIdStarts = new Counter({
    name: 'tessera_unknown_id_starts_total',
    help: 'Switch starts and quotes answered unknown_id or unknown_ani (guessing by a switch shows here)',
    registers: [this.registry],
  });
  readonly switchThrottled = new Counter({
    name: 'tessera_switch_throttled_total',
    help: 'Times a switch went over the unknown_id limit and was throttled (once per window and gateway)',
    registers: [this.registry],
  });
  readonly purchases = new Counter({
    name: 'tessera_purchases_total',
    help: 'Purchase attempts by outcome: sold, or the decline/refusal reason',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly adminRefusals = new Counter({
    name: 'tessera_admin_refusals_total',
    help: 'Admin API requests refused, by route family (ids/activate, sales/refund, ...) and reason',
    labelNames: ['route', 'reason'] as const,
    registers: [this.registry],
  });
  readonly connections = new Gauge({
    name: 'tessera_ws_connections',
    help: 'Open WebSocket connections, by path',
    labelNames: ['path'] as const,
    registers: [this.registry],
  });
  readonly webhooks = new Counter({
    name: 'tessera_webhook_deliveries_total',
    help: 'Webhook deliveries by outcome: delivered, retried (failed, tried again later), failed (parked for the operator), deferred (not tried: its receiver failing or busy; tried again later)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly webhookPending = new Gauge({
    name: 'tessera_webhook_pending_events',
    help: 'Balance events not yet delivered, in every bucket (as this gateway last counted them)',
    registers: [this.registry],
    // Each gateway counts what Redis holds: workers summed would count it once each (worker-metrics.ts).
    aggregator: 'max',
  });
  readonly webhookReceiversOpen = new Gauge({
    name: 'tessera_webhook_receivers_open',
    help: 'Webhook receivers whose breaker is open at this gateway: failing, their events deferred',
    registers: [this.registry],
  });
  readonly webhookFailed = new Gauge({
    name: 'tessera_webhook_failed_deliveries',
    help: 'Deliveries parked as failed, waiting for the operator (as this gateway last counted them)',
    registers: [this.registry],
    aggregator: 'max',
  });
  readonly activeCalls: Gauge;
  /** What GET /metrics answers: this registry; under --workers, every worker's (src/observability/worker-metrics.ts). */
  scrape: () => Promise<string> = () => this.registry.metrics();
  /** The gateway's count of unsent output (OutputBudget), read when scraped. */
  unsentBytes: () => number = () => 0;

  private readonly scriptChildren = new Map<string, { observe(v: number): void }>();

  /** Script round trip in milliseconds, the labelled child cached (once per script call). */
  scriptTime(script: string, ms: number): void {
    let c = this.scriptChildren.get(script);
    if (!c) this.scriptChildren.set(script, (c = this.scriptSeconds.labels(script)));
    c.observe(ms / 1000);
  }

  /**
   * events{op,outcome}++. This runs once per message: no key string is built and
   * prom-client (which hashes the labels on every inc) is only touched when scraped.
   */
  event(op: string, outcome: string): void {
    let byOutcome = this.eventCounts.get(op);
    if (!byOutcome) this.eventCounts.set(op, (byOutcome = new Map<string, { n: number }>()));
    const c = byOutcome.get(outcome);
    if (c) c.n++;
    else byOutcome.set(outcome, { n: 1 });
  }

  constructor(countActiveCalls: () => Promise<number>) {
    const counts = this.eventCounts;
    this.events = new Counter({
      name: 'tessera_events_total',
      help: 'Protocol messages handled, by op and outcome (ok or an error reason)',
      labelNames: ['op', 'outcome'] as const,
      registers: [this.registry],
      collect() {
        for (const [op, byOutcome] of counts) {
          for (const [outcome, c] of byOutcome) {
            if (c.n > 0) this.inc({ op, outcome }, c.n);
            c.n = 0;
          }
        }
      },
    });
    collectDefaultMetrics({ register: this.registry });
    const unsent = (): number => this.unsentBytes();
    new Gauge({
      name: 'tessera_unsent_output_bytes',
      help: 'Output clients have not read yet: WebSocket connections and HTTP answers together (MAX_BACKPRESSURE_TOTAL_BYTES)',
      registers: [this.registry],
      collect() {
        this.set(unsent());
      },
    });
    this.activeCalls = new Gauge({
      name: 'tessera_active_calls',
      help: 'Live call sessions in Redis (all gateways)',
      registers: [this.registry],
      aggregator: 'max',
      async collect() {
        this.set(await countActiveCalls());
      },
    });
  }
}

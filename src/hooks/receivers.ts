/**
 * What the webhook delivery knows of each receiver (webhook URL), so one that is
 * slow or down cannot hold up the others' events: its POSTs in flight and events
 * queued (the delivery gives the next slot to the receiver with the fewest in
 * flight, and makes room in a full queue from the one with the most queued), and
 * a circuit breaker that defers its events while it keeps failing. In memory, one entry per URL with events queued, POSTs in
 * flight or failures since its last 2xx; failing URLs no product has any more
 * are forgotten (forgetAllBut).
 */
import type { Logger } from 'pino';
import type { HookSettings } from '../config/config';
import type { Metrics } from '../observability/metrics';

/** Failed attempts in a row (timeout, connection error, non-2xx) that open a receiver's breaker. */
export const BREAKER_FAILURES = 3;

interface Breaker {
  /** Failed attempts since the last 2xx. */
  fails: number;
  /** Times opened since the last 2xx: each stays open twice as long as the one before. */
  opens: number;
  /** Open until then (ms), when one probe delivery may go. */
  until: number;
  /** A probe delivery is under way. */
  probing: boolean;
  /** The last attempt's error, shown for the events deferred. */
  err: string;
}

/** What to do with an event's POST to a receiver now: send it, wait (it has its most POSTs in flight), or defer it until then (ms). */
export type Gate = 'send' | 'wait' | number;

export class Receivers {
  private readonly inFlight = new Map<string, number>();
  /** Events queued or in flight, by URL. */
  private readonly loads = new Map<string, number>();
  private readonly breakers = new Map<string, Breaker>();

  constructor(
    private readonly s: HookSettings,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {}

  /** An event for `url` was queued. */
  enter(url: string): void {
    this.loads.set(url, (this.loads.get(url) ?? 0) + 1);
  }

  /** A queued event left the queue and its POSTs are over. */
  leave(url: string): void {
    dec(this.loads, url);
  }

  /** Events for `url` queued or in flight. */
  load(url: string): number {
    return this.loads.get(url) ?? 0;
  }

  /** POSTs to `url` in flight. */
  busy(url: string): number {
    return this.inFlight.get(url) ?? 0;
  }

  /** Some breaker is open: queued events may be deferred without a slot. */
  anyOpen(): boolean {
    for (const b of this.breakers.values()) if (b.fails >= BREAKER_FAILURES) return true;
    return false;
  }

  gate(url: string, now: number): Gate {
    const b = this.breakers.get(url);
    if (b && b.fails >= BREAKER_FAILURES) return now < b.until || b.probing ? Math.max(b.until, now) : 'send';
    // A hard cap, below HOOK_CONCURRENCY by default: a slot is always left for the others.
    return this.busy(url) >= this.s.perReceiver ? 'wait' : 'send';
  }

  /** A POST the gate let go starts; true when it is its open breaker's probe (hand it back to end). */
  start(url: string): boolean {
    this.inFlight.set(url, (this.inFlight.get(url) ?? 0) + 1);
    const b = this.breakers.get(url);
    if (!b || b.fails < BREAKER_FAILURES) return false;
    b.probing = true;
    return true;
  }

  end(url: string, probe: boolean): void {
    dec(this.inFlight, url);
    const b = this.breakers.get(url);
    if (probe && b) b.probing = false;
  }

  /** A 2xx: the breaker closes. */
  succeeded(url: string): void {
    const b = this.breakers.get(url);
    if (!b) return;
    this.breakers.delete(url);
    if (b.fails >= BREAKER_FAILURES) {
      this.log.info({ url }, 'webhook receiver answers again: its events are delivered');
      this.gauge();
    }
  }

  /** A failed attempt; the breaker opens at the BREAKER_FAILURES-th in a row, and again, twice as long, when its probe fails. */
  failed(url: string, err: string, now: number): void {
    let b = this.breakers.get(url);
    if (!b) this.breakers.set(url, (b = { fails: 0, opens: 0, until: 0, probing: false, err }));
    b.fails++;
    b.err = err;
    if (b.fails < BREAKER_FAILURES || now < b.until) return;
    b.until = now + Math.min(this.s.retryBaseMs * 2 ** b.opens, this.s.retryMaxMs);
    if (b.opens++ > 0) return;
    this.log.warn({ url, err, fails: b.fails }, 'webhook receiver failing: its events are deferred');
    this.gauge();
  }

  /** The receiver's last error while it fails. */
  lastError(url: string): string | undefined {
    return this.breakers.get(url)?.err;
  }

  /** Forgets the failures of URLs no product has a webhook for any more. */
  forgetAllBut(urls: ReadonlySet<string>): void {
    let open = false;
    for (const [url, b] of this.breakers) {
      if (urls.has(url)) continue;
      this.breakers.delete(url);
      open ||= b.fails >= BREAKER_FAILURES;
    }
    if (open) this.gauge();
  }

  private gauge(): void {
    let n = 0;
    for (const b of this.breakers.values()) if (b.fails >= BREAKER_FAILURES) n++;
    this.metrics.webhookReceiversOpen.set(n);
  }
}

function dec(m: Map<string, number>, k: string): void {
  const n = (m.get(k) ?? 1) - 1;
  if (n > 0) m.set(k, n);
  else m.delete(k);
}

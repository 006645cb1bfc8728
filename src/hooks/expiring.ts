/**
 * Emits `expiring` for sold IDs whose expiry falls within their product's
 * `expiringDays`. Every gateway runs it every expiringSweepMs: it walks the ID
 * keys (SCAN on every primary), and lua/event_expiring.lua emits at most once
 * per ID and expiry date (the `expw` field), so sweeps on several gateways at
 * once send nothing twice. Only products with `expiringDays` and a webhook that
 * asks for `expiring` are looked at; with none, a sweep reads nothing.
 */
import type { Logger } from 'pino';
import type { RedisClient } from '../redis/connect';
import { scanIdFields } from '../redis/scan';
import type { Scripts } from '../redis/scripts';
import type { Product } from '../catalog/schema';
import { SweepTimer } from '../ledger/sweep-timer';
import { eventExpiring } from './scripts';

/** ID hashes read at once. */
const BATCH = 200;
const DAY_MS = 86_400_000;

export class ExpiringSweep {
  private readonly timer: SweepTimer;
  private running = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly scripts: Scripts,
    private readonly products: () => readonly Product[],
    private readonly log: Logger,
    everyMs: number,
  ) {
    this.timer = new SweepTimer(everyMs, () => this.sweep());
  }

  start(): void {
    this.timer.start();
  }

  stop(): void {
    this.timer.stop();
  }

  /** One pass over every ID; returns how many `expiring` events it emitted. */
  async sweep(now = Date.now()): Promise<number> {
    const windows = new Map<string, number>();
    for (const p of this.products())
      if (p.expiringDays && p.webhooks?.some((h) => h.events.includes('expiring')))
        windows.set(p.name, p.expiringDays * DAY_MS);
    if (windows.size === 0 || this.running) return 0;
    this.running = true;
    let emitted = 0;
    try {
      for await (const batch of scanIdFields(this.redis, ['prod', 'st', 'exp', 'expw'], BATCH)) {
        for (const { bucket, hash, values } of batch) {
          const [prod, st, exp, expw] = values;
          const window = windows.get(prod ?? '');
          const at = Number(exp ?? 0);
          if (window === undefined || st !== 'sold' || at <= now || at > now + window || expw === exp) continue;
          if (await eventExpiring(this.scripts, bucket, hash, now, now + window)) emitted++;
        }
      }
    } catch (err) {
      this.log.warn({ err }, 'expiring sweep failed');
    } finally {
      this.running = false;
    }
    return emitted;
  }
}

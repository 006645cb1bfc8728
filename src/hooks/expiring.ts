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
import { keys } from '../redis/keys';
import { scanIdKeys } from '../redis/scan';
import type { Scripts } from '../redis/scripts';
import type { Product } from '../catalog/schema';
import { eventExpiring } from './scripts';

/** ID hashes read at once. */
const BATCH = 200;
const DAY_MS = 86_400_000;
const FIRST_SWEEP_MS = 60_000;

export class ExpiringSweep {
  private timer?: NodeJS.Timeout;
  private first?: NodeJS.Timeout;
  private running = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly scripts: Scripts,
    private readonly products: () => readonly Product[],
    private readonly log: Logger,
    private readonly everyMs: number,
  ) {}

  /** The first sweep a minute after start (sooner when the interval is shorter), so restarts never starve it. */
  start(): void {
    this.first = setTimeout(() => void this.sweep(), Math.min(this.everyMs, FIRST_SWEEP_MS));
    this.first.unref();
    this.timer = setInterval(() => void this.sweep(), this.everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.first) clearTimeout(this.first);
    if (this.timer) clearInterval(this.timer);
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
      let batch: { bucket: number; hash: string }[] = [];
      const flush = async (): Promise<void> => {
        const rows = await Promise.all(
          batch.map((k) => this.redis.hmget(keys.id(k.bucket, k.hash), 'prod', 'st', 'exp', 'expw')),
        );
        for (let i = 0; i < batch.length; i++) {
          const [prod, st, exp, expw] = rows[i]!;
          const window = windows.get(prod ?? '');
          const at = Number(exp ?? 0);
          if (window === undefined || st !== 'sold' || at <= now || at > now + window || expw === exp) continue;
          const k = batch[i]!;
          if (await eventExpiring(this.scripts, k.bucket, k.hash, now, now + window)) emitted++;
        }
        batch = [];
      };
      for await (const k of scanIdKeys(this.redis)) {
        batch.push(k);
        if (batch.length >= BATCH) await flush();
      }
      await flush();
    } catch (err) {
      this.log.warn({ err }, 'expiring sweep failed');
    } finally {
      this.running = false;
    }
    return emitted;
  }
}

/**
 * Forfeits the value left on IDs past their expiry (breakage), as an `expiry`
 * record in the ID's bucket (lua/expire.lua). Every gateway runs it every
 * expirySweepMs: it walks the ID keys (SCAN with a COUNT, on every primary),
 * reads a few fields of each in batches, and calls the script, one ID and one
 * hash tag per call, only for those that look due. The script decides again
 * by Redis' clock and forfeits only value on the ID at the time, leaving 0:
 * sweeps on several gateways at once, or one repeated after a crash, record
 * nothing twice.
 */
import type { Logger } from 'pino';
import type { RedisClient } from '../redis/connect';
import { failureReason } from '../redis/failure';
import { keys } from '../redis/keys';
import { scanIdKeys } from '../redis/scan';
import type { Scripts } from '../redis/scripts';
import { expireId, type ExpireReply } from './scripts';

/** ID hashes read at once. */
const BATCH = 200;
const FIRST_SWEEP_MS = 60_000;

/** What one pass did. */
export interface ExpirySweepCounts {
  /** IDs whose value was forfeited, with a record each. */
  expired: number;
  /** The value forfeited (micro-units, entries or uses: summed as the audit sums them). */
  amount: number;
  /** Past their expiry but left for now: a live call on them, or blocked. */
  waiting: number;
  /** IDs the script failed on (logged): left as they are, the pass goes on. */
  failed: number;
}

export class ExpirySweep {
  private timer?: NodeJS.Timeout;
  private first?: NodeJS.Timeout;
  private running = false;

  /**
   * `graceMs`: how long past its expiry a goods, entry or service ID keeps its
   * value for offline scans made before it (OFFLINE_MAX_AGE_MS).
   */
  constructor(
    private readonly redis: RedisClient,
    private readonly scripts: Scripts,
    private readonly log: Logger,
    private readonly everyMs: number,
    private readonly graceMs: number,
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

  /** One pass over every ID (none while this gateway's last pass is still running). */
  async sweep(): Promise<ExpirySweepCounts> {
    const counts: ExpirySweepCounts = { expired: 0, amount: 0, waiting: 0, failed: 0 };
    if (this.running) return counts;
    this.running = true;
    try {
      // Redis' clock, read once: only a first cut; the script judges each ID by Redis' TIME again.
      const [sec, usec] = await this.redis.time();
      const now = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
      let batch: { bucket: number; hash: string }[] = [];
      const flush = async (): Promise<void> => {
        const rows = await Promise.all(
          batch.map((k) => this.redis.hmget(keys.id(k.bucket, k.hash), 'st', 'exp', 'bal')),
        );
        for (let i = 0; i < batch.length; i++) {
          const [st, exp, bal] = rows[i]!;
          const at = Number(exp ?? 0);
          // Forfeited before (`xrec`) and nothing came back since: the balance is 0.
          if (at <= 0 || at > now || !(Number(bal ?? 0) > 0)) continue;
          if (st !== 'sold' && st !== 'exhausted' && st !== 'expired' && st !== 'blocked') continue;
          const k = batch[i]!;
          let r: ExpireReply;
          try {
            r = await expireId(this.scripts, k.bucket, k.hash, this.graceMs);
          } catch (err) {
            // Redis unreachable or refusing writes fails every ID alike: the pass ends, with one
            // warning, and the next one starts again.
            if (failureReason(err) === 'unavailable') throw err;
            // One damaged ID (its terms version gone, say) must not hold up the breakage of every ID
            // the SCAN finds after it, pass after pass: it is logged and left for the operator.
            counts.failed++;
            this.log.warn({ err, bucket: k.bucket, id: k.hash }, 'expiry sweep could not judge an ID');
            continue;
          }
          if (r.forfeited) {
            counts.expired++;
            counts.amount += r.amount;
          } else if (r.why === 'in_use' || r.why === 'blocked') counts.waiting++;
        }
        batch = [];
      };
      for await (const k of scanIdKeys(this.redis)) {
        batch.push(k);
        if (batch.length >= BATCH) await flush();
      }
      await flush();
      if (counts.expired > 0 || counts.failed > 0)
        this.log.info(counts, 'expiry sweep forfeited the value left on expired IDs');
    } catch (err) {
      this.log.warn({ err }, 'expiry sweep failed');
    } finally {
      this.running = false;
    }
    return counts;
  }
}

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
import { redisTimeMs } from '../redis/clock';
import { failureReason } from '../redis/failure';
import { keys } from '../redis/keys';
import { scanIdFields } from '../redis/scan';
import type { Scripts } from '../redis/scripts';
import { expireId, type ExpireReply } from './scripts';
import { SweepTimer } from './sweep-timer';

/** ID hashes read at once. */
const BATCH = 200;

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

/**
 * The end of the validity window (`until`, a ticket's validUntil) of each product terms version, read
 * once per pass: the terms hold it, not the ID (src/catalog/terms.ts). A version never changes.
 */
class WindowEnds {
  private readonly ends = new Map<string, Promise<number>>();

  constructor(private readonly redis: RedisClient) {}

  of(bucket: number, version: string): Promise<number> {
    let end = this.ends.get(version);
    if (!end) {
      end = this.redis.hget(keys.productTerms(bucket, version), 'until').then((v) => Number(v ?? 0));
      this.ends.set(version, end);
    }
    return end;
  }
}

export class ExpirySweep {
  private readonly timer: SweepTimer;
  private running = false;

  /**
   * `graceMs`: how long past its expiry a goods, entry or service ID keeps its
   * value for offline scans made before it (OFFLINE_MAX_AGE_MS).
   */
  constructor(
    private readonly redis: RedisClient,
    private readonly scripts: Scripts,
    private readonly log: Logger,
    everyMs: number,
    private readonly graceMs: number,
  ) {
    this.timer = new SweepTimer(everyMs, () => this.sweep());
  }

  start(): void {
    this.timer.start();
  }

  stop(): void {
    this.timer.stop();
  }

  /** One pass over every ID (none while this gateway's last pass is still running). */
  async sweep(): Promise<ExpirySweepCounts> {
    const counts: ExpirySweepCounts = { expired: 0, amount: 0, waiting: 0, failed: 0 };
    if (this.running) return counts;
    this.running = true;
    try {
      // Redis' clock, read once: only a first cut; the script judges each ID by Redis' TIME again.
      const now = await redisTimeMs(this.redis);
      const windows = new WindowEnds(this.redis);
      for await (const batch of scanIdFields(this.redis, ['st', 'exp', 'bal', 'pt', 'until'], BATCH)) {
        for (const { bucket, hash, values } of batch) {
          const [st, exp, bal, pt, until] = values;
          // Forfeited before (`xrec`) and nothing came back since: the balance is 0.
          if (!(Number(bal ?? 0) > 0)) continue;
          // Its expiry, or a ticket's window's end (its own, or its product's terms) when that comes first.
          const ends = [Number(exp ?? 0), Number(until ?? (pt ? await windows.of(bucket, pt) : 0))];
          const at = Math.min(...ends.map((t) => (t > 0 ? t : Infinity)));
          if (at > now) continue;
          if (st !== 'sold' && st !== 'exhausted' && st !== 'expired' && st !== 'blocked') continue;
          let r: ExpireReply;
          try {
            r = await expireId(this.scripts, bucket, hash, this.graceMs);
          } catch (err) {
            // Redis unreachable or refusing writes fails every ID alike: the pass ends, with one
            // warning, and the next one starts again.
            if (failureReason(err) === 'unavailable') throw err;
            // One damaged ID (its terms version gone, say) must not hold up the breakage of every ID
            // the SCAN finds after it, pass after pass: it is logged and left for the operator.
            counts.failed++;
            this.log.warn({ err, bucket, id: hash }, 'expiry sweep could not judge an ID');
            continue;
          }
          if (r.forfeited) {
            counts.expired++;
            counts.amount += r.amount;
          } else if (r.why === 'in_use' || r.why === 'blocked') counts.waiting++;
        }
      }
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

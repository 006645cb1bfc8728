import type { IdKeys } from '../ids/secrets';
import type { RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';

/**
 * Makes guessing IDs slow: each unknown_id answer to a scanner counts in Redis
 * (shared by every gateway); past the limit in one window the scanner is refused
 * `throttled` until the window ends. The check on the hot path is a local map
 * lookup; only unknown_id answers touch Redis.
 */
export class GuessThrottle {
  private readonly blockedUntil = new Map<string, number>();

  constructor(
    private readonly redis: RedisClient,
    private readonly ids: IdKeys,
    private readonly limit: number,
    private readonly windowSec: number,
  ) {}

  /** Seconds to wait, or 0 when the scanner may go on. */
  retryAfter(scanner: string, now = Date.now()): number {
    const until = this.blockedUntil.get(scanner);
    if (until === undefined) return 0;
    if (until <= now) {
      this.blockedUntil.delete(scanner);
      return 0;
    }
    return Math.ceil((until - now) / 1000);
  }

  /** Counts one unknown_id answer; returns true when that puts the scanner over the limit. */
  async miss(scanner: string): Promise<boolean> {
    const key = keys.guesses(this.ids.bucketOf(scanner), scanner);
    const res = await this.redis.multi().incr(key).expire(key, this.windowSec, 'NX').pttl(key).exec();
    const count = Number(res?.[0]?.[1]);
    const pttl = Number(res?.[2]?.[1]);
    if (count <= this.limit) return false;
    this.blockedUntil.set(scanner, Date.now() + Math.max(pttl, 1000));
    return true;
  }
}

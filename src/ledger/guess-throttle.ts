import type { IdKeys } from '../ids/secrets';
import type { RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';

/**
 * Makes guessing IDs slow: each unknown_id answer to a client (a scanner, or a
 * switch) counts in Redis (shared by every gateway); past the limit in one
 * window the client is refused `throttled` until the window ends. The check on
 * the hot path is a local map lookup; only unknown_id answers touch Redis.
 *
 * Clients are counted by token name. Scanner and switch tokens may share a name,
 * so each role has its own throttle and its own counters: `scope` goes in front
 * of the name in the counter's key ('' for scanners, whose key stays
 * `guess:<name>`; 'sw' for switches, `guess:sw:<name>`; token names hold no ':').
 */
export class GuessThrottle {
  private readonly blockedUntil = new Map<string, number>();

  constructor(
    private readonly redis: RedisClient,
    private readonly ids: IdKeys,
    private readonly limit: number,
    private readonly windowSec: number,
    private readonly scope = '',
  ) {}

  /** Seconds to wait, or 0 when the client may go on. */
  retryAfter(client: string, now = Date.now()): number {
    const until = this.blockedUntil.get(client);
    if (until === undefined) return 0;
    if (until <= now) {
      this.blockedUntil.delete(client);
      return 0;
    }
    return Math.ceil((until - now) / 1000);
  }

  /** Counts one unknown_id answer; returns true when that puts the client over the limit. */
  async miss(client: string): Promise<boolean> {
    const name = this.scope ? `${this.scope}:${client}` : client;
    const key = keys.guesses(this.ids.bucketOf(name), name);
    const res = await this.redis.multi().incr(key).expire(key, this.windowSec, 'NX').pttl(key).exec();
    const count = Number(res?.[0]?.[1]);
    const pttl = Number(res?.[2]?.[1]);
    if (count <= this.limit) return false;
    this.blockedUntil.set(client, Date.now() + Math.max(pttl, 1000));
    return true;
  }
}

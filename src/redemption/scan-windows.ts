/**
 * Where scans are remembered: a bucket keeps its scan claims and its granted
 * scans' records in one hash per window of time, not a key per scan with a TTL
 * of its own. A key costs Redis a key, an expiry entry and a place in the
 * active-expiry sweep per scan; a hash field costs a field. A whole window
 * expires at once, SCAN_TTL_SEC after the window ends, so every scan is kept
 * at least SCAN_TTL_SEC and at most a window longer (a window is half the
 * SCAN_TTL_SEC the Redis started with, never under 10 minutes).
 */
import type { Config } from '../config/config';
import type { RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';
import { replicatedAtStart } from '../redis/replication';

/** Windows per SCAN_TTL_SEC: more keep scans closer to the TTL, but every scan reads one hash per window. */
const WINDOWS_PER_TTL = 2;
/**
 * How far the times two gateways place scans by may disagree: a scan written by
 * one is looked up by another in every window it could have chosen. They place
 * them by Redis' clock (RedisClock), so this covers a Cluster's nodes, not
 * gateways' own clocks.
 */
export const CLOCK_SKEW_MS = 5 * 60_000;

/** The window length a Redis without one starts with: half the TTL, never under twice the skew. */
export function windowMsFor(ttlSec: number): number {
  // Never shorter than the skew either side: a short TTL (60 s is allowed) would
  // otherwise make every scan read a window per 30 s of skew.
  return Math.max(Math.ceil((ttlSec * 1000) / WINDOWS_PER_TTL), 2 * CLOCK_SKEW_MS);
}

export class ScanWindows {
  private readonly ttlMs: number;

  constructor(
    ttlSec: number,
    /** Until when (ms) scans of the per-scan key layout may be left to read. */
    readonly legacyUntil = 0,
    /**
     * How long a window is (ms). Fixed for a Redis once it holds scans
     * (openScanWindows): window numbers count these from the epoch, so another
     * length would look for every scan kept so far under other names.
     */
    readonly windowMs = windowMsFor(ttlSec),
  ) {
    this.ttlMs = ttlSec * 1000;
  }

  /**
   * The windows a scan is looked up in at `now`: first the one it is written to,
   * then, newest first, every other one a gateway could have written it to
   * within the TTL.
   */
  at(now: number): readonly number[] {
    // The same array until one of its windows changes: callers may key caches on it.
    if (now >= this.from && now < this.until) return this.last;
    const W = this.windowMs;
    const write = Math.floor(now / W);
    const newest = Math.floor((now + CLOCK_SKEW_MS) / W);
    const oldest = Math.floor((now - this.ttlMs - CLOCK_SKEW_MS) / W);
    const out = [write];
    for (let w = newest; w >= oldest; w--) if (w !== write) out.push(w);
    this.last = out;
    this.from = Math.max(write * W, newest * W - CLOCK_SKEW_MS, oldest * W + this.ttlMs + CLOCK_SKEW_MS);
    this.until = Math.min(
      (write + 1) * W,
      (newest + 1) * W - CLOCK_SKEW_MS,
      (oldest + 1) * W + this.ttlMs + CLOCK_SKEW_MS,
    );
    return out;
  }

  private last: readonly number[] = [];
  /** The times (ms) between which `last` holds. */
  private from = 0;
  private until = 0;

  /** When a window's hash expires (ms since the epoch): the TTL after the window ends, and the skew. */
  expiresAt(window: number): number {
    return (window + 1) * this.windowMs + this.ttlMs + CLOCK_SKEW_MS;
  }

  /** Whether scans written in the per-scan key layout may still be there at `now`. */
  legacyAt(now: number): boolean {
    return now < this.legacyUntil;
  }
}

/**
 * The scan windows of this Redis, as the first gateway to start on it decided
 * them, once (`ts:scan-windows`), so every gateway finds every scan:
 * - the window length, from the SCAN_TTL_SEC of then. A later SCAN_TTL_SEC
 *   changes how long scans are kept and how many windows a scan reads, not
 *   where scans are;
 * - until when scans written by versions before the windows may be left: never,
 *   when no bucket has a redemption record (no scan was ever granted), else for
 *   SCAN_TTL_SEC from then.
 */
export async function openScanWindows(redis: RedisClient, cfg: Config, now = Date.now()): Promise<ScanWindows> {
  const key = keys.scanWindows;
  let [legacyUntil, windowMs] = await redis.hmget(key, 'legacyUntil', 'windowMs');
  // Written only when missing: a start must not need a write (a primary without its replica refuses them).
  if (legacyUntil === null || windowMs === null) {
    if (legacyUntil === null) {
      const streams = await Promise.all(
        Array.from({ length: cfg.buckets }, (_, b) => redis.exists(keys.redemptions(b))),
      );
      const until = streams.some((n) => n > 0) ? now + cfg.scanTtlSec * 1000 : 0;
      // Another gateway starting at the same time may have decided first: its answers hold.
      await redis.hsetnx(key, 'legacyUntil', until);
    }
    await redis.hsetnx(key, 'windowMs', windowMsFor(cfg.scanTtlSec));
    // On a replica before the gateway serves (with replicated acknowledgements on): lost in a failover,
    // a later start would decide them again, perhaps otherwise, and could not write them (NOREPLICAS).
    await replicatedAtStart(redis, key);
    [legacyUntil, windowMs] = await redis.hmget(key, 'legacyUntil', 'windowMs');
  }
  return new ScanWindows(cfg.scanTtlSec, Number(legacyUntil) || 0, Number(windowMs) || windowMsFor(cfg.scanTtlSec));
}

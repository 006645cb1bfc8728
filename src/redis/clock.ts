import type { RedisClient } from './connect';

/** Redis' TIME in whole ms since 1970: one reading, for a pass that judges many keys by it. */
export async function redisTimeMs(redis: RedisClient): Promise<number> {
  const [sec, usec] = await redis.time();
  return Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
}

/**
 * Redis' clock as this gateway sees it: Redis' TIME, carried forward by the
 * process's monotonic clock between readings. What several gateways must agree
 * on to the minute (where a scan is remembered) is placed by it: their own
 * clocks may be off, or stepped by NTP, and would put a scan where another
 * gateway never looks. Read again every `everyMs`, so the monotonic clock's
 * drift never adds up.
 */
export class RedisClock {
  private base = Date.now();
  private mono = performance.now();
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly redis: RedisClient,
    private readonly everyMs = 60_000,
  ) {}

  /** The first reading, then one every `everyMs` (a failed one keeps the last). */
  async start(): Promise<void> {
    await this.sync();
    this.timer = setInterval(() => void this.sync().catch(() => undefined), this.everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  async sync(): Promise<void> {
    const sent = performance.now();
    const [sec, usec] = await this.redis.time();
    const got = performance.now();
    // TIME was read about halfway through the round trip.
    this.base = Number(sec) * 1000 + Number(usec) / 1000;
    this.mono = (sent + got) / 2;
  }

  /** Redis' time now (ms since 1970). */
  now(): number {
    return Math.floor(this.base + performance.now() - this.mono);
  }
}

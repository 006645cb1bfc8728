import type { Logger } from 'pino';
import type { Config } from '../config/config';
import type { Metrics } from '../observability/metrics';
import { MAX_CALL_SEC } from '../protocol/switch';
import { redisTimeMs } from '../redis/clock';
import type { RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';
import { replicated } from '../redis/replication';
import type { Scripts } from '../redis/scripts';
import { callReap } from './scripts';
import { reportShort } from './shortfall';

/**
 * Closes calls whose switch went quiet, billed up to their last tick. It walks
 * the per-bucket live sets, so each step touches one slot and the same code
 * serves Redis Cluster; every gateway may run it at once because call_reap
 * re-checks staleness inside the script.
 */
export class Reaper {
  private timer?: NodeJS.Timeout;
  private running = false;
  /**
   * How long a reaped call's closed session (and its key by ID and call id) is kept: as long as
   * a stopped one's, but never less than a call may last. The call may go on while its switch
   * cannot reach Tessera; its own stop, however late, must find the session to bill only the
   * seconds past the reaping (a `late` record). Gone, that stop would be billed in full again
   * as a lost call's (a recovered stop), the reaped seconds twice.
   */
  private readonly closedTtlSec: number;

  constructor(
    private readonly cfg: Config,
    private readonly redis: RedisClient,
    private readonly scripts: Scripts,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    this.closedTtlSec = Math.max(cfg.sessionTtlSec, MAX_CALL_SEC + Math.ceil(cfg.ringTimeoutMs / 1000));
  }

  start(): void {
    this.timer = setInterval(() => void this.sweep(), this.cfg.reapIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /**
   * One pass over every bucket; returns how many calls it closed. `now` (this gateway's clock)
   * only dates the records: staleness is judged by Redis' clock, which scored the live set.
   * Unless given, each record is dated as its call is closed, after Redis' clock found it stale:
   * a time read as the pass began could come before that (a slow Redis, a busy event loop), and
   * date a call reaped at its ring timeout as rung for less.
   */
  async sweep(now?: number): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    let closed = 0;
    try {
      const staleBefore = (await redisTimeMs(this.redis)) - this.cfg.staleAfterMs;
      const perBucket = await Promise.all(
        Array.from({ length: this.cfg.buckets }, (_, b) =>
          this.redis.zrangebyscore(keys.live(b), '-inf', `(${staleBefore}`, 'LIMIT', 0, 500),
        ),
      );
      const jobs: Promise<void>[] = [];
      perBucket.forEach((sessions, bucket) => {
        for (const session of sessions) {
          jobs.push(
            (async () => {
              const idKey = await this.redis.hget(session, 'id');
              if (!idKey) {
                await this.redis.zrem(keys.live(bucket), session);
                return;
              }
              const r = await callReap(
                this.scripts,
                { session, id: idKey, live: keys.live(bucket), cdr: keys.cdr(bucket), events: keys.events(bucket) },
                now ?? Date.now(),
                this.cfg.staleAfterMs,
                this.closedTtlSec,
              );
              if (r.closed) {
                // Nobody waits for this answer, but a close no replica has is not counted as done.
                await replicated(this.redis, session);
                closed++;
                this.metrics.reaped.inc();
                this.log.info(
                  {
                    session,
                    billedSec: r.billedSec,
                    cost: r.cost,
                    short: r.short,
                    balance: r.balance,
                    record: r.record,
                  },
                  'stale call closed',
                );
                reportShort(this.metrics, this.log, 'stale', { session, ...r });
              }
            })(),
          );
        }
      });
      await Promise.all(jobs);
    } catch (err) {
      this.log.warn({ err }, 'reaper sweep failed');
    } finally {
      this.running = false;
    }
    return closed;
  }
}

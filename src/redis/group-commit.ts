import type { RedisClient } from './connect';
import { sendNow } from './coalesce';

/**
 * Sends one batch of a bucket's work: one script call (or a few, past the batch
 * limit), calling `settled` once each has answered.
 */
export type SendBatch<T> = (bucket: number, batch: T[], settled: () => void) => void;

/**
 * The flushes of every GroupCommit on one client run together in one
 * check-phase callback and leave in one write: claims, redeems and ticks that
 * are ready in the same event-loop turn cost one syscall, not one each.
 */
class FlushPhase {
  private due = new Set<() => void>();
  private spare = new Set<() => void>();
  private scheduled = false;

  constructor(private readonly redis: RedisClient) {}

  schedule(flush: () => void): void {
    this.due.add(flush);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.run);
  }

  private readonly run = (): void => {
    this.scheduled = false;
    // Swapped before running: a flush scheduled meanwhile waits for the next turn, it is not dropped.
    const due = this.due;
    this.due = this.spare;
    for (const flush of due) flush();
    due.clear();
    this.spare = due;
    // This runs in the check phase: without this the batch would wait a whole loop iteration.
    sendNow(this.redis);
  };
}

const phases = new WeakMap<RedisClient, FlushPhase>();

function phaseOf(redis: RedisClient): FlushPhase {
  let phase = phases.get(redis);
  if (!phase) phases.set(redis, (phase = new FlushPhase(redis)));
  return phase;
}

/**
 * Group commit by bucket: a bucket has at most one round of script calls in
 * flight. Work that arrives meanwhile waits for it and goes together in the
 * next, so batches grow with the load and the cost per item falls as the rate
 * rises, instead of a queue building up behind one small script call per item.
 * With nothing in flight an item goes out in the event-loop turn it arrived in.
 *
 * A bucket's rounds leave in the order their items arrived, so two items of one
 * bucket are applied in arrival order (a retry never overtakes its first try).
 */
export class GroupCommit<T> {
  /** Items waiting for their bucket's next round, by bucket. */
  private pending = new Map<number, T[]>();
  /** Script calls in flight, by bucket. */
  private readonly busy = new Map<number, number>();
  /** Callers waiting for a bucket's queued items to be written, by bucket. */
  private readonly waiters = new Map<number, (() => void)[]>();
  private readonly phase: FlushPhase;

  constructor(
    redis: RedisClient,
    private readonly send: SendBatch<T>,
    private readonly maxBatch: number,
  ) {
    this.phase = phaseOf(redis);
  }

  add(bucket: number, item: T): void {
    let group = this.pending.get(bucket);
    if (!group) this.pending.set(bucket, (group = []));
    group.push(item);
    if (!this.busy.has(bucket)) this.schedule();
  }

  /**
   * Resolves once the items queued for this bucket are on their way to Redis
   * (undefined when none are). A command written after them runs after them:
   * Redis runs one connection's commands in the order they were written.
   */
  sent(bucket: number): Promise<void> | undefined {
    if (!this.pending.has(bucket)) return undefined;
    return new Promise((resolve) => {
      const waiting = this.waiters.get(bucket);
      if (waiting) waiting.push(resolve);
      else this.waiters.set(bucket, [resolve]);
    });
  }

  private schedule(): void {
    this.phase.schedule(this.flush);
  }

  private readonly flush = (): void => {
    for (const [bucket, group] of this.pending) {
      if (this.busy.has(bucket)) continue;
      this.pending.delete(bucket);
      const max = this.maxBatch;
      const rounds = group.length <= max ? 1 : Math.ceil(group.length / max);
      this.busy.set(bucket, rounds);
      const settled = (): void => this.settled(bucket);
      if (rounds === 1) this.send(bucket, group, settled);
      else for (let i = 0; i < group.length; i += max) this.send(bucket, group.slice(i, i + max), settled);
      const waiting = this.waiters.get(bucket);
      if (waiting) {
        this.waiters.delete(bucket);
        for (const go of waiting) go();
      }
    }
  };

  private settled(bucket: number): void {
    const left = this.busy.get(bucket)! - 1;
    if (left > 0) return void this.busy.set(bucket, left);
    this.busy.delete(bucket);
    if (this.pending.has(bucket)) this.schedule();
  }
}

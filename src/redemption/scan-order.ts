/**
 * The order a gateway applies scans in. A redeem goes through two rounds (its
 * scan id's claim in the claim's bucket, then the redeem in its ID's bucket),
 * and claims of different buckets come back in any order; a reverse is one
 * round. Without these, a till that uploads its journal in one frame (two
 * sales on one card, a sale and its reversal) could have them applied out of
 * the order it rang them up: the reversal refused unknown_scan, the sale that
 * came first refused for the value the later one took.
 */

/** A scan's standing in its ID's line: fields of the scan itself, so a line costs no object per scan. */
export interface InLine {
  /** Claimed: may go on once everything ahead of it has. */
  ready: boolean;
  /** Out of the line without going on (refused at its claim, failed). */
  gone: boolean;
}

/**
 * The scans of each ID, in the order they arrived, between their claim and
 * their redeem: a scan goes on to its redeem round only after every scan of
 * its ID that arrived before it has (one script call per bucket applies its
 * scans in the order they were queued).
 */
export class ArrivalOrder<T extends InLine> {
  private readonly lines = new Map<string, T[]>();

  /** A scan of `key` arrived: it takes its place at the end of the key's line. */
  arrive(key: string, item: T): void {
    const line = this.lines.get(key);
    if (line) line.push(item);
    else this.lines.set(key, [item]);
  }

  /** `item` may go on: it and every scan behind it that may are handed to `go`, in order. */
  ready(key: string, item: T, go: (item: T) => void): void {
    item.ready = true;
    this.drain(key, go);
  }

  /** `item` leaves the line without going on: the scans behind it need not wait for it. */
  leave(key: string, item: T, go: (item: T) => void): void {
    item.gone = true;
    this.drain(key, go);
  }

  private drain(key: string, go: (item: T) => void): void {
    const line = this.lines.get(key);
    if (!line) return;
    // Most IDs have one scan in flight: the line is that scan alone.
    if (line.length === 1) {
      const only = line[0]!;
      if (!only.ready && !only.gone) return;
      this.lines.delete(key);
      if (!only.gone) go(only);
      return;
    }
    let n = 0;
    while (n < line.length && (line[n]!.ready || line[n]!.gone)) n++;
    if (n === 0) return;
    const out = line.splice(0, n);
    if (line.length === 0) this.lines.delete(key);
    for (const item of out) if (!item.gone) go(item);
  }

  /** IDs with scans in line (for tests: nothing is kept once they have gone on). */
  get size(): number {
    return this.lines.size;
  }
}

/**
 * Scan keys with a redeem under way, until it is answered: a reverse of that
 * scan waits for it (its record is written by then, or the scan was refused).
 */
export class ScansUnderWay {
  private readonly counts = new Map<string, number>();
  private readonly waiters = new Map<string, (() => void)[]>();

  enter(scanKey: string): void {
    this.counts.set(scanKey, (this.counts.get(scanKey) ?? 0) + 1);
  }

  leave(scanKey: string): void {
    const n = (this.counts.get(scanKey) ?? 0) - 1;
    if (n > 0) return void this.counts.set(scanKey, n);
    this.counts.delete(scanKey);
    if (this.waiters.size === 0) return;
    const waiting = this.waiters.get(scanKey);
    if (!waiting) return;
    this.waiters.delete(scanKey);
    for (const w of waiting) w();
  }

  /** Resolves once no redeem of `scanKey` is under way; undefined when none is. */
  settled(scanKey: string): Promise<void> | undefined {
    if (!this.counts.has(scanKey)) return undefined;
    return new Promise((resolve) => {
      const waiting = this.waiters.get(scanKey);
      if (waiting) waiting.push(resolve);
      else this.waiters.set(scanKey, [resolve]);
    });
  }

  get size(): number {
    return this.counts.size + this.waiters.size;
  }
}

/**
 * The order a gateway applies scans in. A redeem goes through two rounds (its
 * scan id's claim in the claim's bucket, then the redeem in its ID's bucket),
 * and claims of different buckets come back in any order; a reverse is one
 * round. Without these, a till that uploads its journal in one frame (two
 * sales on one card, a sale and its reversal) could have them applied out of
 * the order it rang them up: the reversal refused unknown_scan, the sale that
 * came first refused for the value the later one took.
 */

interface Place<T> {
  item: T;
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
export class ArrivalOrder<T> {
  private readonly lines = new Map<string, Place<T>[]>();

  /** A scan of `key` arrived: it takes its place at the end of the key's line. */
  arrive(key: string, item: T): Place<T> {
    const place = { item, ready: false, gone: false };
    const line = this.lines.get(key);
    if (line) line.push(place);
    else this.lines.set(key, [place]);
    return place;
  }

  /** The scan at `place` may go on: it and every scan behind it that may are handed to `go`, in order. */
  ready(key: string, place: Place<T>, go: (item: T) => void): void {
    place.ready = true;
    this.drain(key, go);
  }

  /** The scan at `place` leaves the line without going on: the scans behind it need not wait for it. */
  leave(key: string, place: Place<T>, go: (item: T) => void): void {
    place.gone = true;
    this.drain(key, go);
  }

  private drain(key: string, go: (item: T) => void): void {
    const line = this.lines.get(key);
    if (!line) return;
    while (line.length > 0 && (line[0]!.ready || line[0]!.gone)) {
      const head = line.shift()!;
      if (!head.gone) go(head.item);
    }
    if (line.length === 0) this.lines.delete(key);
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
  private readonly counts = new Map<string, { n: number; waiters: (() => void)[] }>();

  enter(scanKey: string): void {
    const c = this.counts.get(scanKey);
    if (c) c.n++;
    else this.counts.set(scanKey, { n: 1, waiters: [] });
  }

  leave(scanKey: string): void {
    const c = this.counts.get(scanKey);
    if (!c || --c.n > 0) return;
    this.counts.delete(scanKey);
    for (const w of c.waiters) w();
  }

  /** Resolves once no redeem of `scanKey` is under way (at once when none is). */
  settled(scanKey: string): Promise<void> | undefined {
    const c = this.counts.get(scanKey);
    if (!c) return undefined;
    return new Promise((resolve) => c.waiters.push(resolve));
  }

  get size(): number {
    return this.counts.size;
  }
}

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
 * A reverse in its ID's line (its redeem is still under way here): it runs
 * alone, once everything ahead of it has been answered, and what comes after
 * it waits for its answer. Redeems of one bucket keep their order by
 * themselves (one script call applies them in turn); a reverse is another
 * script call, so only waiting keeps it in its place.
 */
export class Barrier implements InLine {
  ready = true;
  gone = false;
  constructor(readonly run: () => void) {}
}

interface Line<T> {
  items: (T | Barrier)[];
  /** Gone on and not answered yet. */
  running: number;
  /** A reverse is running: nothing behind it goes on. */
  blocked: boolean;
}

/**
 * The scans (and reverses) of each ID, in the order they arrived: a scan goes
 * on to its redeem round only after every scan of its ID that arrived before
 * it has gone on (`go`), and a reverse only once those have been answered.
 */
export class ArrivalOrder<T extends InLine> {
  private readonly lines = new Map<string, Line<T>>();

  constructor(private readonly go: (item: T) => void) {}

  /** `item` arrived: it takes its place at the end of its ID's line. */
  arrive(key: string, item: T | Barrier): void {
    const line = this.lines.get(key);
    if (line) line.items.push(item);
    else this.lines.set(key, { items: [item], running: 0, blocked: false });
    if (item.ready) this.drain(key);
  }

  /** `item` (claimed) may go on once what is ahead of it has. */
  ready(key: string, item: T): void {
    item.ready = true;
    this.drain(key);
  }

  /** `item` leaves the line without going on: what is behind it need not wait for it. */
  leave(key: string, item: T): void {
    item.gone = true;
    this.drain(key);
  }

  /** Something of `key` that went on has been answered (`barrier`: a reverse). */
  done(key: string, barrier = false): void {
    const line = this.lines.get(key);
    if (!line) return;
    line.running--;
    if (barrier) line.blocked = false;
    this.drain(key);
  }

  private drain(key: string): void {
    const line = this.lines.get(key);
    if (!line) return;
    const { items } = line;
    while (items.length > 0 && !line.blocked) {
      const head = items[0]!;
      if (head.gone) {
        items.shift();
        continue;
      }
      if (!head.ready) break;
      if (head instanceof Barrier) {
        if (line.running > 0) break;
        items.shift();
        line.running++;
        line.blocked = true;
        head.run();
        break;
      }
      items.shift();
      line.running++;
      this.go(head);
    }
    if (items.length === 0 && line.running === 0) this.lines.delete(key);
  }

  /** IDs with scans in line or under way (for tests: nothing is kept once they are answered). */
  get size(): number {
    return this.lines.size;
  }
}

/**
 * Scan keys with a redeem under way here, and the terms of the claim each
 * makes (`<ID key>|<item>|<qty>|<dir>`): a reverse of one joins that ID's line,
 * and a redeem of the key with other terms waits for them. The usual one
 * redeem per key is one map entry; copies under way together share its terms.
 */
export class ScansUnderWay {
  private readonly ids = new Map<string, string>();
  /** Keys with more than one redeem under way (retries), and how many. */
  private readonly more = new Map<string, number>();
  /**
   * Keys whose claim a refused copy left to the copies after it: the claims
   * window it is in, to drop once the last copy is refused too; '' once a copy
   * was granted (the claim is the sale's).
   */
  private readonly owed = new Map<string, string>();
  /**
   * Keys with copies under way that were refused and have not left yet (a refusal leaves once its
   * claim is dropped and its guess counted), and how many: they may no longer be granted.
   */
  private readonly refusing = new Map<string, number>();

  enter(scanKey: string, terms: string): void {
    if (!this.ids.has(scanKey)) this.ids.set(scanKey, terms);
    else this.more.set(scanKey, (this.more.get(scanKey) ?? 1) + 1);
  }

  /** `refused`: the one leaving was refused (ScansUnderWay.refused). */
  leave(scanKey: string, refused = false): void {
    if (refused && this.refusing.size > 0) {
      const r = this.refusing.get(scanKey);
      if (r !== undefined && r > 1) this.refusing.set(scanKey, r - 1);
      else if (r !== undefined) this.refusing.delete(scanKey);
    }
    const n = this.more.size > 0 ? this.more.get(scanKey) : undefined;
    if (n === undefined) {
      this.ids.delete(scanKey);
      if (this.owed.size > 0) this.owed.delete(scanKey);
    } else if (n > 2) this.more.set(scanKey, n - 1);
    else this.more.delete(scanKey);
  }

  /**
   * A redeem of `scanKey` was refused (before it leaves); `claimedIn`: the
   * window its claim is in, when this redeem made the claim. Answers the
   * window to drop the claim from now: a refusal is not kept, nor its claim.
   * But while a copy of the scan is still under way here, that copy holds the
   * claim as its own (a retry's) and may yet be granted, after a reverse gave
   * value back, say: the claim is left to the last copy.
   */
  refused(scanKey: string, claimedIn: string | undefined): string | undefined {
    const owed = claimedIn ?? (this.owed.size > 0 ? this.owed.get(scanKey) : undefined);
    const n = this.more.size > 0 ? this.more.get(scanKey) : undefined;
    // Copies refused before this one may not have left yet (their guesses still being counted):
    // they hold no claim for anybody, so the last copy refused drops it all the same.
    const gone = n !== undefined && this.refusing.size > 0 ? (this.refusing.get(scanKey) ?? 0) : 0;
    if (n !== undefined) this.refusing.set(scanKey, gone + 1);
    if (n !== undefined && n - gone > 1) {
      // Never over a granted copy's mark: its claim is the sale's.
      if (claimedIn !== undefined && this.owed.get(scanKey) !== '') this.owed.set(scanKey, claimedIn);
      return undefined;
    }
    return owed || undefined;
  }

  /** A redeem of `scanKey` was granted: its claim stays, whatever copies of it are refused. */
  granted(scanKey: string): void {
    if (this.owed.size > 0 && this.owed.has(scanKey)) this.owed.set(scanKey, '');
  }

  /** The claim terms of the redeems of `scanKey` under way here, if there are any. */
  termsOf(scanKey: string): string | undefined {
    return this.ids.get(scanKey);
  }

  /** The ID a redeem of `scanKey` under way here redeems, if there is one. */
  idOf(scanKey: string): string | undefined {
    const terms = this.ids.get(scanKey);
    return terms === undefined ? undefined : terms.slice(0, terms.indexOf('|'));
  }

  get size(): number {
    return this.ids.size + this.more.size + this.owed.size + this.refusing.size;
  }
}

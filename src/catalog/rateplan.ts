import type { Rate, RatePlan } from './schema';

/** Longest-prefix match over a plan's destination prefixes: at most one Map probe per digit. */
export class PrefixTable {
  private readonly byPrefix = new Map<string, Rate>();
  private readonly maxLen: number;

  constructor(plan: RatePlan) {
    let maxLen = 0;
    for (const r of plan.rates) {
      this.byPrefix.set(r.prefix, r);
      if (r.prefix.length > maxLen) maxLen = r.prefix.length;
    }
    this.maxLen = maxLen;
  }

  /** The prefix entry the destination falls under: its rates (base and per period) and billing terms. */
  lookup(dest: string): Rate | undefined {
    for (let n = Math.min(dest.length, this.maxLen); n >= 0; n--) {
      const hit = this.byPrefix.get(n === dest.length ? dest : dest.slice(0, n));
      if (hit) return hit;
    }
    return undefined;
  }
}

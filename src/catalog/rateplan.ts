import type { RatePlan } from './schema';

export interface RateHit {
  rate: number;
  fee: number;
}

/** Longest-prefix match over a plan's destination prefixes: at most one Map probe per digit. */
export class PrefixTable {
  private readonly byPrefix = new Map<string, RateHit>();
  private readonly maxLen: number;

  constructor(plan: RatePlan) {
    let maxLen = 0;
    for (const r of plan.rates) {
      this.byPrefix.set(r.prefix, { rate: r.rate, fee: r.fee });
      if (r.prefix.length > maxLen) maxLen = r.prefix.length;
    }
    this.maxLen = maxLen;
  }

  lookup(dest: string): RateHit | undefined {
    for (let n = Math.min(dest.length, this.maxLen); n >= 0; n--) {
      const hit = this.byPrefix.get(n === dest.length ? dest : dest.slice(0, n));
      if (hit) return hit;
    }
    return undefined;
  }
}

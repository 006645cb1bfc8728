/** What the benchmarks' reports share: number formats and the closing JSON line. */

export const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US');

/** Rounded to one decimal, as the JSON lines give seconds. */
export const round1 = (n: number): number => Math.round(n * 10) / 10;

/** Counts one more of k. */
export const count = (m: Map<string, number>, k: string): void => void m.set(k, (m.get(k) ?? 0) + 1);

/** `k=v` pairs, largest first, or 'none'. */
export const fmtCounts = (m: Map<string | number, number>): string =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k}=${fmtInt(v)}`)
    .join(' ') || 'none';

/** The last line of every benchmark: every figure, as one line of JSON. */
export function printJsonLine(figures: object): void {
  console.log(JSON.stringify(figures));
}

/**
 * The performance targets, each defined once. A benchmark's own verdict and
 * `npm run bench`'s table (bench/summary.ts) judge by these same objects, so
 * the two cannot disagree. Rates and latencies that depend on the VM's speed
 * are judged against a reference measured in the same run where one exists
 * (ticks/s against the batched ceiling).
 */

/** One bound on one figure: its text in a table and the check. */
export interface Target {
  /** As a table or a verdict line prints it, e.g. `≤ 10 ms`. */
  text: string;
  /** The bound itself, in the figure's unit. */
  limit: number;
  /** Met, not met, or undefined without a figure. */
  met(v: number | undefined): boolean | undefined;
}

const atMost = (max: number, text: string): Target => ({
  text,
  limit: max,
  met: (v) => (v === undefined ? undefined : v <= max),
});
const atLeast = (min: number, text: string): Target => ({
  text,
  limit: min,
  met: (v) => (v === undefined ? undefined : v >= min),
});

export const TARGETS = {
  /** bench:switch: call_tick's Redis time per tick ÷ a reference debit's, one tick per FCALL. */
  tickCostRatio: atMost(1.5, '≤ 1.5×'),
  /** bench:switch --mode max: ticks/s ÷ the batched ceiling measured in the same run. */
  maxTicksPerCeiling: atLeast(1, '≥ 1.0'),
  /** bench:switch --mode max: tick→ticked p99 (ms). */
  maxTickP99Ms: atMost(10, '≤ 10 ms'),
  /** bench:switch --mode max: every call started at once, starts/s. */
  startsAtOncePerSec: atLeast(10_000, '≥ 10,000/s'),
  /** bench:switch --start-rate: start→started p99 (ms) of paced starts. */
  pacedStartP99Ms: atMost(50, '≤ 50 ms'),
  /** bench:switch --tick-every: tick→ticked p99 (ms) of calls held to their stop. */
  holdTickP99Ms: atMost(20, '≤ 20 ms'),
  /** bench:redeem: Redis CPU per WebSocket redemption ÷ per tick. */
  redeemRedisPerTick: atMost(1.5, '≤ 1.5×'),
  /** bench:redeem: gateway CPU per WebSocket redemption ÷ per tick. */
  redeemGatewayPerTick: atMost(2, '≤ 2×'),
  /** bench:redeem: gateway CPU per HTTP redemption ÷ per WebSocket redemption. */
  redeemHttpPerWs: atMost(2, '≤ 2×'),
  /** bench:ids: Redis bytes per sold idle ID. */
  bytesPerId: atMost(200, '≤ 200 B'),
} satisfies Record<string, Target>;

/** `met`, `NOT met`, or `not judged` without a figure. */
export const fmtMet = (met: boolean | undefined): string =>
  met === undefined ? 'not judged' : met ? 'met' : 'NOT met';

/** Latency histograms (HdrHistogram) and their summaries in milliseconds. */
import * as hdr from 'hdr-histogram-js';

/** Latency histograms in microseconds (HdrHistogram, 3 significant digits, up to an hour). */
export type Hist = hdr.Histogram;

export const newHist = (): Hist =>
  hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000,
    numberOfSignificantValueDigits: 3,
    autoResize: true,
  });

/** Records a duration given in milliseconds (performance.now() deltas). */
export function recordMs(h: Hist, ms: number): void {
  h.recordValue(Math.max(1, Math.round(ms * 1000)));
}

export const encodeHist = (h: Hist): string => hdr.encodeIntoCompressedBase64(h);
export const decodeHist = (s: string): Hist => hdr.decodeFromCompressedBase64(s);

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

const ms = (us: number): number => Math.round(us) / 1000;

/**
 * Percentiles in milliseconds. HdrHistogram answers a percentile with the top
 * of its bucket, which can lie above the largest value recorded (p99 570.88 ms,
 * max 570.83 ms): capped at the max, so that no printed percentile exceeds it.
 */
export function summarize(h: Hist): LatencySummary {
  if (h.totalCount === 0) return { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 };
  const at = (p: number): number => ms(Math.min(h.getValueAtPercentile(p), h.maxValue));
  return {
    count: h.totalCount,
    p50: at(50),
    p90: at(90),
    p99: at(99),
    p999: at(99.9),
    max: ms(h.maxValue),
    mean: ms(h.mean),
  };
}

export function fmtLatency(name: string, s: LatencySummary): string {
  if (s.count === 0) return `${name.padEnd(16)} (no samples)`;
  return `${name.padEnd(16)} p50 ${s.p50.toFixed(2)} ms  p90 ${s.p90.toFixed(2)} ms  p99 ${s.p99.toFixed(2)} ms  p999 ${s.p999.toFixed(2)} ms  max ${s.max.toFixed(2)} ms  (n=${s.count})`;
}

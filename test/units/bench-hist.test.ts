/**
 * The benchmarks' latency lines: no percentile above the max they print
 * beside it (HdrHistogram gives a percentile as the top of its bucket).
 */
import { describe, expect, it } from 'vitest';
import { newHist, recordMs, summarize } from '../../bench/lib/hist';

describe('bench latency summary', () => {
  it('never puts a percentile above the largest value recorded', () => {
    const h = newHist();
    for (let i = 0; i < 67; i++) recordMs(h, 400 + i);
    recordMs(h, 570.833);
    const s = summarize(h);
    expect(s.max).toBe(570.833);
    for (const p of [s.p50, s.p90, s.p99, s.p999]) expect(p).toBeLessThanOrEqual(s.max);
    expect(s.p999).toBe(570.833);
  });
});

/**
 * bench:switch calls mode's ticks/s (steadyTickRate): counted over whole
 * tick intervals in which every call is live, so ticks that come in bursts
 * (starts ramped over less than an interval) are not counted as if every
 * second had one.
 */
import { describe, expect, it } from 'vitest';
import { steadyTickRate, type LoadSample } from '../../bench/switch/load';

/** One sample a second for `sec` seconds; `ticksAt(t)` ticks sent in the second ending at t. */
function samples(
  sec: number,
  o: { calls: number; startedAt: number; stopAt: number; ticksAt: (t: number) => number },
): LoadSample[] {
  const out: LoadSample[] = [{ t: 0, ticksDone: 0, started: 0, stopsSent: 0 }];
  for (let t = 1; t <= sec; t++) {
    const prev = out[out.length - 1]!;
    out.push({
      t: t * 1000 + 3 * t, // the sampler drifts a few ms a second
      ticksDone: prev.ticksDone + o.ticksAt(t),
      started: t >= o.startedAt ? o.calls : 0,
      stopsSent: t >= o.stopAt ? o.calls : 0,
    });
  }
  return out;
}

describe('bench:switch steady tick rate', () => {
  it('counts bursts of ticks over whole intervals: 2,000 calls every 5 s is 400/s', () => {
    // --ramp 1 --tick-every 5: every call ticks in the same second of each interval.
    const s = samples(25, { calls: 2000, startedAt: 1, stopAt: 25, ticksAt: (t) => (t % 5 === 1 && t > 1 ? 2000 : 0) });
    const w = steadyTickRate(s, 2000, 5)!;
    expect(w.steady).toBe(true);
    expect(w.intervals).toBe(4);
    expect(w.ticks).toBe(8000);
    expect(w.perSec).toBeGreaterThan(395);
    expect(w.perSec).toBeLessThanOrEqual(400);
  });

  it('leaves out the ramp and the stops', () => {
    // Starts over 3 s (ticks rising), steady 2,000/s from t=4 to t=10, stops from t=11.
    const s = samples(12, {
      calls: 2000,
      startedAt: 4,
      stopAt: 11,
      ticksAt: (t) => (t < 4 ? 600 * t : t < 11 ? 2000 : 500),
    });
    const w = steadyTickRate(s, 2000, 1)!;
    expect(w).toMatchObject({ steady: true, fromSec: 4, intervals: 6, ticks: 12000 });
  });

  it('falls back to first tick to last, not steady, without a whole interval', () => {
    const s = samples(5, { calls: 6000, startedAt: 4, stopAt: 3, ticksAt: (t) => (t >= 2 && t <= 4 ? 4000 : 0) });
    const w = steadyTickRate(s, 6000, 1)!;
    expect(w.steady).toBe(false);
    expect(w.ticks).toBe(12000);
    expect(w.fromSec).toBe(1);
  });
});

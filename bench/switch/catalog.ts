/**
 * bench:switch's catalog: a rate plan, three talk products (plain calls, calls
 * that cross alert thresholds during the run, the ceiling's one call), their
 * sold IDs, and the calls the load generator places on them.
 */
import type { Context } from '../../src/app/context';
import type { RatePlan, TalkProduct } from '../../src/catalog/schema';
import { createToken, putPlans, putProducts } from '../../src/catalog/store';
import { mintSold } from '../lib/redis';
import { fmtInt } from '../lib/report';
import type { CallSpec } from './loadgen';
import type { Options } from './options';

export const SWITCH_NAME = 'bench-switch';

/** Alert calls dial 33…: 1000 µ/s, no fee, so their seconds left are exact. */
const PLAN: RatePlan = {
  name: 'bench',
  rates: [
    { prefix: '', rate: 1000, fee: 0 },
    { prefix: '44', rate: 2000, fee: 0 },
    { prefix: '449', rate: 10_000, fee: 50_000 },
  ],
};
/**
 * --tariff 60/6-peak: every prefix in 60 s then 6 s blocks, at twice the rate
 * on weekdays 08:00-20:00 in Paris: the rating the tick script does for a
 * calling-card plan, against the flat per-second plan above.
 */
function planFor(opts: Options): RatePlan {
  if (opts.tariff === 'flat') return PLAN;
  return {
    ...PLAN,
    tz: 'Europe/Paris',
    periods: [{ name: 'peak', days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '08:00', to: '20:00' }],
    rates: PLAN.rates.map((r) => ({ ...r, initial: 60, next: 6, periodRates: { peak: r.rate * 2 } })),
  };
}
export const ALERT_DEST = '33123456789';
const OTHER_DESTS = ['441632960000', '33123456789', '4491234567'];
const ALERT_RATE = 1000;

/**
 * Where alert calls cross their thresholds (seconds after answer) and the
 * maxSec their balance gives at start; threshold = maxSec - crossing.
 * calls mode: three alerts a call, the last one on the final tick (10 s left),
 * each on a tick (a multiple of --tick-every).
 * max mode: crossings on a doubling ladder, so alerts fire whatever the rate,
 * and maxSec just above a day (thresholds top out at 86400), far from cut-off.
 */
export function alertPlan(opts: Options): { crossings: number[]; maxSec: number } {
  if (opts.mode === 'calls') {
    const d = opts.duration;
    const onTick = (sec: number): number => Math.ceil(sec / opts.tickEvery) * opts.tickEvery;
    const crossings = [...new Set([onTick(d / 3), onTick((2 * d) / 3), d])].filter((c) => c >= 1).sort((a, b) => a - b);
    return { crossings, maxSec: d + 10 };
  }
  const crossings = [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560];
  return { crossings, maxSec: 86_400 + crossings[0]! };
}

function products(opts: Options): { talk: TalkProduct; alert: TalkProduct; rb: TalkProduct } {
  const a = alertPlan(opts);
  const base = { kind: 'talk' as const, currency: 'EUR', plan: PLAN.name, expiryDays: 0, maxCalls: 1 };
  return {
    talk: { ...base, name: 'bench-talk', face: 1_000_000_000_000, price: 0, thresholds: [300, 60, 10] },
    alert: {
      ...base,
      name: 'bench-alert',
      face: a.maxSec * ALERT_RATE,
      price: 0,
      thresholds: a.crossings.map((c) => a.maxSec - c).sort((x, y) => y - x),
    },
    rb: { ...base, name: 'bench-rb', face: 1_000_000_000_000_000, price: 0, thresholds: [300, 60, 10] },
  };
}

export interface SwitchCatalog {
  /** The switch token the simulated switches and the ceiling's call use. */
  token: string;
  /** One per --calls, alert calls spread evenly among the others. */
  calls: CallSpec[];
  /** The ID of the ceiling's live call. */
  rbId: string;
}

/** Alert calls spread evenly among the others. */
function placeCalls(total: number, talkIds: string[], alertIds: string[]): CallSpec[] {
  const nAlert = alertIds.length;
  const calls: CallSpec[] = [];
  let ti = 0;
  let ai = 0;
  for (let i = 0; i < total; i++) {
    const alert = ai < nAlert && Math.floor(((i + 1) * nAlert) / total) > ai;
    if (alert) calls.push({ id: alertIds[ai++]!, dest: ALERT_DEST, alert: true });
    else calls.push({ id: talkIds[ti]!, dest: OTHER_DESTS[ti++ % OTHER_DESTS.length]!, alert: false });
  }
  return calls;
}

/** Writes the plan, products and token, mints and sells every call's ID; prints how long that took. */
export async function loadCatalog(ctx: Context, redisUrl: string, opts: Options): Promise<SwitchCatalog> {
  const a = alertPlan(opts);
  const p = products(opts);
  await putPlans(ctx.redis, [planFor(opts)]);
  await putProducts(ctx.redis, [p.talk, p.alert, p.rb]);
  const { token } = await createToken(ctx.redis, { name: SWITCH_NAME, role: 'switch' });
  const nAlert = Math.round(opts.calls * opts.alertFrac);
  const tMint = performance.now();
  const sell = (product: TalkProduct, n: number): Promise<string[]> =>
    mintSold(ctx, product, n, { price: product.price, ref: '' });
  const [talkIds, alertIds, rbIds] = await Promise.all([
    sell(p.talk, opts.calls - nAlert),
    sell(p.alert, nAlert),
    sell(p.rb, 1),
  ]);
  console.log(
    `setup: redis ${redisUrl} (AOF everysec), ${fmtInt(opts.calls)} IDs minted and sold in ${((performance.now() - tMint) / 1000).toFixed(1)} s` +
      ` (${fmtInt(nAlert)} on bench-alert: maxSec ${a.maxSec}, thresholds ${p.alert.thresholds.join(',')} → alerts at sec ${a.crossings.join(',')})`,
  );
  return { token, calls: placeCalls(opts.calls, talkIds, alertIds), rbId: rbIds[0]! };
}

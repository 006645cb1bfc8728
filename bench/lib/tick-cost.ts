/**
 * What a tick costs, for a benchmark that states its own costs against it
 * (bench:redeem): a short bench:switch max-mode phase, with bench:switch's own
 * catalog and load generator, on the benchmark's Redis and gateway, so both
 * costs come from one run on one machine whose speed varies 2-4x from day to day.
 *
 * The CPU per tick is counted over the timeline seconds that held nothing but
 * ticks: the first and the last ticking second also hold starts or stops,
 * which cost more than a tick and would be charged to it.
 */
import type { Context } from '../../src/app/context';
import { singleRedis } from './cpu';
import { loadCatalog, type SwitchCatalog } from '../switch/catalog';
import { mergeResults, runLoad, splitEngines, type TimelineRow } from '../switch/load';
import { options, type Options } from '../switch/options';

export interface TickPhase {
  opts: Options;
  catalog: SwitchCatalog;
}

export interface TickCost {
  /** Ticks answered over the seconds counted. */
  ticks: number;
  ticksPerSec: number;
  /** CPU µs per tick: the gateway's, Redis'. */
  gatewayUs: number;
  redisUs: number;
  /** Ticks answered in the whole phase and its errors by reason. */
  answered: number;
  errors: Record<string, number>;
}

/**
 * The tick phase's rate plan, products, switch token and sold IDs, written
 * before the gateway starts, so that it finds them in its first catalog read.
 */
export async function prepareTicks(
  ctx: Context,
  redisUrl: string,
  calls: number,
  duration: number,
): Promise<TickPhase> {
  const opts = options([
    '--mode=max',
    `--calls=${calls}`,
    `--duration=${duration}`,
    '--alert-frac=0',
    '--no-ceiling',
    '--quiet',
  ]);
  return { opts, catalog: await loadCatalog(ctx, redisUrl, opts) };
}

/** The ticking seconds but the first and the last: the ones without starts or stops in them. */
function tickOnlyRows(timeline: TimelineRow[]): TimelineRow[] {
  const ticking = timeline.filter((r) => r.ticks > 0);
  return ticking.slice(1, -1);
}

/** Runs the tick phase against the gateway on `port`; the CPU of `gwPid` and `redisPid` per tick. */
export async function measureTickCost(
  phase: TickPhase,
  port: number,
  gwPid: number,
  redisPid: number | undefined,
): Promise<TickCost> {
  const { opts, catalog } = phase;
  const engines = splitEngines(opts, catalog.calls, `ws://127.0.0.1:${port}/v1/switch`, catalog.token, 'tc.');
  const load = await runLoad(engines, gwPid, singleRedis(redisPid), opts);
  const merged = mergeResults(load.results);
  const rows = tickOnlyRows(load.timeline);
  const ticks = rows.reduce((n, r) => n + r.ticks, 0);
  // Rows are one second each: a row's CPU percent over its ticks/s is its CPU per tick.
  const perTick = (pct: (r: TimelineRow) => number): number =>
    ticks ? (rows.reduce((n, r) => n + pct(r), 0) / 100 / ticks) * 1e6 : NaN;
  return {
    ticks,
    ticksPerSec: rows.length ? Math.round(ticks / rows.length) : 0,
    gatewayUs: perTick((r) => r.gwCpu),
    redisUs: perTick((r) => r.redisCpu),
    answered: merged.counters.ticked,
    errors: merged.errors,
  };
}

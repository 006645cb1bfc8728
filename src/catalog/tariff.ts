/**
 * Tariff descriptors: what one call is rated with, built by the gateway when
 * the call starts and handed to the call scripts, where all rating arithmetic
 * happens (lua/includes/tariff.lua). Nothing here computes a cost.
 *
 * A descriptor is decimal integers separated by single spaces:
 *   `rate fee`                                             flat: 1/1 blocks, no minimums,
 *                                                          no disconnect charge, one rate
 *   `rate fee initial next minSec minCost disconnect [from rate]...`
 * `rate` is the rate (micro-units a second) in force at the call's start, or
 * `R/P` (R micro-units per P seconds) for a plan row priced per `per` seconds
 * (reduced: 120000/60 is 2000, a per-second rate, whose calls tick as always); each
 * `from rate` pair is a later change at wall time `from` (ms since 1970), in
 * ascending order: every change at an instant up to TARIFF_HORIZON_MS after the
 * call's start, that instant included, but at most the first MAX_RATE_CHANGES of
 * them (the last rate listed holds after). Exactly those, however the descriptor
 * was cached: one built for an earlier start is reused only while it lists the
 * same changes a fresh one would. The terms (fee,
 * blocks, minimums, disconnect charge) are those of the plan version in force
 * at the start; only the rate changes during a call.
 *
 * Rate changes come from a plan's time-of-day periods, read in its time zone
 * (daylight saving included, through Intl), and from the activation of a dated
 * version of the plan. The Lua side sees absolute instants only, so it needs no
 * time zone logic.
 */
import { PrefixTable } from './rateplan';
import type { Period, Rate, RatePlan } from './schema';
import { WEEKDAYS } from './schema';

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;
/** A descriptor lists the rate changes of this long after its call's start, and no later one. */
export const TARIFF_HORIZON_MS = 7 * DAY_MS;
/** At most this many rate changes in one descriptor (a week of four changes a day is 28). */
export const MAX_RATE_CHANGES = 64;
/** A plan's schedule, and a descriptor, are reused for up to this long. */
const REUSE_MS = HOUR_MS;

// ---- time zones ----------------------------------------------------------------

const formats = new Map<string, Intl.DateTimeFormat>();

function formatOf(tz: string): Intl.DateTimeFormat {
  let f = formats.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formats.set(tz, f);
  }
  return f;
}

/** Whether Intl knows the IANA time zone name. */
export function isTimeZone(tz: string): boolean {
  try {
    formatOf(tz);
    return true;
  } catch {
    return false;
  }
}

/** The zone's offset from UTC at instant t, ms (wall clock minus UTC). */
export function offsetAt(tz: string, t: number): number {
  const whole = t - (((t % 1000) + 1000) % 1000);
  const part: Record<string, number> = {};
  for (const p of formatOf(tz).formatToParts(new Date(whole))) part[p.type] = Number(p.value);
  const wall = Date.UTC(part.year!, part.month! - 1, part.day, part.hour, part.minute, part.second);
  return wall - whole;
}

/** A zone's offset from `start` until the next segment's start. */
interface Segment {
  start: number;
  offset: number;
}

/**
 * The zone's offsets over [a, b]: sampled every three hours (no zone changes
 * twice in three hours), each change then found to the second by bisection.
 */
function zoneSegments(tz: string, a: number, b: number): Segment[] {
  if (tz === 'UTC') return [{ start: -Infinity, offset: 0 }];
  const step = 3 * HOUR_MS;
  a -= ((a % 1000) + 1000) % 1000;
  const segs: Segment[] = [{ start: -Infinity, offset: offsetAt(tz, a) }];
  let prevT = a;
  let prevO = segs[0]!.offset;
  while (prevT < b) {
    const t = Math.min(prevT + step, b + ((1000 - (b % 1000)) % 1000));
    const o = offsetAt(tz, t);
    if (o !== prevO) {
      let lo = prevT;
      let hi = t;
      while (hi - lo > 1000) {
        const mid = lo + Math.floor((hi - lo) / 2000) * 1000;
        if (offsetAt(tz, mid) === prevO) lo = mid;
        else hi = mid;
      }
      segs.push({ start: hi, offset: o });
      prevO = o;
    }
    prevT = t;
  }
  return segs;
}

function offsetIn(segs: readonly Segment[], t: number): number {
  let o = segs[0]!.offset;
  for (const s of segs) {
    if (s.start > t) break;
    o = s.offset;
  }
  return o;
}

/**
 * The instants at which the wall clock shows `wall` (a local time written as if
 * it were UTC): none in a spring-forward gap (the change itself is then a
 * candidate anyway), two in a fall-back overlap.
 */
function instantsOf(segs: readonly Segment[], wall: number): number[] {
  const out: number[] = [];
  segs.forEach((s, i) => {
    const u = wall - s.offset;
    const end = segs[i + 1]?.start ?? Infinity;
    if (u >= s.start && u < end) out.push(u);
  });
  return out;
}

// ---- a plan's schedule ---------------------------------------------------------

interface Window {
  name: string;
  days: Set<number>;
  from: number;
  to: number;
}

interface Version {
  from: number;
  tz: string;
  table: PrefixTable;
  windows: Window[];
}

/** From `from` on, version `v` (-1: none in force yet) is in force, in `period` (undefined: outside every period). */
interface Slice {
  from: number;
  v: number;
  period: string | undefined;
}

const clockMs = (hhmm: string | undefined, dflt: number): number => {
  if (hhmm === undefined) return dflt;
  const [h, m] = hhmm.split(':').map(Number);
  return (h! * 60 + m!) * 60_000;
};

const windowsOf = (periods: readonly Period[] | undefined): Window[] =>
  (periods ?? []).map((p) => ({
    name: p.name,
    days: new Set(p.days.map((d) => WEEKDAYS.indexOf(d))),
    from: clockMs(p.from, 0),
    to: clockMs(p.to, DAY_MS),
  }));

/** The activation instant of a plan version: 0 for an undated plan. */
export const activationOf = (p: RatePlan): number =>
  p.activeFrom === undefined ? 0 : typeof p.activeFrom === 'number' ? p.activeFrom : Date.parse(p.activeFrom);

/**
 * The prefix's rate in `period`. Own properties only: `constructor` or `toString` are valid period
 * names, and a prefix that does not price them must not get Object.prototype's functions as a rate.
 */
const rateIn = (hit: Rate, period: string | undefined): number =>
  (period !== undefined && hit.periodRates && Object.hasOwn(hit.periodRates, period)
    ? hit.periodRates[period]
    : undefined) ?? hit.rate;

/**
 * A rate and the seconds it pays, per second when it divides (0.072 EUR a minute is 1200 a
 * second, whose calls tick as per-second calls always have), else as written (100000 per 60,
 * as the price list prints it): S seconds cost floor(S × rate / per) either way.
 */
const perSecondIfExact = (rate: number, per: number): { rate: number; per: number } =>
  rate % per === 0 ? { rate: rate / per, per: 1 } : { rate, per };

/** A rate as a descriptor writes it: `R`, or `R/P` when it is not per second. */
const tokenOf = (r: { rate: number; per: number }): string => (r.per === 1 ? String(r.rate) : `${r.rate}/${r.per}`);

/**
 * Whether two rates are one price (100000 per 60 and 5000 per 3): no rate change between them,
 * as the seconds of one run at one price are costed together (products below 2^53: 10^10 × 3600).
 */
const samePrice = (a: { rate: number; per: number }, b: { rate: number; per: number }): boolean =>
  a.rate * b.per === b.rate * a.per;

/**
 * The versions of one rate plan (an undated plan and/or versions with
 * `activeFrom`), and the descriptors of its destinations. The version in force
 * at an instant is the one with the latest activation at or before it.
 */
export class PlanTariff {
  private readonly versions: Version[];
  private schedule: { start: number; end: number; slices: Slice[] } | undefined;
  /** Descriptors by the prefixes a destination matched, each valid over [from, until). */
  private readonly built = new Map<string, { from: number; until: number; text: string }>();

  constructor(plans: readonly RatePlan[]) {
    this.versions = plans
      .map((p) => ({
        from: activationOf(p),
        tz: p.tz ?? 'UTC',
        table: new PrefixTable(p),
        windows: windowsOf(p.periods),
      }))
      .sort((a, b) => a.from - b.from);
  }

  /**
   * The rate in force at `now` for the destination, the seconds it pays when not 1, and its
   * connection fee: what a price enquiry shows.
   */
  rateAt(dest: string, now: number): { rate: number; per?: number; fee: number } | undefined {
    const slice = this.sliceAt(now);
    const hit = slice.v < 0 ? undefined : this.versions[slice.v]!.table.lookup(dest);
    if (!hit) return undefined;
    const { rate, per } = perSecondIfExact(rateIn(hit, slice.period), hit.per ?? 1);
    return per === 1 ? { rate, fee: hit.fee } : { rate, per, fee: hit.fee };
  }

  /** The descriptor of a call to `dest` starting at `now`; undefined when the plan has no rate for it then. */
  descriptor(dest: string, now: number): string | undefined {
    const hits = this.versions.map((v) => v.table.lookup(dest));
    // Destinations matching the same prefixes share a descriptor: the cache is bounded by the plan, not by callers.
    const key = hits.map((h) => (h ? h.prefix : '-')).join('/');
    const cached = this.built.get(key);
    if (cached && cached.from <= now && now < cached.until) return cached.text;

    const { slices } = this.scheduleFor(now);
    let i = 0;
    while (i + 1 < slices.length && slices[i + 1]!.from <= now) i++;
    const first = slices[i]!;
    const hit = first.v < 0 ? undefined : hits[first.v];
    if (!hit) return undefined;
    const rate = perSecondIfExact(rateIn(hit, first.period), hit.per ?? 1);
    const changes: (number | string)[] = [];
    const horizon = now + TARIFF_HORIZON_MS;
    let until = now + REUSE_MS;
    let last = rate;
    for (let j = i + 1; j < slices.length; j++) {
      const s = slices[j]!;
      if (s.from > horizon + REUSE_MS) break;
      // A later version without this destination leaves the rate as it was: a call is not cut for it.
      const h = hits[s.v];
      const r = h ? perSecondIfExact(rateIn(h, s.period), h.per ?? 1) : last;
      if (s.from > horizon) {
        // Past this call's horizon, but within that of a call starting later: such a call, starting
        // at or after s.from - TARIFF_HORIZON_MS, needs a descriptor that lists it.
        if (!samePrice(r, last)) {
          until = Math.min(until, s.from - TARIFF_HORIZON_MS);
          break;
        }
        continue;
      }
      if (changes.length >= 2 * MAX_RATE_CHANGES) break;
      // The terms are the start's version's: a call starting after the next activation needs its own.
      if (s.v !== first.v) until = Math.min(until, s.from);
      if (samePrice(r, last)) continue;
      until = Math.min(until, s.from);
      changes.push(s.from, tokenOf(r));
      last = r;
    }
    const terms = [hit.initial ?? 1, hit.next ?? 1, hit.minSec ?? 0, hit.minCost ?? 0, hit.disconnect ?? 0];
    const flat = changes.length === 0 && terms.join(' ') === '1 1 0 0 0' && rate.per === 1;
    const text = flat ? `${rate.rate} ${hit.fee}` : [tokenOf(rate), hit.fee, ...terms, ...changes].join(' ');
    this.built.set(key, { from: now, until, text });
    return text;
  }

  private sliceAt(now: number): Slice {
    const { slices } = this.scheduleFor(now);
    let i = 0;
    while (i + 1 < slices.length && slices[i + 1]!.from <= now) i++;
    return slices[i]!;
  }

  /** The schedule from `now` on, computed at most once an hour (and again if the clock goes back). */
  private scheduleFor(now: number): { start: number; end: number; slices: Slice[] } {
    const s = this.schedule;
    if (s && s.start <= now && now + TARIFF_HORIZON_MS + REUSE_MS <= s.end) return s;
    const end = now + TARIFF_HORIZON_MS + 2 * REUSE_MS;
    this.schedule = { start: now, end, slices: this.slicesOver(now, end) };
    return this.schedule;
  }

  /**
   * Which version and period are in force over [start, end]: every instant where
   * that can change (a version's activation, a period's edge in the version's
   * zone, a change of the zone's offset) is a candidate, and the state is
   * evaluated at each, so a daylight-saving day needs no special case.
   */
  private slicesOver(start: number, end: number): Slice[] {
    const vs = this.versions;
    const candidates = [start];
    const zones = new Map<string, Segment[]>();
    const segsOf = (tz: string): Segment[] => {
      let segs = zones.get(tz);
      if (!segs) zones.set(tz, (segs = zoneSegments(tz, start - DAY_MS, end + DAY_MS)));
      return segs;
    };
    vs.forEach((v, k) => {
      if (v.from > start && v.from <= end) candidates.push(v.from);
      const until = vs[k + 1]?.from ?? Infinity;
      if (!v.windows.length || until <= start || v.from > end) return;
      const segs = segsOf(v.tz);
      for (const s of segs) if (s.start > start && s.start <= end) candidates.push(s.start);
      // Local midnights (as if UTC) from the day before the start to the day after the end.
      const firstDay = Math.floor((start + offsetIn(segs, start)) / DAY_MS) * DAY_MS - DAY_MS;
      for (let day = firstDay; day <= end + 2 * DAY_MS; day += DAY_MS) {
        const weekday = new Date(day).getUTCDay();
        for (const w of v.windows) {
          if (!w.days.has(weekday)) continue;
          for (const edge of [w.from, w.to])
            for (const u of instantsOf(segs, day + edge)) if (u > start && u <= end) candidates.push(u);
        }
      }
    });
    candidates.sort((a, b) => a - b);
    const slices: Slice[] = [];
    for (const t of candidates) {
      if (slices.length && slices[slices.length - 1]!.from === t) continue;
      const s = this.stateAt(t, segsOf);
      const prev = slices[slices.length - 1];
      if (!prev || prev.v !== s.v || prev.period !== s.period) slices.push(s);
    }
    return slices;
  }

  private stateAt(t: number, segsOf: (tz: string) => Segment[]): Slice {
    let v = -1;
    while (v + 1 < this.versions.length && this.versions[v + 1]!.from <= t) v++;
    if (v < 0 || !this.versions[v]!.windows.length) return { from: t, v, period: undefined };
    const version = this.versions[v]!;
    const wall = t + offsetIn(segsOf(version.tz), t);
    const weekday = new Date(wall).getUTCDay();
    const ms = ((wall % DAY_MS) + DAY_MS) % DAY_MS;
    const w = version.windows.find((x) => x.days.has(weekday) && x.from <= ms && ms < x.to);
    return { from: t, v, period: w?.name };
  }
}

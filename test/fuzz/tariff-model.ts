/**
 * What a call costs, modelled from the docs alone (operations.md "Rate plans",
 * "How a call is charged", "Dated plans"; protocol.md "Billing rules", "Billing
 * increments", "Price enquiry"), for tariff-model.test.ts to hold the gateway's
 * tariff engine against. Nothing here is shared with src/catalog/tariff.ts or
 * lua/includes/tariff.lua: rates are looked up minute by minute (every period
 * edge is on a whole UTC minute, zone offsets being whole minutes), prefixes by
 * scanning them all, and money is BigInt, so that a precision loss shows.
 * A row's `per` (operations.md "Per-minute prices"): a run of seconds at one
 * price costs floor(seconds × rate / per), each run rounded on its own.
 */
export interface ModelPeriod {
  name: string;
  /** 0 = Sunday. */
  days: number[];
  /** Minutes since local midnight: `from` included, `to` excluded. */
  from: number;
  to: number;
}
export interface ModelRate {
  prefix: string;
  rate: number;
  /** The seconds `rate` and the period rates pay (1 when absent). */
  per?: number;
  fee: number;
  initial?: number;
  next?: number;
  minSec?: number;
  minCost?: number;
  disconnect?: number;
  periodRates?: Record<string, number>;
}
export interface ModelVersion {
  activeFrom?: number;
  /** IANA zone; its offset at each instant is read from Intl. */
  tz: string;
  periods: ModelPeriod[];
  rates: ModelRate[];
}

const MINUTE = 60_000;
const DAY = 86_400_000;
/** Rate changes are known to a call for its first 7 days, at most 64 of them (operations.md). */
export const HORIZON_MS = 7 * DAY;
const MAX_CHANGES = 64;

/** The version in force at t: the latest activation at or before it, an undated one counting as always. */
function versionAt(plan: readonly ModelVersion[], t: number): ModelVersion | undefined {
  let best: ModelVersion | undefined;
  for (const v of plan)
    if ((v.activeFrom ?? -Infinity) <= t && (!best || (v.activeFrom ?? -Infinity) >= (best.activeFrom ?? -Infinity)))
      best = v;
  return best;
}

/** The longest prefix of dest in the version; '' matches everything. */
function lookup(v: ModelVersion, dest: string): ModelRate | undefined {
  let best: ModelRate | undefined;
  for (const r of v.rates) if (dest.startsWith(r.prefix) && (!best || r.prefix.length > best.prefix.length)) best = r;
  return best;
}

const formats = new Map<string, Intl.DateTimeFormat>();
/** The zone's offset from UTC at t, in minutes, as Intl says. */
function intlOffset(tz: string, t: number): number {
  let f = formats.get(tz);
  if (!f) formats.set(tz, (f = new Intl.DateTimeFormat('en-GB', { timeZone: tz, timeZoneName: 'longOffset' })));
  const name = f.formatToParts(new Date(t)).find((p) => p.type === 'timeZoneName')!.value;
  const m = /GMT([+-])(\d\d):(\d\d)/.exec(name);
  return m ? (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3])) : 0;
}

const HOUR = 3_600_000;
const hourly = new Map<string, number>();
/**
 * The zone's offset from UTC at t, in minutes. Read once per hour: an hour that begins and ends
 * at one offset has no change inside (no zone changes twice in an hour), else t is asked itself.
 */
export function offsetMinutes(tz: string, t: number): number {
  const at = (h: number): number => {
    const key = `${tz}@${h}`;
    let o = hourly.get(key);
    if (o === undefined) hourly.set(key, (o = intlOffset(tz, h)));
    return o;
  };
  const h = Math.floor(t / HOUR) * HOUR;
  const o = at(h);
  return o === at(h + HOUR) ? o : intlOffset(tz, t);
}

/** The first period whose day and window hold the local time at t. */
function periodAt(v: ModelVersion, t: number): string | undefined {
  const local = t + offsetMinutes(v.tz, t) * MINUTE;
  const day = Math.floor(local / DAY);
  const weekday = (((day + 4) % 7) + 7) % 7; // 1970-01-01 was a Thursday
  const ms = local - day * DAY;
  return v.periods.find((p) => p.days.includes(weekday) && p.from * MINUTE <= ms && ms < p.to * MINUTE)?.name;
}

/** A price: `rate` micro-units per `per` seconds. */
export interface Price {
  rate: number;
  per: number;
}
const samePrice = (a: Price, b: Price): boolean => BigInt(a.rate) * BigInt(b.per) === BigInt(b.rate) * BigInt(a.per);

/**
 * The rate for dest at t, by the version and period then; undefined when that version does not rate
 * it. As the gateway answers it: per second when the price divides (7200 per 60 is 120 a second).
 */
function rateAt(plan: readonly ModelVersion[], dest: string, t: number): Price | undefined {
  const v = versionAt(plan, t);
  const hit = v && lookup(v, dest);
  if (!v || !hit) return undefined;
  const p = periodAt(v, t);
  const rate =
    (p !== undefined && hit.periodRates && Object.hasOwn(hit.periodRates, p) ? hit.periodRates[p] : undefined) ??
    hit.rate;
  const per = hit.per ?? 1;
  return rate % per === 0 ? { rate: rate / per, per: 1 } : { rate, per };
}

/** A call's frozen tariff: the start's version's terms, and the rate at each instant of its first 7 days. */
export interface ModelTerms {
  rate: Price;
  fee: bigint;
  initial: number;
  next: number;
  minSec: number;
  minCost: bigint;
  disconnect: bigint;
  /** Later rate changes, [instant, price], ascending. */
  changes: [number, Price][];
  /** Past this instant the model claims nothing (the horizon, or a 65th change). */
  knownUntil: number;
}

/** The tariff of a call to dest started at `start`; undefined: no_rate. */
export function termsAt(plan: readonly ModelVersion[], dest: string, start: number): ModelTerms | undefined {
  const v = versionAt(plan, start);
  const hit = v && lookup(v, dest);
  if (!hit) return undefined;
  const first = rateAt(plan, dest, start)!;
  const instants = new Set<number>();
  for (let m = Math.floor(start / MINUTE) * MINUTE + MINUTE; m <= start + HORIZON_MS; m += MINUTE) instants.add(m);
  for (const x of plan)
    if (x.activeFrom !== undefined && x.activeFrom > start && x.activeFrom <= start + HORIZON_MS)
      instants.add(x.activeFrom);
  const changes: [number, Price][] = [];
  let last = first;
  let knownUntil = start + HORIZON_MS;
  for (const t of [...instants].sort((a, b) => a - b)) {
    // A version that no longer rates the destination leaves a running call at the rate it had.
    const r = rateAt(plan, dest, t);
    if (r === undefined || samePrice(r, last)) continue;
    if (changes.length === MAX_CHANGES) {
      knownUntil = t;
      break;
    }
    changes.push([t, r]);
    last = r;
  }
  return {
    rate: first,
    fee: BigInt(hit.fee),
    initial: hit.initial ?? 1,
    next: hit.next ?? 1,
    minSec: hit.minSec ?? 0,
    minCost: BigInt(hit.minCost ?? 0),
    disconnect: BigInt(hit.disconnect ?? 0),
    changes,
    knownUntil,
  };
}

/** Seconds charged for a call of `sec`: blocks charged when they start, then at least minSec; 0 unanswered. */
export function charged(t: ModelTerms, sec: number): number {
  if (sec <= 0) return 0;
  const n = sec <= t.initial ? t.initial : t.initial + Math.ceil((sec - t.initial) / t.next) * t.next;
  return Math.max(n, t.minSec);
}

/** The rate of second i of a call answered at `answer`: the one in force at answer + i s. */
export function rateOfSecond(t: ModelTerms, answer: number, i: number): Price {
  let r = t.rate;
  for (const [at, rate] of t.changes) if (at <= answer + i * 1000) r = rate;
  return r;
}

/** A run of `len` seconds at one price: floor(len × rate / per). */
const runCost = (len: number, p: Price): bigint => (BigInt(len) * BigInt(p.rate)) / BigInt(p.per);

/** The fee and the first n charged seconds at their rates, raised to minCost; no disconnect charge. */
export function costOf(t: ModelTerms, answer: number, n: number): bigint {
  if (n <= 0) return 0n;
  let sum = t.fee;
  let i = 0;
  let rate = t.rate;
  for (const [at, next] of t.changes) {
    const from = Math.max(0, Math.ceil((at - answer) / 1000));
    if (from >= n) break;
    if (from > i) sum += runCost(from - i, rate);
    i = Math.max(i, from);
    rate = next;
  }
  sum += runCost(n - i, rate);
  return sum < t.minCost ? t.minCost : sum;
}

/** All an answered call of `sec` seconds is charged (cost + short of its records), disconnect charge included. */
export const totalOf = (t: ModelTerms, answer: number, sec: number): bigint =>
  sec <= 0 ? 0n : costOf(t, answer, charged(t, sec)) + t.disconnect;

/** The seconds `money` buys: the longest chargeable duration whose charge fits, 0 when the first block does not. */
export function affordable(t: ModelTerms, answer: number, money: bigint): number {
  const at = (k: number): number => Math.max(t.initial + k * t.next, t.minSec);
  const fits = (k: number): boolean => costOf(t, answer, at(k)) + t.disconnect <= money;
  if (!fits(0)) return 0;
  let lo = 0;
  let hi = 1;
  while (fits(hi)) [lo, hi] = [hi, hi * 2];
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return at(lo);
}

/**
 * What the switch protocol bills, modelled from the docs alone (protocol.md
 * "Billing rules", "Credit control", "Blocking", "Stale calls", "After
 * reaping", "Idempotency", "Billing increments", "Recovered stops", "Stops
 * under another token name"; operations.md "Rate plans"), for
 * billing-model.test.ts to hold a real gateway against. It keeps each ID's
 * balance and what is free of it (not held by its live calls' reservations),
 * each call's reservation, grant, billed seconds, what it paid and ran short,
 * and says what each start, tick, update and stop must be answered. Nothing
 * here is shared with src/ or lua/: a call is charged in one pass, first from
 * its reservation (less the disconnect charge it holds back), then from what is
 * free, the rest short; then re-granted.
 */

/** One destination's terms in the rate plan (operations.md "Rate plans"). */
export interface Tariff {
  rate: number;
  fee: number;
  initial: number;
  next: number;
  minSec: number;
  minCost: number;
  disconnect: number;
}

/** Seconds charged for `sec`: blocks charged when they start, at least minSec; 0 unanswered. */
export function charged(t: Tariff, sec: number): number {
  if (sec <= 0) return 0;
  return Math.max(t.minSec, t.initial + Math.ceil(Math.max(0, sec - t.initial) / t.next) * t.next);
}

/** The fee and the charged seconds, raised to minCost; no disconnect charge. */
export const costOf = (t: Tariff, sec: number): number =>
  sec <= 0 ? 0 : Math.max(t.minCost, t.fee + charged(t, sec) * t.rate);

/** What one more second past `sec` costs (a whole block when it starts one). */
const nextCost = (t: Tariff, sec: number): number => costOf(t, sec + 1) - costOf(t, sec);

/** The longest call `money` pays for (disconnect charge aside); 0 when the first second does not fit. */
export function affordable(t: Tariff, money: number): number {
  if (costOf(t, 1) > money) return 0;
  let sec = 1;
  while (costOf(t, sec + 1) <= money) sec++;
  return sec;
}

/**
 * "Give or take 5 s" (protocol.md, stops under another token name): how far a call's start may
 * lie past the answer a stop under another name reports, and a start past a recovered answer.
 */
const SKEW_MS = 5000;
/**
 * The model judges those windows by the test's clock; the test keeps every judgement this far
 * from its edge, so that a slow machine cannot tip it. Closer, the model refuses to judge.
 */
const MARGIN_MS = 2000;

/** `at` <= `edge`, refusing when it is too close to call. */
function before(at: number, edge: number, what: string): boolean {
  if (Math.abs(at - edge) < MARGIN_MS) throw new Error(`${what}: ${at - edge} ms from the edge, too close to judge`);
  return at <= edge;
}

export interface ModelId {
  id: string;
  balance: number;
  /** The balance less the live calls' reservations. */
  free: number;
  active: number;
  blocked: boolean;
}

/** A call's figures as `stopped` gives them. */
export interface Stopped {
  billedSec: number;
  cost: number;
  balance: number;
}

/**
 * live; stopped by its own name; `other`: stopped under another name while its own switch may
 * still talk; reaped; `recovered`: billed from a stop alone, its start unknown.
 */
export type CallState = 'live' | 'stopped' | 'other' | 'reaped' | 'recovered';

export interface ModelCall {
  /** `<token name>:<call id>`, the session's name. */
  key: string;
  name: string;
  call: string;
  idx: number;
  dest: string;
  t: Tariff;
  mode: 'tick' | 'quota';
  startAt: number;
  /** When a recovered call was answered, by its stop's account. */
  answerAt: number;
  /** The most seconds billed so far. */
  sec: number;
  paid: number;
  short: number;
  reserved: number;
  grant: number;
  /** As admission answered it; a repeated start answers it again. */
  maxSec: number;
  final: boolean;
  cut: string | null;
  state: CallState;
  /** The first `stopped`, which repeats answer. */
  stopped?: Stopped;
  /** The late stop after a reaping or a stop under another name came: later ones repeat. */
  lateDone: boolean;
  /** The state before that late stop. */
  was?: CallState;
  /** The balance when the reaper closed it: a late stop billing and giving back nothing answers it. */
  reapedBalance?: number;
}

/** What a tick or update must be answered; `cutoff` undefined: either way. */
export interface TickWant {
  answer: string;
  cutoff: string | null | undefined;
  /** The figures of a `ticked` or `granted`. */
  figures?: { grant: number; balance: number; secLeft: number; final: boolean };
}

export interface StartWant {
  answer: string;
  maxSec?: number;
  grant?: number;
}

export interface StopWant {
  answer: string;
  figures?: Stopped;
}

/** Seconds a call's reservation covers when its product allows several calls (credit control). */
const GRANT_SEC = 60;

/** One product's IDs and calls, as the docs say the gateway bills them. */
export class BillingModel {
  readonly calls = new Map<string, ModelCall>();
  /** A session name under which a stop under another name found a call: its repeats are that call's. */
  private readonly alias = new Map<string, ModelCall>();
  private readonly aliasStopped = new Map<string, Stopped>();

  constructor(
    readonly ids: ModelId[],
    readonly maxCalls: number,
    /** Each destination's terms in the product's plan. */
    private readonly tariffs: ReadonlyMap<string, Tariff>,
  ) {}

  private tariffOf(dest: string): Tariff {
    const t = this.tariffs.get(dest);
    if (!t) throw new Error(`no tariff for ${dest}`);
    return t;
  }

  private ofCallId(idx: number, call: string): ModelCall[] {
    return [...this.calls.values()].filter((c) => c.idx === idx && c.call === call);
  }

  /** What a call reserves, or adds to its reservation: all that is free, or its next GRANT_SEC. */
  private wanted(c: { t: Tariff; sec: number; reserved: number }, free: number): number {
    if (this.maxCalls === 1) return free;
    const more = costOf(c.t, charged(c.t, c.sec) + GRANT_SEC) - costOf(c.t, c.sec) + c.t.disconnect - c.reserved;
    return Math.min(Math.max(0, more), free);
  }

  start(name: string, call: string, idx: number, dest: string, mode: 'tick' | 'quota', now: number): StartWant {
    const t = this.tariffOf(dest);
    const key = `${name}:${call}`;
    const m = this.ids[idx]!;
    const known = this.calls.get(key) ?? this.alias.get(key);
    if (known) {
      if (known.idx !== idx || known.dest !== dest) return { answer: 'call_conflict' };
      if (known.state !== 'live') return { answer: 'call_ended' };
      if (known.mode !== mode) return { answer: 'call_conflict' };
      return { answer: 'started', maxSec: known.maxSec };
    }
    // The start of a call a stop under another name recovered (its start held back): that call's.
    const recovered = this.ofCallId(idx, call).some(
      (c) =>
        c.state === 'recovered' && c.dest === dest && c.name !== name && before(now, c.answerAt + SKEW_MS, 'start'),
    );
    if (recovered) return { answer: 'call_ended' };
    if (m.blocked) return { answer: 'blocked' };
    if (m.balance <= 0) return { answer: 'exhausted' };
    if (m.active >= this.maxCalls) return { answer: 'concurrent_limit' };
    if (m.free < costOf(t, 1) + t.disconnect) return { answer: 'insufficient_balance' };
    const reserved = this.wanted({ t, sec: 0, reserved: 0 }, m.free);
    const grant = affordable(t, reserved - t.disconnect);
    const c: ModelCall = {
      key,
      name,
      call,
      idx,
      dest,
      t,
      mode,
      startAt: now,
      answerAt: now,
      sec: 0,
      paid: 0,
      short: 0,
      reserved,
      grant,
      maxSec: affordable(t, m.free - t.disconnect),
      final: m.free - reserved < nextCost(t, grant),
      cut: null,
      state: 'live',
      lateDone: false,
    };
    this.calls.set(key, c);
    m.free -= reserved;
    m.active++;
    return { answer: 'started', maxSec: c.maxSec, grant: c.grant };
  }

  tick(name: string, call: string, sec: number, op: 'tick' | 'update', withRef: boolean): TickWant {
    const key = `${name}:${call}`;
    const c = this.calls.get(key);
    const answered = op === 'update' || withRef;
    if (!c)
      return this.alias.has(key)
        ? { answer: 'call_ended', cutoff: undefined }
        : { answer: 'unknown_call', cutoff: null };
    // Ended: without a ref, a tick is told to hang up if the switch may not know yet.
    if (c.state === 'reaped') return { answer: 'call_ended', cutoff: answered ? null : 'stale' };
    if (c.state === 'other') return { answer: 'call_ended', cutoff: answered ? null : 'stopped' };
    if (c.state !== 'live') return { answer: 'call_ended', cutoff: c.was && !answered ? undefined : null };
    const m = this.ids[c.idx]!;
    const high = Math.max(sec, c.sec);
    const wasGrant = c.grant;
    // Answered now (a block tariff's first second charges the whole first block): re-granted.
    let regrant = c.t.initial > 1 && c.sec === 0 && sec > 0;
    let ranShort = false;
    if (sec > c.sec) {
      const { fromFree, short } = this.bill(c, costOf(c.t, sec) - costOf(c.t, c.sec));
      c.sec = sec;
      if (fromFree > 0 && !m.blocked) regrant = true;
      if (short > 0) ranShort = true;
    }
    if (!c.cut && !m.blocked && m.free > 0 && (this.maxCalls === 1 || c.final || c.grant - high < 30)) {
      const add = this.wanted(c, m.free);
      c.reserved += add;
      m.free -= add;
      if (add > 0 || c.final) regrant = true;
    }
    if (regrant && !c.cut) {
      c.grant = Math.max(charged(c.t, c.sec), affordable(c.t, costOf(c.t, c.sec) + c.reserved - c.t.disconnect));
      c.final = m.free < nextCost(c.t, c.grant);
      // A call that ran short is granted no seconds it did not pay for.
      if (ranShort) c.grant = Math.min(c.grant, wasGrant, c.sec);
    }
    if (m.blocked || m.free <= 0 || c.cut) c.final = true;
    if (!c.cut && m.blocked) c.cut = 'blocked';
    if (!c.cut && c.final && c.sec >= c.grant) c.cut = 'exhausted';
    const secLeft =
      c.cut || m.blocked || m.free <= 0
        ? Math.max(0, c.grant - c.sec)
        : Math.max(0, affordable(c.t, costOf(c.t, c.sec) + c.reserved - c.t.disconnect + m.free) - c.sec);
    return {
      answer: op === 'tick' ? 'ticked' : 'granted',
      cutoff: c.cut,
      figures: { grant: c.grant, balance: m.balance, secLeft, final: c.final },
    };
  }

  /** Charges `amount` to a live call: from its reservation (less the disconnect charge), then what is free. */
  private bill(c: ModelCall, amount: number): { fromFree: number; short: number } {
    const m = this.ids[c.idx]!;
    const fromReserved = Math.min(amount, Math.max(0, c.reserved - c.t.disconnect));
    c.reserved -= fromReserved;
    const fromFree = Math.min(amount - fromReserved, m.free);
    m.free -= fromFree;
    const short = amount - fromReserved - fromFree;
    c.short += short;
    c.paid += fromReserved + fromFree;
    m.balance -= fromReserved + fromFree;
    return { fromFree, short };
  }

  /** Gives `amount` back to a call: what it ran short is forgiven first, the rest returns to the balance. */
  private giveBack(c: ModelCall, amount: number): void {
    const m = this.ids[c.idx]!;
    const forgiven = Math.min(amount, c.short);
    c.short -= forgiven;
    m.balance += amount - forgiven;
    m.free += amount - forgiven;
    c.paid -= amount - forgiven;
  }

  /** Takes `amount` from what is free, never below zero; the rest is short. */
  private takeFree(c: ModelCall, amount: number): void {
    const m = this.ids[c.idx]!;
    const taken = Math.min(amount, m.free);
    m.free -= taken;
    m.balance -= taken;
    c.paid += taken;
    c.short += amount - taken;
  }

  /** A live call closed: its reservation is free again, then an answered call's disconnect charge is taken. */
  private close(c: ModelCall, state: CallState): void {
    const m = this.ids[c.idx]!;
    m.free += c.reserved;
    c.reserved = 0;
    m.active--;
    if (c.sec > 0) this.takeFree(c, c.t.disconnect);
    c.state = state;
  }

  /** A live call's stop: billed to `sec` (more billed, fewer given back), then closed. */
  private stopLive(c: ModelCall, sec: number, state: CallState): Stopped {
    if (sec > c.sec) this.bill(c, costOf(c.t, sec) - costOf(c.t, c.sec));
    else if (sec < c.sec) this.giveBack(c, costOf(c.t, c.sec) - costOf(c.t, sec));
    c.sec = sec;
    this.close(c, state);
    return (c.stopped = { billedSec: charged(c.t, sec), cost: c.paid, balance: this.ids[c.idx]!.balance });
  }

  /**
   * The first stop after a reaping (or, `giveBack` false, the own stop after a stop under another
   * name): more seconds are billed from what is free, fewer given back (only after a reaping).
   */
  private lateStop(c: ModelCall, sec: number, giveBack: boolean): Stopped {
    const m = this.ids[c.idx]!;
    const unchanged = sec === c.sec || (charged(c.t, sec) === charged(c.t, c.sec) && sec < c.sec);
    c.was = c.state;
    c.state = 'stopped';
    c.lateDone = true;
    if (sec > c.sec) {
      // The disconnect charge too when the first close took none (no second billed then).
      this.takeFree(c, costOf(c.t, sec) - costOf(c.t, c.sec) + (c.sec === 0 ? c.t.disconnect : 0));
      c.sec = sec;
    } else if (!giveBack) {
      return c.stopped!;
    } else if (sec < c.sec) {
      this.giveBack(c, costOf(c.t, c.sec) - costOf(c.t, sec) + (sec === 0 ? c.t.disconnect : 0));
      c.sec = sec;
    }
    const balance = unchanged && c.reapedBalance !== undefined ? c.reapedBalance : m.balance;
    return (c.stopped = { billedSec: charged(c.t, c.sec), cost: c.paid, balance });
  }

  stop(name: string, call: string, sec: number, lost: { idx: number; dest: string } | null, now: number): StopWant {
    const key = `${name}:${call}`;
    const own = this.calls.get(key) ?? this.alias.get(key);
    if (own) {
      if (lost && (own.idx !== lost.idx || own.dest !== lost.dest)) return { answer: 'call_conflict' };
      if (own.state === 'live') return { answer: 'stopped', figures: this.stopLive(own, sec, 'stopped') };
      const late = own.state === 'reaped' || (own.state === 'other' && this.calls.get(key) === own);
      if (late && !own.lateDone) return { answer: 'stopped', figures: this.lateStop(own, sec, own.state === 'reaped') };
      return { answer: 'stopped', figures: this.calls.get(key) === own ? own.stopped! : this.aliasStopped.get(key)! };
    }
    if (!lost) return { answer: 'unknown_call' };
    // Under another name: the latest started call of the ID's call id to that destination that
    // started no later than the stop says it was answered (give or take 5 s) is that call.
    const [found] = this.ofCallId(lost.idx, call)
      .filter((c) => c.dest === lost.dest && before(c.startAt, now - sec * 1000 + SKEW_MS, 'stop'))
      .sort((a, b) => b.startAt - a.startAt);
    if (found) {
      this.alias.set(key, found);
      let figures: Stopped;
      if (found.state === 'live') figures = this.stopLive(found, sec, 'other');
      else if (found.state === 'reaped' && !found.lateDone) figures = this.lateStop(found, sec, true);
      else figures = found.stopped!;
      this.aliasStopped.set(key, figures);
      return { answer: 'stopped', figures };
    }
    return { answer: 'stopped', figures: this.recover(key, name, call, sec, lost, now) };
  }

  /** A stop of a call the gateway never knew: rated from the stop, billed from what is free. */
  private recover(
    key: string,
    name: string,
    call: string,
    sec: number,
    lost: { idx: number; dest: string },
    now: number,
  ): Stopped {
    const t = this.tariffOf(lost.dest);
    const answerAt = now - sec * 1000;
    const c: ModelCall = {
      key,
      name,
      call,
      idx: lost.idx,
      dest: lost.dest,
      t,
      mode: 'tick',
      startAt: answerAt,
      answerAt,
      sec,
      paid: 0,
      short: 0,
      reserved: 0,
      grant: 0,
      maxSec: 0,
      final: true,
      cut: null,
      state: 'recovered',
      lateDone: true,
    };
    this.takeFree(c, costOf(t, sec) + (sec > 0 ? t.disconnect : 0));
    c.stopped = { billedSec: charged(t, sec), cost: c.paid, balance: this.ids[lost.idx]!.balance };
    this.calls.set(key, c);
    return c.stopped;
  }

  /** An operator's top-up: the new balance, or why it is refused (a blocked ID takes none). */
  topUp(idx: number, amount: number): number | 'blocked' {
    const m = this.ids[idx]!;
    if (m.blocked) return 'blocked';
    m.balance += amount;
    m.free += amount;
    return m.balance;
  }

  /** An operator's block (repeatable) or unblock (of a blocked ID only). */
  setBlocked(idx: number, blocked: boolean): 'ok' | 'not_blocked' {
    const m = this.ids[idx]!;
    if (!blocked && !m.blocked) return 'not_blocked';
    m.blocked = blocked;
    return 'ok';
  }

  /** Every live call in tick mode has gone quiet: the reaper closes them, billed up to their last tick. */
  reap(): number {
    let n = 0;
    for (const c of this.calls.values())
      if (c.state === 'live' && c.mode === 'tick') {
        this.close(c, 'reaped');
        c.reapedBalance = this.ids[c.idx]!.balance;
        n++;
      }
    return n;
  }
}

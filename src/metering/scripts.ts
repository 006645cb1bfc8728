/**
 * The metering domain's Lua scripts (lua/call_*.lua), one function each: it
 * lays out KEYS and ARGV as the script's header says and decodes the reply into
 * a named type, so no other file reads a raw reply. Every call goes through
 * Scripts, which times it (Scripts.timer).
 */
import { keys as redisKeys } from '../redis/keys';
import type { Scripts } from '../redis/scripts';
import { idCallKeyOf, type CallKeys, type FinalAction } from './call-keys';
import { asError, num, replyError, str, tagged } from '../redis/reply';

/** What a switch does when it cannot reach Tessera: cut at the grant's end, or go on up to `sec` more seconds. */
export interface FailurePolicy {
  action: 'terminate' | 'continue';
  sec: number;
}

export interface Grant {
  /** Seconds since answer the call's reservation carries it to. */
  grant: number;
  /** This grant is the last: nothing free would buy another charged second. */
  final: boolean;
  finalAction: FinalAction;
}

export type StartResult =
  | ({
      ok: true;
      maxSec: number;
      balance: number;
      /** Micro-units per `per` seconds, in force at the start. */
      rate: number;
      /** The seconds `rate` pays: 1 but for a price per minute or the like. */
      per: number;
      fee: number;
      duplicate: boolean;
      onFailure: FailurePolicy;
      validitySec: number;
    } & Grant)
  | { ok: false; reason: string; retryAfter?: number };

/** call_start's and call_tick's packed final action: 'terminate' or 'redirect:<number>'. */
export function finalActionOf(packed: string): FinalAction {
  return packed.startsWith('redirect:') ? { action: 'redirect', redirect: packed.slice(9) } : { action: 'terminate' };
}

const TERMINATE: FinalAction = Object.freeze({ action: 'terminate' });

export type TickCode = 'ok' | 'dup' | 'unknown_call' | 'call_ended' | 'call_conflict';
export interface TickResult {
  code: TickCode;
  balance: number;
  secLeft: number;
  /** Seconds since answer the call's reservation carries it to. */
  grant: number;
  /** The call's grant is final: the switch ends or redirects the call when it runs out. */
  isFinal: boolean;
  /** What it does then: in the answer that made the grant final, with a cut-off, in every quota-mode answer and every answer heard. */
  final?: FinalAction;
  /** A quota-mode call's grant is valid this long (s); 0 in tick mode. */
  validitySec: number;
  /** Thresholds (seconds left) crossed by this tick, highest first. */
  alerts: readonly number[];
  /** Why the switch must cut the call now, or ''; for call_ended, how the call was closed. */
  cut: string;
  /** This tick ordered the cut-off (later ticks repeat it). */
  freshCut: boolean;
}

export type StopResult =
  | {
      ok: true;
      billedSec: number;
      cost: number;
      balance: number;
      record: string;
      duplicate: boolean;
      /** What the record written now was charged and could not pay (0 for a repeat): not sent to the switch. */
      short: number;
    }
  | { ok: false; reason: string; retryAfter?: number };

/** call_reap closed the call, or skipped it (no longer stale, or already closed). */
export type ReapResult =
  { closed: true; billedSec: number; cost: number; balance: number; record: string; short: number } | { closed: false };

/** Ticks answer through a callback, not a promise: this is the path every second of every call takes. */
export type TickCallback = (err: unknown, r?: TickResult) => void;

/** One tick waiting for its bucket's call_tick. */
export interface TickItem {
  readonly ck: CallKeys;
  readonly sec: number;
  /** Its answer is sent (a tick with a ref, an update): a final grant's action goes with it (CallKeys.finalAction). */
  readonly heard: boolean;
  readonly done: TickCallback;
}

/** One call id waiting for its index bucket's call_claim; answered the ID key that held it, or ''. */
export interface ClaimItem {
  readonly index: string;
  readonly id: string;
  readonly done: (err: Error | null, had?: string) => void;
}

/** Claims one index bucket's call ids in one call_claim, in order, and answers each after `settled`. */
export function callClaims(scripts: Scripts, batch: readonly ClaimItem[], ttlSec: number, settled: () => void): void {
  const keys = batch.map((c) => c.index);
  const args: (string | number)[] = [ttlSec];
  for (const c of batch) args.push(c.id);
  scripts.run('call_claim', keys, args).then(
    (rows) => {
      settled();
      const ok = Array.isArray(rows) && rows.length === batch.length && rows.every((r) => typeof r === 'string');
      const err = ok ? null : replyError('call_claim', rows);
      for (let i = 0; i < batch.length; i++) batch[i]!.done(err, ok ? rows[i] : undefined);
    },
    (err: unknown) => {
      settled();
      for (const c of batch) c.done(asError(err));
    },
  );
}

export interface StartArgs {
  dest: string;
  sw: string;
  call: string;
  idHash: string;
  mode: 'tick' | 'quota';
  /** The caller number's hash when the call was started by `ani`, else '': the ID must still list it. */
  aniHash: string;
  /** The destination's tariff in every plan that has one: (plan, descriptor) pairs (CatalogCache.tariffArgs). */
  rates: readonly string[];
}

/** What every start of one call_start shares. */
export interface StartBatch {
  now: number;
  /** How much later than an answered call an unanswered one counts as stale (ms). */
  ringGraceMs: number;
  /**
   * How long (s) a call stays findable by its ID and call id (keys.idCall): past its longest
   * life and its closed session's TTL. Tests that do not care leave it to the default.
   */
  keepSec?: number;
}

/** keys.idCall's TTL when none is given: two weeks, the longest call and a closed session's default TTL. */
const KEEP_SEC = 2 * 604_800;

/** Answers a start, or says why it could not be made (Redis unreachable, the script failed on it). */
export type StartCallback = (err: Error | null, r?: StartResult) => void;

/** One start waiting for its bucket's call_start. */
export interface StartItem {
  readonly ck: CallKeys;
  readonly args: StartArgs;
  readonly done: StartCallback;
}

/**
 * Admits one bucket's starts in one call_start, in order (a retry behind its
 * first try answers as a repeat), and answers each after `settled`.
 */
export function callStarts(scripts: Scripts, batch: readonly StartItem[], b: StartBatch, settled: () => void): void {
  const keys: string[] = [batch[0]!.ck.live];
  const args: (string | number)[] = [b.now, b.ringGraceMs, b.keepSec ?? KEEP_SEC];
  for (const { ck, args: a } of batch) {
    keys.push(ck.id, ck.session, redisKeys.idCall(ck.bucket, a.idHash, a.call));
    args.push(6 + a.rates.length, a.dest, a.sw, a.call, a.idHash, a.mode, a.aniHash, ...a.rates);
  }
  answerEach(scripts.run('call_start', keys, args), batch, 'call_start', startAnswer, settled);
}

/** One call through call_start (tests, and anything rare enough not to batch). */
export function callStart(scripts: Scripts, ck: CallKeys, a: StartArgs & StartBatch): Promise<StartResult> {
  return new Promise((resolve, reject) => {
    const done: StartCallback = (err, r) => (err ? reject(err) : resolve(r!));
    callStarts(scripts, [{ ck, args: a, done }], a, () => undefined);
  });
}

function startAnswer(r: readonly unknown[]): StartResult {
  if (r[0] === 'err') return { ok: false, reason: str('call_start', r, 1) };
  if (r[0] !== 'ok') throw replyError('call_start', r);
  const failure = str('call_start', r, 9);
  return {
    ok: true,
    maxSec: num('call_start', r, 1),
    balance: num('call_start', r, 2),
    rate: num('call_start', r, 3),
    per: num('call_start', r, 12),
    fee: num('call_start', r, 4),
    duplicate: r[5] === 1,
    grant: num('call_start', r, 6),
    final: r[7] === 1,
    finalAction: finalActionOf(str('call_start', r, 8)),
    onFailure: { action: failure === 'continue' ? 'continue' : 'terminate', sec: num('call_start', r, 10) },
    validitySec: num('call_start', r, 11),
  };
}

/**
 * A batched script's reply, one tagged answer per item in order: each item's
 * callback gets its own, or the error when the script failed on that item
 * ('failed') or the whole call failed.
 */
function answerEach<T>(
  reply: Promise<unknown>,
  batch: readonly { readonly done: (err: Error | null, r?: T) => void }[],
  script: string,
  decode: (r: readonly unknown[]) => T,
  settled: () => void,
): void {
  reply.then(
    (rows) => {
      settled();
      if (!Array.isArray(rows) || rows.length !== batch.length) {
        const err = replyError(script, rows);
        for (const item of batch) item.done(err);
        return;
      }
      for (let i = 0; i < batch.length; i++) {
        const item = batch[i]!;
        let answer: T;
        try {
          const r = tagged(script, rows[i]);
          if (r[0] === 'failed') throw new Error(`${script} failed: ${String(r[1])}`);
          answer = decode(r);
        } catch (err) {
          item.done(asError(err));
          continue;
        }
        item.done(null, answer);
      }
    },
    (err: unknown) => {
      settled();
      const e = asError(err);
      for (const item of batch) item.done(e);
    },
  );
}

/** What a call to a destination would cost an ID now, and how long its balance lasts there. */
export type QuoteResult =
  | { ok: true; maxSec: number; balance: number; rate: number; per: number; fee: number; currency: string }
  | { ok: false; reason: string; retryAfter?: number };

/** Read-only: call_quote writes nothing. `rates` as for call_start (CatalogCache.tariffArgs). */
export async function callQuote(
  scripts: Scripts,
  idKey: string,
  now: number,
  rates: readonly string[],
): Promise<QuoteResult> {
  const r = tagged('call_quote', await scripts.run('call_quote', [idKey], [now, ...rates]));
  if (r[0] === 'err') return { ok: false, reason: str('call_quote', r, 1) };
  if (r[0] !== 'ok') throw replyError('call_quote', r);
  return {
    ok: true,
    maxSec: num('call_quote', r, 1),
    balance: num('call_quote', r, 2),
    rate: num('call_quote', r, 3),
    per: num('call_quote', r, 6),
    fee: num('call_quote', r, 4),
    currency: str('call_quote', r, 5),
  };
}

/**
 * Keyless and read-only (call_talk_time): the seconds each balance buys at its tariff
 * descriptor, for a call starting at `now`: what call_start would answer as maxSec.
 */
export async function callTalkTime(
  scripts: Scripts,
  now: number,
  asks: readonly { amount: number; descriptor: string }[],
): Promise<number[]> {
  if (!asks.length) return [];
  const r = await scripts.run('call_talk_time', [], [now, ...asks.flatMap((a) => [a.amount, a.descriptor])]);
  if (!Array.isArray(r) || r.length !== asks.length || !r.every((s) => typeof s === 'number'))
    throw replyError('call_talk_time', r);
  return r;
}

const TICK_CODES: readonly TickCode[] = ['ok', 'dup', 'unknown_call', 'call_ended', 'call_conflict'];
/** call_tick's code for a call that failed in the script; its reason field holds the error. */
const TICK_FAILED = 5;
/** Added to call_tick's code when the call's grant is final. */
const FINAL_BIT = 8;
const NO_ALERTS: readonly number[] = Object.freeze([]);
const DIGITS = ['0', '1', '2', '3'] as const;

/**
 * Bills one bucket's ticks in one call_tick and answers each tick's callback,
 * in order, after `settled`. The call is one array (key count, keys, arguments)
 * and the reply is read in place: nothing is allocated per tick but its answer.
 */
export function callTick(
  scripts: Scripts,
  batch: readonly TickItem[],
  now: number,
  refreshMs: number,
  settled: () => void,
): void {
  const n = batch.length;
  const call = new Array<string | number>(3 + 3 * n + 2);
  call[0] = 2 + 2 * n;
  call[1] = batch[0]!.ck.live;
  call[2 + 2 * n] = batch[0]!.ck.events;
  const argAt = 3 + 2 * n;
  call[argAt] = now;
  // Per call one digit, 0-3: 1 to refresh its place in the live set, those this gateway has
  // not refreshed for refreshMs (or ever, or with a clock since stepped back; wall time, not
  // reported seconds: a switch catching up on seconds must not buy a ZADD with every few
  // ticks), plus 2 when its answer is heard and the call's final action is not known here.
  let flags = '';
  for (let i = 0; i < n; i++) {
    const t = batch[i]!;
    const ck = t.ck;
    call[2 + 2 * i] = ck.session;
    call[3 + 2 * i] = ck.id;
    call[argAt + 2 + i] = t.sec;
    let f = t.heard && ck.finalAction === undefined ? 2 : 0;
    if (now - ck.refreshedAt >= refreshMs || ck.refreshedAt > now) {
      ck.refreshedAt = now;
      f += 1;
    }
    flags += DIGITS[f];
  }
  call[argAt + 1] = flags;
  scripts.runFlat('call_tick', call).then(
    (rows) => {
      settled();
      answerTicks(batch, rows);
    },
    (err: unknown) => {
      settled();
      for (const t of batch) t.done(err);
    },
  );
}

/**
 * call_tick's reply: code, balance, secLeft, grant per tick, then
 * [i, alerts, cut, fresh, final action, validity] for the few with more to say.
 */
function answerTicks(batch: readonly TickItem[], reply: unknown): void {
  const n = batch.length;
  if (!Array.isArray(reply) || reply.length < 4 * n) {
    const err = replyError('call_tick', reply);
    for (const t of batch) t.done(err);
    return;
  }
  const rows: readonly unknown[] = reply;
  let x = 4 * n;
  for (let i = 0; i < n; i++) {
    let alerts = NO_ALERTS;
    let cut = '';
    let freshCut = false;
    let final: FinalAction | undefined;
    let validitySec = 0;
    let bad = false;
    if (rows[x] === i + 1) {
      const fired = rows[x + 1];
      const why = rows[x + 2];
      const fa = rows[x + 4];
      const val = rows[x + 5];
      if (typeof fired === 'string' && typeof why === 'string' && typeof fa === 'string' && typeof val === 'number') {
        if (fired !== '') alerts = fired.split(',').map(Number);
        cut = why;
        freshCut = rows[x + 3] === 1;
        if (fa !== '') final = fa === 'terminate' ? TERMINATE : finalActionOf(fa);
        validitySec = val;
      } else bad = true;
      x += 6;
    }
    const code = rows[4 * i];
    const balance = rows[4 * i + 1];
    const secLeft = rows[4 * i + 2];
    const grant = rows[4 * i + 3];
    const name = typeof code === 'number' ? TICK_CODES[code & ~FINAL_BIT] : undefined;
    if (code === TICK_FAILED && !bad) batch[i]!.done(new Error(`call_tick failed: ${cut}`));
    else if (
      name === undefined ||
      typeof balance !== 'number' ||
      typeof secLeft !== 'number' ||
      typeof grant !== 'number' ||
      bad
    )
      batch[i]!.done(replyError('call_tick', rows));
    else {
      const isFinal = ((code as number) & FINAL_BIT) !== 0;
      const t = batch[i]!;
      // A blocked ID's call is cut, never redirected: that 'terminate' is no call's own action.
      if (final !== undefined && cut !== 'blocked') t.ck.finalAction ??= final;
      else if (final === undefined && isFinal && t.heard) final = cut === 'blocked' ? TERMINATE : t.ck.finalAction;
      t.done(null, { code: name, balance, secLeft, grant, isFinal, final, validitySec, alerts, cut, freshCut });
    }
  }
}

/** Answers a stop, or says why it could not be made. */
export type StopCallback = (err: Error | null, r?: StopResult) => void;

/** One stop waiting for its bucket's call_stop. */
export interface StopItem {
  readonly ck: CallKeys;
  readonly sec: number;
  readonly cause: string;
  /** The destination the stop names (digits), which the session's must be; '' when it names none. */
  readonly dest: string;
  readonly done: StopCallback;
}

/** Closes one bucket's calls in one call_stop, in order, and answers each after `settled`. */
export function callStops(
  scripts: Scripts,
  batch: readonly StopItem[],
  now: number,
  ttlSec: number,
  settled: () => void,
): void {
  const first = batch[0]!.ck;
  const keys: string[] = [first.live, first.cdr, first.events];
  const args: (string | number)[] = [now, ttlSec];
  for (const { ck, sec, cause, dest } of batch) {
    keys.push(ck.session, ck.id, idCallKeyOf(ck.session, ck.id));
    args.push(sec, cause, dest);
  }
  answerEach(scripts.run('call_stop', keys, args), batch, 'call_stop', stopAnswer, settled);
}

/** One call through call_stop (tests). */
export function callStop(
  scripts: Scripts,
  ck: CallKeys,
  now: number,
  sec: number,
  cause: string,
  ttlSec: number,
  dest = '',
): Promise<StopResult> {
  return new Promise((resolve, reject) => {
    const done: StopCallback = (err, r) => (err ? reject(err) : resolve(r!));
    callStops(scripts, [{ ck, sec, cause, dest, done }], now, ttlSec, () => undefined);
  });
}

function stopAnswer(r: readonly unknown[]): StopResult {
  if (r[0] === 'err') return { ok: false, reason: str('call_stop', r, 1) };
  if (r[0] !== 'ok') throw replyError('call_stop', r);
  return {
    ok: true,
    billedSec: num('call_stop', r, 1),
    cost: num('call_stop', r, 2),
    balance: num('call_stop', r, 3),
    record: str('call_stop', r, 4),
    duplicate: r[5] === 1,
    short: num('call_stop', r, 6),
  };
}

/** What a stop tells of a call whose session is gone: enough to rate it (call_recover). */
export interface RecoverArgs {
  now: number;
  sec: number;
  /** The stop's cause, kept when the session turns out to be there after all. */
  cause: string;
  ttlSec: number;
  /**
   * How long another token name's live call this stop closes is kept: as long as a call may last,
   * for that name's switch may talk on, unaware, and its own stop must still find the call.
   */
  talkOnTtlSec: number;
  sw: string;
  call: string;
  idHash: string;
  /** The caller number's hash when the stop named it instead of the ID, else '': the ID must still list it. */
  aniHash: string;
  dest: string;
  /** The destination's tariff in every plan that has one (CatalogCache.tariffArgs). */
  rates: readonly string[];
}

export async function callRecover(scripts: Scripts, ck: CallKeys, a: RecoverArgs): Promise<StopResult> {
  const r = tagged(
    'call_recover',
    await scripts.run(
      'call_recover',
      [ck.session, ck.id, ck.live, ck.cdr, ck.events, redisKeys.idCall(ck.bucket, a.idHash, a.call)],
      [a.now, a.sec, a.cause, a.ttlSec, a.sw, a.call, a.idHash, a.dest, a.aniHash, a.talkOnTtlSec, ...a.rates],
    ),
  );
  if (r[0] === 'err') return { ok: false, reason: str('call_recover', r, 1) };
  if (r[0] !== 'ok') throw replyError('call_recover', r);
  return {
    ok: true,
    billedSec: num('call_recover', r, 1),
    cost: num('call_recover', r, 2),
    balance: num('call_recover', r, 3),
    record: str('call_recover', r, 4),
    duplicate: r[5] === 1,
    short: num('call_recover', r, 6),
  };
}

/** The keys call_reap needs: a session found in a bucket's live set, its ID's hash and the bucket's streams. */
export type ReapKeys = Pick<CallKeys, 'session' | 'id' | 'live' | 'cdr' | 'events'>;

export async function callReap(
  scripts: Scripts,
  k: ReapKeys,
  now: number,
  staleAfterMs: number,
  ttlSec: number,
): Promise<ReapResult> {
  const r = tagged(
    'call_reap',
    await scripts.run(
      'call_reap',
      [k.session, k.id, k.live, k.cdr, k.events, idCallKeyOf(k.session, k.id)],
      [now, staleAfterMs, ttlSec],
    ),
  );
  if (r[0] === 'skip') return { closed: false };
  if (r[0] !== 'ok') throw replyError('call_reap', r);
  return {
    closed: true,
    billedSec: num('call_reap', r, 1),
    cost: num('call_reap', r, 2),
    balance: num('call_reap', r, 3),
    record: str('call_reap', r, 4),
    short: num('call_reap', r, 6),
  };
}

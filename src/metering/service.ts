import type { Logger } from 'pino';
import type { CatalogCache } from '../catalog/cache';
import type { Config } from '../config/config';
import { checkId } from '../ids/idnum';
import type { IdKeys } from '../ids/secrets';
import { aniPlace, resolveAni } from '../ledger/anis';
import { MAX_CALL_SEC } from '../protocol/switch';
import type { Metrics } from '../observability/metrics';
import { keys } from '../redis/keys';
import type { Scripts } from '../redis/scripts';
import type { RedisClient } from '../redis/connect';
import { GroupCommit } from '../redis/group-commit';
import { replicated, replicatedSeen, waitsForReplicas } from '../redis/replication';
import { callKeyOf, callKeysFor, type CallKeys } from './call-keys';
import { SwitchGuesses } from './switch-guesses';
import { reportShort } from './shortfall';
import { unrecoverable } from './recoverable';
import { CallLocator } from './locator';
import {
  callQuote,
  callRecover,
  callStarts,
  callStops,
  callTick,
  type QuoteResult,
  type StartArgs,
  type StartItem,
  type StartResult,
  type StopItem,
  type StopResult,
  type TickCallback,
  type TickItem,
  type TickResult,
} from './scripts';

export type { FinalAction } from './call-keys';
export type {
  FailurePolicy,
  QuoteResult,
  StartResult,
  StopResult,
  TickCallback,
  TickCode,
  TickResult,
} from './scripts';

const UNKNOWN_CALL: TickResult = Object.freeze({
  code: 'unknown_call',
  balance: 0,
  secLeft: 0,
  grant: 0,
  isFinal: false,
  validitySec: 0,
  alerts: Object.freeze([]),
  cut: '',
  freshCut: false,
});

/** A start: switch, call, the ID as keyed, the dialled number, the caller's number, mode, origin. */
type StartCall = [
  sw: string,
  call: string,
  idInput: unknown,
  dialled: string,
  ani?: unknown,
  mode?: 'tick' | 'quota',
  origin?: string,
];
/** A stop: switch, call, seconds, cause, and the call's ID (or caller) and destination, for a lost call. */
type StopCall = [sw: string, call: string, sec: number, cause: string, lost?: LostCall];
/** What a stop may say of its call: its ID, or the caller number it was started by, and its destination. */
type LostCall = { id?: unknown; ani?: unknown; dest: string };
/** A start's call id and what it names (its `id` and `ani` as sent): its copies name the same. */
type StartCopy = { call: string; named: string };

/** Keeps `p` in `map` under `key` until it settles (unless a later one took its place); returns it. */
function underWay<T>(map: Map<string, Promise<T>>, key: string, p: Promise<T>): Promise<T> {
  map.set(key, p);
  const over = (): void => {
    if (map.get(key) === p) map.delete(key);
  };
  p.then(over, over);
  return p;
}

/**
 * The destination as the rate plans know it: E.164 digits, country code first.
 * A leading `+` or `00` (the international prefix) is taken off; what is left
 * must start with a country code (1-9). A number with a national trunk prefix
 * (one leading 0) or none left after the prefix is undefined: refused, never
 * rated, since no plan prefix but the catch-all '' would match it.
 */
export function destDigits(dest: string): string | undefined {
  const digits = dest.startsWith('+') ? dest.slice(1) : dest.startsWith('00') ? dest.slice(2) : dest;
  return /^[1-9][0-9]*$/.test(digits) ? digits : undefined;
}

/**
 * Call metering on top of the Lua scripts: admission, per-second billing and
 * close. Starts, ticks and stops are each grouped by bucket and run by one
 * script call per bucket and round (see GroupCommit), which is what keeps the
 * cost per call falling as the call volume rises: 10,000 calls starting at once
 * cost a few hundred script calls, not 10,000.
 */
export class Metering {
  readonly locator: CallLocator;
  /** How often a ticking call's score in the live set is refreshed: well inside the stale time. */
  private readonly liveRefreshMs: number;
  /** Ticks wait here for their bucket's next call_tick (group commit). */
  private readonly ticks: GroupCommit<TickItem>;
  /** Starts and stops likewise, for call_start and call_stop. */
  private readonly starts: GroupCommit<StartItem>;
  private readonly stops: GroupCommit<StopItem>;
  /**
   * Starts and stops under way, by call key, until they are answered: what a
   * later tick or stop of the call waits for, so that a call's messages are
   * applied in the order they reached this gateway.
   */
  private readonly starting = new Map<string, Promise<StartResult>>();
  private readonly stopping = new Map<string, Promise<StopResult>>();
  /** How much later than an answered call an unanswered one counts as stale. */
  private readonly ringGraceMs: number;
  /** How long a call stays findable by its ID and call id: its longest life, then its closed session's TTL. */
  private readonly keepSec: number;
  /** How long a call closed while its switch may talk on is kept: as long as a call may last, at least. */
  private readonly talkOnTtlSec: number;
  /**
   * unknown_id answers to starts and quotes, per switch token name and the
   * call's origin (their own counters, not the scanners'). Unlike scanners'
   * lookups, starts are not bounded in flight (enter/release): a switch starts
   * thousands of calls at once, and past the limit the count still answers
   * `throttled` (miss).
   */
  readonly guesses: SwitchGuesses;

  constructor(
    private readonly cfg: Config,
    private readonly redis: RedisClient,
    private readonly scripts: Scripts,
    private readonly ids: IdKeys,
    private readonly catalog: CatalogCache,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    maxTicksPerScript = 64,
    maxCallsPerScript = 32,
  ) {
    // A ticking call is seen several times per STALE_AFTER_MS: one forgotten went quiet, or lives
    // on elsewhere (a quota call's updates, further apart, then cost the index's GET each). So the
    // index must last as long as the call may, whatever SESSION_TTL_SEC: past it, such an update
    // would find no call. Once the call is stopped, it lasts as long as the closed session, but
    // only a SESSION_TTL_SEC below the longest call is worth an EXPIRE per stop: at the default (a
    // week) the cut would save at most the ring timeout's seconds of one key.
    const indexTtlSec = Math.max(cfg.sessionTtlSec, MAX_CALL_SEC + Math.ceil(cfg.ringTimeoutMs / 1000));
    const closedTtlSec = cfg.sessionTtlSec < MAX_CALL_SEC ? cfg.sessionTtlSec : indexTtlSec;
    this.locator = new CallLocator(redis, scripts, ids, indexTtlSec, closedTtlSec, cfg.staleAfterMs);
    this.talkOnTtlSec = indexTtlSec;
    this.guesses = new SwitchGuesses(redis, ids, cfg, () => metrics.switchThrottled.inc());
    this.liveRefreshMs = Math.min(2000, Math.floor(cfg.staleAfterMs / 3));
    this.ticks = new GroupCommit(redis, this.billTicks, maxTicksPerScript);
    this.starts = new GroupCommit(redis, this.admitCalls, maxCallsPerScript);
    this.stops = new GroupCommit(redis, this.closeCalls, maxCallsPerScript);
    this.ringGraceMs = Math.max(0, cfg.ringTimeoutMs - cfg.staleAfterMs);
    this.keepSec = MAX_CALL_SEC + Math.ceil(cfg.ringTimeoutMs / 1000) + cfg.sessionTtlSec;
  }

  /**
   * Admits a call; `dialled` is the destination as the switch sent it (destDigits).
   * `ani`: the caller's number, when the switch logs in by it instead of an ID.
   * `origin`: where the call comes from, as the switch knows it (SwitchGuesses).
   */
  start(...args: StartCall): Promise<StartResult> {
    const [sw, call] = args;
    return underWay(this.starting, callKeyOf(sw, call), this.startNow(...args));
  }

  private async startNow(...[sw, call, idInput, dialled, ani, mode = 'tick', origin]: StartCall): Promise<StartResult> {
    // A switch (or origin) past its guess limit is refused before anything else, a valid ID or not.
    const wait = this.guesses.retryAfter(sw, origin);
    if (wait > 0) return { ok: false, reason: 'throttled', retryAfter: wait };
    const dest = destDigits(dialled);
    if (dest === undefined) return { ok: false, reason: 'bad_value' };
    // What the start names: its copies are one guess, another ID under its call id another (missOnce).
    const copy = { call, named: JSON.stringify([idInput ?? null, ani ?? null]) };
    const caller = await this.caller(sw, origin, idInput, ani, copy);
    if (!caller.ok) return caller;
    const { hash, bucket, aniHash } = caller;
    const ck = callKeysFor(keys.id(bucket, hash), callKeyOf(sw, call));
    ck.idText = caller.idText;
    // A call id names one call: claim it for this ID before admitting, so the same
    // id with another ID (whose session would live in another bucket) is refused.
    const claim = await this.locator.claim(sw, call, ck);
    if (claim === 'taken') return { ok: false, reason: 'call_conflict' };
    const r = await this.admit(ck, {
      dest,
      sw,
      call,
      idHash: hash,
      mode,
      aniHash,
      rates: this.catalog.tariffArgs(dest, Date.now()),
    });
    // A refused call leaves no index behind (guessed IDs must not fill Redis).
    if (!r.ok && claim === 'new' && r.reason !== 'call_conflict' && r.reason !== 'call_ended')
      await this.locator.release(sw, call, ck);
    if (!r.ok) return this.guessed(sw, origin, r, copy);
    // Told with its ticks' answers once the grant is final (callTick): no Redis read for it.
    (this.locator.cached(sw, call) ?? ck).finalAction = r.finalAction;
    // Opened under another try's claim, which its refusal may be giving back (CallLocator.release).
    if (!r.duplicate && claim === 'same') await this.locator.kept(sw, call, ck);
    // `started` is said once a replica has the session and its index: a failover must not lose the call.
    // A retry may find them written by its first try, elsewhere: then what it saw must be replicated.
    await this.acked(sw, call, ck.session, r.duplicate, claim !== 'new');
    return r;
  }

  /**
   * What a call on the ID to `dialled` would cost now and how many seconds its
   * balance buys there, as a start would grant them; nothing is written but the
   * switch's guess counter. Throttled and counted like a start, so it is no way
   * around the guess limit; unlike a start it waits for a slot (SwitchGuesses.holding).
   */
  async quote(sw: string, idInput: unknown, dialled: string, ani?: unknown, origin?: string): Promise<QuoteResult> {
    const wait = this.guesses.retryAfter(sw, origin);
    if (wait > 0) return { ok: false, reason: 'throttled', retryAfter: wait };
    const dest = destDigits(dialled);
    if (dest === undefined) return { ok: false, reason: 'bad_value' };
    const refuse = (retryAfter: number): QuoteResult => ({ ok: false, reason: 'throttled', retryAfter });
    return this.guesses.holding(sw, origin, refuse, () => this.quoteNow(sw, idInput, dest, ani, origin));
  }

  private async quoteNow(
    sw: string,
    idInput: unknown,
    dest: string,
    ani: unknown,
    origin?: string,
  ): Promise<QuoteResult> {
    const caller = await this.caller(sw, origin, idInput, ani);
    if (!caller.ok) return caller;
    const { hash, bucket } = caller;
    // call_quote writes nothing: the ID's list is checked here, not in the script.
    if (caller.aniHash && !(await this.redis.hexists(keys.id(bucket, hash), `ani:${caller.aniHash}`)))
      return this.guessed(sw, origin, { ok: false, reason: 'unknown_ani' });
    const now = Date.now();
    const r = await callQuote(this.scripts, keys.id(bucket, hash), now, this.catalog.tariffArgs(dest, now));
    return r.ok ? r : this.guessed(sw, origin, r);
  }

  /**
   * Who pays: the ID the switch sent, or the one its `ani` (caller number) is
   * registered to, found by one read in the number's slot; `aniHash` is then
   * the number's hash, which call_start checks the ID still lists. An unknown
   * number counts as a guess, like an unknown ID (once per copy of a start).
   */
  private async caller(
    sw: string,
    origin: string | undefined,
    idInput: unknown,
    ani: unknown,
    copy?: StartCopy,
  ): Promise<
    | { ok: true; hash: string; bucket: number; aniHash: string; idText: string }
    | { ok: false; reason: string; retryAfter?: number }
  > {
    if (ani === undefined) {
      const checked = checkId(idInput, this.cfg.idLength);
      if (!checked.ok) return checked;
      return { ok: true, ...this.ids.hash(checked.id), aniHash: '', idText: checked.id };
    }
    const found = await resolveAni(this.redis, this.ids, ani);
    if (!found.ok) return this.guessed(sw, origin, found, copy);
    return { ok: true, hash: found.idHash, bucket: found.bucket, aniHash: found.aniHash, idText: '' };
  }

  /**
   * An unknown_id (or unknown_ani) answer to a switch is a guess: counted in
   * /metrics and against its guess limit, and answered `throttled` instead when
   * another answer already went over the limit (GuessThrottle.miss). A
   * start's `copy`: counted once however often it is sent (missOnce).
   */
  private async guessed<R extends { ok: false; reason: string }>(
    sw: string,
    origin: string | undefined,
    r: R,
    copy?: StartCopy,
  ): Promise<R | { ok: false; reason: 'throttled'; retryAfter: number }> {
    if (r.reason !== 'unknown_id' && r.reason !== 'unknown_ani') return r;
    this.metrics.unknownIdStarts.inc();
    const wait = await (copy === undefined
      ? this.guesses.miss(sw, origin)
      : this.guesses.missOnce(sw, origin, copy.call, copy.named));
    return wait > 0 ? { ok: false, reason: 'throttled', retryAfter: wait } : r;
  }

  /**
   * Waits until a replica has the call's session and index (`seen`: as found,
   * written by an earlier try, not by this start). When that fails the call is
   * forgotten here, so a retried start writes its index again.
   */
  private async acked(
    sw: string,
    call: string,
    session: string,
    sessionSeen: boolean,
    indexSeen: boolean,
  ): Promise<void> {
    try {
      await this.replicatedCall(session, sw, call, sessionSeen, indexSeen);
    } catch (err) {
      this.locator.forget(sw, call);
      throw err;
    }
  }

  private admit(ck: CallKeys, args: StartArgs): Promise<StartResult> {
    return new Promise((resolve, reject) =>
      this.starts.add(ck.bucket, { ck, args, done: (err, r) => (err ? reject(err) : resolve(r!)) }),
    );
  }

  /** A bucket's starts in one call_start per round (GroupCommit). */
  private readonly admitCalls = (_bucket: number, batch: StartItem[], settled: () => void): void => {
    callStarts(this.scripts, batch, { now: Date.now(), ringGraceMs: this.ringGraceMs, keepSec: this.keepSec }, settled);
  };

  /** `heard`: its answer is sent (a tick with a ref, an update), so a final grant's action goes with it. */
  tick(sw: string, call: string, sec: number, heard: boolean, done: TickCallback): void {
    if (this.stopping.size > 0 || this.starting.size > 0) {
      const key = callKeyOf(sw, call);
      // A tick sent after its call's stop waits for it, then finds the call ended: billed
      // first, it would charge (and cut off, alert, exhaust) what the stop then gives back.
      // One sent right behind its start (in the same frame, before `started`) waits for
      // that; a stop sent after the tick then waits for the tick (stopNow).
      const before = this.stopping.get(key) ?? this.starting.get(key);
      if (before) {
        const go = (): void => this.tickNow(sw, call, sec, heard, done);
        return void before.then(go, go);
      }
    }
    this.tickNow(sw, call, sec, heard, done);
  }

  private tickNow(sw: string, call: string, sec: number, heard: boolean, done: TickCallback): void {
    // The hot path: a call this gateway already knows is queued at once.
    const ck = this.locator.cached(sw, call);
    if (ck) return this.enqueue(ck, sec, heard, done);
    this.locator
      .find(sw, call)
      .then((found) => (found ? this.enqueue(found, sec, heard, done) : done(null, UNKNOWN_CALL)), done);
  }

  private enqueue(ck: CallKeys, sec: number, heard: boolean, done: TickCallback): void {
    this.ticks.add(ck.bucket, { ck, sec, heard, done });
  }

  /** Ticks are grouped by bucket and billed by one call_tick per bucket and round (GroupCommit). */
  private readonly billTicks = (_bucket: number, batch: TickItem[], settled: () => void): void => {
    callTick(this.scripts, batch, Date.now(), this.liveRefreshMs, settled);
  };

  /**
   * Bills the call's last seconds and closes it. A stop that names the call's ID
   * (or the caller number it was started by) and destination (`lost`) is billed
   * even when Tessera lost the call (its start or its session went with a failed
   * primary): rated from the stop and recorded with cause `recovered`. Without
   * them such a stop is `unknown_call`.
   */
  stop(...args: StopCall): Promise<StopResult> {
    const [sw, call] = args;
    const key = callKeyOf(sw, call);
    // A stop right behind its call's start waits for it: run first, a stop that names the ID
    // and destination would be billed as a lost call's, and the start then refused call_ended.
    // So does one behind another stop of the call (resent in the same frame, or before the first
    // was answered): run beside it, both could miss the call and be recovered each on its own,
    // the second never checked against the session the first found or wrote.
    const before: Promise<unknown> | undefined = this.stopping.get(key) ?? this.starting.get(key);
    const go = (): Promise<StopResult> => this.stopNow(...args);
    // Marked before anything is awaited: ticks that arrive from now on wait for it (tick()).
    return underWay(this.stopping, key, before ? before.then(go, go) : go());
  }

  private async stopNow(...[sw, call, sec, cause, lost]: StopCall): Promise<StopResult> {
    const ck = await this.locator.find(sw, call);
    if (ck) {
      const refused = lost && this.disagrees(ck, lost);
      if (refused) return refused;
      // A stop sent behind a tick must not overtake it.
      await this.ticks.sent(ck.bucket);
      const r = await this.close(ck, sec, cause, lost ? destDigits(lost.dest)! : '');
      if (r.ok) {
        // A repeated stop answers the first: that one must be on a replica, whoever wrote it.
        await (r.duplicate ? replicatedSeen : replicated)(this.redis, ck.session);
        await this.locator.ended(sw, call);
        reportShort(this.metrics, this.log, 'stop', { session: ck.session, ...r });
      }
      if (r.ok || r.reason !== 'unknown_call' || !lost) return r;
    }
    if (!lost) return { ok: false, reason: 'unknown_call' };
    return this.recover(sw, call, sec, cause, lost, ck);
  }

  /**
   * Why a stop's ID (or caller number) and destination cannot describe the call
   * `ck` names, or undefined when they may: the ID is checked here, the
   * destination by call_stop against the session's.
   */
  private disagrees(ck: CallKeys, lost: LostCall): StopResult | undefined {
    if (destDigits(lost.dest) === undefined) return { ok: false, reason: 'bad_value' };
    // The call is this switch's own, found by its call id. Its number is not looked up: where the
    // number leads now (nowhere, or to another ID its owner moved it to while the call talked) says
    // nothing of the ID the call began on, and refused, the stop would leave the call to the reaper,
    // billed to its last tick.
    if (lost.ani !== undefined) return aniPlace(this.ids, lost.ani) ? undefined : { ok: false, reason: 'bad_ani' };
    if (lost.id === undefined) return undefined;
    const checked = checkId(lost.id, this.cfg.idLength);
    if (!checked.ok) return checked;
    // The ID its start named, read the same: the same key, without another HMAC.
    if (checked.id === ck.idText) return undefined;
    const named = this.ids.hash(checked.id);
    return keys.id(named.bucket, named.hash) === ck.id ? undefined : { ok: false, reason: 'call_conflict' };
  }

  private close(ck: CallKeys, sec: number, cause: string, dest: string): Promise<StopResult> {
    return new Promise((resolve, reject) =>
      this.stops.add(ck.bucket, { ck, sec, cause, dest, done: (err, r) => (err ? reject(err) : resolve(r!)) }),
    );
  }

  /** A bucket's stops in one call_stop per round (GroupCommit). */
  private readonly closeCalls = (_bucket: number, batch: StopItem[], settled: () => void): void => {
    callStops(this.scripts, batch, Date.now(), this.cfg.sessionTtlSec, settled);
  };

  private async recover(
    sw: string,
    call: string,
    sec: number,
    cause: string,
    lost: LostCall,
    indexed: CallKeys | undefined,
  ): Promise<StopResult> {
    // Rated as its start would have been: the same rule for the dialled number, the same caller.
    const dest = destDigits(lost.dest);
    if (dest === undefined) return { ok: false, reason: 'bad_value' };
    // A stop that finds no call of its own looks the ID up, as a start does: its unknown IDs are
    // guesses, and past the limit it is refused before the lookup, or a stop of `sec` 0 would try
    // IDs unthrottled and tell each hit's balance. Its copies (resent stops) count once.
    if (!indexed) {
      const wait = this.guesses.retryAfter(sw, undefined);
      if (wait > 0) return { ok: false, reason: 'throttled', retryAfter: wait };
    }
    const copy = { call, named: JSON.stringify([lost.id ?? null, lost.ani ?? null]) };
    const caller = await this.caller(sw, undefined, lost.id, lost.ani, copy);
    if (!caller.ok) return caller;
    const { hash, bucket, aniHash } = caller;
    const ck = callKeysFor(keys.id(bucket, hash), callKeyOf(sw, call));
    // The index names another ID: this call id is not the one the stop describes.
    if (indexed && indexed.id !== ck.id) return { ok: false, reason: 'call_conflict' };
    // Rated as a call that started `sec` seconds before this stop: its tariff is the one in force
    // at its answer, with the rate changes from then on, so each second is priced by its own time.
    // A plan whose versions of that time are gone (replaced and pruned) rates it as it stands now.
    const now = Date.now();
    const rates = this.catalog.tariffArgs(dest, now - sec * 1000, now);
    // A stop no recovery bills is refused before the claim below: claimed for it until its refusal,
    // the call id would answer the call's own stop racing this one call_conflict (src/metering/recoverable.ts).
    const idCall = keys.idCall(bucket, hash, call);
    const unfit = indexed ? undefined : await unrecoverable(this.redis, ck.id, { aniHash, rates, idCall });
    if (unfit) return this.guessed(sw, undefined, { ok: false, reason: unfit }, copy);
    // Claimed before it is billed, as a start claims it: a stop of the same call naming another
    // ID, racing this one on another gateway, finds the call id taken (call_conflict) instead of
    // billing its own ID for the same lost call in another bucket, where this one's session is
    // out of its script's sight.
    const claim = indexed ? 'same' : await this.locator.claim(sw, call, ck);
    if (claim === 'taken') return { ok: false, reason: 'call_conflict' };
    const r = await callRecover(this.scripts, ck, {
      now,
      sec,
      cause,
      ttlSec: this.cfg.sessionTtlSec,
      talkOnTtlSec: this.talkOnTtlSec,
      sw,
      call,
      idHash: hash,
      aniHash,
      dest,
      rates,
    });
    if (!r.ok) {
      // A refused stop leaves no index behind, as a refused start does (guessed IDs must not fill
      // Redis), but for a session of this ID found after all: the index now names it rightly.
      if (claim === 'new' && r.reason !== 'call_conflict') await this.locator.release(sw, call, ck);
      return r;
    }
    // Billed under a start's claim, which that start's refusal may be giving back (CallLocator.release).
    if (!r.duplicate && claim === 'same') await this.locator.kept(sw, call, ck);
    // Each one is a call Tessera lost, or one a switch stopped under another token name than it
    // started it with (billed as that call's own stop, once): someone should look, so it is counted.
    if (!r.duplicate) this.metrics.recovered.inc();
    await this.replicatedCall(ck.session, sw, call, r.duplicate, claim !== 'new');
    await this.locator.ended(sw, call);
    reportShort(this.metrics, this.log, 'recovered', { session: ck.session, ...r });
    return r;
  }

  /**
   * Until a replica has a call's session and index; `seen`: found as an earlier try wrote it, not
   * written now. Nothing to wait for without replicas: the index's key (an HMAC) is not even named.
   */
  private async replicatedCall(
    session: string,
    sw: string,
    call: string,
    sessionSeen: boolean,
    indexSeen: boolean,
  ): Promise<void> {
    if (!waitsForReplicas(this.redis)) return;
    await Promise.all([
      (sessionSeen ? replicatedSeen : replicated)(this.redis, session),
      (indexSeen ? replicatedSeen : replicated)(this.redis, this.locator.indexOf(sw, call)),
    ]);
  }

  /** Live sessions across all buckets, for the active-calls gauge. */
  async countActive(): Promise<number> {
    const counts = await Promise.all(
      Array.from({ length: this.cfg.buckets }, (_, b) => this.redis.zcard(keys.live(b))),
    );
    return counts.reduce((s, n) => s + n, 0);
  }
}

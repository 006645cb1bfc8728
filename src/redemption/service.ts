import { idStatus, locate, type IdStatus, type Refusable } from '../ledger/ids';
import type { Context } from '../app/context';
import type { CatalogCache } from '../catalog/cache';
import type { TokenInfo } from '../catalog/schema';
import type { Config } from '../config/config';
import { checkId } from '../ids/idnum';
import type { IdKeys } from '../ids/secrets';
import type { Metrics } from '../observability/metrics';
import type { RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';
import { Scripts } from '../redis/scripts';
import { GroupCommit } from '../redis/group-commit';
import { replicated, replicatedSeen, waitsForReplicas, whenReplicated } from '../redis/replication';
import * as script from './scripts';
import { ScanWindows } from './scan-windows';
import { ArrivalOrder, Barrier, ScansUnderWay } from './scan-order';
import {
  CLAIMED,
  CLAIM_RETRY,
  CLAIM_TAKEN,
  type Answer,
  type ClaimCode,
  type ClaimItem,
  type RedeemItem,
  type Refusal,
  type ScanTerms,
} from './scripts';
import { GAVE_UP, GuessThrottle, TOO_MANY_WAITING, WAIT } from '../ledger/guess-throttle';
import { TurnTimeout } from '../redis/failure';
import { idField } from '../ledger/id-fields';

export type { Answer, Granted, Refusal } from './scripts';

/** The product kinds a scanner redeems (and may read the status of). */
const SCANNED_KINDS: ReadonlySet<string> = new Set(['entry', 'goods', 'service']);

/** Scans per script call: Redis runs nothing else meanwhile, so a batch stays short. */
const MAX_SCANS_PER_SCRIPT = 32;
/**
 * Scan id claims are spread over this many buckets, not all of them: a claim is
 * cheap, a script call is not, and with 64 buckets a claim call carried 1.5
 * scans at 20,000 redemptions/s; with 8 about 13 (script calls per redemption
 * 1.3 -> 0.7). Every gateway must agree on it: changing it moves claims.
 */
export const CLAIM_BUCKETS = 8;

/**
 * How far ahead of the gateway's clock a scanner's clock may run: an offline
 * scan up to this far in the future is taken as made now (not judged later).
 */
export const SCAN_CLOCK_SKEW_MS = 5 * 60_000;

/** The bucket of a scan id's claim (scanKey: '<scanner>:<scan id>'). */
export function claimBucketOf(ids: IdKeys, buckets: number, scanKey: string): number {
  return ids.spreadOf(scanKey, Math.min(CLAIM_BUCKETS, buckets));
}

/**
 * Redemption at venue gates and tills: every scan applied atomically by a
 * script, the record written with the change (the scans of one bucket that
 * arrive together share a script call). A scan id names one redemption of one
 * scanner: retries return the first answer, and a claim (in the scan id's own
 * bucket, made before the script runs) refuses the same scan id for another
 * ID or item, wherever that ID's bucket is. Both are kept in windows of time
 * (scan-windows.ts).
 */
export interface ScanRequest {
  scan: string;
  id: unknown;
  item?: string;
  qty?: number;
  gate?: string;
  dir?: 'in' | 'out';
  /** When the scan was made, by the scanner's clock (ms): an offline scan uploaded later. */
  at?: number;
}

/** What a scan resolves to without Redis: its ID, where the scanner stands, what it asks for. */
class Terms implements ScanTerms {
  constructor(
    readonly idKey: string,
    readonly idHash: string,
    readonly bucket: number,
    readonly venue: string,
    readonly gate: string,
    readonly item: string,
    readonly qty: number,
    readonly dir: string,
    /** Micro-units for goods; -1 when the venue does not sell the item. */
    readonly amount: number,
  ) {}
}

/** A reverse's place among the redeems of its scan id waiting here (Redemption.behind). */
class ReverseMark {
  /** Its turn in its ID's line came while a redeem of its scan id ahead of it was not answered yet. */
  run: (() => void) | undefined = undefined;
}

/** Called once with a redemption's answer, or with the error that kept it from one. */
export type AnswerCallback = (err: unknown, answer?: Answer) => void;

type Refused = { ok: false } & Refusal;

const throttled = (retryAfter: number): Refused => ({ ok: false, reason: 'throttled', retryAfter });

/** A void made offline: when, by the scanner's clock, and when it reached this gateway (ms). */
interface OfflineVoid {
  at: number;
  arrived: number;
}

/** A redeem on its way through the claim and redeem rounds (a class: one shape, no map changes on the hot path). */
class PendingScan implements ClaimItem, RedeemItem {
  /** scan_claim's answer: claimed by this scan, a retry of a claimed one, or taken by other terms. */
  claim: ClaimCode = CLAIMED;

  constructor(
    readonly t: Terms,
    /** The scanner's token name. */
    readonly scanner: string,
    readonly scan: string,
    readonly scanKey: string,
    /** What the claim holds for this scan: the ID key, item, quantity and direction. */
    readonly claimTerms: string,
    /** Called through Redemption.answered alone, which gives back the scan's lookup slot. */
    readonly done: AnswerCallback,
    /** When the scan was made (an offline scan), by the scanner's clock; undefined for now. */
    readonly at: number | undefined,
    /** When it reached this gateway (ms; an offline scan's): its age is judged then, not at its turn. */
    readonly arrived: number,
  ) {}

  /** The window hash a claim made now went into. */
  claimedIn = '';

  /** Its standing among its ID's scans (ArrivalOrder). */
  ready = false;
  gone = false;
  /** Refused: it leaves the scans under way as a refused copy (ScansUnderWay.refused). */
  refused = false;
}

export class Redemption {
  readonly throttle: GuessThrottle;

  private readonly cfg: Config;
  private readonly redis: RedisClient;
  private readonly scripts: Scripts;
  /** The connection of scan claims, and its scripts. */
  private readonly claimRedis: RedisClient;
  private readonly claimScripts: Scripts;
  private readonly ids: IdKeys;
  private readonly windows: ScanWindows;
  /** placesAt's answers, by the key scans are written to, with the windows they were made of. */
  private readonly places = new Map<string, script.ScanPlaces & { of: readonly number[] }>();
  /** Scans waiting for their scan key's bucket's next scan_claim. */
  private readonly claims: GroupCommit<PendingScan>;
  /** Each ID's scans reach their redeem round in the order they arrived (scan-order.ts). */
  readonly arrivals = new ArrivalOrder<PendingScan>((p) => this.redeems.add(p.t.bucket, p));
  /** Scan keys with a redeem under way: a reverse of one waits for it. */
  readonly underWay = new ScansUnderWay();
  /**
   * Redeems of a scan id that came while a redeem of it with other terms was under way here, in
   * the order they came: each claims once those before it are answered (a refused one keeps
   * nothing, so the scan id may be free again), holding its place in its ID's line meanwhile.
   * A reverse of the scan id among them holds back those after it until it is answered.
   */
  private readonly behind = new Map<string, (PendingScan | ReverseMark)[]>();
  /** Claimed scans waiting for their ID's bucket's next redeem. */
  private readonly redeems: GroupCommit<PendingScan>;
  /** How far from the gateway's clock an offline scan's time may be. */
  private readonly scanTimes: script.ScanTimeBounds;

  constructor(
    private readonly ctx: Context,
    private readonly catalog: CatalogCache,
    private readonly metrics: Metrics,
    /**
     * Claims go over a connection of their own (default: the context's). Redis
     * serves its clients in turn, one read of each per event-loop iteration: on
     * the shared connection a claim queued behind every redeem written before
     * it, and claims are the first round of every redemption. On its own
     * connection a claim waits for at most one read of the others: 20,000 ->
     * 24,000-29,000 redemptions/s in bench:redeem.
     */
    claimRedis: RedisClient = ctx.redis,
    /** Where scans are kept (openScanWindows, so that scans of earlier versions are read). */
    windows = new ScanWindows(ctx.cfg.scanTtlSec),
    /**
     * The time scans are placed in windows by: Redis' (RedisClock), which every gateway
     * shares, not this one's own clock, which may be minutes off another's.
     */
    private readonly windowClock: () => number = Date.now,
  ) {
    this.windows = windows;
    ({ cfg: this.cfg, redis: this.redis, scripts: this.scripts, ids: this.ids } = ctx);
    this.claimRedis = claimRedis;
    this.claimScripts = claimRedis === ctx.redis ? ctx.scripts : new Scripts(claimRedis);
    // Timed into the same histogram as the context's (whose timer the gateway sets before building this).
    this.claimScripts.timer = ctx.scripts.timer;
    this.claimScripts.failed = ctx.scripts.failed;
    const { guessLimit, guessWindowSec, redis } = ctx.cfg;
    this.throttle = new GuessThrottle(ctx.redis, ctx.ids, {
      limit: guessLimit,
      windowSec: guessWindowSec,
      onThrottled: () => metrics.throttled.inc(),
      turnTimeoutMs: redis.timeoutMs,
    });
    this.scanTimes = { maxAgeMs: ctx.cfg.offlineMaxAgeMs, skewMs: SCAN_CLOCK_SKEW_MS };
    this.claims = new GroupCommit(claimRedis, this.sendClaims, MAX_SCANS_PER_SCRIPT);
    this.redeems = new GroupCommit(ctx.redis, this.sendRedeems, MAX_SCANS_PER_SCRIPT);
  }

  /**
   * Redeems go in two group-committed rounds: the scan ids are claimed in their
   * own buckets (scan_claim), then applied in their IDs' buckets (redeem), each
   * round one script call per bucket for all the scans that came in meanwhile.
   * Callback style, like ticks: no promise per scan on the hot path. Each
   * holds one of its scanner's lookup slots (GuessThrottle) until answered.
   */
  redeemCb(token: TokenInfo, req: ScanRequest, done: AnswerCallback): void {
    const arrived = req.at === undefined ? 0 : Date.now();
    const slot = this.throttle.enter(token.name);
    if (slot === 0) return this.lookUp(token, req, arrived, done);
    if (slot !== WAIT) return done(undefined, throttled(slot));
    this.throttle.queue(token.name, (wait) => {
      if (wait === 0) return this.lookUp(token, req, arrived, done);
      if (wait === GAVE_UP || wait === TOO_MANY_WAITING) return done(new TurnTimeout(wait === TOO_MANY_WAITING));
      done(undefined, throttled(wait));
    });
  }

  /**
   * A redeem holding a lookup slot: every way out from here is answered(),
   * which gives it back. A queued one runs within another's release: what the
   * request holds must not throw out of here.
   */
  private lookUp(token: TokenInfo, req: ScanRequest, arrived: number, done: AnswerCallback): void {
    let t: Terms | Refused;
    try {
      t = this.prepare(token, req);
    } catch (err) {
      return this.answered(token.name, done, err);
    }
    if (!(t instanceof Terms)) return this.answered(token.name, done, undefined, t);
    const scanKey = `${token.name}:${req.scan}`;
    const claimTerms = `${t.idKey}|${t.item}|${t.qty}|${t.dir}`;
    const p = new PendingScan(t, token.name, req.scan, scanKey, claimTerms, done, req.at, arrived);
    // Behind a redeem of this scan id with other terms (a journal that used it again after a
    // refusal): judged once that one is answered, as if sent after its answer.
    const waiting = this.behind.size > 0 ? this.behind.get(scanKey) : undefined;
    const under = this.underWay.termsOf(scanKey);
    if (waiting !== undefined || (under !== undefined && under !== claimTerms)) {
      this.arrivals.arrive(t.idKey, p);
      if (waiting) waiting.push(p);
      else this.behind.set(scanKey, [p]);
      return;
    }
    this.underWay.enter(scanKey, claimTerms);
    this.arrivals.arrive(t.idKey, p);
    this.claims.add(this.claimBucketOf(scanKey), p);
  }

  /**
   * Once no redeem of `scanKey` is under way here: the next of those behind it (and its copies)
   * claim, unless a reverse of it comes first.
   */
  private claimBehind(scanKey: string): void {
    const waiting = this.behind.get(scanKey);
    if (waiting === undefined || this.underWay.termsOf(scanKey) !== undefined) return;
    const head = waiting[0];
    if (head instanceof ReverseMark) {
      // Every redeem of the scan id before it answered: a reverse whose turn came meanwhile goes on.
      const run = head.run;
      head.run = undefined;
      return run?.();
    }
    let n = 0;
    while (n < waiting.length && (waiting[n] as PendingScan).claimTerms === head!.claimTerms) n++;
    const go = waiting.splice(0, n) as PendingScan[];
    if (waiting.length === 0) this.behind.delete(scanKey);
    const bucket = this.claimBucketOf(scanKey);
    for (const p of go) {
      this.underWay.enter(scanKey, p.claimTerms);
      this.claims.add(bucket, p);
    }
  }

  /**
   * A reverse of `scanKey` in line behind its redeems here: it goes on (`go`) once every redeem of
   * the scan id before it is answered (some may be in other IDs' lines), and those after it wait
   * for its answer (`release`).
   */
  private reverseBehind(scanKey: string): { go: (run: () => void) => void; release: () => void } | undefined {
    const waiting = this.behind.size > 0 ? this.behind.get(scanKey) : undefined;
    if (waiting === undefined && this.underWay.termsOf(scanKey) === undefined) return undefined;
    const mark = new ReverseMark();
    if (waiting) waiting.push(mark);
    else this.behind.set(scanKey, [mark]);
    return {
      go: (run) => {
        if (this.behind.get(scanKey)?.[0] === mark && this.underWay.termsOf(scanKey) === undefined) run();
        else mark.run = run;
      },
      release: () => {
        const list = this.behind.get(scanKey);
        const at = list ? list.indexOf(mark) : -1;
        if (at < 0) return;
        list!.splice(at, 1);
        if (list!.length === 0) this.behind.delete(scanKey);
        else if (at === 0) this.claimBehind(scanKey);
      },
    };
  }

  /** Scan ids with redeems (or reverses) waiting behind a redeem of them here (for tests: none once answered). */
  get waiting(): number {
    return this.behind.size;
  }

  /** Hands a scan under way its answer (or error): a reverse of it may go on. */
  private finish(p: PendingScan, err: unknown, a?: Answer): void {
    this.underWay.leave(p.scanKey, p.refused);
    if (this.behind.size > 0) this.claimBehind(p.scanKey);
    // One that went on to its redeem round is answered: what waits behind it in its ID's line may go.
    if (!p.gone) this.arrivals.done(p.t.idKey);
    this.answered(p.scanner, p.done, err, a);
  }

  /** Hands a redeem its answer (or error) and gives back its lookup slot: once per redeem that took one. */
  private answered(scanner: string, done: AnswerCallback, err: unknown, a?: Answer): void {
    try {
      done(err, a);
    } finally {
      // Failed (Redis trouble) it is no sign that Redis answers: the lookups queued behind wait on.
      this.throttle.release(scanner, err === undefined || err === null);
    }
  }

  redeem(token: TokenInfo, req: ScanRequest): Promise<Answer> {
    return new Promise((resolve, reject) =>
      this.redeemCb(token, req, (err, a) =>
        a ? resolve(a) : reject(err instanceof Error ? err : new Error(String(err))),
      ),
    );
  }

  /**
   * Hands a scan its answer; a refusal first drops what it claimed and counts
   * a guess, which may turn it to `throttled` (guessed()).
   */
  private settle(p: PendingScan, a: Answer): void {
    if (a.ok) {
      this.underWay.granted(p.scanKey);
      if (p.claim === CLAIM_RETRY && a.duplicate !== true) return this.claimAgain(p, a);
      return this.finish(p, undefined, a);
    }
    // A refusal changed nothing and is not kept: neither is its claim (guesses must not fill Redis),
    // once no copy of the scan under way here may yet be granted with it (ScansUnderWay.refused).
    // On the claims' connection, so a retry's claim written after it finds the claim gone.
    p.refused = true;
    const drop = this.underWay.refused(p.scanKey, p.claim === CLAIMED ? p.claimedIn : undefined);
    const dropped = drop ? this.claimRedis.hdel(drop, p.scanKey) : undefined;
    const counted = this.countGuess(p.scanner, a);
    if (!dropped && !counted) return this.finish(p, undefined, a);
    Promise.all([dropped, counted]).then(
      ([, wait]) => this.finish(p, undefined, wait ? throttled(wait) : a),
      (err: unknown) => this.finish(p, err),
    );
  }

  /**
   * A copy granted on another copy's claim: that copy may have been refused on
   * another gateway, which dropped the claim while this one was under way. The
   * claim is written again, or a later scan with this id could redeem another ID.
   */
  private claimAgain(p: PendingScan, a: Answer): void {
    const bucket = this.claimBucketOf(p.scanKey);
    const at = this.placesAt(this.windowClock(), (w) => keys.scanClaims(bucket, w));
    script.scanClaim(
      this.claimScripts,
      bucket,
      [p],
      at,
      () => undefined,
      (_, err, claim) => {
        if (err !== undefined || claim === CLAIM_TAKEN)
          this.ctx.log.error({ err, scan: p.scanKey }, 'a granted scan could not claim its scan id again');
        this.finish(p, undefined, a);
      },
    );
  }

  validate(token: TokenInfo, req: Omit<ScanRequest, 'scan'>): Promise<Answer> {
    return this.throttle.withSlot(token.name, throttled, async () => {
      const t = this.prepare(token, { ...req, scan: '' });
      if (!(t instanceof Terms)) return t;
      return this.guessed(token.name, await script.validate(this.scripts, t, Date.now()));
    });
  }

  /** The checks that need no Redis, and the terms of the scan (the throttle is the lookup slot's). */
  private prepare(token: TokenInfo, req: ScanRequest): Terms | Refused {
    const venue = token.venue;
    if (!venue) return { ok: false, reason: 'no_venue' };
    const checked = checkId(req.id, this.cfg.idLength);
    if (!checked.ok) return checked;
    const { hash, bucket } = this.ids.hash(checked.id);
    const item = req.item ?? '';
    const qty = req.qty ?? 1;
    // Goods are priced from the venue's item list; -1 tells the script the venue does not sell it.
    const price = item ? this.catalog.item(venue, item)?.price : undefined;
    const amount = price === undefined ? -1 : price * qty;
    if (!Number.isSafeInteger(amount)) return { ok: false, reason: 'bad_value' };
    // A scanner bound to a gate redeems there, whatever it sends.
    return new Terms(
      keys.id(bucket, hash),
      hash,
      bucket,
      venue,
      token.gate ?? req.gate ?? '',
      item,
      qty,
      req.dir ?? 'in',
      amount,
    );
  }

  private readonly sendClaims = (bucket: number, batch: PendingScan[], settled: () => void): void => {
    const at = this.placesAt(this.windowClock(), (w) => keys.scanClaims(bucket, w));
    for (const p of batch) p.claimedIn = at.windows[0]!;
    script.scanClaim(this.claimScripts, bucket, batch, at, settled, this.claimed);
  };

  /** Where a batch's scans are looked up and written at `now` (kept per bucket while the windows stay). */
  private placesAt(now: number, key: (window: number) => string): script.ScanPlaces {
    const at = this.windows.at(now);
    const name = key(at[0]!);
    const legacy = this.windows.legacyAt(now);
    const known = this.places.get(name);
    if (known?.of === at && known.legacy === legacy) return known;
    if (this.places.size > 4 * this.cfg.buckets) this.places.clear();
    const places = { of: at, windows: at.map(key), expiresAt: this.windows.expiresAt(at[0]!), legacy };
    this.places.set(name, places);
    return places;
  }

  private readonly claimed = (p: PendingScan, err: unknown, claim?: ClaimCode): void => {
    if (claim === undefined || claim === CLAIM_TAKEN) this.arrivals.leave(p.t.idKey, p);
    if (claim === undefined) return this.finish(p, err);
    p.claim = claim;
    if (claim === CLAIM_TAKEN) this.settle(p, { ok: false, reason: 'scan_conflict' });
    else this.arrivals.ready(p.t.idKey, p);
  };

  private readonly sendRedeems = (bucket: number, batch: PendingScan[], settled: () => void): void => {
    const each = waitsForReplicas(this.redis) ? this.collect(bucket, batch.length) : this.redeemed;
    const now = Date.now();
    const at = this.placesAt(this.windowClock(), (w) => keys.scans(bucket, w));
    script.redeem(this.scripts, bucket, batch, now, at, this.scanTimes, settled, each);
  };

  /**
   * With replicated acknowledgements a batch's answers wait for one WAIT on
   * its bucket's primary (and one on each primary its scans were claimed on,
   * whose index a reversal needs): a redemption is `ok` only once a replica
   * has it. A retry answered from its first try's redemption or claim (which
   * another gateway may have written) waits for a fenced WAIT that covers it.
   * A WAIT that fails fails the batch's redemptions, `unavailable`; their
   * retries answer the first answer.
   */
  private collect(bucket: number, n: number): script.EachScan<PendingScan, Answer> {
    const got: { p: PendingScan; err: unknown; a: Answer | undefined }[] = [];
    return (p, err, a) => {
      got.push({ p, err, a });
      if (got.length < n) return;
      const applied = got.filter((g) => g.a?.ok === true);
      for (const g of got) if (!g.a?.ok) this.redeemed(g.p, g.err, g.a);
      if (applied.length === 0) return;
      // A key of each claim bucket's slot (WAIT goes to its primary), and whether a retry's claim is among them.
      const claimKeys = new Map<string, boolean>();
      for (const { p } of applied)
        claimKeys.set(p.claimedIn, claimKeys.get(p.claimedIn) === true || p.claim === CLAIM_RETRY);
      const seen = (found: boolean): 'seen' | 'written' => (found ? 'seen' : 'written');
      let left = 1 + claimKeys.size;
      let failure: Error | undefined;
      const done = (e?: Error): void => {
        failure ??= e;
        if (--left > 0) return;
        for (const g of applied) this.redeemed(g.p, failure, failure ? undefined : g.a);
      };
      const duplicates = applied.some((g) => g.a?.ok === true && g.a.duplicate === true);
      whenReplicated(this.redis, keys.redemptions(bucket), done, seen(duplicates));
      for (const [key, retried] of claimKeys) whenReplicated(this.claimRedis, key, done, seen(retried));
    };
  }

  private readonly redeemed = (p: PendingScan, err: unknown, a?: Answer): void => {
    if (a) this.settle(p, a);
    else this.finish(p, err);
  };

  /**
   * A scanner's look at an ID: throttled and counted like a scan, so it is no way
   * around the guess limit. Only IDs it could redeem are shown (tickets, goods and
   * services, for its venue or every venue; not talk time nor recharge vouchers):
   * any other ID answers `unknown_id`, counted as a guess too, exactly as an ID
   * that does not exist, so the answer tells nothing.
   */
  status(token: TokenInfo, id: unknown): Promise<Refusable<IdStatus> | Refused> {
    return this.throttle.withSlot<Refusable<IdStatus> | Refused>(token.name, throttled, async () => {
      const venue = token.venue;
      if (!venue) return { ok: false, reason: 'no_venue' };
      const found = await idStatus(this.ctx, id);
      const s =
        found.ok && !(await this.redeemableAt(venue, id, found)) ? { ok: false as const, reason: 'unknown_id' } : found;
      return this.guessed(token.name, s);
    });
  }

  /** Whether a scanner of this venue could redeem the ID: a ticket, goods or service ID valid at the venue. */
  private async redeemableAt(venue: string, id: unknown, s: IdStatus): Promise<boolean> {
    // The kinds a scanner redeems, named: a kind added later (recharge vouchers, bearer value
    // for talk IDs) stays out of a scanner's sight until it is one of them.
    if (!SCANNED_KINDS.has(s.kind)) return false;
    const loc = locate(this.ctx, id);
    if (!loc.ok) return false;
    // As the redeem script reads it: the venues of the ID's product terms, empty for every venue.
    const venues = (await idField(this.redis, loc.key, 'venues')) ?? '';
    return venues === '' || venues.split(',').includes(venue);
  }

  /**
   * An `unknown_id` answer is a guess: counted in /metrics and against the
   * scanner's guess limit. Resolves to the seconds to wait when it must be
   * answered `throttled` instead (GuessThrottle.miss); undefined for no guess.
   */
  private countGuess(scanner: string, a: { ok: boolean; reason?: string }): Promise<number> | undefined {
    if (a.ok || a.reason !== 'unknown_id') return undefined;
    this.metrics.unknownIds.inc();
    return this.throttle.miss(scanner);
  }

  /** An answer once its guess is counted: `throttled` when another answer already went over the limit. */
  private async guessed<A extends { ok: boolean; reason?: string }>(scanner: string, a: A): Promise<A | Refused> {
    const wait = await this.countGuess(scanner, a);
    return wait ? throttled(wait) : a;
  }

  private claimBucketOf(scanKey: string): number {
    return claimBucketOf(this.ids, this.cfg.buckets, scanKey);
  }

  /**
   * Undoes one earlier redemption of this scanner, by its scan id, once. Not
   * throttled, but behind the scanner's redeems still waiting for a lookup slot
   * (a journal longer than GUESS_LIMIT + 1): they are not in their ID's line yet.
   */
  reverse(token: TokenInfo, scan: string, reason: string, id?: string, at?: number): Promise<Answer> {
    // An offline void's age is judged when it came, not when its turn in the ID's line came.
    const made = at === undefined ? undefined : { at, arrived: Date.now() };
    return new Promise((resolve, reject) =>
      this.throttle.after(token.name, () => {
        this.reverseInLine(token, scan, reason, id, made).then(resolve, reject);
      }),
    );
  }

  // async: a throw in it rejects rather than escaping the throttle turn it runs in.
  private async reverseInLine(
    token: TokenInfo,
    scan: string,
    reason: string,
    id?: string,
    made?: OfflineVoid,
  ): Promise<Answer> {
    const scanKey = `${token.name}:${scan}`;
    let named: string | undefined;
    if (id !== undefined) {
      const checked = checkId(id, this.cfg.idLength);
      if (!checked.ok) return Promise.resolve(checked);
      const { hash, bucket } = this.ids.hash(checked.id);
      named = keys.id(bucket, hash);
    }
    // Behind the latest redeem of the scan here of the ID it names (or of any ID, naming none) that
    // waits behind another of other terms; else behind the one under way; its redeem answered
    // before: the ID named with it gives the reverse its place all the same.
    const waiting = this.behind.size > 0 ? this.behind.get(scanKey) : undefined;
    let last: string | undefined;
    for (let i = (waiting?.length ?? 0) - 1; i >= 0 && last === undefined; i--) {
      const w = waiting![i];
      if (w instanceof PendingScan && (named === undefined || w.t.idKey === named)) last = w.t.idKey;
    }
    const idKey = last ?? this.underWay.idOf(scanKey) ?? named;
    if (idKey === undefined) return this.reverseNow(token, scanKey, reason, undefined, made);
    const behind = this.reverseBehind(scanKey);
    // Sent behind its redeem (a journal uploaded in one frame), or naming its ID: it takes its
    // place in the ID's line, after what came before it and before what came after it.
    return new Promise((resolve, reject) => {
      const barrier = new Barrier(() => {
        const over = (): void => {
          this.arrivals.done(idKey, true);
          behind?.release();
        };
        const run = (): void =>
          void this.reverseNow(token, scanKey, reason, named, made).then(
            (a) => {
              over();
              resolve(a);
            },
            (err: unknown) => {
              over();
              reject(err instanceof Error ? err : new Error(String(err)));
            },
          );
        if (behind) behind.go(run);
        else run();
      });
      this.arrivals.arrive(idKey, barrier);
    });
  }

  /**
   * `named`: the ID key of the ID the reverse named; the scan must be that ID's.
   * `made`: when the void was made (offline), by the scanner's clock, and when it came here.
   */
  private async reverseNow(
    token: TokenInfo,
    scanKey: string,
    reason: string,
    named?: string,
    made?: OfflineVoid,
  ): Promise<Answer> {
    const now = Date.now();
    const windows = this.windows.at(this.windowClock());
    const terms = await this.claimOf(scanKey, windows);
    if (!terms) return { ok: false, reason: 'unknown_scan' };
    const idKey = terms.slice(0, terms.indexOf('|'));
    if (named !== undefined && named !== idKey) return { ok: false, reason: 'scan_conflict' };
    const offline = made && { ...made, bounds: this.scanTimes };
    const answer = await script.reverse(this.scripts, scanKey, idKey, windows, now, token.name, reason, offline);
    // A second reverse answers the first: that one must be on a replica, whoever wrote it.
    if (answer.ok) await (answer.duplicate ? replicatedSeen : replicated)(this.redis, idKey);
    return answer;
  }

  /** A scan's claim: in the windows of its claim bucket, else where earlier versions kept claims. */
  private async claimOf(scanKey: string, windows: readonly number[]): Promise<string | null> {
    const bucket = this.claimBucketOf(scanKey);
    for (const w of windows) {
      const terms = await this.claimRedis.hget(keys.scanClaims(bucket, w), scanKey);
      if (terms !== null) return terms;
    }
    // A key per claim in its claim bucket; before claims were spread over CLAIM_BUCKETS, in the scan key's HMAC bucket.
    return (
      (await this.claimRedis.get(keys.scanIndex(bucket, scanKey))) ??
      (await this.claimRedis.get(keys.scanIndex(this.ids.bucketOf(scanKey), scanKey)))
    );
  }
}

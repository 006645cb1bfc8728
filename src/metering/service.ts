import type { CatalogCache } from '../catalog/cache';
import type { Config } from '../config/config';
import { checkId } from '../ids/idnum';
import type { IdKeys } from '../ids/secrets';
import type { Metrics } from '../observability/metrics';
import { keys } from '../redis/keys';
import type { Scripts } from '../redis/scripts';
import { callKeyOf, callKeysFor, type CallKeys, CallLocator } from './locator';
import type { RedisClient } from '../redis/connect';
import { GroupCommit } from '../redis/group-commit';

export type StartResult =
  | { ok: true; maxSec: number; balance: number; rate: number; fee: number; duplicate: boolean }
  | { ok: false; reason: string };

export type TickCode = 'ok' | 'dup' | 'unknown_call' | 'call_ended' | 'call_conflict';
export interface TickResult {
  code: TickCode;
  balance: number;
  secLeft: number;
  /** Thresholds (seconds left) crossed by this tick, highest first. */
  alerts: readonly number[];
  /** Why the switch must cut the call now, or ''; for call_ended, how the call was closed. */
  cut: string;
  /** This tick ordered the cut-off (later ticks repeat it). */
  freshCut: boolean;
}

export type StopResult =
  | { ok: true; billedSec: number; cost: number; balance: number; record: string; duplicate: boolean }
  | { ok: false; reason: string };

type RawStart = ['ok', number, number, number, number, number] | ['err', string];
/** call_tick's answer (lua/call_tick.lua): code, balance, secLeft per tick, then [i, alerts, cut, fresh] for the few with more to say. */
type RawTicks = (number | string)[];
const TICK_CODES: readonly TickCode[] = ['ok', 'dup', 'unknown_call', 'call_ended', 'call_conflict'];
/** call_tick's code for a call that failed in the script; its reason field holds the error. */
const TICK_FAILED = 5;
type RawStop = ['ok', number, number, number, string, number] | ['err', string];

const NO_ALERTS: readonly number[] = Object.freeze([]);
const UNKNOWN_CALL: TickResult = Object.freeze({ code: 'unknown_call', balance: 0, secLeft: 0, alerts: NO_ALERTS, cut: '', freshCut: false });


/** Ticks answer through a callback, not a promise: this is the path every second of every call takes. */
export type TickCallback = (err: unknown, r?: TickResult) => void;

interface PendingTick {
  ck: CallKeys;
  sec: number;
  done: TickCallback;
}

/**
 * Call metering on top of the Lua scripts: admission, per-second billing and
 * close. Ticks are grouped by bucket and billed by one script call per bucket
 * and round (see GroupCommit), which is what keeps the cost per tick falling as the
 * call volume rises.
 */
export class Metering {
  readonly locator: CallLocator;
  /** How often a ticking call's score in the live set is refreshed: well inside the stale time. */
  private readonly liveRefreshMs: number;
  /** Ticks wait here for their bucket's next call_tick (group commit). */
  private readonly ticks: GroupCommit<PendingTick>;

  constructor(
    private readonly cfg: Config,
    private readonly redis: RedisClient,
    private readonly scripts: Scripts,
    private readonly ids: IdKeys,
    private readonly catalog: CatalogCache,
    private readonly metrics: Metrics,
    maxTicksPerScript = 64,
  ) {
    this.locator = new CallLocator(redis, ids, cfg.sessionTtlSec);
    this.liveRefreshMs = Math.min(2000, Math.floor(cfg.staleAfterMs / 3));
    this.ticks = new GroupCommit(redis, this.billTicks, maxTicksPerScript);
  }

  private async timed<T>(script: Parameters<Scripts['run']>[0], k: readonly string[], a: readonly (string | number)[]): Promise<T> {
    const t0 = performance.now();
    try {
      return await this.scripts.run<T>(script, k, a);
    } finally {
      this.metrics.scriptTime(script, performance.now() - t0);
    }
  }

  async start(sw: string, call: string, idInput: unknown, dest: string): Promise<StartResult> {
    const checked = checkId(idInput, this.cfg.idLength);
    if (!checked.ok) return checked;
    const { hash, bucket } = this.ids.hash(checked.id);
    const ck = callKeysFor(keys.id(bucket, hash), callKeyOf(sw, call));
    // A call id names one call: claim it for this ID before admitting, so the same
    // id with another ID (whose session would live in another bucket) is refused.
    const claim = await this.locator.claim(sw, call, ck);
    if (claim === 'taken') return { ok: false, reason: 'call_conflict' };
    const r = await this.timed<RawStart>('call_start', [ck.id, ck.session, ck.live], [Date.now(), dest, sw, call, hash, Math.max(0, this.cfg.ringTimeoutMs - this.cfg.staleAfterMs), ...this.catalog.rateArgs(dest)]);
    if (r[0] === 'err') {
      // A refused call leaves no index behind (guessed IDs must not fill Redis).
      if (claim === 'new' && r[1] !== 'call_conflict' && r[1] !== 'call_ended') await this.locator.release(sw, call);
      return { ok: false, reason: r[1] };
    }
    return { ok: true, maxSec: r[1], balance: r[2], rate: r[3], fee: r[4], duplicate: r[5] === 1 };
  }

  tick(sw: string, call: string, sec: number, done: TickCallback): void {
    // The hot path: a call this gateway already knows is queued at once.
    const ck = this.locator.cached(sw, call);
    if (ck) return this.enqueue(ck, sec, done);
    this.locator.find(sw, call).then((found) => (found ? this.enqueue(found, sec, done) : done(null, UNKNOWN_CALL)), done);
  }

  private enqueue(ck: CallKeys, sec: number, done: TickCallback): void {
    this.ticks.add(ck.bucket, { ck, sec, done });
  }

  /** Ticks are grouped by bucket and billed by one call_tick per bucket and round (GroupCommit). */
  private readonly billTicks = (_bucket: number, batch: PendingTick[], settled: () => void): void => {
    const now = Date.now();
    // One array in call order (key count, keys, arguments): lua/call_tick.lua's layout.
    const n = batch.length;
    const call: (string | number)[] = new Array(2 + 3 * n + 2);
    call[0] = 1 + 2 * n;
    call[1] = batch[0]!.ck.live;
    const argAt = 2 + 2 * n;
    call[argAt] = now;
    call[argAt + 1] = this.liveRefreshMs;
    for (let i = 0; i < n; i++) {
      const t = batch[i]!;
      call[2 + 2 * i] = t.ck.session;
      call[3 + 2 * i] = t.ck.id;
      call[argAt + 2 + i] = t.sec;
    }
    const t0 = performance.now();
    this.scripts.runFlat<RawTicks>('call_tick', call).then(
      (rows) => {
        settled();
        this.metrics.scriptTime('call_tick', performance.now() - t0);
        const n = batch.length;
        let x = 3 * n;
        for (let i = 0; i < n; i++) {
          let alerts = NO_ALERTS;
          let cut = '';
          let freshCut = false;
          if (rows[x] === i + 1) {
            const fired = rows[x + 1] as string;
            if (fired !== '') alerts = fired.split(',').map(Number);
            cut = rows[x + 2] as string;
            freshCut = rows[x + 3] === 1;
            x += 4;
          }
          const code = rows[3 * i] as number;
          if (code === TICK_FAILED) batch[i]!.done(new Error(`call_tick failed: ${cut}`));
          else batch[i]!.done(null, { code: TICK_CODES[code]!, balance: rows[3 * i + 1] as number, secLeft: rows[3 * i + 2] as number, alerts, cut, freshCut });
        }
      },
      (err: unknown) => {
        settled();
        for (const t of batch) t.done(err);
      },
    );
  };

  async stop(sw: string, call: string, sec: number, cause: string): Promise<StopResult> {
    const ck = await this.locator.find(sw, call);
    if (!ck) return { ok: false, reason: 'unknown_call' };
    // A stop sent behind a tick must not overtake it.
    await this.ticks.sent(ck.bucket);
    const r = await this.timed<RawStop>('call_stop', [ck.session, ck.id, ck.live, ck.cdr], [Date.now(), sec, cause, this.cfg.sessionTtlSec]);
    if (r[0] === 'err') return { ok: false, reason: r[1] };
    this.locator.forget(sw, call);
    return { ok: true, billedSec: r[1], cost: r[2], balance: r[3], record: r[4], duplicate: r[5] === 1 };
  }

  /** Live sessions across all buckets, for the active-calls gauge. */
  async countActive(): Promise<number> {
    const counts = await Promise.all(Array.from({ length: this.cfg.buckets }, (_, b) => this.redis.zcard(keys.live(b))));
    return counts.reduce((s, n) => s + n, 0);
  }
}

import type { IdKeys } from '../ids/secrets';
import type { RedisClient } from '../redis/connect';
import { TurnTimeout } from '../redis/failure';
import { keys } from '../redis/keys';

/** `enter`'s answer when the client's lookups are at their bound: `queue` the lookup for its turn. */
export const WAIT = -1;

/**
 * A queued lookup's answer when it waited longer than the throttle's `turnTimeoutMs` and none of
 * its client's lookups was answered meanwhile (Redis stalled): fail it `unavailable`.
 */
export const GAVE_UP = -2;

/**
 * A queued lookup's answer when it waited longer than `turnTimeoutMs` although its client's
 * lookups were being answered: its client has more waiting than Redis answers in that time
 * (a burst, not Redis trouble): fail it `overloaded`.
 */
export const TOO_MANY_WAITING = -3;

/**
 * A queued lookup's turn: 0 holding a slot (give it back with `release`), or
 * holding none, seconds to wait (throttled), GAVE_UP or TOO_MANY_WAITING.
 */
export type Turn = (retryAfter: number) => void;

/** What this gateway knows of one client: its window as Redis last told it, its refusal, its lookups. */
class ClientState {
  /** Misses in the window, as the last count from Redis said; they count until windowEnd (ms, 0: no window). */
  misses = 0;
  windowEnd = 0;
  /** Refused `throttled` until then (ms): the end of the window that went over the limit. */
  blockedUntil = 0;
  /** Lookups holding a slot: waiting on Redis. */
  inFlight = 0;
  /** Lookups Redis answered so far: a queued lookup that saw none while it waited saw Redis stalled. */
  answered = 0;
  /** Lookups waiting for a slot, in arrival order from `head` (no queue until one waits). */
  waiting: (Turn | undefined)[] | undefined = undefined;
  head = 0;
  /** A release that gives turns is under way: a release within it only frees its slot. */
  pumping = false;
  /** Drops this state at the window's end if nothing is left then. */
  dropTimer: NodeJS.Timeout | undefined = undefined;
}

export interface GuessThrottleOptions {
  /** Misses a client may make in a window; the one after is refused `throttled`. */
  limit: number;
  windowSec: number;
  /** Goes in front of the client's name in its counter's key: each role counts apart (see below). */
  scope?: string;
  /** Called when this gateway starts refusing a client: once per window (a metric's inc). */
  onThrottled?: () => void;
  /**
   * How long a queued lookup waits for its turn before it is given up
   * (GAVE_UP): REDIS_TIMEOUT_MS, so that while Redis is stalled a burst is
   * answered `unavailable` in that time, not a slot's worth per timeout.
   */
  turnTimeoutMs?: number;
}

/**
 * Makes guessing IDs slow: each unknown_id answer to a client (a scanner, or a
 * switch) counts in Redis (shared by every gateway); past the limit in one
 * window the client is refused `throttled` until the window ends. The check on
 * the hot path is a local map lookup; only unknown_id answers touch Redis. Only
 * the answer that goes over the limit is still unknown_id: a miss counted past
 * it, on any gateway, is answered `throttled` (miss says so).
 *
 * A miss is counted once its lookup is answered, so lookups that wait on Redis
 * together are not held back by each other's misses. Scanners and voucher
 * top-ups therefore take a slot for each lookup (withSlot; the callback-style
 * redeem: enter or queue, then release): at most limit + 1 − misses
 * of one client wait on Redis at once (misses as this gateway last learnt them,
 * never fewer than 1 slot); the others wait their turn here, in arrival order,
 * and are checked again when it comes. A burst of guesses gets about limit + 1
 * answers a window and gateway; a scanner device never has that many lookups
 * in flight.
 *
 * Clients are counted by token name. Scanner and switch tokens may share a name,
 * so each role has its own throttle and its own counters: `scope` goes in front
 * of the name in the counter's key ('' for scanners, whose key stays
 * `guess:<name>`; 'sw' for switches, `guess:sw:<name>`; token names hold no ':').
 * A client's state is dropped once it has no lookup and its window is over.
 */
export class GuessThrottle {
  private readonly clients = new Map<string, ClientState>();

  private readonly limit: number;
  private readonly windowSec: number;
  private readonly scope: string;
  private readonly onThrottled?: () => void;
  private readonly turnTimeoutMs: number;

  constructor(
    private readonly redis: RedisClient,
    private readonly ids: IdKeys,
    opts: GuessThrottleOptions,
  ) {
    ({ limit: this.limit, windowSec: this.windowSec, onThrottled: this.onThrottled } = opts);
    this.scope = opts.scope ?? '';
    this.turnTimeoutMs = opts.turnTimeoutMs ?? Infinity;
  }

  /** Token names this gateway keeps state for (those with lookups, or a window not over). */
  get tracked(): number {
    return this.clients.size;
  }

  /** Seconds to wait, or 0 when the client may go on. */
  retryAfter(client: string, now = Date.now()): number {
    const c = this.clients.get(client);
    return c ? this.waitOf(c, now) : 0;
  }

  /**
   * Takes a lookup slot: 0 when taken (give it back with `release`), seconds
   * to wait when the client is throttled, or WAIT when its lookups are at their
   * bound: then `queue` the lookup.
   */
  enter(client: string): number {
    const now = Date.now();
    let c = this.clients.get(client);
    if (!c) this.clients.set(client, (c = new ClientState()));
    const wait = this.waitOf(c, now);
    if (wait > 0) return wait;
    if (c.waiting || c.inFlight >= this.bound(c, now)) return WAIT;
    c.inFlight++;
    return 0;
  }

  /** Gives `turn` a slot when one is free and the lookups queued before it have had theirs. */
  queue(client: string, turn: Turn): void {
    let c = this.clients.get(client);
    if (!c) this.clients.set(client, (c = new ClientState()));
    const q = (c.waiting ??= []);
    const at = q.push(turn) - 1;
    if (this.turnTimeoutMs !== Infinity) {
      const state = c;
      const answeredBefore = c.answered;
      setTimeout(() => {
        // Had its turn already (its place emptied, or the queue drained and gone).
        if (state.waiting !== q || q[at] !== turn) return;
        q[at] = undefined;
        turn(state.answered > answeredBefore ? TOO_MANY_WAITING : GAVE_UP);
      }, this.turnTimeoutMs).unref();
    }
    if (!c.pumping) this.pump(client, c);
  }

  /**
   * Runs `go` once the lookups of the client queued before it have had their
   * turns, holding no slot and never refused: a request that is not throttled
   * (a reverse) keeps its place behind the redeems sent before it, which may
   * still be waiting for a slot. At once when nothing is queued.
   */
  after(client: string, go: () => void): void {
    if (!this.clients.get(client)?.waiting) return go();
    this.queue(client, (wait) => {
      if (wait === 0) this.release(client, false);
      go();
    });
  }

  /** enter, then queue when it must: 0 holding a slot, or seconds to wait. */
  private turn(client: string): number | Promise<number> {
    const entered = this.enter(client);
    return entered !== WAIT ? entered : new Promise((resolve) => this.queue(client, resolve));
  }

  /**
   * Runs `lookUp` holding one of the client's slots, waiting its turn for one,
   * and gives it back however `lookUp` ends; `refuse(seconds)` is the answer
   * when the client is throttled by then.
   */
  async withSlot<T>(client: string, refuse: (retryAfter: number) => T, lookUp: () => Promise<T>): Promise<T> {
    const wait = await this.turn(client);
    if (wait === GAVE_UP || wait === TOO_MANY_WAITING) throw new TurnTimeout(wait === TOO_MANY_WAITING);
    if (wait > 0) return refuse(wait);
    let answered = false;
    try {
      const r = await lookUp();
      answered = true;
      return r;
    } finally {
      this.release(client, answered);
    }
  }

  /** Gives back a slot that enter or a turn gave; `answered`: Redis answered its lookup (not an error). */
  release(client: string, answered = true): void {
    const c = this.clients.get(client);
    if (!c) return;
    c.inFlight--;
    if (answered) c.answered++;
    if (c.pumping) return;
    if (c.waiting) this.pump(client, c);
    else this.dropIfIdle(client, c);
  }

  /**
   * Counts one unknown_id answer: seconds to wait when it must be answered
   * `throttled` instead (another answer already went over the limit), else 0.
   */
  async miss(client: string): Promise<number> {
    const name = this.scope ? `${this.scope}:${client}` : client;
    const key = keys.guesses(this.ids.bucketOf(name), name);
    const res = await this.redis.multi().incr(key).expire(key, this.windowSec, 'NX').pttl(key).exec();
    const count = Number(res?.[0]?.[1]);
    const pttl = Number(res?.[2]?.[1]);
    if (!Number.isSafeInteger(count)) throw new Error(`guess count of ${name}: no count in ${JSON.stringify(res)}`);
    const now = Date.now();
    let c = this.clients.get(client);
    if (!c) this.clients.set(client, (c = new ClientState()));
    // Replies come in the order the counts were taken: the last one is the latest.
    c.misses = count;
    c.windowEnd = now + Math.max(pttl, 1000);
    if (count > this.limit) {
      if (c.blockedUntil <= now) this.onThrottled?.();
      c.blockedUntil = c.windowEnd;
    }
    this.dropIfIdle(client, c);
    return count > this.limit + 1 ? this.waitOf(c, now) : 0;
  }

  private waitOf(c: ClientState, now: number): number {
    return c.blockedUntil > now ? Math.ceil((c.blockedUntil - now) / 1000) : 0;
  }

  /** Lookups of a client that may wait on Redis at once. */
  private bound(c: ClientState, now: number): number {
    return Math.max(1, this.limit + 1 - (now < c.windowEnd ? c.misses : 0));
  }

  /** Gives the queued lookups their turns while slots are free, or refuses them all once the client is throttled. */
  private pump(client: string, c: ClientState): void {
    c.pumping = true;
    const now = Date.now();
    try {
      for (let q = c.waiting; q && c.head < q.length; q = c.waiting) {
        const wait = this.waitOf(c, now);
        if (wait === 0 && c.inFlight >= this.bound(c, now)) break;
        const turn = q[c.head];
        q[c.head++] = undefined;
        if (c.head === q.length) {
          c.waiting = undefined;
          c.head = 0;
        }
        // Given up while it waited: its place is empty.
        if (!turn) continue;
        if (wait === 0) c.inFlight++;
        turn(wait);
      }
    } finally {
      c.pumping = false;
    }
    this.dropIfIdle(client, c);
  }

  /** Forgets a client with no lookups once its window is over; until then a timer waits for its end. */
  private dropIfIdle(client: string, c: ClientState): void {
    if (c.inFlight > 0 || c.waiting) return;
    const left = c.windowEnd === 0 ? 0 : c.windowEnd - Date.now();
    if (left <= 0) {
      this.clients.delete(client);
      return;
    }
    c.dropTimer ??= setTimeout(() => {
      c.dropTimer = undefined;
      if (this.clients.get(client) === c) this.dropIfIdle(client, c);
    }, left).unref();
  }
}

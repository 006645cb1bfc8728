/**
 * Ticks and stops name only the call, but a call's session lives in its ID's
 * bucket. The start writes a small index (call -> ID key, in the call's own
 * bucket) so that any gateway, including one that never saw the start, can find
 * the call; an in-process map saves that lookup on every later tick. The map
 * keeps only calls seen lately: a call whose stop never reaches this gateway
 * (reaped, stopped under another token name or on another gateway) would
 * otherwise stay in it for good. A call forgotten costs one GET at its next tick.
 */
import type { IdKeys } from '../ids/secrets';
import type { RedisClient } from '../redis/connect';
import { GroupCommit } from '../redis/group-commit';
import { keys } from '../redis/keys';
import type { Scripts } from '../redis/scripts';
import { callKeyOf, callKeysFor, type CallKeys } from './call-keys';
import { callClaims, type ClaimItem } from './scripts';

type Calls = Map<string, Map<string, CallKeys>>;

export class CallLocator {
  /**
   * switch -> call -> keys, looked up per tick without building a key string: the calls seen
   * since the last turn (`recent`) and in the turn before (`older`). Each turn forgets `older`,
   * so a call unseen for two turns is gone, and the map empties once traffic stops.
   */
  private recent: Calls = new Map();
  private older: Calls = new Map();
  /** Calls in both. */
  private count = 0;
  private readonly turns: NodeJS.Timeout;
  /** Claims wait here for their index bucket's next call_claim (group commit, as ticks do). */
  private readonly claims: GroupCommit<ClaimItem>;

  constructor(
    private readonly redis: RedisClient,
    scripts: Scripts,
    private readonly ids: IdKeys,
    /** The index's TTL from the call's claim: at least as long as a call may last. */
    private readonly ttlSec: number,
    /** How long a closed call's index is kept: as long as its closed session answers (`ttlSec`: not cut). */
    private readonly closedTtlSec: number,
    /** How long a turn lasts: a call unseen for twice this is forgotten. */
    turnMs: number,
    private readonly maxCached = 500_000,
    maxClaimsPerScript = 64,
  ) {
    this.claims = new GroupCommit(
      redis,
      (_bucket, batch, settled) => callClaims(scripts, batch, this.ttlSec, settled),
      maxClaimsPerScript,
    );
    this.turns = setInterval(() => this.turn(), turnMs);
    this.turns.unref();
  }

  /** Calls this gateway keeps in memory. */
  get size(): number {
    return this.count;
  }

  stop(): void {
    clearInterval(this.turns);
  }

  /** The index key of a switch's call (in the call key's own bucket). */
  indexOf(sw: string, call: string): string {
    return this.indexKey(callKeyOf(sw, call));
  }

  private indexKey(callKey: string): string {
    return keys.callIndex(this.ids.bucketOf(callKey), callKey);
  }

  /**
   * Claims the call id for this ID: 'new' when this start (or recovered stop) is the
   * first, 'same' when the call already belongs to this ID (a retry), 'taken' when it
   * belongs to another ID. The index it writes is how a stop repeated without the ID
   * finds a recovered call.
   */
  async claim(sw: string, call: string, ck: CallKeys): Promise<'new' | 'same' | 'taken'> {
    const known = this.cached(sw, call);
    if (known) return known.id === ck.id ? 'same' : 'taken';
    const callKey = callKeyOf(sw, call);
    const bucket = this.ids.bucketOf(callKey);
    const prev = await new Promise<string>((resolve, reject) =>
      this.claims.add(bucket, {
        index: keys.callIndex(bucket, callKey),
        id: ck.id,
        done: (err, had) => (err ? reject(err) : resolve(had!)),
      }),
    );
    if (prev !== '' && prev !== ck.id) return 'taken';
    this.put(sw, call, ck);
    return prev === '' ? 'new' : 'same';
  }

  /**
   * Gives back the claim of a start (or recovered stop) that was refused: guessed IDs must not fill
   * Redis. But another gateway's start or recovered stop of the call may have found the claim and
   * written the call's session meanwhile (no script sees both keys: they live in different slots),
   * so the index is put back when the session is there once it is gone; and whoever writes a session
   * under a claim it did not make sees to the index after it (`kept`). Each writes before it reads:
   * one of the two always sees the other's write, and the call never loses its index. Put back, it
   * lasts as the session does: a live one has no TTL (a live call's index), a closed one's is what
   * is left of it (as ended() cuts it), or the call id would stay taken for a week.
   */
  async release(sw: string, call: string, ck: CallKeys): Promise<void> {
    this.forget(sw, call);
    const index = this.indexKey(callKeyOf(sw, call));
    await this.redis.del(index);
    const left = await this.redis.pttl(ck.session);
    if (left === -2) return; // no session: nothing was written under the claim
    await this.redis.set(index, ck.id, 'PX', left === -1 ? this.ttlSec * 1000 : Math.max(left, 1), 'NX');
  }

  /** A session written under a claim this start or stop found ('same'): its index, put back if given back since. */
  async kept(sw: string, call: string, ck: CallKeys): Promise<void> {
    await this.redis.set(this.indexKey(callKeyOf(sw, call)), ck.id, 'EX', this.ttlSec, 'NX');
  }

  cached(sw: string, call: string): CallKeys | undefined {
    const hit = this.recent.get(sw)?.get(call);
    if (hit) return hit;
    const old = this.older.get(sw)?.get(call);
    // Seen again: it stays for this turn and the next.
    if (old) this.put(sw, call, old);
    return old;
  }

  /** Local map first, then the index in Redis; undefined when no gateway ever started this call. */
  async find(sw: string, call: string): Promise<CallKeys | undefined> {
    const hit = this.cached(sw, call);
    if (hit) return hit;
    const callKey = callKeyOf(sw, call);
    const idKey = await this.redis.get(this.indexKey(callKey));
    if (!idKey) return undefined;
    const ck = callKeysFor(idKey, callKey);
    this.put(sw, call, ck);
    return ck;
  }

  /**
   * A call this gateway saw end: forgotten here, and its index kept no longer than its closed
   * session, all that a repeated stop or a late tick can still find through it. Claimed for as
   * long as a call may last, it would otherwise outlive a short SESSION_TTL_SEC by a week.
   */
  async ended(sw: string, call: string): Promise<void> {
    this.forget(sw, call);
    if (this.closedTtlSec < this.ttlSec) await this.redis.expire(this.indexOf(sw, call), this.closedTtlSec, 'LT');
  }

  forget(sw: string, call: string): void {
    this.drop(this.recent, sw, call);
    this.drop(this.older, sw, call);
  }

  private put(sw: string, call: string, ck: CallKeys): void {
    this.drop(this.older, sw, call);
    // A burst of calls within one turn: the index in Redis still answers.
    if (this.count >= this.maxCached) {
      this.recent.clear();
      this.older.clear();
      this.count = 0;
    }
    let calls = this.recent.get(sw);
    if (!calls) this.recent.set(sw, (calls = new Map<string, CallKeys>()));
    if (!calls.has(call)) this.count++;
    calls.set(call, ck);
  }

  private drop(gen: Calls, sw: string, call: string): void {
    const calls = gen.get(sw);
    if (!calls?.delete(call)) return;
    this.count--;
    if (calls.size === 0) gen.delete(sw);
  }

  /** Forgets the calls not seen since the turn before. */
  private turn(): void {
    for (const calls of this.older.values()) this.count -= calls.size;
    this.older = this.recent;
    this.recent = new Map();
  }
}

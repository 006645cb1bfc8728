/**
 * Ticks and stops name only the call, but a call's session lives in its ID's
 * bucket. The start writes a small index (call -> ID key, in the call's own
 * bucket) so that any gateway, including one that never saw the start, can find
 * the call; a bounded in-process map saves that lookup on every later tick.
 */
import type { IdKeys } from '../ids/secrets';
import type { RedisClient } from '../redis/connect';
import { GroupCommit } from '../redis/group-commit';
import { keys } from '../redis/keys';
import type { Scripts } from '../redis/scripts';
import { callKeyOf, callKeysFor, type CallKeys } from './call-keys';
import { callClaims, type ClaimItem } from './scripts';

export class CallLocator {
  /** switch -> call -> keys: looked up per tick without building a key string. */
  private readonly cache = new Map<string, Map<string, CallKeys>>();
  private size = 0;
  /** Claims wait here for their index bucket's next call_claim (group commit, as ticks do). */
  private readonly claims: GroupCommit<ClaimItem>;

  constructor(
    private readonly redis: RedisClient,
    scripts: Scripts,
    private readonly ids: IdKeys,
    private readonly ttlSec: number,
    private readonly maxCached = 500_000,
    maxClaimsPerScript = 64,
  ) {
    this.claims = new GroupCommit(
      redis,
      (_bucket, batch, settled) => callClaims(scripts, batch, this.ttlSec, settled),
      maxClaimsPerScript,
    );
  }

  /** The index key of a switch's call (in the call key's own bucket). */
  indexOf(sw: string, call: string): string {
    return this.indexKey(callKeyOf(sw, call));
  }

  /** Writes the index of a call whose start was lost (a recovered stop), so a stop repeated without the ID finds it. */
  async restore(sw: string, call: string, ck: CallKeys): Promise<void> {
    await this.redis.set(this.indexOf(sw, call), ck.id, 'EX', this.ttlSec);
    this.put(sw, call, ck);
  }

  private indexKey(callKey: string): string {
    return keys.callIndex(this.ids.bucketOf(callKey), callKey);
  }

  /**
   * Claims the call id for this ID: 'new' when this start is the first, 'same'
   * when the call already belongs to this ID (a retry), 'taken' when it belongs
   * to another ID.
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

  async release(sw: string, call: string): Promise<void> {
    this.forget(sw, call);
    await this.redis.del(this.indexKey(callKeyOf(sw, call)));
  }

  cached(sw: string, call: string): CallKeys | undefined {
    return this.cache.get(sw)?.get(call);
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

  forget(sw: string, call: string): void {
    if (this.cache.get(sw)?.delete(call)) this.size--;
  }

  private put(sw: string, call: string, ck: CallKeys): void {
    // Calls whose stop never came would otherwise pile up; the index in Redis still answers.
    if (this.size >= this.maxCached) {
      this.cache.clear();
      this.size = 0;
    }
    let calls = this.cache.get(sw);
    if (!calls) this.cache.set(sw, (calls = new Map<string, CallKeys>()));
    if (!calls.has(call)) this.size++;
    calls.set(call, ck);
  }
}

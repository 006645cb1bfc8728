import type { IdKeys } from '../ids/secrets';
import type { RedisClient } from '../redis/connect';
import { bucketOfKey, keys } from '../redis/keys';

/**
 * Ticks and stops name only the call, but a call's session lives in its ID's
 * bucket. The start writes a small index (call -> ID key, in the call's own
 * bucket) so that any gateway, including one that never saw the start, can find
 * the call; a bounded in-process map saves that lookup on every later tick.
 */
export interface CallKeys {
  session: string;
  id: string;
  live: string;
  cdr: string;
  bucket: number;
}

export function callKeysFor(idKey: string, callKey: string): CallKeys {
  const bucket = bucketOfKey(idKey);
  return { session: keys.call(bucket, callKey), id: idKey, live: keys.live(bucket), cdr: keys.cdr(bucket), bucket };
}

export class CallLocator {
  private readonly cache = new Map<string, CallKeys>();

  constructor(
    private readonly redis: RedisClient,
    private readonly ids: IdKeys,
    private readonly ttlSec: number,
    private readonly maxCached = 500_000,
  ) {}

  private indexKey(callKey: string): string {
    return keys.callIndex(this.ids.bucketOf(callKey), callKey);
  }

  /**
   * Claims the call id for this ID: 'new' when this start is the first, 'same'
   * when the call already belongs to this ID (a retry), 'taken' when it belongs
   * to another ID.
   */
  async claim(callKey: string, ck: CallKeys): Promise<'new' | 'same' | 'taken'> {
    const known = this.cache.get(callKey);
    if (known) return known.id === ck.id ? 'same' : 'taken';
    const prev = await this.redis.set(this.indexKey(callKey), ck.id, 'EX', this.ttlSec, 'NX', 'GET');
    if (prev !== null && prev !== ck.id) return 'taken';
    this.put(callKey, ck);
    return prev === null ? 'new' : 'same';
  }

  async release(callKey: string): Promise<void> {
    this.cache.delete(callKey);
    await this.redis.del(this.indexKey(callKey));
  }

  cached(callKey: string): CallKeys | undefined {
    return this.cache.get(callKey);
  }

  /** Local map first, then the index in Redis; undefined when no gateway ever started this call. */
  async find(callKey: string): Promise<CallKeys | undefined> {
    const hit = this.cache.get(callKey);
    if (hit) return hit;
    const idKey = await this.redis.get(this.indexKey(callKey));
    if (!idKey) return undefined;
    const ck = callKeysFor(idKey, callKey);
    this.put(callKey, ck);
    return ck;
  }

  forget(callKey: string): void {
    this.cache.delete(callKey);
  }

  private put(callKey: string, ck: CallKeys): void {
    // Calls whose stop never came would otherwise pile up; the index in Redis still answers.
    if (this.cache.size >= this.maxCached) this.cache.clear();
    this.cache.set(callKey, ck);
  }
}

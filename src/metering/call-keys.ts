import { bucketOfKey, idHashOfKey, keys } from '../redis/keys';

/** What a switch is told to do when a final grant runs out: cut, or send the caller to `redirect`. */
export interface FinalAction {
  action: 'terminate' | 'redirect';
  redirect?: string;
}

/** The keys of one call: its session, its ID and its bucket's live set and streams. */
export interface CallKeys {
  session: string;
  id: string;
  live: string;
  cdr: string;
  /** The bucket's balance events stream (webhooks). */
  events: string;
  bucket: number;
  /**
   * When this gateway last had the call's place in the live set refreshed (ms;
   * 0: never). The reaper goes by that score; callTick asks for a refresh once
   * the refresh interval has passed since, so a tick reads no field for it.
   */
  refreshedAt: number;
  /** The ID as this gateway read it from the call's start ('' if none): a stop that names it needs no HMAC. */
  idText: string;
  /**
   * What the call does when its final grant runs out, once this gateway has learnt it (its start,
   * or call_tick's answer): a heard tick of a final grant is told it without call_tick reading it.
   */
  finalAction?: FinalAction;
}

/** A bucket's live set, CDR and events key names, made once: every call of the bucket shares them. */
interface BucketKeys {
  live: string;
  cdr: string;
  events: string;
}
const bucketKeys: BucketKeys[] = [];

function keysOfBucket(bucket: number): BucketKeys {
  return (bucketKeys[bucket] ??= { live: keys.live(bucket), cdr: keys.cdr(bucket), events: keys.events(bucket) });
}

export function callKeysFor(idKey: string, callKey: string): CallKeys {
  const bucket = bucketOfKey(idKey);
  const { live, cdr, events } = keysOfBucket(bucket);
  return { session: keys.call(bucket, callKey), id: idKey, live, cdr, events, bucket, refreshedAt: 0, idText: '' };
}

/** A call's name within its bucket: the switch's token name and the switch's call id. */
export const callKeyOf = (sw: string, call: string): string => `${sw}:${call}`;

/**
 * The ID's call by call id (keys.idCall) of a call's session and ID keys: the session key names
 * the call (`…call:<switch>:<call>`: token names hold no colon), the ID key its hash.
 */
export function idCallKeyOf(session: string, idKey: string): string {
  const bucket = bucketOfKey(idKey);
  const callKey = session.slice(keys.call(bucket, '').length);
  return keys.idCall(bucket, idHashOfKey(idKey), callKey.slice(callKey.indexOf(':') + 1));
}

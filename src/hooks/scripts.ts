/**
 * The webhook delivery's Lua scripts (lua/event_*.lua), one function each: it
 * lays out KEYS and ARGV as the script's header says and decodes the reply.
 */
import { keys } from '../redis/keys';
import { replyError } from '../redis/reply';
import type { Scripts } from '../redis/scripts';

/** Acknowledges and deletes a delivered event (and its delivery state). */
export async function eventDone(scripts: Scripts, bucket: number, entry: string): Promise<void> {
  await scripts.run('event_done', [keys.events(bucket), keys.eventsRetry(bucket)], [entry]);
}

/**
 * Keeps an event's delivery state while it waits for its next attempt; false when it is no longer
 * pending. With `idleMs`, its idle time is set to that: the next takeover takes it at once.
 */
export async function eventLater(
  scripts: Scripts,
  bucket: number,
  entry: string,
  state: string,
  idleMs?: number,
): Promise<boolean> {
  const args = idleMs === undefined ? [entry, state] : [entry, state, idleMs];
  return (await scripts.run('event_later', [keys.events(bucket), keys.eventsRetry(bucket)], args)) === 1;
}

/** Parks an event that failed for good at `urls` in the failed stream, then acknowledges and deletes it. */
export async function eventPark(
  scripts: Scripts,
  bucket: number,
  entry: string,
  now: number,
  attempts: number,
  failed: readonly { url: string; error: string }[],
): Promise<number> {
  const r = await scripts.run(
    'event_park',
    [keys.events(bucket), keys.eventsRetry(bucket), keys.eventsFailed(bucket)],
    [entry, now, attempts, ...failed.flatMap((f) => [f.url, f.error])],
  );
  if (typeof r !== 'number') throw replyError('event_park', r);
  return r;
}

/**
 * Forgets the consumers of the bucket's group that hold nothing and were idle
 * `idleMs` or longer: each gateway process leaves one behind.
 */
export async function eventForget(scripts: Scripts, bucket: number, idleMs: number): Promise<void> {
  await scripts.run('event_forget', [keys.events(bucket)], [idleMs]);
}

/** Puts a failed delivery back into the events stream for its webhook; the new entry id, or undefined when none. */
export async function eventRequeue(scripts: Scripts, bucket: number, failedEntry: string): Promise<string | undefined> {
  const r = await scripts.run('event_requeue', [keys.eventsFailed(bucket), keys.events(bucket)], [failedEntry]);
  if (r === null) return undefined;
  if (typeof r !== 'string') throw replyError('event_requeue', r);
  return r;
}

/** Emits an ID's `expiring` event when it expires after now and by `until`, once per expiry date. */
export async function eventExpiring(
  scripts: Scripts,
  bucket: number,
  idHash: string,
  now: number,
  until: number,
): Promise<boolean> {
  return (await scripts.run('event_expiring', [keys.id(bucket, idHash), keys.events(bucket)], [now, until])) === 1;
}

/**
 * Keeps events this gateway still holds queued from being taken over (their idle time set to 0);
 * returns those no longer pending at `consumer`.
 */
export async function eventKeep(
  scripts: Scripts,
  bucket: number,
  consumer: string,
  entries: string[],
): Promise<string[]> {
  return scripts.run<string[]>('event_keep', [keys.events(bucket)], [consumer, ...entries]);
}

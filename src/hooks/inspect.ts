/**
 * What `tessera events` shows and does: the events not yet delivered and the
 * deliveries parked as failed, in every bucket (counts per type, the oldest's
 * age, the entries), and putting failed deliveries back for another try.
 */
import type { RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';
import type { Scripts } from '../redis/scripts';
import type { DeliveryState } from './delivery';
import { eventId, eventTime, fieldsOf } from './payload';
import { eventRequeue } from './scripts';

export interface EventRow {
  /** pending: not delivered yet (perhaps failed and waiting for its next attempt); failed: parked. */
  state: 'pending' | 'failed';
  /** For a failed delivery: what `--retry` takes (`<bucket>-<failed entry id>`). */
  ref?: string;
  /** The event id receivers see. */
  id: string;
  type: string;
  product: string;
  idHash: string;
  ageMs: number;
  attempts: number;
  error?: string;
  url?: string;
  nextAttemptAt?: number;
}

export interface EventCounts {
  total: number;
  byType: Record<string, number>;
  oldestAgeMs: number;
}

const PAGE = 500;

async function* entries(redis: RedisClient, key: string): AsyncGenerator<[string, Record<string, string>]> {
  let from = '-';
  for (;;) {
    const page = await redis.xrange(key, from, '+', 'COUNT', PAGE);
    for (const [id, flat] of page) yield [id, fieldsOf(flat)];
    if (page.length < PAGE) return;
    from = `(${page[page.length - 1]![0]}`;
  }
}

/** Counts of every pending event and failed delivery, and the first `limit` rows of each. */
export async function eventReport(
  redis: RedisClient,
  buckets: number,
  limit: number,
  now = Date.now(),
): Promise<{ pending: EventCounts; failed: EventCounts; rows: EventRow[] }> {
  const pending: EventCounts = { total: 0, byType: {}, oldestAgeMs: 0 };
  const failed: EventCounts = { total: 0, byType: {}, oldestAgeMs: 0 };
  const rows: EventRow[] = [];
  let shownPending = 0;
  let shownFailed = 0;
  const count = (c: EventCounts, type: string, age: number): void => {
    c.total++;
    c.byType[type] = (c.byType[type] ?? 0) + 1;
    c.oldestAgeMs = Math.max(c.oldestAgeMs, age);
  };
  for (let b = 0; b < buckets; b++) {
    const states = await redis.hgetall(keys.eventsRetry(b));
    for await (const [entry, f] of entries(redis, keys.events(b))) {
      const age = now - eventTime(entry, f);
      count(pending, f.type ?? '', age);
      if (shownPending++ >= limit) continue;
      const st = states[entry] ? (JSON.parse(states[entry]) as DeliveryState) : undefined;
      rows.push({
        state: 'pending',
        id: eventId(b, entry, f),
        type: f.type ?? '',
        product: f.prod ?? '',
        idHash: f.idh ?? '',
        ageMs: age,
        attempts: st?.a ?? 0,
        ...(st ? { error: st.err, nextAttemptAt: st.next } : {}),
        ...(f.to ? { url: f.to } : {}),
      });
    }
    for await (const [entry, f] of entries(redis, keys.eventsFailed(b))) {
      const age = now - eventTime(entry, f);
      count(failed, f.type ?? '', age);
      if (shownFailed++ >= limit) continue;
      rows.push({
        state: 'failed',
        ref: `${b}-${entry}`,
        id: eventId(b, entry, f),
        type: f.type ?? '',
        product: f.prod ?? '',
        idHash: f.idh ?? '',
        ageMs: age,
        attempts: Number(f.attempts ?? 0),
        error: f.error ?? '',
        url: f.url ?? '',
      });
    }
  }
  return { pending, failed, rows };
}

const REF = /^(\d+)-(\d+-\d+)$/;

/** Puts one failed delivery (`<bucket>-<entry id>`, as the report shows it) back; false when there is none. */
export async function retryFailed(scripts: Scripts, buckets: number, ref: string): Promise<boolean> {
  const m = REF.exec(ref);
  if (!m || Number(m[1]) >= buckets) return false;
  return (await eventRequeue(scripts, Number(m[1]), m[2]!)) !== undefined;
}

/** Puts every failed delivery back; returns how many. */
export async function retryAllFailed(redis: RedisClient, scripts: Scripts, buckets: number): Promise<number> {
  let n = 0;
  for (let b = 0; b < buckets; b++) {
    const ids: string[] = [];
    for await (const [entry] of entries(redis, keys.eventsFailed(b))) ids.push(entry);
    for (const entry of ids) if ((await eventRequeue(scripts, b, entry)) !== undefined) n++;
  }
  return n;
}

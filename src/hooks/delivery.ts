/**
 * Delivers balance events to the webhooks of their product. Every gateway runs
 * one: it reads every bucket's events stream through consumer group `hooks`
 * under a consumer name of its own, POSTs each event (signed, with its event
 * id) to the product's webhooks that asked for its type, and acknowledges and
 * deletes it once every one of them answered 2xx. A failed attempt leaves the
 * event pending with its delivery state (attempts, webhooks done, next attempt)
 * in the bucket's `evtry` hash; any gateway takes over events pending longer
 * than claimIdleMs (XAUTOCLAIM) and tries them again when they are due, so a
 * gateway that dies loses nothing; once a dead gateway holds nothing its
 * consumer name is forgotten (event_forget). After maxAttempts or maxAgeMs an event is
 * parked in the bucket's failed stream for the operator (`tessera events`).
 * At least once: a receiver de-duplicates by the event id.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { HookSettings } from '../config/config';
import type { Product, Webhook } from '../catalog/schema';
import type { Metrics } from '../observability/metrics';
import type { RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';
import type { Scripts } from '../redis/scripts';
import { HOOKS_GROUP, entryTime, eventBody, eventId, fieldsOf, signature } from './payload';
import { eventDone, eventForget, eventLater, eventPark } from './scripts';

/** The products, as the gateway's catalog cache has them. */
export interface ProductSource {
  product(name: string): Product | undefined;
}

/** What a failed event remembers between attempts (JSON in the bucket's `evtry` hash). */
export interface DeliveryState {
  /** Attempts made. */
  a: number;
  /** URLs of the webhooks that already took it. */
  done: string[];
  /** Not before this (ms). */
  next: number;
  /** The last attempt's error ('<url>: <error>; …' when several webhooks failed). */
  err: string;
}

interface Job {
  bucket: number;
  entry: string;
  fields: Record<string, string>;
  /** Taken over from the pending list: it may have a delivery state. */
  claimed: boolean;
}

type StreamEntry = [string, string[] | null];

/** Buckets asked at once. */
const PARALLEL_BUCKETS = 16;
/** Entries one XAUTOCLAIM takes from a bucket. */
const CLAIM_COUNT = 50;
/** How often the consumers of gateways gone are looked for (event_forget). */
const FORGET_EVERY_MS = 60_000;

export class HookDelivery {
  /** This process's consumer name in group `hooks`. */
  readonly consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  private timer?: NodeJS.Timeout;
  private running = false;
  private stopped = false;
  private readonly abort = new AbortController();
  /** Buckets whose group is known to exist. */
  private readonly grouped = new Set<number>();
  /** `bucket/entry` of every job queued or in flight, so a claim never queues one twice. */
  private readonly busy = new Set<string>();
  private readonly queue: Job[] = [];
  /** Deliveries under way (at most HOOK_CONCURRENCY), for stop() to wait on. */
  private readonly delivering = new Set<Promise<void>>();
  private readonly cursors: string[];
  private lastClaim = 0;
  private lastForget = 0;
  private nextBucket = 0;

  constructor(
    private readonly redis: RedisClient,
    private readonly scripts: Scripts,
    private readonly catalog: ProductSource,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly s: HookSettings,
    private readonly buckets: number,
  ) {
    this.cursors = Array.from({ length: buckets }, () => '0-0');
  }

  start(): void {
    this.timer = setInterval(() => void this.pass(), this.s.pollMs);
    this.timer.unref();
  }

  /**
   * Stops reading and cuts deliveries in flight short: each event stays pending
   * for another gateway, with the webhooks that took it before the cut written
   * down (resolves once they are), so none of them is sent it again.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.abort.abort();
    this.queue.length = 0;
    await Promise.allSettled(this.delivering);
  }

  /** One round: take over idle pending events when due, read new ones, start deliveries. */
  async pass(now = Date.now()): Promise<void> {
    if (this.running || this.stopped) return;
    this.running = true;
    try {
      await this.ensureGroups();
      if (now - this.lastClaim >= Math.max(this.s.pollMs, Math.min(5000, this.s.claimIdleMs / 2))) {
        this.lastClaim = now;
        await this.claimIdle();
        await this.count();
      }
      if (now - this.lastForget >= FORGET_EVERY_MS) {
        this.lastForget = now;
        await this.eachBucket((b) => eventForget(this.scripts, b, this.s.claimIdleMs));
      }
      await this.readNew();
    } catch (err) {
      this.log.warn({ err }, 'webhook pass failed');
    } finally {
      this.running = false;
    }
    this.pump();
  }

  private async eachBucket(fn: (bucket: number) => Promise<void>, until = (): boolean => false): Promise<void> {
    const start = this.nextBucket;
    this.nextBucket = (this.nextBucket + 1) % this.buckets;
    for (let i = 0; i < this.buckets && !until(); i += PARALLEL_BUCKETS) {
      const chunk: Promise<void>[] = [];
      for (let j = i; j < Math.min(i + PARALLEL_BUCKETS, this.buckets); j++) chunk.push(fn((start + j) % this.buckets));
      await Promise.all(chunk);
    }
  }

  /** XGROUP CREATE … 0 MKSTREAM on every bucket not known to have the group: events written before are delivered too. */
  private async ensureGroups(): Promise<void> {
    if (this.grouped.size === this.buckets) return;
    await this.eachBucket(async (b) => {
      if (this.grouped.has(b)) return;
      try {
        await this.redis.call('XGROUP', 'CREATE', keys.events(b), HOOKS_GROUP, '0', 'MKSTREAM');
      } catch (err) {
        if (!String((err as Error).message).startsWith('BUSYGROUP')) throw err;
      }
      this.grouped.add(b);
    });
  }

  /** The room left for new jobs: twice the concurrency, so the next ones are at hand when one finishes. */
  private room(): number {
    return 2 * this.s.concurrency - this.queue.length - this.delivering.size;
  }

  private async readNew(): Promise<void> {
    await this.eachBucket(
      async (b) => {
        const room = this.room();
        if (room <= 0) return;
        let reply: unknown;
        try {
          reply = await this.redis.xreadgroup(
            'GROUP',
            HOOKS_GROUP,
            this.consumer,
            'COUNT',
            room,
            'STREAMS',
            keys.events(b),
            '>',
          );
        } catch (err) {
          // The stream (and its group) went away: created again on the next pass.
          if (String((err as Error).message).startsWith('NOGROUP')) this.grouped.delete(b);
          else throw err;
          return;
        }
        const streams = reply as [string, StreamEntry[]][] | null;
        for (const [, entries] of streams ?? []) for (const e of entries) this.enqueue(b, e, false);
      },
      () => this.room() <= 0,
    );
  }

  /** Takes over events pending longer than claimIdleMs at any consumer (a dead gateway, or one waiting to retry). */
  private async claimIdle(): Promise<void> {
    await this.eachBucket(async (b) => {
      let reply: unknown;
      try {
        reply = await this.redis.xautoclaim(
          keys.events(b),
          HOOKS_GROUP,
          this.consumer,
          this.s.claimIdleMs,
          this.cursors[b]!,
          'COUNT',
          CLAIM_COUNT,
        );
      } catch (err) {
        if (String((err as Error).message).startsWith('NOGROUP')) this.grouped.delete(b);
        else throw err;
        return;
      }
      const [cursor, entries] = reply as [string, (StreamEntry | null)[]];
      this.cursors[b] = cursor;
      for (const e of entries) if (e && e[1]) this.enqueue(b, e, true);
    });
  }

  /** Events not yet delivered and deliveries parked, in every bucket, into the gauges. */
  private async count(): Promise<void> {
    let pending = 0;
    let failed = 0;
    await this.eachBucket(async (b) => {
      const [p, f] = await Promise.all([this.redis.xlen(keys.events(b)), this.redis.xlen(keys.eventsFailed(b))]);
      pending += p;
      failed += f;
    });
    this.metrics.webhookPending.set(pending);
    this.metrics.webhookFailed.set(failed);
  }

  private enqueue(bucket: number, [entry, flat]: StreamEntry, claimed: boolean): void {
    const k = `${bucket}/${entry}`;
    if (!flat || this.busy.has(k) || this.stopped) return;
    this.busy.add(k);
    this.queue.push({ bucket, entry, fields: fieldsOf(flat), claimed });
  }

  private pump(): void {
    while (this.delivering.size < this.s.concurrency && this.queue.length > 0 && !this.stopped) {
      const job = this.queue.shift()!;
      const delivery = this.deliver(job)
        .catch((err: unknown) => {
          if (!this.stopped) this.log.warn({ err, bucket: job.bucket, entry: job.entry }, 'webhook delivery failed');
        })
        .finally(() => {
          this.delivering.delete(delivery);
          this.busy.delete(`${job.bucket}/${job.entry}`);
          this.pump();
        });
      this.delivering.add(delivery);
    }
  }

  /**
   * The product's webhooks that take the event; for one the operator put back
   * (`to`: the webhook it failed at), that webhook, or, when its URL changed
   * since (the operator fixed it, then retried), every webhook of the product
   * that takes the event: those that had it may get it twice, which receivers
   * tell by its event id.
   */
  private hooksFor(f: Readonly<Record<string, string>>): Webhook[] {
    const hooks = (this.catalog.product(f.prod ?? '')?.webhooks ?? []).filter((h) =>
      (h.events as readonly string[]).includes(f.type ?? ''),
    );
    const pinned = f.to === undefined ? [] : hooks.filter((h) => h.url === f.to);
    return pinned.length > 0 ? pinned : hooks;
  }

  private async deliver(job: Job): Promise<void> {
    const { bucket, entry, fields } = job;
    const hooks = this.hooksFor(fields);
    if (hooks.length === 0) {
      // No webhook wants it (now): nothing to deliver, nothing to keep.
      if (fields.to !== undefined)
        this.log.warn({ event: eventId(bucket, entry, fields) }, 'retried delivery dropped: no webhook takes it now');
      await eventDone(this.scripts, bucket, entry);
      return;
    }
    let state: DeliveryState = { a: 0, done: [], next: 0, err: '' };
    if (job.claimed) {
      const raw = await this.redis.hget(keys.eventsRetry(bucket), entry);
      if (raw) state = JSON.parse(raw) as DeliveryState;
    }
    if (state.next > Date.now()) return; // not due: it stays pending, and is claimed again later
    const todo = hooks.filter((h) => !state.done.includes(h.url));
    const id = eventId(bucket, entry, fields);
    const body = eventBody(bucket, entry, fields);
    const errors = await Promise.all(todo.map((h) => this.post(h, id, fields.type ?? '', body)));
    const failed = todo.filter((_, i) => errors[i] !== undefined);
    if (this.stopped && failed.length > 0) {
      // Cut short by this gateway's stop, not failed: no attempt is counted, and the webhooks that
      // took it are written down, so the gateway that takes it over sends it to the others only.
      const took = todo.filter((h) => !failed.includes(h)).map((h) => h.url);
      if (took.length > 0)
        await eventLater(this.scripts, bucket, entry, JSON.stringify({ ...state, done: [...state.done, ...took] }));
      return;
    }
    const why = failed.map((h) => ({ url: h.url, error: errors[todo.indexOf(h)]! }));
    const delivered = todo.length - failed.length;
    if (delivered > 0) this.metrics.webhooks.inc({ outcome: 'delivered' }, delivered);
    if (failed.length === 0) {
      await eventDone(this.scripts, bucket, entry);
      return;
    }
    const now = Date.now();
    const attempts = state.a + 1;
    // What the operator sees of a pending event: each failed webhook's error, named when there are several.
    const err = why.length === 1 ? why[0]!.error : why.map((w) => `${w.url}: ${w.error}`).join('; ');
    // Age counts from this entry: an event the operator put back gets a full round of attempts.
    if (attempts >= this.s.maxAttempts || now - entryTime(entry) >= this.s.maxAgeMs) {
      await eventPark(this.scripts, bucket, entry, now, attempts, why);
      this.metrics.webhooks.inc({ outcome: 'failed' }, failed.length);
      this.log.warn({ event: id, attempts, err, urls: failed.map((h) => h.url) }, 'webhook delivery parked as failed');
      return;
    }
    const next: DeliveryState = {
      a: attempts,
      done: [...state.done, ...todo.filter((h) => !failed.includes(h)).map((h) => h.url)],
      next: now + Math.min(this.s.retryBaseMs * 2 ** (attempts - 1), this.s.retryMaxMs),
      err,
    };
    await eventLater(this.scripts, bucket, entry, JSON.stringify(next));
    this.metrics.webhooks.inc({ outcome: 'retried' }, failed.length);
  }

  /** One POST; undefined when the receiver answered 2xx, else what went wrong. */
  private async post(hook: Webhook, id: string, type: string, body: string): Promise<string | undefined> {
    // A timer of our own, not AbortSignal.timeout: AbortSignal.any holds its sources weakly, and a
    // timeout signal the garbage collector took never fires (nodejs/node#55428): the POST to a
    // receiver that never answers would then hold its HOOK_CONCURRENCY slot for good.
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(new DOMException('timeout', 'TimeoutError')), this.s.timeoutMs);
    try {
      const res = await fetch(hook.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'Tessera-Webhooks/1',
          'tessera-event-id': id,
          'tessera-event-type': type,
          'tessera-signature': signature(hook.secret, Math.floor(Date.now() / 1000), body),
        },
        body,
        redirect: 'manual',
        signal: AbortSignal.any([this.abort.signal, timeout.signal]),
      });
      // The answer's body is not read: the status says it all, and the connection is freed.
      await res.body?.cancel().catch(() => undefined);
      return res.status >= 200 && res.status < 300 ? undefined : `HTTP ${res.status}`;
    } catch (err) {
      const e = err as Error;
      return e.name === 'TimeoutError' ? 'timeout' : ((e.cause as Error | undefined)?.message ?? e.message);
    } finally {
      clearTimeout(timer);
    }
  }
}

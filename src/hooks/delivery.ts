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
 * consumer name is forgotten (event_forget). An event that failed here is held
 * here (kept pending, as a queued one is) and queued again when its next attempt
 * is due, so its retry does not wait for a takeover round to reach it behind
 * other receivers' deferred events. After maxAttempts or maxAgeMs an event is
 * parked in the bucket's failed stream for the operator (`tessera events`).
 * At least once: a receiver de-duplicates by the event id.
 *
 * One receiver cannot hold up the others (receivers.ts), yet one alone may use
 * every slot but one and the whole queue (work-conserving, as fair schedulers
 * are): the next free slot goes to the receiver with the fewest POSTs in flight;
 * a full queue is still read now and then, and an event for a receiver with
 * fewer queued takes the place of one of the receiver with the most, which is
 * deferred (written back without an attempt, taken over again at the next
 * pass); while a receiver's breaker is open (it keeps failing) its events are
 * deferred at once, so the queue keeps moving and new events are read.
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
import { Receivers } from './receivers';
import { eventDone, eventForget, eventKeep, eventLater, eventPark } from './scripts';

/** The products, as the gateway's catalog cache has them. */
export interface ProductSource {
  product(name: string): Product | undefined;
  readonly products: Product[];
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
  /** The webhooks that take it, as it was read (each counted in the receivers' loads while it is queued or in flight). */
  hooks: Webhook[];
  /** When its pending entry was last read, taken over or kept (eventKeep) by this gateway (ms). */
  kept: number;
  /** Failed here and held for its next attempt, due then (ms). */
  retryAt?: number;
}

/** How a job goes now: POSTs to `send`, the other webhooks' deferred until then (ms; 0: the next takeover). */
interface Plan {
  send: Webhook[];
  held: Map<string, number>;
}

type StreamEntry = [string, string[] | null];

/** Buckets asked at once. */
const PARALLEL_BUCKETS = 16;
/** Entries one XAUTOCLAIM takes from a bucket. */
const CLAIM_COUNT = 50;
/** How often the consumers of gateways gone are looked for (event_forget). */
const FORGET_EVERY_MS = 60_000;
/** Failed events a gateway holds for their next attempt; more are left to the takeover rounds. */
const RETRIES_HELD = 1000;

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
  /**
   * Events that failed here, held (still pending at this consumer, kept like queued ones) until
   * their next attempt is due, then queued again: a takeover round would reach them only after
   * every event pending before them, a slow receiver's deferred backlog included.
   */
  private readonly retries: Job[] = [];
  /** Deliveries under way (at most HOOK_CONCURRENCY), for stop() to wait on. */
  private readonly delivering = new Set<Promise<void>>();
  /** Jobs whose every webhook defers them, being written back (no slot taken). */
  private readonly deferring = new Set<Promise<void>>();
  private readonly receivers: Receivers;
  private readonly cursors: string[];
  private lastClaim = 0;
  /**
   * Events were deferred for their receiver's share of the queue: take over again at the next pass,
   * not a few seconds later, so a receiver's backlog drains at the pace it answers.
   */
  private claimSoon = false;
  /** The last takeover took all it asked of some bucket: more may be waiting to be taken over. */
  private claimedMore = false;
  /** The last read filled what it asked for: more is waiting, read again as soon as there is room. */
  private more = false;
  /** When a full queue was last read for the events of other receivers (readFull). */
  private lastFull = 0;
  /** The last read of the full queue found another receiver's event waiting: read it again at once. */
  private othersWaiting = false;
  /** Where the next read of the full queue starts. */
  private fullBucket = 0;
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
    this.receivers = new Receivers(s, metrics, log);
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
    for (const job of this.queue.splice(0)) for (const h of job.hooks) this.receivers.leave(h.url);
    // Held retries stay pending at this consumer: another gateway takes them over once idle.
    this.retries.splice(0);
    await Promise.allSettled([...this.delivering, ...this.deferring]);
  }

  /** One round: take over idle pending events when due, read new ones, start deliveries. */
  async pass(now = Date.now()): Promise<void> {
    if (this.running || this.stopped) return;
    this.running = true;
    try {
      await this.ensureGroups();
      await this.keepQueued(now);
      await this.retryDue(now);
      const due = now - this.lastClaim >= Math.max(this.s.pollMs, Math.min(5000, this.s.claimIdleMs / 2));
      if (due || this.claimSoon) {
        this.claimSoon = false;
        await this.claimIdle();
        if (due) {
          this.lastClaim = now;
          await this.count();
        }
      }
      if (now - this.lastForget >= FORGET_EVERY_MS) {
        this.lastForget = now;
        await this.eachBucket((b) => eventForget(this.scripts, b, this.s.claimIdleMs));
        this.receivers.forgetAllBut(
          new Set(this.catalog.products.flatMap((p) => (p.webhooks ?? []).map((w) => w.url))),
        );
      }
      await this.readNew();
      if (this.room() <= 0 && (this.othersWaiting || now - this.lastFull >= this.s.pollMs)) {
        this.lastFull = now;
        await this.readFull();
      }
    } catch (err) {
      this.log.warn({ err }, 'webhook pass failed');
    } finally {
      this.running = false;
    }
    this.pump();
    this.again();
  }

  /**
   * Another pass at once when more events wait (or deferred ones are due) and half the room is
   * free, or another receiver's events wait behind a full queue: a backlog is read at the pace it
   * is delivered, not once per HOOK_POLL_MS.
   */
  private again(): void {
    if (this.running || this.stopped) return;
    const room = this.room() >= this.s.concurrency;
    if ((room && (this.more || this.claimSoon)) || (this.othersWaiting && this.room() <= 0)) {
      this.more = false;
      this.running = true; // one pass at a time, even before it starts
      setImmediate(() => {
        this.running = false;
        void this.pass();
      });
    }
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

  /**
   * Events wait in the queue for their receiver's share of the slots, with a cap per receiver far
   * longer than HOOK_CLAIM_IDLE_MS: those queued a third of it are kept pending here, or another
   * gateway would take them over and POST them while this one still holds them. One taken over
   * anyway (a pass held up) leaves the queue: the gateway that has it delivers it.
   */
  private async keepQueued(now: number): Promise<void> {
    const old = [...this.queue, ...this.retries].filter((job) => now - job.kept >= this.s.claimIdleMs / 3);
    for (const job of await this.keep(old, now)) {
      const i = this.queue.indexOf(job);
      if (i >= 0) {
        this.queue.splice(i, 1);
        for (const h of job.hooks) this.receivers.leave(h.url);
      } else {
        const r = this.retries.indexOf(job);
        if (r < 0) continue;
        this.retries.splice(r, 1);
      }
      this.busy.delete(`${job.bucket}/${job.entry}`);
    }
  }

  /** Keeps the jobs' events pending at this consumer (eventKeep, one call per bucket); the jobs no longer pending here. */
  private async keep(jobs: Job[], now: number): Promise<Job[]> {
    const byBucket = new Map<number, Job[]>();
    for (const job of jobs) byBucket.set(job.bucket, [...(byBucket.get(job.bucket) ?? []), job]);
    const lost: Job[] = [];
    await Promise.all(
      [...byBucket].map(async ([b, group]) => {
        const entries = group.map((j) => j.entry);
        const gone = new Set(await eventKeep(this.scripts, b, this.consumer, entries));
        for (const job of group) {
          job.kept = now;
          if (gone.has(job.entry)) lost.push(job);
        }
      }),
    );
    return lost;
  }

  /**
   * Queues the held retries that are due, once kept pending here (the keep tells one taken over by
   * another gateway, which delivers it: dropped here). Into a full queue each takes the place of an
   * event of the receiver with the most queued, as an event read into a full queue does.
   */
  private async retryDue(now: number): Promise<void> {
    const due = this.retries.filter((job) => job.retryAt! <= now);
    if (due.length === 0) return;
    // Held until kept: a keep that fails (Redis timing out) leaves them for the next pass. Taken out
    // before, they would stay busy here, never queued again: with no other gateway, never sent.
    const lost = new Set(await this.keep(due, now));
    for (const job of due) {
      const i = this.retries.indexOf(job);
      if (i >= 0) this.retries.splice(i, 1);
      job.retryAt = undefined;
      if (lost.has(job) || this.stopped) this.busy.delete(`${job.bucket}/${job.entry}`);
      else this.admit(job, this.room() <= 0);
    }
    this.pump();
  }

  /** The room left for new jobs: twice the concurrency, so the next ones are at hand when one finishes. */
  private room(): number {
    return 2 * this.s.concurrency - this.queue.length - this.delivering.size - this.deferring.size;
  }

  /** What one bucket's read may take: a share of the room, as PARALLEL_BUCKETS are read at once. */
  private readCount(): number {
    const room = this.room();
    return room <= 0 ? 0 : Math.ceil(room / Math.min(PARALLEL_BUCKETS, this.buckets));
  }

  private async readNew(): Promise<void> {
    await this.eachBucket(
      async (b) => {
        const room = this.readCount();
        if (room <= 0) return;
        const entries = await this.read(b, room);
        if (entries.length >= room) this.more = true;
        for (const e of entries) this.enqueue(b, e, false);
        this.pump();
      },
      () => this.room() <= 0,
    );
    // Cut short by the room: the buckets not read may hold more.
    if (this.room() <= 0) this.more = true;
  }

  /**
   * The queue is full: reads one event from each bucket in turn (as many as there are events
   * queued), so another receiver's events are not left unread behind one receiver's backlog. An
   * event takes the place of a queued one of the receiver with the most (deferred), or is
   * deferred itself when its receiver has as many (enqueue).
   */
  private async readFull(): Promise<void> {
    this.othersWaiting = false;
    let budget = this.queue.length;
    let i = 0;
    while (i < this.buckets && budget > 0 && !this.stopped) {
      const n = Math.min(PARALLEL_BUCKETS, this.buckets - i, budget);
      const chunk = Array.from({ length: n }, (_, j) => (this.fullBucket + i + j) % this.buckets);
      const read = await Promise.all(chunk.map((b) => this.read(b, 1)));
      chunk.forEach((b, j) => {
        for (const e of read[j]!) {
          budget--;
          this.enqueue(b, e, false, true);
        }
      });
      this.pump();
      i += n;
    }
    this.fullBucket = (this.fullBucket + i) % this.buckets;
  }

  /** New events of a bucket, at most `count`. */
  private async read(b: number, count: number): Promise<StreamEntry[]> {
    let reply: unknown;
    try {
      reply = await this.redis.xreadgroup(
        'GROUP',
        HOOKS_GROUP,
        this.consumer,
        'COUNT',
        count,
        'STREAMS',
        keys.events(b),
        '>',
      );
    } catch (err) {
      // The stream (and its group) went away: created again on the next pass.
      if (String((err as Error).message).startsWith('NOGROUP')) this.grouped.delete(b);
      else throw err;
      return [];
    }
    const streams = reply as [string, StreamEntry[]][] | null;
    return streams?.[0]?.[1] ?? [];
  }

  /** Takes over events pending longer than claimIdleMs at any consumer (a dead gateway, or one waiting to retry). */
  private async claimIdle(): Promise<void> {
    this.claimedMore = false;
    await this.eachBucket(
      async (b) => {
        // Claimed is taken: only what there is room for, or the rest would wait idle at this gateway.
        const room = Math.min(CLAIM_COUNT, this.readCount());
        if (room <= 0) return;
        let reply: unknown;
        try {
          reply = await this.redis.xautoclaim(
            keys.events(b),
            HOOKS_GROUP,
            this.consumer,
            this.s.claimIdleMs,
            this.cursors[b]!,
            'COUNT',
            room,
          );
        } catch (err) {
          if (String((err as Error).message).startsWith('NOGROUP')) this.grouped.delete(b);
          else throw err;
          return;
        }
        const [cursor, entries] = reply as [string, (StreamEntry | null)[]];
        this.cursors[b] = cursor;
        if (entries.length >= room || cursor !== '0-0') this.claimedMore = true;
        for (const e of entries) if (e && e[1]) this.enqueue(b, e, true);
        this.pump();
      },
      () => this.room() <= 0,
    );
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

  /** Queues an event read (`full`: by readFull, into a full queue). */
  private enqueue(bucket: number, [entry, flat]: StreamEntry, claimed: boolean, full = false): void {
    const k = `${bucket}/${entry}`;
    if (!flat || this.busy.has(k) || this.stopped) return;
    this.busy.add(k);
    this.admit({ bucket, entry, fields: fieldsOf(flat), claimed, hooks: [], kept: Date.now() }, full);
  }

  /** Puts a job (busy already) in the queue; `full`: into a full queue, where it may displace another. */
  private admit(job: Job, full: boolean): void {
    job.hooks = this.hooksFor(job.fields);
    const weight = this.weight(job);
    for (const h of job.hooks) this.receivers.enter(h.url);
    if (full && this.room() <= 0) {
      // Read into a full queue (readFull): the receiver with the most queued makes room for one with fewer.
      const victim = this.mostQueued();
      if (victim === undefined || this.weight(victim) <= weight + 1) {
        this.defer(job);
        return;
      }
      this.queue.splice(this.queue.indexOf(victim), 1);
      this.defer(victim);
      this.othersWaiting = true;
    }
    this.queue.push(job);
  }

  /** The load of a job's busiest receiver: its events queued or in flight. */
  private weight(job: Job): number {
    return Math.max(0, ...job.hooks.map((h) => this.receivers.load(h.url)));
  }

  /** The queued job (the latest of those) of the receiver with the most events queued or in flight. */
  private mostQueued(): Job | undefined {
    let best: Job | undefined;
    let most = 0;
    for (const job of this.queue) {
      const w = this.weight(job);
      if (w >= most) [best, most] = [job, w];
    }
    return best;
  }

  /** Writes a queued job back without a POST or an attempt: taken over again at the next pass (no slot). */
  private defer(job: Job): void {
    this.run(job, { send: [], held: new Map(job.hooks.map((h) => [h.url, 0])) }, this.deferring);
  }

  /**
   * Starts what the queue allows: a job whose every receiver defers it (breaker open) is written
   * back at once, without a slot; each free slot goes to the job whose receivers have the fewest
   * POSTs in flight (the first queued of those), so a receiver alone may use the slots, and another
   * with an event waiting gets the next one free.
   */
  private pump(): void {
    if (this.stopped) return;
    if (this.delivering.size >= this.s.concurrency && !this.receivers.anyOpen()) return;
    const now = Date.now();
    for (;;) {
      let best: { job: Job; plan: Plan; busy: number } | undefined;
      for (const job of [...this.queue]) {
        const plan = this.plan(job, now);
        if (plan === undefined) continue;
        if (plan.send.length === 0 && plan.held.size > 0) {
          this.queue.splice(this.queue.indexOf(job), 1);
          this.run(job, plan, this.deferring);
          continue;
        }
        if (this.delivering.size >= this.s.concurrency) continue;
        const busy = Math.max(0, ...plan.send.map((h) => this.receivers.busy(h.url)));
        if (best === undefined || busy < best.busy) best = { job, plan, busy };
      }
      if (best === undefined) return;
      this.queue.splice(this.queue.indexOf(best.job), 1);
      this.run(best.job, best.plan, this.delivering);
    }
  }

  /** How the job goes now, or undefined while one of its receivers has its most POSTs in flight. */
  private plan(job: Job, now: number): Plan | undefined {
    const plan: Plan = { send: [], held: new Map() };
    for (const h of job.hooks) {
      const gate = this.receivers.gate(h.url, now);
      if (gate === 'wait') return undefined;
      if (gate === 'send') plan.send.push(h);
      else plan.held.set(h.url, gate);
    }
    return plan;
  }

  private run(job: Job, plan: Plan, lane: Set<Promise<void>>): void {
    const probes = plan.send.map((h) => this.receivers.start(h.url));
    const p = this.deliver(job, plan)
      .catch((err: unknown) => {
        if (!this.stopped) this.log.warn({ err, bucket: job.bucket, entry: job.entry }, 'webhook delivery failed');
      })
      .finally(() => {
        plan.send.forEach((h, i) => this.receivers.end(h.url, probes[i]!));
        for (const h of job.hooks) this.receivers.leave(h.url);
        lane.delete(p);
        // Failed here: held for its next attempt, still pending at this consumer (busy).
        if (job.retryAt !== undefined && !this.stopped) this.retries.push(job);
        else this.busy.delete(`${job.bucket}/${job.entry}`);
        this.pump();
        this.again();
      });
    lane.add(p);
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

  private async deliver(job: Job, plan: Plan): Promise<void> {
    const { bucket, entry, fields, hooks } = job;
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
    // Deferred: their receiver is failing (its breaker open) or has its share of the queue.
    const held = todo.filter((h) => plan.held.has(h.url));
    const send = todo.filter((h) => !plan.held.has(h.url));
    const id = eventId(bucket, entry, fields);
    const body = eventBody(bucket, entry, fields);
    const errors = await Promise.all(send.map((h) => this.post(h, id, fields.type ?? '', body)));
    const failed = send.filter((_, i) => errors[i] !== undefined);
    const took = send.filter((h) => !failed.includes(h)).map((h) => h.url);
    for (const u of took) this.receivers.succeeded(u);
    // Taken over and delivered while more waits (a receiver back with its deferred backlog): take
    // over again as soon as there is room, at the pace it answers, not 2 × HOOK_CONCURRENCY a round.
    if (job.claimed && took.length > 0 && this.claimedMore) this.claimSoon = true;
    if (this.stopped && failed.length > 0) {
      // Cut short by this gateway's stop, not failed: no attempt is counted, and the webhooks that
      // took it are written down, so the gateway that takes it over sends it to the others only.
      if (took.length > 0)
        await eventLater(this.scripts, bucket, entry, JSON.stringify({ ...state, done: [...state.done, ...took] }));
      return;
    }
    const now = Date.now();
    for (const h of failed) this.receivers.failed(h.url, errors[send.indexOf(h)]!, now);
    if (took.length > 0) this.metrics.webhooks.inc({ outcome: 'delivered' }, took.length);
    if (failed.length === 0 && held.length === 0) {
      await eventDone(this.scripts, bucket, entry);
      return;
    }
    const why = [
      ...failed.map((h) => ({ url: h.url, error: errors[send.indexOf(h)]! })),
      ...held.map((h) => ({ url: h.url, error: this.receivers.lastError(h.url) ?? 'not tried: receiver busy' })),
    ];
    // A deferral is no attempt: an event is parked for it only once it is too old.
    const attempts = state.a + (failed.length > 0 ? 1 : 0);
    // What the operator sees of a pending event: each failed webhook's error, named when there are several.
    const err = why.length === 1 ? why[0]!.error : why.map((w) => `${w.url}: ${w.error}`).join('; ');
    // Age counts from this entry: an event the operator put back gets a full round of attempts.
    if (attempts >= this.s.maxAttempts || now - entryTime(entry) >= this.s.maxAgeMs) {
      await eventPark(this.scripts, bucket, entry, now, attempts, why);
      this.metrics.webhooks.inc({ outcome: 'failed' }, why.length);
      this.log.warn({ event: id, attempts, err, urls: why.map((w) => w.url) }, 'webhook delivery parked as failed');
      return;
    }
    const retry = failed.length > 0 ? now + Math.min(this.s.retryBaseMs * 2 ** (attempts - 1), this.s.retryMaxMs) : 0;
    const due = Math.max(retry, ...held.map((h) => plan.held.get(h.url)!));
    const next: DeliveryState = { a: attempts, done: [...state.done, ...took], next: due || now, err };
    // Deferred only for its receivers' share of the queue: due again at the next takeover, not after claimIdleMs.
    const soon = due === 0;
    if (soon) this.claimSoon = true;
    const pending = await eventLater(
      this.scripts,
      bucket,
      entry,
      JSON.stringify(next),
      soon ? this.s.claimIdleMs : undefined,
    );
    // Failed here: held for its attempt when due (run), unless too many are held already.
    if (pending && failed.length > 0 && !soon && this.retries.length < RETRIES_HELD) {
      job.claimed = true;
      job.retryAt = next.next;
    }
    if (failed.length > 0) this.metrics.webhooks.inc({ outcome: 'retried' }, failed.length);
    if (held.length > 0) this.metrics.webhooks.inc({ outcome: 'deferred' }, held.length);
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

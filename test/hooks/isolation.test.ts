/**
 * Webhook receivers are isolated from each other: one that never answers, with
 * hundreds of events pending, or one that answers slowly, does not hold up
 * another product's events; the dead one's events are deferred without counting
 * attempts while its breaker is open and all delivered once it answers again;
 * a deferred event is still parked once it is too old; a receiver alone uses
 * every slot but one, and its burst goes out at the pace it answers; a failed
 * event is tried again when due by the gateway it failed at, not behind another
 * receiver's backlog, kept from the other gateways meanwhile and taken over
 * once that gateway stops, and tried again should keeping it fail once.
 */
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import type { TalkProduct } from '../../src/catalog/schema';
import { putProducts } from '../../src/catalog/store';
import type { Gateway } from '../../src/gateway/server';
import type { DeliveryState } from '../../src/hooks/delivery';
import { keys } from '../../src/redis/keys';
import type { Scripts } from '../../src/redis/scripts';
import { gateway, seedCatalog, startHarness, talkProduct, type Harness } from '../support/harness';
import { metricsText, sample } from '../support/metrics';
import { Receiver } from '../support/receiver';
import { streamFields } from '../support/redis';
import { until } from '../support/wait';

const SECRET = 'whsec-0123456789abcdef';
const TIMEOUT_MS = 500;
/**
 * How long a healthy product's event may take, whatever another receiver does: a few timeouts,
 * generous for a loaded CI machine; without isolation it waits for the other's backlog (10+ s).
 */
const PROMPT_MS = 6 * TIMEOUT_MS;

let h: Harness;
const receivers: Receiver[] = [];
const gateways: Gateway[] = [];

beforeAll(async () => {
  h = await startHarness({
    HOOK_POLL_MS: '50',
    HOOK_TIMEOUT_MS: String(TIMEOUT_MS),
    HOOK_CLAIM_IDLE_MS: '1500',
    HOOK_RETRY_BASE_MS: '300',
    HOOK_RETRY_MAX_MS: '600',
    HOOK_MAX_ATTEMPTS: '6',
    EXPIRING_SWEEP_MS: '3600000',
  });
  await seedCatalog(h);
});
afterAll(async () => {
  for (const g of gateways) await g.close();
  for (const r of receivers) await r.close();
  await h?.stop();
});

async function receiver(): Promise<Receiver> {
  const r = await Receiver.start();
  receivers.push(r);
  return r;
}

/** A gateway (HOOK_CONCURRENCY 16: 15 POSTs per receiver at most) that knows these products, each with its receiver for top-ups. */
async function gwWith(products: [string, Receiver][], hooks: Partial<Harness['cfg']['hooks']> = {}): Promise<Gateway> {
  const ps: TalkProduct[] = products.map(([name, r]) =>
    talkProduct({ name, webhooks: [{ url: r.url, events: ['topup'], secret: SECRET }] }),
  );
  await putProducts(h.ctx.redis, ps);
  const g = await gateway(h, { hooks: { ...h.cfg.hooks, concurrency: 16, perReceiver: 15, ...hooks } });
  gateways.push(g);
  await until(() => ps.every((p) => g.catalog.product(p.name) !== undefined));
  return g;
}

async function closeGw(g: Gateway): Promise<void> {
  gateways.splice(gateways.indexOf(g), 1);
  await g.close();
}

/** `n` top-up events of `product`, spread over the buckets, as the top-up script writes them. */
async function topups(product: string, n: number, from = 0): Promise<void> {
  for (let i = 0; i < n; i++)
    await h.r.xadd(
      keys.events((from + i) % h.cfg.buckets),
      '*',
      'type',
      'topup',
      'idh',
      `${product}-${from + i}`,
      'prod',
      product,
      'at',
      String(Date.now()),
      'bal',
      '1',
      'amount',
      '1',
      'source',
      'operator',
      'ref',
      'iso',
      'exp',
      '0',
    );
}

async function undelivered(): Promise<number> {
  let n = 0;
  for (let b = 0; b < h.cfg.buckets; b++) n += await h.r.xlen(keys.events(b));
  return n;
}

async function parked(): Promise<Record<string, string>[]> {
  const out: Record<string, string>[] = [];
  for (let b = 0; b < h.cfg.buckets; b++)
    for (const [, f] of await h.r.xrange(keys.eventsFailed(b), '-', '+')) out.push(streamFields(f));
  return out;
}

async function pendingStates(): Promise<DeliveryState[]> {
  const out: DeliveryState[] = [];
  for (let b = 0; b < h.cfg.buckets; b++)
    for (const v of await h.r.hvals(keys.eventsRetry(b))) out.push(JSON.parse(v) as DeliveryState);
  return out;
}

/** Top-ups of `product`, one at a time: each must reach `r` within PROMPT_MS. */
async function eachPrompt(product: string, r: Receiver, n: number): Promise<void> {
  for (let k = 0; k < n; k++) {
    const before = r.delivered().size;
    await topups(product, 1, 1000 + k * 7);
    await until(() => r.delivered().size > before, PROMPT_MS, 20, `${product} event ${k} within ${PROMPT_MS} ms`);
  }
}

/**
 * A receiver answering in 300 ms with `events` pending, already POSTed to, and another one, each
 * the webhook of its product, at one gateway.
 */
async function slowBacklog(
  names: [string, string],
  events: number,
): Promise<{ slow: Receiver; fine: Receiver; g: Gateway }> {
  const [slow, fine] = [await receiver(), await receiver()];
  slow.delayMs = 300;
  const g = await gwWith([
    [names[0], slow],
    [names[1], fine],
  ]);
  await topups(names[0], events);
  await until(() => slow.received.length >= 4, 10_000, 20, 'POSTs to the slow receiver');
  return { slow, fine, g };
}

it('a receiver that never answers, with hundreds of events pending, does not hold up another product; once back it gets every one, none parked for being deferred', async () => {
  const [dead, fine] = [await receiver(), await receiver()];
  dead.fallback = 'hang';
  const EVENTS = 300;
  // Attempts past counting: no event is parked for the breaker's probes landing on it (which ones
  // they take is the queue's order, not a test's to count), so all must come through.
  const g = await gwWith(
    [
      ['iso-dead', dead],
      ['iso-fine', fine],
    ],
    { maxAttempts: 1000 },
  );
  await topups('iso-dead', EVENTS);
  await until(() => dead.received.length >= 3, 10_000, 20, 'POSTs to the silent receiver');
  await eachPrompt('iso-fine', fine, 8);

  // Its breaker is open: its events are deferred, each about twice here, and no deferral counts an attempt.
  await until(
    async () =>
      (sample(await metricsText(g.port), 'tessera_webhook_deliveries_total', { outcome: 'deferred' }) ?? 0) >=
      EVENTS * 2,
    60_000,
    200,
    'deferrals',
  );
  const text = await metricsText(g.port);
  expect(sample(text, 'tessera_webhook_receivers_open')).toBe(1);
  expect(await parked()).toEqual([]);
  // Only the POSTs made count: one per attempt, far fewer than the deferrals.
  const states = await pendingStates();
  expect(states.reduce((n, s) => n + s.a, 0)).toBeLessThanOrEqual(dead.received.length);
  expect(states.filter((s) => s.a === 0).length).toBeGreaterThan(EVENTS / 2);
  await eachPrompt('iso-fine', fine, 3);

  dead.fallback = 'ok';
  await until(
    async () => dead.delivered().size === EVENTS && (await undelivered()) === 0,
    60_000,
    100,
    'every event of the receiver back',
  );
  expect(await parked()).toEqual([]);
  expect(sample(await metricsText(g.port), 'tessera_webhook_receivers_open')).toBe(0);
  await closeGw(g);
}, 120_000);

it('a slow receiver that answers 2xx does not hold up another product, and gets every event', async () => {
  const EVENTS = 300;
  const { slow, fine, g } = await slowBacklog(['iso-slow', 'iso-quick'], EVENTS);
  await eachPrompt('iso-quick', fine, 8);
  await until(
    async () => slow.delivered().size === EVENTS && (await undelivered()) === 0,
    90_000,
    100,
    'every event of the slow receiver',
  );
  // It had the slots the other did not need, never all of them.
  expect(slow.maxOpen).toBeGreaterThan(4);
  expect(slow.maxOpen).toBeLessThanOrEqual(15);
  expect(await parked()).toEqual([]);
  expect(sample(await metricsText(g.port), 'tessera_webhook_receivers_open')).toBe(0);
  await closeGw(g);
}, 120_000);

it('an event deferred past HOOK_MAX_AGE_MS is parked with the receiver’s last error, never tried', async () => {
  const dead = await receiver();
  dead.fallback = 'hang';
  const EVENTS = 40;
  const g = await gwWith([['iso-gone', dead]], { maxAgeMs: 2000, maxAttempts: 1000 });
  await topups('iso-gone', EVENTS);
  await until(async () => (await parked()).length === EVENTS, 30_000, 100, 'every event parked');
  expect(await undelivered()).toBe(0);
  // Each parked event counts exactly the POSTs it got: those only ever deferred none, parked for
  // their age with the receiver's error. Only the first POSTs and the breaker's probes went out.
  const posts = new Map<string, number>();
  for (const r of dead.received) {
    const idh = (JSON.parse(r.body) as { idHash: string }).idHash;
    posts.set(idh, (posts.get(idh) ?? 0) + 1);
  }
  const rows = await parked();
  for (const r of rows) {
    expect(r).toMatchObject({ url: dead.url, error: 'timeout' });
    expect(Number(r.attempts)).toBe(posts.get(r.idh!) ?? 0);
  }
  expect(rows.filter((r) => r.attempts === '0')).toHaveLength(EVENTS - posts.size);
  expect(posts.size).toBeLessThan(EVENTS / 2);
  await closeGw(g);
}, 60_000);

it('a receiver alone has every slot but one: a burst goes out at the pace it answers, not a poll at a time', async () => {
  const r = await receiver();
  r.delayMs = 50;
  const EVENTS = 500;
  // No timed pass after the first, started by hand: the burst can only all go out if it is read
  // as the deliveries finish (a pass at a time would send one batch and wait ten minutes). And no
  // POST timed out by a stalled machine: failures open the receiver's breaker, whose deferred
  // events only a takeover brings back, which without timed passes never comes.
  const g = await gwWith([['iso-burst', r]], { pollMs: 600_000, timeoutMs: 10_000 });
  try {
    await topups('iso-burst', EVENTS);
    void g.hooks.pass();
    await until(async () => r.delivered().size === EVENTS, 30_000, 20, 'the burst, with no timed pass');
    // Every slot but one: more than the 4 a receiver gets beside others, at most the 15 it may have.
    expect(r.maxOpen).toBeGreaterThan(4);
    expect(r.maxOpen).toBeLessThanOrEqual(15);
    expect((await parked()).filter((p) => p.prod === 'iso-burst')).toEqual([]);
  } finally {
    await closeGw(g);
  }
}, 60_000);

it('a receiver back after its breaker opened gets its deferred backlog at the pace it answers, not a takeover round at a time', async () => {
  const r = await receiver();
  r.fallback = 503;
  const EVENTS = 600;
  // A takeover round every 5 s: 2 × HOOK_CONCURRENCY (32) a round would take 90+ s for the backlog.
  const CLAIM_IDLE_MS = 10_000;
  const g = await gwWith([['iso-back', r]], { claimIdleMs: CLAIM_IDLE_MS, maxAttempts: 1000 });
  await topups('iso-back', EVENTS);
  await until(
    async () =>
      (sample(await metricsText(g.port), 'tessera_webhook_deliveries_total', { outcome: 'deferred' }) ?? 0) >=
      EVENTS - 10,
    30_000,
    100,
    'the backlog deferred',
  );
  r.fallback = 'ok';
  // Taken over once pending CLAIM_IDLE_MS, then as fast as it answers (a second or two here).
  await until(
    async () => r.delivered().size === EVENTS && (await undelivered()) === 0,
    CLAIM_IDLE_MS + 25_000,
    100,
    'every deferred event once the receiver is back',
  );
  expect((await parked()).filter((p) => p.prod === 'iso-back')).toEqual([]);
  await closeGw(g);
}, 90_000);

it('an event waiting in one gateway’s queue for its receiver’s share is not taken over and POSTed by another', async () => {
  const slow = await receiver();
  slow.delayMs = 300;
  const EVENTS = 120;
  // One POST at a time per receiver: 31 of its events queued wait up to 9 s, three times HOOK_CLAIM_IDLE_MS.
  // A timeout well above the receiver's 300 ms, so that no POST fails and is sent again on a loaded machine.
  const hooks = { perReceiver: 1, claimIdleMs: 3000, timeoutMs: 1000 };
  const g1 = await gwWith([['iso-share', slow]], hooks);
  const g2 = await gateway(h, { hooks: { ...h.cfg.hooks, concurrency: 16, ...hooks } });
  gateways.push(g2);
  await until(() => g2.catalog.product('iso-share') !== undefined);
  await topups('iso-share', EVENTS);
  await until(
    async () => slow.delivered().size === EVENTS && (await undelivered()) === 0,
    90_000,
    100,
    'every event of the slow receiver',
  );
  // Nobody died and nothing failed: each event went out once, one POST at a time per gateway.
  expect(slow.received).toHaveLength(EVENTS);
  expect(slow.maxOpen).toBeLessThanOrEqual(2);
  await closeGw(g2);
  await closeGw(g1);
}, 120_000);

it('a healthy receiver’s failed event is tried again when due, not behind a slow receiver’s deferred backlog', async () => {
  // 15 POSTs of 300 ms at once: the backlog takes 40 s or more to work through.
  const EVENTS = 2000;
  const { slow, fine, g } = await slowBacklog(['iso-backlog', 'iso-retried'], EVENTS);
  fine.script.push(500);
  await topups('iso-retried', 1);
  await until(() => fine.received.length === 1, 10_000, 20, 'the first POST, answered 500');
  const before = slow.received.length;
  await until(() => fine.delivered().size === 1, 120_000, 20, 'the retry');
  // Due after HOOK_RETRY_BASE_MS (300 ms): a few of the slow receiver's events went out meanwhile,
  // not its backlog (which a retry taken over behind it waits for).
  expect(slow.received.length - before).toBeLessThan(EVENTS / 4);
  expect(fine.received.map((r) => r.status)).toEqual([500, 204]);
  // The backlog goes out quickly now, leaving nothing pending for the next test.
  slow.delayMs = 0;
  await until(async () => (await undelivered()) === 0, 60_000, 100, 'the backlog delivered');
  await closeGw(g);
}, 180_000);

it('a failed event held for its retry is not taken over by another gateway meanwhile, and is once its gateway stops', async () => {
  const r = await receiver();
  r.script.push(500, 500);
  // Retries due long after HOOK_CLAIM_IDLE_MS (1.5 s): held, the event must be kept from the other gateway.
  const hooks = { retryBaseMs: 4000, retryMaxMs: 4000 };
  const g1 = await gwWith([['iso-held', r]], hooks);
  await topups('iso-held', 1);
  await until(() => r.received.length === 1, 10_000, 20, 'the first POST, answered 500');
  const g2 = await gateway(h, { hooks: { ...h.cfg.hooks, concurrency: 16, ...hooks } });
  gateways.push(g2);
  await until(() => g2.catalog.product('iso-held') !== undefined);
  // The retry is made once, by the gateway holding it (another gateway's takeover would make a second).
  await until(() => r.received.length === 2, 20_000, 20, 'the retry, answered 500');
  await until(async () => (await pendingStates()).some((s) => s.a === 2), 10_000, 20, 'the second attempt written');
  expect(r.received).toHaveLength(2);
  // The gateway holding it stops: the other takes it over and delivers it, once.
  await closeGw(g1);
  await until(async () => r.delivered().size === 1 && (await undelivered()) === 0, 30_000, 50, 'the delivery');
  expect(r.received.map((x) => x.status)).toEqual([500, 500, 204]);
  await closeGw(g2);
}, 60_000);

it('a held retry whose keep fails (Redis timing out) is tried again, not stranded at its gateway', async () => {
  const r = await receiver();
  r.script.push(500);
  // Due before a third of HOOK_CLAIM_IDLE_MS: the first keep after the failure is the one made when due.
  const g = await gwWith([['iso-keepfail', r]], { retryBaseMs: 200, retryMaxMs: 200 });
  const scripts = (g.hooks as unknown as { scripts: Scripts }).scripts;
  const run = scripts.run.bind(scripts);
  let failed = 0;
  const spy = vi.spyOn(scripts, 'run').mockImplementation((name, ks, args) => {
    if (name === 'event_keep' && r.received.length === 1 && failed === 0) {
      failed++;
      return Promise.reject(new Error('Command timed out'));
    }
    return run(name, ks, args);
  });
  try {
    await topups('iso-keepfail', 1);
    await until(() => failed === 1, 10_000, 20, 'the keep when the retry is due, failed');
    // One gateway: a job dropped from its held retries but still marked busy is never queued again.
    await until(async () => r.delivered().size === 1 && (await undelivered()) === 0, 10_000, 50, 'the retry');
    expect(r.received.map((x) => x.status)).toEqual([500, 204]);
  } finally {
    spy.mockRestore();
    await closeGw(g);
  }
}, 30_000);

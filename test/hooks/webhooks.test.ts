/**
 * Webhooks: balance events caused by real calls (thresholds, exhaustion), the
 * expiring sweep and a top-up entry are POSTed, signed, to a real HTTP
 * receiver; a receiver that fails (500s, then no answer) and recovers ends up
 * with every event exactly once after de-duplication by id; events pending at
 * a gateway process killed mid-delivery are delivered by another; deliveries
 * that fail for good are parked, shown by `tessera events` and retried from
 * there.
 */
import { spawn } from 'node:child_process';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TalkProduct } from '../../src/catalog/schema';
import { putPlans, putProducts } from '../../src/catalog/store';
import { setIdState } from '../../src/ledger/ids';
import type { Gateway } from '../../src/gateway/server';
import { freePort } from '../../src/redis/embedded';
import { keys } from '../../src/redis/keys';
import { cli, cliEnv, lines, setEnv } from '../support/cli';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, type Harness } from '../support/harness';
import { metricsText, sample } from '../support/metrics';
import { Receiver, validSignature } from '../support/receiver';
import { bucketOf, hashOf, idFields, streamFields } from '../support/redis';
import { until } from '../support/wait';
import { connectSwitch, newCall, range } from '../metering/fixtures';

const SECRET = 'whsec-0123456789abcdef';
const DEST = '4912345'; // plan std: 100 micro-units/s, no fee
const DAY = 86_400_000;
const ROOT = resolve(__dirname, '../..');

let h: Harness;
const receivers: Receiver[] = [];
const gateways: Gateway[] = [];

/** A talk product whose webhook (every event type) is the receiver: 10 s of talk, thresholds at 5 and 2 s left. */
function hooked(name: string, r: Receiver): TalkProduct {
  return talkProduct({
    name,
    face: 1000,
    price: 1000,
    thresholds: [5, 2],
    expiryDays: 30,
    expiringDays: 30,
    webhooks: [{ url: r.url, events: ['low_balance', 'exhausted', 'expiring', 'topup'], secret: SECRET }],
  });
}

async function receiver(): Promise<Receiver> {
  const r = await Receiver.start();
  receivers.push(r);
  return r;
}

async function gw(hooks: Partial<Harness['cfg']['hooks']> = {}): Promise<Gateway> {
  const g = await gateway(h, { hooks: { ...h.cfg.hooks, ...hooks } });
  gateways.push(g);
  return g;
}

/** Closes a gateway of this file (once: afterAll closes the ones still open). */
async function closeGw(g: Gateway): Promise<void> {
  gateways.splice(gateways.indexOf(g), 1);
  await g.close();
}

/** A call of `sec` seconds on an ID, ticked second by second, then stopped. */
async function call(port: number, id: string, sec: number): Promise<void> {
  const { c } = await connectSwitch(h, port);
  try {
    const callId = newCall();
    expect(await c.request({ op: 'start', ref: 's', call: callId, id, dest: DEST })).toMatchObject({ op: 'started' });
    for (const s of range(1, sec)) await c.request({ op: 'tick', ref: `t${s}`, call: callId, sec: s });
    expect(await c.request({ op: 'stop', ref: 'e', call: callId, sec })).toMatchObject({ op: 'stopped' });
  } finally {
    await c.close();
  }
}

/** Loads `product` and waits until gateway `g` has it. */
async function loadOn(g: Gateway, product: TalkProduct): Promise<void> {
  await putProducts(h.ctx.redis, [product]);
  await until(() => g.catalog.product(product.name) !== undefined);
}

/**
 * A product `name` whose webhooks are these receivers (`exhausted` events only), known to `g`, and
 * one of its IDs, emptied by a call through `g`.
 */
async function emptiedWithHooks(
  g: Gateway,
  name: string,
  rs: Receiver[],
): Promise<{ id: string; product: TalkProduct }> {
  const product: TalkProduct = {
    ...hooked(name, rs[0]!),
    webhooks: rs.map((r) => ({ url: r.url, events: ['exhausted' as const], secret: SECRET })),
  };
  await loadOn(g, product);
  const [id] = await soldIds(h, product, 1);
  await call(g.port, id!, 12);
  return { id: id!, product };
}

/** Events not delivered yet, in every bucket. */
async function undelivered(): Promise<number> {
  let n = 0;
  for (let b = 0; b < h.cfg.buckets; b++) n += await h.r.xlen(keys.events(b));
  return n;
}

beforeAll(async () => {
  h = await startHarness({
    HOOK_POLL_MS: '50',
    HOOK_TIMEOUT_MS: '500',
    HOOK_CLAIM_IDLE_MS: '1500',
    HOOK_RETRY_BASE_MS: '100',
    HOOK_RETRY_MAX_MS: '400',
    HOOK_MAX_ATTEMPTS: '8',
    EXPIRING_SWEEP_MS: '3600000',
  });
  await seedCatalog(h);
});
afterAll(async () => {
  for (const g of gateways) await g.close();
  for (const r of receivers) await r.close();
  await h?.stop();
});

describe('webhook configuration', () => {
  it('takes http and https URLs only, each endpoint once and without credentials, a secret of 16+ characters, and at most 5 webhooks', async () => {
    const hook = { url: 'https://crm.example.com/tessera', events: ['exhausted'], secret: SECRET };
    const with_ = (over: Record<string, unknown>): unknown => ({ ...talkProduct({ name: 'cfg' }), ...over });
    await expect(putProducts(h.ctx.redis, [with_({ webhooks: [hook] })])).resolves.toHaveLength(1);
    for (const bad of [
      { webhooks: [{ ...hook, url: 'ftp://crm.example.com/x' }] },
      { webhooks: [{ ...hook, url: 'javascript:alert(1)' }] },
      { webhooks: [{ ...hook, url: 'http://' }] },
      // fetch refuses a URL with credentials: it could never be delivered.
      { webhooks: [{ ...hook, url: 'https://user:pass@crm.example.com/x' }] },
      // Which webhooks had an event is kept by URL: one webhook per URL.
      { webhooks: [hook, { ...hook, secret: `${SECRET}-next` }] },
      // The same endpoint spelt otherwise is the same URL: its receiver would get every event twice.
      { webhooks: [hook, { ...hook, url: 'HTTPS://CRM.example.com:443/tessera' }] },
      { webhooks: [hook, { ...hook, url: 'https://crm.example.com/tessera#second' }] },
      { webhooks: [{ ...hook, secret: 'short' }] },
      { webhooks: [{ ...hook, events: ['refund'] }] },
      { webhooks: [{ ...hook, events: [] }] },
      { webhooks: Array.from({ length: 6 }, () => hook) },
      { expiringDays: 0 },
    ]) {
      await expect(putProducts(h.ctx.redis, [with_(bad)]), JSON.stringify(bad)).rejects.toThrow(/product #1/);
    }
  });
});

describe('delivery', () => {
  it('a receiver that fails and recovers gets every event exactly once after de-duplication, signed', async () => {
    const r = await receiver();
    const product = hooked('hooked-a', r);
    // Two 500s, then no answer at all (the gateway gives up after HOOK_TIMEOUT_MS), then 2xx.
    r.script.push(500, 500, 'hang');
    const g = await gw();
    await loadOn(g, product);
    const [spent, kept] = await soldIds(h, product, 2);
    // 10 s at 100/s: 5 s left fires, 2 s left fires, the 10th second exhausts it.
    await call(g.port, spent!, 12);
    // A short call sets the other ID's expiry (30 days from now), inside expiringDays.
    await call(g.port, kept!, 1);
    expect(await g.expiring.sweep()).toBe(1);
    expect(await g.expiring.sweep()).toBe(0); // once per expiry date
    // A top-up, as the top-up scripts write it into the contract's stream.
    const kb = bucketOf(h, kept!);
    await h.r.xadd(
      keys.events(kb),
      '*',
      'type',
      'topup',
      'idh',
      hashOf(h, kept!),
      'prod',
      product.name,
      'at',
      String(Date.now()),
      'bal',
      '5900',
      'amount',
      '5000',
      'source',
      'operator',
      'ref',
      'desk',
      'exp',
      '0',
    );

    await until(async () => r.delivered().size === 5 && (await undelivered()) === 0, 20_000, 50, 'every event');
    const got = [...r.delivered().values()];
    const sb = bucketOf(h, spent!);
    const byType = (t: string) => got.filter((e) => e.type === t);
    expect(byType('low_balance').map((e) => e.data)).toEqual(
      expect.arrayContaining([
        { secondsLeft: 5, threshold: 5 },
        { secondsLeft: 2, threshold: 2 },
      ]),
    );
    expect(byType('low_balance')[0]).toMatchObject({ product: product.name, idHash: hashOf(h, spent!) });
    expect(byType('exhausted')).toEqual([
      expect.objectContaining({ idHash: hashOf(h, spent!), balance: 0, data: { call: expect.stringMatching(/^sw-/) } }),
    ]);
    const exp = Number((await idFields(h, kept!)).exp);
    expect(byType('expiring')).toEqual([
      expect.objectContaining({ idHash: hashOf(h, kept!), balance: 900, data: { expires: exp } }),
    ]);
    expect(exp - Date.now()).toBeGreaterThan(29 * DAY);
    expect(byType('topup')).toEqual([
      expect.objectContaining({ balance: 5900, data: { amount: 5000, source: 'operator', ref: 'desk', expires: 0 } }),
    ]);
    for (const e of got) expect(String(e.id)).toMatch(new RegExp(`^(${sb}|${kb})-\\d+-\\d+$`));

    // It failed on the way: two 500s and one request left unanswered, each tried again.
    expect(r.received.filter((x) => x.status === 500)).toHaveLength(2);
    expect(r.received.filter((x) => x.status === 0)).toHaveLength(1);
    // Every request, answered or not, carried a valid signature and its event id.
    for (const x of r.received) {
      expect(validSignature(x.headers['tessera-signature'], x.body, SECRET)).toBe(true);
      expect(x.headers['tessera-event-id']).toBe((JSON.parse(x.body) as { id: string }).id);
    }
    const text = await metricsText(g.port);
    expect(sample(text, 'tessera_webhook_deliveries_total', { outcome: 'retried' })).toBe(3);
    expect(sample(text, 'tessera_webhook_deliveries_total', { outcome: 'delivered' })).toBeGreaterThanOrEqual(5);
    expect(await h.r.hlen(keys.eventsRetry(sb))).toBe(0);
    await closeGw(g);
  });

  it('an ID emptied by the disconnect charge at the end of a call is announced exhausted', async () => {
    const r = await receiver();
    // 100/s and 500 at hang-up: of 1000, 5 s of talk and the disconnect charge.
    await putPlans(h.ctx.redis, [{ name: 'hangup', rates: [{ prefix: '', rate: 100, fee: 0, disconnect: 500 }] }]);
    const product = talkProduct({
      name: 'hooked-hangup',
      face: 1000,
      price: 1000,
      plan: 'hangup',
      thresholds: [],
      webhooks: [{ url: r.url, events: ['exhausted'], secret: SECRET }],
    });
    const g = await gw();
    await loadOn(g, product);
    const [byHangup] = await soldIds(h, product);
    await call(g.port, byHangup!, 5);
    expect(await idFields(h, byHangup!)).toMatchObject({ bal: '0', st: 'exhausted' });
    await until(async () => r.delivered().size === 1, 10_000, 50, 'the exhausted event');
    expect([...r.delivered().values()]).toEqual([
      expect.objectContaining({
        type: 'exhausted',
        idHash: hashOf(h, byHangup!),
        balance: 0,
        data: { call: expect.stringMatching(/^sw-/) },
      }),
    ]);
    await closeGw(g);
  });

  it('an ID emptied by the tick that cuts its call after a block is announced exhausted, and exhausted once unblocked', async () => {
    const r = await receiver();
    const product = talkProduct({
      name: 'hooked-blocked',
      face: 1000,
      price: 1000,
      thresholds: [],
      webhooks: [{ url: r.url, events: ['exhausted'], secret: SECRET }],
    });
    const g = await gw();
    await loadOn(g, product);
    const [id] = await soldIds(h, product);
    const { c } = await connectSwitch(h, g.port);
    try {
      const callId = newCall();
      expect(await c.request({ op: 'start', ref: 's', call: callId, id, dest: DEST })).toMatchObject({ op: 'started' });
      await c.request({ op: 'tick', ref: 't1', call: callId, sec: 2 });
      expect(await setIdState(h.ctx, id!, 'block', 'lost card')).toEqual({ ok: true, state: 'blocked' });
      // The switch talked the whole 10 s before it heard of the block: the tick that cuts bills them all.
      await c.request({ op: 'tick', ref: 't2', call: callId, sec: 10 });
      expect(await c.request({ op: 'stop', ref: 'e', call: callId, sec: 10 })).toMatchObject({ balance: 0 });
    } finally {
      await c.close();
    }
    await until(async () => r.delivered().size === 1, 10_000, 50, 'the exhausted event');
    expect([...r.delivered().values()]).toEqual([
      expect.objectContaining({ type: 'exhausted', idHash: hashOf(h, id!), balance: 0 }),
    ]);
    expect(await setIdState(h.ctx, id!, 'unblock')).toEqual({ ok: true, state: 'exhausted' });
    await closeGw(g);
  });

  it('events pending at a gateway killed mid-delivery are delivered by another', async () => {
    const r = await receiver();
    const product = hooked('hooked-b', r);
    await putProducts(h.ctx.redis, [product]);
    r.fallback = 'hang';
    // A gateway process that waits a minute for answers: it holds the events when it is killed.
    const port = await freePort();
    const doomed = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts')], {
      cwd: ROOT,
      env: {
        ...process.env,
        ...cliEnv(h),
        PROVIDER_URL: h.cfg.provider.url,
        PORT: String(port),
        HOST: '127.0.0.1',
        HOOK_POLL_MS: '50',
        HOOK_TIMEOUT_MS: '60000',
        HOOK_CLAIM_IDLE_MS: '120000',
      },
      stdio: 'ignore',
    });
    try {
      const ready = (): Promise<boolean> =>
        fetch(`http://127.0.0.1:${port}/readyz`)
          .then((x) => x.status === 200)
          .catch(() => false);
      await until(ready, 60_000, 100, 'the gateway process');
      const [id] = await soldIds(h, product, 1);
      await call(port, id!, 12);
      await until(() => r.received.length === 3, 10_000, 20, 'the doomed gateway POSTing');
      const b = bucketOf(h, id!);
      const pel = (await h.r.xpending(keys.events(b), 'hooks')) as [number, ...unknown[]];
      expect(pel[0]).toBe(3);
      doomed.kill('SIGKILL');
      await until(() => doomed.exitCode !== null || doomed.signalCode !== null, 10_000, 20, 'the kill');

      r.fallback = 'ok';
      const other = await gw();
      await until(async () => r.delivered().size === 3 && (await undelivered()) === 0, 20_000, 50, 'the takeover');
      expect([...r.delivered().values()].map((e) => e.type).sort()).toEqual([
        'exhausted',
        'low_balance',
        'low_balance',
      ]);
      // The same events the killed gateway had sent, under the same ids.
      expect(new Set(r.delivered().keys())).toEqual(
        new Set(r.received.slice(0, 3).map((x) => (JSON.parse(x.body) as { id: string }).id)),
      );
      expect(((await h.r.xpending(keys.events(b), 'hooks')) as [number])[0]).toBe(0);
      await closeGw(other);
    } finally {
      doomed.kill('SIGKILL');
    }
  });

  it('the consumer names of gateways gone are forgotten once they hold nothing, never while they hold an event', async () => {
    const g = await gw({ claimIdleMs: 100 });
    const ev = keys.events(0);
    const names = async (): Promise<string[]> =>
      ((await h.r.xinfo('CONSUMERS', ev, 'hooks')) as string[][]).map((c) => c[1]!);
    // A gateway gone that had read an event (in one step, before this gateway's reads) and acknowledged it.
    const gone = async (name: string): Promise<string> => {
      const res = await h.r
        .multi()
        .xadd(ev, '*', 'type', 'none')
        .xreadgroup('GROUP', 'hooks', name, 'COUNT', 1, 'STREAMS', ev, '>')
        .exec();
      return res![0]![1] as string;
    };
    const e1 = await gone('gone-1');
    await h.r.xack(ev, 'hooks', e1);
    await h.r.xdel(ev, e1);
    expect(await names()).toContain('gone-1');
    // Each pass an hour after the last: the look for gone consumers is due in every one.
    let hours = 0;
    await until(
      async () => {
        await g.hooks.pass(Date.now() + 3_600_000 * ++hours);
        return !(await names()).includes('gone-1');
      },
      5_000,
      50,
      'gone-1 forgotten',
    );
    // One that holds an event is kept, however long idle: forgetting it would drop the event.
    const e2 = await gone('gone-2');
    // (Other consumers holding nothing, this gateway's own among them, may go: they are made again.)
    await h.ctx.scripts.run('event_forget', [ev], [0]);
    expect(await names()).toContain('gone-2');
    await h.r.xack(ev, 'hooks', e2);
    await h.r.xdel(ev, e2);
    expect(await h.ctx.scripts.run('event_forget', [ev], [0])).toBeGreaterThanOrEqual(1);
    expect(await names()).not.toContain('gone-2');
    await closeGw(g);
  });

  it('a gateway stopped mid-delivery writes down the webhooks that took the event: the next sends it to the others only', async () => {
    const [took, slow] = [await receiver(), await receiver()];
    slow.fallback = 'hang';
    // Patient with the silent receiver: it is still waiting on it when it is stopped.
    const first = await gw({ timeoutMs: 60_000 });
    await emptiedWithHooks(first, 'hooked-s', [took, slow]);
    await until(() => took.delivered().size === 1 && slow.received.length === 1, 10_000, 20, 'both POSTed');
    await closeGw(first);
    slow.fallback = 'ok';
    const next = await gw();
    await until(async () => slow.delivered().size === 1 && (await undelivered()) === 0, 20_000, 50, 'the takeover');
    expect(took.received).toHaveLength(1);
    await closeGw(next);
  });

  it('a receiver that never answers is given up at HOOK_TIMEOUT_MS while the garbage collector runs: other products are delivered', async () => {
    setFlagsFromString('--expose_gc');
    const gc = runInNewContext('gc') as () => void;
    const stuck = await receiver();
    stuck.fallback = 'hang';
    const fine = await receiver();
    const [a, b] = [hooked('hooked-hang', stuck), hooked('hooked-fine', fine)];
    await putProducts(h.ctx.redis, [a, b]);
    // One POST at a time: a POST that never ends would hold up every product's events.
    const g = await gw({ concurrency: 1, timeoutMs: 300 });
    await until(() => g.catalog.product(b.name) !== undefined);
    const [hung] = await soldIds(h, a, 1);
    const [other] = await soldIds(h, b, 1);
    // Collected while each POST to the silent receiver waits: its timeout must fire all the same.
    // Once per POST it holds, not on a timer: collections every few ms starve the event loop of a
    // loaded machine, and the test then measures the load, not the timeout.
    let collected = 0;
    stuck.onHang = () =>
      setImmediate(() => {
        gc();
        collected++;
      });
    await call(g.port, hung!, 12);
    await until(() => stuck.received.length > 0, 10_000, 20, 'a POST to the silent receiver');
    await call(g.port, other!, 12);
    await until(() => fine.delivered().size === 3, 20_000, 50, 'the other product’s events');
    expect(collected).toBeGreaterThan(0);
    // The silent receiver answers again: its events go out too, and nothing is left behind.
    stuck.onHang = undefined;
    stuck.fallback = 'ok';
    await until(async () => stuck.delivered().size === 3 && (await undelivered()) === 0, 20_000, 50, 'the rest');
    await closeGw(g);
  });

  it('a delivery that keeps failing is parked, shown by `tessera events` and retried from there', async () => {
    const r = await receiver();
    const product = hooked('hooked-c', r);
    r.fallback = 503;
    const g = await gw({ maxAttempts: 3 });
    await loadOn(g, product);
    const [id] = await soldIds(h, product, 1);
    await call(g.port, id!, 12);
    const b = bucketOf(h, id!);
    await until(async () => (await h.r.xlen(keys.eventsFailed(b))) === 3, 20_000, 50, 'three parked');
    expect(await undelivered()).toBe(0);
    expect(r.received).toHaveLength(9); // three events, three attempts each

    const restore = setEnv(cliEnv(h));
    try {
      const shown = await cli('events', '--json');
      expect(shown.code).toBe(0);
      const report = JSON.parse(shown.out) as {
        failed: { total: number; byType: Record<string, number> };
        pending: { total: number };
        rows: { state: string; ref: string; id: string; attempts: number; error: string; url: string }[];
      };
      expect(report.pending.total).toBe(0);
      expect(report.failed).toMatchObject({ total: 3, byType: { low_balance: 2, exhausted: 1 } });
      const failed = report.rows.filter((x) => x.state === 'failed');
      expect(failed).toHaveLength(3);
      for (const f of failed) expect(f).toMatchObject({ attempts: 3, error: 'HTTP 503', url: r.url });
      const firstIds = new Set(r.received.map((x) => (JSON.parse(x.body) as { id: string }).id));
      expect(new Set(failed.map((f) => f.id))).toEqual(firstIds);

      const text = lines((await cli('events')).out);
      expect(text[0]).toBe('pending: 0');
      expect(text[1]).toMatch(/^failed: 3 \(low_balance 2, exhausted 1; oldest \d+ s\)$/);

      r.fallback = 'ok';
      const retried = await cli('events', '--retry', failed[0]!.ref);
      expect(retried).toMatchObject({ code: 0 });
      expect(await cli('events', '--retry', failed[0]!.ref)).toMatchObject({ code: 1 });
      expect((await cli('events', '--retry-all')).out).toContain('requeued 2 failed deliveries');
      await until(async () => r.delivered().size === 3 && (await undelivered()) === 0, 20_000, 50, 'the retries');
      // Retried events keep the id receivers saw the first time.
      expect(new Set(r.delivered().keys())).toEqual(firstIds);
      expect(await h.r.xlen(keys.eventsFailed(b))).toBe(0);
    } finally {
      restore();
    }
    await closeGw(g);
  });

  it('parked at two webhooks, each keeps its own error; retried after its URL was fixed, it goes to the new URL', async () => {
    const [down, silent, fixed] = [await receiver(), await receiver(), await receiver()];
    down.fallback = 503;
    silent.fallback = 'hang';
    const g = await gw({ maxAttempts: 2 });
    const { id, product } = await emptiedWithHooks(g, 'hooked-e', [down, silent]);
    const b = bucketOf(h, id);
    // Between its attempts the pending event shows each webhook's error (`tessera events`).
    let pendingErr = '';
    await until(
      async () => {
        const [st] = await h.r.hvals(keys.eventsRetry(b));
        pendingErr = st ? (JSON.parse(st) as { err: string }).err : '';
        return pendingErr !== '';
      },
      20_000,
      20,
      'the first attempt',
    );
    expect(pendingErr).toBe(`${down.url}: HTTP 503; ${silent.url}: timeout`);
    await until(async () => (await h.r.xlen(keys.eventsFailed(b))) === 2, 20_000, 50, 'two parked');
    const parked = (await h.r.xrange(keys.eventsFailed(b), '-', '+')).map(([, f]) => streamFields(f));
    expect(Object.fromEntries(parked.map((f) => [f.url, f.error]))).toEqual({
      [down.url]: 'HTTP 503',
      [silent.url]: 'timeout',
    });
    // The operator points the failing webhook elsewhere, then retries: the event reaches the new URL.
    const moved = { ...product, webhooks: [{ url: fixed.url, events: ['exhausted' as const], secret: SECRET }] };
    await putProducts(h.ctx.redis, [moved]);
    await until(() => g.catalog.product(product.name)?.webhooks?.[0]?.url === fixed.url);
    const restore = setEnv(cliEnv(h));
    try {
      expect((await cli('events', '--retry-all')).out).toContain('requeued 2 failed deliveries');
    } finally {
      restore();
    }
    await until(async () => fixed.delivered().size === 1 && (await undelivered()) === 0, 20_000, 50, 'the retry');
    await closeGw(g);
  });

  it('an event the operator put back gets a full round of attempts, however old it is', async () => {
    const r = await receiver();
    const product = hooked('hooked-d', r);
    r.script.push(503);
    const g = await gw({ maxAgeMs: 60_000 });
    await loadOn(g, product);
    // As event_requeue writes it: first written a day ago (eid), for this one webhook (to).
    const eid = `${Date.now() - DAY}-0`;
    await h.r.xadd(
      keys.events(7),
      '*',
      'type',
      'exhausted',
      'idh',
      'ab12',
      'prod',
      product.name,
      'at',
      '1',
      'bal',
      '0',
      'call',
      'sw:c',
      'eid',
      eid,
      'to',
      r.url,
    );
    await until(async () => r.delivered().size === 1 && (await undelivered()) === 0, 20_000, 50, 'the retry');
    expect([...r.delivered().keys()]).toEqual([`7-${eid}`]);
    expect(r.received.map((x) => x.status)).toEqual([503, 204]);
    expect(await h.r.xlen(keys.eventsFailed(7))).toBe(0);
    await closeGw(g);
  });
});

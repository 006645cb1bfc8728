/**
 * The steady tick (charge_steady in lua/includes/charge.lua) is a shortcut
 * through charge() for most ticks of flat-tariff calls. It must bill exactly as
 * charge() would. Each scenario here runs twice, on two IDs whose tariffs charge
 * the same. One tariff is flat. The other has a "change" to the same rate in
 * 2100, so it is not flat and charge() bills every one of its ticks. Answers,
 * session fields and ID fields must match after every step.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedCatalog, soldIds, startHarness, talkProduct, type Harness } from '../support/harness';
import { idKeyOf, streamFields } from '../support/redis';
import { newCall, tickAt as tickAtTime } from './fixtures';
import type { TalkProduct } from '../../src/catalog/schema';
import { callKeysFor, callKeyOf, type CallKeys } from '../../src/metering/call-keys';
import { callStart, callStop, type StopResult, type TickResult } from '../../src/metering/scripts';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
});
afterAll(async () => {
  await h?.stop();
});

const T0 = Date.UTC(2027, 0, 4, 9, 0);
const IN_2100 = Date.UTC(2100, 0, 1);
const REFRESH_MS = 2000;

/** A step of a scenario: call `c` reports `sec` (tick or stop) at T0 + `at` ms; or the ID is blocked, or topped up. */
interface Report {
  c: number;
  op: 'tick' | 'stop';
  sec: number;
  at: number;
}
type Step = Report | { op: 'block' } | { op: 'topup'; amount: number };

interface Twin {
  id: string;
  calls: CallKeys[];
}

/** Session fields that must match between the twins (trm names the tariff, the rest names the call). */
const SESSION = ['st', 'used', 'thr', 'cut', 'ans', 'cov', 'gnt', 'fin', 'short'] as const;
const ID = ['st', 'bal', 'free', 'act'] as const;
type Stopped = Extract<StopResult, { ok: true }>;
const CDR = ['answer', 'end', 'sec', 'used', 'blocks', 'rate', 'fee', 'disc', 'cost', 'short', 'bal', 'cause'] as const;

async function cdr(ck: CallKeys, record: string | undefined): Promise<Record<string, string>> {
  const [entry] = await h.r.xrange(ck.cdr, record ?? '-', record ?? '+');
  return streamFields(entry?.[1] ?? []);
}

const pick = (o: Record<string, string>, fields: readonly string[]): Record<string, string | undefined> =>
  Object.fromEntries(fields.map((f) => [f, o[f]]));

const tickAt = (ck: CallKeys, sec: number, now: number): Promise<TickResult> => tickAtTime(h, ck, sec, now, REFRESH_MS);

async function open(product: TalkProduct, desc: string, calls: number, mode: 'tick' | 'quota'): Promise<Twin> {
  const [id] = await soldIds(h, product);
  const { hash, bucket } = h.ctx.ids.hash(id!);
  const sw = newCall('steady-sw');
  const keys: CallKeys[] = [];
  for (let i = 0; i < calls; i++) {
    const call = newCall('steady');
    const ck = callKeysFor(idKeyOf(h, id!), callKeyOf(sw, call));
    const started = await callStart(h.ctx.scripts, ck, {
      now: T0,
      ringGraceMs: 0,
      dest: '4912345',
      sw,
      call,
      idHash: hash,
      mode,
      aniHash: '',
      rates: [product.plan, desc],
    });
    expect(started, `start ${i} on ${desc}`).toMatchObject({ ok: true });
    keys.push(ck);
  }
  expect(bucket).toBeGreaterThanOrEqual(0);
  return { id: id!, calls: keys };
}

async function step(t: Twin, s: Step): Promise<unknown> {
  if (s.op === 'block') return h.r.hset(idKeyOf(h, t.id), 'st', 'blocked');
  // As lua/topup.lua credits it: to the balance, and free at once.
  if (s.op === 'topup') {
    await h.r.hincrby(idKeyOf(h, t.id), 'bal', s.amount);
    return h.r.hincrby(idKeyOf(h, t.id), 'free', s.amount);
  }
  const ck = t.calls[s.c]!;
  if (s.op === 'tick') return tickAt(ck, s.sec, T0 + s.at);
  return callStop(h.ctx.scripts, ck, T0 + s.at, s.sec, 'normal', 60);
}

/** Runs `steps` on a flat tariff and on its non-flat twin; every answer and field must match. */
async function twins(
  product: Partial<TalkProduct>,
  tariff: { rate: number; fee: number; disc: number },
  calls: number,
  steps: Step[],
  mode: 'tick' | 'quota' = 'tick',
): Promise<void> {
  const p = talkProduct({ name: newCall('steady-p'), thresholds: [], ...product });
  const flat = `${tariff.rate} ${tariff.fee} 1 1 0 0 ${tariff.disc}`;
  const a = await open(p, flat, calls, mode);
  const b = await open(p, `${flat} ${IN_2100} ${tariff.rate}`, calls, mode);
  for (const [n, s] of steps.entries()) {
    const [ra, rb] = [await step(a, s), await step(b, s)];
    const where = `step ${n}: ${JSON.stringify(s)}`;
    if (s.op === 'stop') {
      // A stop's record is a stream entry of its own: compare what it says, not its id.
      const [{ record: ka, ...sa }, { record: kb, ...sb }] = [ra, rb] as [Partial<Stopped>, Partial<Stopped>];
      expect(sa, where).toEqual(sb);
      expect(pick(await cdr(a.calls[s.c]!, ka), CDR), where).toEqual(pick(await cdr(b.calls[s.c]!, kb), CDR));
    } else expect(ra, where).toEqual(rb);
    const [ia, ib] = await Promise.all([h.r.hgetall(idKeyOf(h, a.id)), h.r.hgetall(idKeyOf(h, b.id))]);
    expect(pick(ia, ID), where).toEqual(pick(ib, ID));
    for (const [i, ck] of a.calls.entries()) {
      const [sa, sb] = await Promise.all([h.r.hgetall(ck.session), h.r.hgetall(b.calls[i]!.session)]);
      expect(pick(sa, SESSION), `${where}, call ${i}`).toEqual(pick(sb, SESSION));
    }
  }
}

/** Call `c` ticking every second from `from` to `to`, `lag` ms after each second. */
const ticks = (c: number, from: number, to: number, lag = 300): Report[] =>
  Array.from({ length: to - from + 1 }, (_, i) => ({
    c,
    op: 'tick' as const,
    sec: from + i,
    at: (from + i) * 1000 + lag,
  }));

describe('the steady tick bills as charge() does', () => {
  it('one call: repeats, a step back, catch-up, thresholds, the cut-off at zero, and the stop', async () => {
    // 400,000 at 1,000 a second after a 5,000 fee: 395 s.
    await twins({ face: 400_000, price: 400_000, thresholds: [300, 60, 10] }, { rate: 1000, fee: 5000, disc: 0 }, 1, [
      { c: 0, op: 'tick', sec: 0, at: 0 },
      ...ticks(0, 1, 40),
      { c: 0, op: 'tick', sec: 40, at: 40_900 },
      { c: 0, op: 'tick', sec: 38, at: 41_000 },
      // A switch catching up: seconds ahead of the clock, no refresh due.
      ...ticks(0, 41, 60, -20_000),
      { c: 0, op: 'tick', sec: 330, at: 330_000 },
      ...ticks(0, 331, 340),
      { c: 0, op: 'tick', sec: 384, at: 384_000 },
      ...ticks(0, 385, 396),
      { c: 0, op: 'stop', sec: 397, at: 397_100 },
    ]);
  });

  it('two calls on one ID: grant slices, re-grants from what is free, a disconnect charge, to zero', async () => {
    // 30 s slices: each call is re-granted every 15 s while anything is free.
    const both = (from: number, to: number): Step[] =>
      ticks(0, from, to).flatMap((s) => [s, { ...s, c: 1, at: s.at + 7 }]);
    await twins({ face: 200_000, price: 200_000, maxCalls: 2, grantSec: 30 }, { rate: 1000, fee: 2000, disc: 700 }, 2, [
      { c: 0, op: 'tick', sec: 0, at: 0 },
      { c: 1, op: 'tick', sec: 0, at: 5 },
      ...both(1, 60),
      { c: 1, op: 'stop', sec: 61, at: 61_400 },
      ...ticks(0, 61, 140),
      { c: 0, op: 'stop', sec: 141, at: 141_400 },
    ]);
  });

  it('a blocked ID cuts its calls, however steady they were', async () => {
    await twins({ face: 500_000, price: 500_000, maxCalls: 2, grantSec: 60 }, { rate: 100, fee: 0, disc: 0 }, 1, [
      ...ticks(0, 0, 20),
      { op: 'block' },
      ...ticks(0, 21, 23),
      { c: 0, op: 'stop', sec: 24, at: 24_200 },
    ]);
  });

  it('a final grant is re-granted by a top-up smaller than a second that its reservation makes up', async () => {
    // 4321 at 100 a second, two calls allowed: the call holds all of it, 43 s and 21 over, final.
    // 79 more make the 44th second: the next tick re-grants it, as charge() does for anything free.
    await twins({ face: 4321, price: 4321, maxCalls: 2, grantSec: 60 }, { rate: 100, fee: 0, disc: 0 }, 1, [
      ...ticks(0, 0, 2),
      { op: 'topup', amount: 79 },
      ...ticks(0, 3, 44),
      { c: 0, op: 'stop', sec: 44, at: 44_200 },
    ]);
  });

  it('quota mode: reports that come every 20 s', async () => {
    const reports = Array.from({ length: 12 }, (_, i) => ({
      c: 0,
      op: 'tick' as const,
      sec: 20 * i,
      at: 20_000 * i + 50,
    }));
    await twins(
      { face: 300_000, price: 300_000, maxCalls: 3, grantSec: 40, thresholds: [60] },
      { rate: 1000, fee: 0, disc: 0 },
      1,
      [...reports, { c: 0, op: 'stop', sec: 231, at: 231_000 }],
      'quota',
    );
  });
});

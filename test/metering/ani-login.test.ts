/**
 * Caller-number (PIN-less) login on the switch protocol: a `start` or `quote`
 * with `ani` instead of `id` is billed to the ID the number is registered to;
 * an unknown number counts as a guess; a number moved or removed after the
 * gateway looked it up bills nobody.
 */
import { randomInt } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { AniRegistry, aniPlace } from '../../src/ledger/anis';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, type Harness } from '../support/harness';
import { balanceOf, idFields, idKeyOf } from '../support/redis';
import { Client } from '../support/ws-client';
import { cdrsOf, connectSwitch, newCall } from './fixtures';

let h: Harness;
let gw: Gateway;
let c: Client;
let anis: AniRegistry;
let refs = 0;
const ref = (): number => ++refs;
/** Falls to plan std's '' prefix: 100 micro/s, no fee. */
const DEST = '4912345';
const P = talkProduct({ maxCalls: 2 });

/** A fresh caller number, as a switch would send it. */
const newAni = (): string => `+4915${randomInt(10_000_000, 99_999_999)}`;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [P]);
  gw = await gateway(h);
  ({ c } = await connectSwitch(h, gw.port));
  anis = new AniRegistry(h.ctx, () => ({ maxAnis: 2, aniChangesPerDay: 100 }));
});
afterAll(async () => {
  await c?.close();
  await gw?.close();
  await h?.stop();
});

async function registered(ani = newAni()): Promise<{ id: string; ani: string }> {
  const [id] = await soldIds(h, P);
  const r = await anis.add(idKeyOf(h, id!), ani, { role: 'owner' });
  if (!r.ok) throw new Error(`add: ${r.reason}`);
  return { id: id!, ani };
}

describe('start and quote with ani', () => {
  it('a call started by caller number is billed to the ID the number is registered to', async () => {
    const { id, ani } = await registered();
    const [other] = await soldIds(h, P);
    const call = newCall();
    // The number as a person or a switch may write it: spaces and 00 instead of +.
    const started = await c.request({
      op: 'start',
      ref: ref(),
      call,
      ani: `00${ani.slice(1, 5)} ${ani.slice(5)}`,
      dest: DEST,
    });
    expect(started).toMatchObject({ op: 'started', call, balance: 1_000_000, rate: 100 });
    const stopped = await c.request({ op: 'stop', ref: ref(), call, sec: 30 });
    expect(stopped).toMatchObject({ op: 'stopped', billedSec: 30, cost: 3000, balance: 997_000 });
    expect(await balanceOf(h, id)).toBe(997_000);
    expect(await balanceOf(h, other!)).toBe(1_000_000);
    const [cdr] = await cdrsOf(h, id, call);
    expect(cdr).toMatchObject({ call, cost: '3000' });
  });

  it('quote with ani answers for the registered ID', async () => {
    const { ani } = await registered();
    const r = await c.request({ op: 'quote', ref: ref(), ani, dest: DEST });
    expect(r).toMatchObject({ op: 'quoted', rate: 100, balance: 1_000_000, maxSec: 10_000 });
  });

  it('exactly one of id and ani; a number not in E.164 form is bad_ani', async () => {
    const { id, ani } = await registered();
    const both = await c.request({ op: 'start', ref: ref(), call: newCall(), id, ani, dest: DEST });
    expect(both).toMatchObject({ op: 'error', reason: 'bad_value', message: 'send id or ani, not both' });
    const none = await c.request({ op: 'start', ref: ref(), call: newCall(), dest: DEST });
    expect(none).toMatchObject({ op: 'error', reason: 'missing_field' });
    const quoteBoth = await c.request({ op: 'quote', ref: ref(), id, ani, dest: DEST });
    expect(quoteBoth).toMatchObject({ op: 'error', reason: 'bad_value' });
    // National format (trunk prefix 0), too short, too long: refused before Redis, no guess counted.
    for (const bad of ['030123456', '+49123', '+4915123456789012', '+49 15x 1234567']) {
      const r = await c.request({ op: 'start', ref: ref(), call: newCall(), ani: bad, dest: DEST });
      expect(r).toMatchObject({ op: 'error', reason: 'bad_ani' });
    }
    expect((await idFields(h, id)).act).toBe('0');
  });

  it('unknown caller numbers count against the guess limit like unknown IDs', async () => {
    const LIMIT = 3;
    const g = await gateway(h, { guessLimit: LIMIT, guessWindowSec: 60 });
    const { c: s } = await connectSwitch(h, g.port);
    try {
      const { ani } = await registered();
      for (let i = 0; i <= LIMIT; i++) {
        const op = i % 2 ? 'quote' : 'start';
        const r = await s.request({ op, ref: ref(), call: newCall(), ani: newAni(), dest: DEST });
        expect(r).toMatchObject({ op: 'error', reason: 'unknown_ani' });
      }
      // Past the limit even a registered number is refused.
      const r = await s.request({ op: 'start', ref: ref(), call: newCall(), ani, dest: DEST });
      expect(r).toMatchObject({ op: 'error', reason: 'throttled' });
      expect(r.retryAfter).toBeGreaterThan(0);
    } finally {
      await s.close();
      await g.close();
    }
  });
});

describe('a number moved or removed after the gateway read its index', () => {
  it('a start that found the old ID by the index is refused unknown_ani and bills nobody', async () => {
    const { id: a, ani } = await registered();
    const [b] = await soldIds(h, P);
    const moved = await anis.add(idKeyOf(h, b!), ani, { role: 'operator', move: true });
    expect(moved).toMatchObject({ ok: true, change: 'new' });
    // The gateway's read of the index happened before the move: it still names A.
    const index = aniPlace(h.ctx.ids, ani)!.key;
    await h.r.set(index, idKeyOf(h, a));
    const call = newCall();
    const r = await c.request({ op: 'start', ref: ref(), call, ani, dest: DEST });
    expect(r).toMatchObject({ op: 'error', call, reason: 'unknown_ani' });
    expect((await idFields(h, a)).act).toBe('0');
    expect((await idFields(h, b!)).act).toBe('0');
    // The move finished (the index names B again): B pays.
    await h.r.set(index, idKeyOf(h, b!));
    const again = await c.request({ op: 'start', ref: ref(), call: newCall(), ani, dest: DEST });
    expect(again).toMatchObject({ op: 'started', balance: 1_000_000 });
    expect((await idFields(h, b!)).act).toBe('1');
    expect((await idFields(h, a)).act).toBe('0');
  });

  it('a removal between the lookup and the start: the ID no longer lists the number, the call is refused', async () => {
    const { id, ani } = await registered();
    const index = aniPlace(h.ctx.ids, ani)!.key;
    const before = await h.r.get(index);
    expect(await anis.remove(idKeyOf(h, id), ani, { role: 'owner' })).toMatchObject({ ok: true, change: 'gone' });
    expect(await h.r.exists(index)).toBe(0);
    // What the gateway read before the removal.
    await h.r.set(index, before!);
    const r = await c.request({ op: 'start', ref: ref(), call: newCall(), ani, dest: DEST });
    expect(r).toMatchObject({ op: 'error', reason: 'unknown_ani' });
    expect((await idFields(h, id)).act).toBe('0');
    const q = await c.request({ op: 'quote', ref: ref(), ani, dest: DEST });
    expect(q).toMatchObject({ op: 'error', reason: 'unknown_ani' });
  });
});

describe('a stop that names the caller number of a call Tessera lost', () => {
  it('a live call started by number is stopped and billed after the number moved away, counting no guess', async () => {
    const { id, ani } = await registered();
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ref(), call, ani, dest: DEST })).toMatchObject({ op: 'started' });
    // The owner takes the number off the ID while the call talks.
    expect(await anis.remove(idKeyOf(h, id), ani, { role: 'owner' })).toMatchObject({ ok: true, change: 'gone' });
    const guesses = await h.r.keys('*guess*');
    // The connector's stop names what its start named: the call is the switch's own, known by its id.
    const r = await c.request({ op: 'stop', ref: ref(), call, sec: 30, ani, dest: DEST });
    expect(r).toMatchObject({ op: 'stopped', call, billedSec: 30, cost: 3000, balance: 997_000 });
    expect(await cdrsOf(h, id, call)).toEqual([expect.objectContaining({ cause: 'normal', sec: '30' })]);
    expect(await h.r.keys('*guess*')).toEqual(guesses);
  });

  it('a live call started by number is stopped and billed after its owner moved the number to another ID', async () => {
    const { id, ani } = await registered();
    const [next] = await soldIds(h, P);
    const call = newCall();
    expect(await c.request({ op: 'start', ref: ref(), call, ani, dest: DEST })).toMatchObject({ op: 'started' });
    // While the call talks, the owner moves the number to a new ID (off the old one, onto the new one).
    expect(await anis.remove(idKeyOf(h, id), ani, { role: 'owner' })).toMatchObject({ ok: true });
    expect(await anis.add(idKeyOf(h, next!), ani, { role: 'owner' })).toMatchObject({ ok: true });
    // The stop names the number its start named: the call it ends was begun on the old ID, billed there.
    const r = await c.request({ op: 'stop', ref: ref(), call, sec: 30, ani, dest: DEST });
    expect(r).toMatchObject({ op: 'stopped', call, billedSec: 30, cost: 3000, balance: 997_000 });
    expect(await cdrsOf(h, id, call)).toEqual([expect.objectContaining({ cause: 'normal', sec: '30' })]);
    expect(await balanceOf(h, next!)).toBe(1_000_000);
  });

  it('is billed to the ID the number is registered to, recorded as recovered', async () => {
    const { id, ani } = await registered();
    const call = newCall();
    // No start reached Tessera (lost with a failed primary): the stop alone describes the call.
    const r = await c.request({ op: 'stop', ref: ref(), call, sec: 30, ani, dest: DEST });
    expect(r).toMatchObject({ op: 'stopped', call, billedSec: 30, cost: 3000, balance: 997_000 });
    expect(await cdrsOf(h, id, call)).toEqual([
      expect.objectContaining({ cause: 'recovered', sec: '30', cost: '3000' }),
    ]);
    expect(await balanceOf(h, id)).toBe(997_000);
  });

  it('a number the ID no longer lists bills nobody: unknown_ani; id and ani together are refused', async () => {
    const { id, ani } = await registered();
    const index = aniPlace(h.ctx.ids, ani)!.key;
    const before = await h.r.get(index);
    expect(await anis.remove(idKeyOf(h, id), ani, { role: 'owner' })).toMatchObject({ ok: true, change: 'gone' });
    // The gateway read the index before the removal.
    await h.r.set(index, before!);
    const call = newCall();
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 30, ani, dest: DEST })).toMatchObject({
      op: 'error',
      call,
      reason: 'unknown_ani',
    });
    expect(await c.request({ op: 'stop', ref: ref(), call, sec: 30, id, ani, dest: DEST })).toMatchObject({
      op: 'error',
      reason: 'bad_value',
    });
    expect(await cdrsOf(h, id, call)).toEqual([]);
    expect(await balanceOf(h, id)).toBe(1_000_000);
  });
});

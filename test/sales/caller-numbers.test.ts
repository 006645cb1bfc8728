/**
 * Caller numbers on the check page: with the link and the PIN an owner
 * registers, sees and removes the numbers that log in to a talk ID without
 * it (docs/sales.md), within the product's limit, one ID per number, and a
 * daily change rate. Every change needs the PIN and the page's form token.
 */
import { randomInt } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { gateway, mint, seedCatalog, startHarness, token, type Harness } from '../support/harness';
import { formSession, http, postPageForm, type FormSession, type Res } from '../support/http';
import { balanceOf } from '../support/redis';
import { Client } from '../support/ws-client';
import { addMember, buy, newKey, product, type Buyer } from './fixtures';

let h: Harness;
let gw: Gateway;
let salesTok: string;
let buyer: Buyer;
let session: FormSession;
let sw: Client;

/** Two numbers per ID, three changes a day. */
const P = product('talk-ani', { maxAnis: 2, aniChangesPerDay: 3 });
/** No caller numbers at all. */
const P0 = product('talk-noani', { maxAnis: 0 });

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [P, P0]);
  await mint(h, P, 20);
  await mint(h, P0, 2);
  gw = await gateway(h, {
    pin: { maxTries: 3, lockSec: 60, lockMaxSec: 60, maxTriesPerClient: 1000, maxTriesPerNetwork: 100_000 },
  });
  salesTok = await token(h, 'sales', 'shop-ani');
  buyer = await addMember(h, 1_000_000_000);
  session = await formSession(gw, '/check/0/' + '0'.repeat(32));
  sw = await Client.connect(gw.port, await token(h, 'switch'));
});
afterAll(async () => {
  await sw?.close();
  await gw?.close();
  await h?.stop();
});
beforeEach(async () => {
  const found = await h.r.keys('ts:{b*}:pinip:*');
  if (found.length) await h.r.del(...found);
});

interface Bought {
  id: string;
  pin: string;
  path: string;
}

async function buyOne(name = 'talk-ani'): Promise<Bought> {
  const pin = String(randomInt(1000, 9999));
  const r = await buy(gw, salesTok, newKey(), name, buyer, pin);
  if (r.status !== 200) throw new Error(`buy: ${r.status} ${r.text}`);
  return { id: r.json.id, pin, path: new URL(r.json.checkUrl).pathname };
}

/** A fresh caller number in E.164 digits (no +). */
const newAni = (): string => `4917${randomInt(10_000_000, 99_999_999)}`;

const addAni = (b: Bought, ani: string, pin = b.pin): Promise<Res> =>
  postPageForm(gw, b.path, { op: 'ani_add', ani, pin }, session);
const removeAni = (b: Bought, ani: string, pin = b.pin): Promise<Res> =>
  postPageForm(gw, b.path, { op: 'ani_remove', ani, pin }, session);
const show = (b: Bought): Promise<Res> => postPageForm(gw, b.path, { pin: b.pin }, session);

/** The numbers the page lists, as shown. */
const listed = (r: Res): string[] =>
  [...(/<ul id="anis">([\s\S]*?)<\/ul>/.exec(r.text)?.[1] ?? '').matchAll(/<span class="ani">([^<]+)</g)].map(
    (m) => m[1]!,
  );
const note = (r: Res): string => /id="ani-note">([^<]*)</.exec(r.text)?.[1] ?? '';

describe('caller numbers on the check page', () => {
  it('an owner registers a number with the PIN, and a call from it is billed to that ID', async () => {
    const b = await buyOne();
    const other = await buyOne();
    const ani = newAni();
    // Written as people write numbers: + and spaces.
    const r = await addAni(b, `+${ani.slice(0, 2)} ${ani.slice(2, 6)} ${ani.slice(6)}`);
    expect(r.status).toBe(200);
    expect(note(r)).toBe('Caller number added.');
    expect(listed(r)).toEqual([`+${ani}`]);
    expect(listed(await show(b))).toEqual([`+${ani}`]);

    const call = `c-${randomInt(1e9)}`;
    const started = await sw.request({ op: 'start', ref: 1, call, ani: `+${ani}`, dest: '4912345' });
    expect(started).toMatchObject({ op: 'started', balance: 1_000_000 });
    const stopped = await sw.request({ op: 'stop', ref: 2, call, sec: 10 });
    expect(stopped).toMatchObject({ op: 'stopped', cost: 1000, balance: 999_000 });
    expect(await balanceOf(h, b.id)).toBe(999_000);
    expect(await balanceOf(h, other.id)).toBe(1_000_000);
  });

  it('the owner removes a number: calls from it no longer log in', async () => {
    const b = await buyOne();
    const ani = newAni();
    expect((await addAni(b, ani)).status).toBe(200);
    const r = await removeAni(b, ani);
    expect(r.status).toBe(200);
    expect(note(r)).toBe('Caller number removed.');
    expect(listed(r)).toEqual([]);
    const started = await sw.request({ op: 'start', ref: 3, call: `c-${randomInt(1e9)}`, ani, dest: '4912345' });
    expect(started).toMatchObject({ op: 'error', reason: 'unknown_ani' });
  });

  it('a wrong PIN registers nothing, shows no number, and counts toward the link lock', async () => {
    const b = await buyOne();
    const ani = newAni();
    const wrong = b.pin === '1111' ? '2222' : '1111';
    for (let i = 0; i < 3; i++) {
      const r = await addAni(b, ani, wrong);
      expect(r.status === 403 || r.status === 429).toBe(true);
      expect(r.text).not.toContain(ani);
      expect(r.text).not.toContain(b.id);
    }
    // Locked: even the right PIN changes nothing now.
    const locked = await addAni(b, ani);
    expect(locked.status).toBe(429);
    expect(locked.text).not.toContain(ani);
    const started = await sw.request({ op: 'start', ref: 4, call: `c-${randomInt(1e9)}`, ani, dest: '4912345' });
    expect(started).toMatchObject({ op: 'error', reason: 'unknown_ani' });
  });

  it('a form without the page token changes nothing', async () => {
    const b = await buyOne();
    const ani = newAni();
    const r = await http(gw, 'POST', b.path, { form: { op: 'ani_add', ani, pin: b.pin } });
    expect(r.status).toBe(403);
    expect(listed(await show(b))).toEqual([]);
  });

  it("at most the product's maxAnis numbers; a product with 0 offers none", async () => {
    const b = await buyOne();
    const [a1, a2, a3] = [newAni(), newAni(), newAni()];
    expect((await addAni(b, a1)).status).toBe(200);
    const second = await addAni(b, a2);
    expect(listed(second)).toEqual([`+${a1}`, `+${a2}`]);
    // Each Remove button says which number it removes (a screen reader reads only the button).
    expect(second.text).toContain(`aria-label="Remove +${a2}">Remove</button>`);
    // The page offers no add form when the ID is full; a crafted one is refused.
    expect(second.text).not.toContain('id="ani-add"');
    const third = await addAni(b, a3);
    expect(third.status).toBe(409);
    expect(note(third)).toBe('This ID can have at most 2 caller numbers. Remove one first.');
    expect(listed(third)).toEqual([`+${a1}`, `+${a2}`]);

    const none = await buyOne('talk-noani');
    const page = await show(none);
    expect(page.status).toBe(200);
    expect(page.text).not.toContain('Caller numbers');
    await addAni(none, a3);
    const started = await sw.request({ op: 'start', ref: 5, call: `c-${randomInt(1e9)}`, ani: a3, dest: '4912345' });
    expect(started).toMatchObject({ op: 'error', reason: 'unknown_ani' });
  });

  it('a number is registered to one ID at a time: another owner is refused', async () => {
    const first = await buyOne();
    const second = await buyOne();
    const ani = newAni();
    expect((await addAni(first, ani)).status).toBe(200);
    const r = await addAni(second, ani);
    expect(r.status).toBe(409);
    expect(note(r)).toBe('That number is registered to another ID. Remove it there first.');
    expect(listed(r)).toEqual([]);
    // It still logs in to the first ID.
    const q = await sw.request({ op: 'quote', ref: 6, ani, dest: '4912345' });
    expect(q).toMatchObject({ op: 'quoted', balance: 1_000_000 });
    expect(listed(await show(first))).toEqual([`+${ani}`]);
  });

  it("no owner can test which numbers are registered: a full ID is refused first, another ID's number counts as a change", async () => {
    const victim = await buyOne();
    const registered = newAni();
    expect((await addAni(victim, registered)).status).toBe(200);
    // An ID whose list is full: a registered number and a free one get the same answer.
    const full = await buyOne();
    for (const a of [newAni(), newAni()]) expect((await addAni(full, a)).status).toBe(200);
    const reasons = async (b: Bought, anis: string[]): Promise<string[]> => {
      const out: string[] = [];
      for (const a of anis) out.push((await addAni(b, a)).headers.get('tessera-reason') ?? 'ok');
      return out;
    };
    expect(await reasons(full, [newAni(), registered, newAni()])).toEqual(
      Array.from({ length: 3 }, () => 'too_many_anis'),
    );
    // Room on its list: each number found registered costs a change (3 a day), then nothing is said.
    const prober = await buyOne();
    expect(await reasons(prober, [registered, registered, registered, registered, newAni()])).toEqual([
      'ani_taken',
      'ani_taken',
      'ani_taken',
      'too_many_changes',
      'too_many_changes',
    ]);
    expect(listed(await show(prober))).toEqual([]);
    expect(listed(await show(victim))).toEqual([`+${registered}`]);
  });

  it('changes per day are limited: the one past aniChangesPerDay is refused', async () => {
    const b = await buyOne();
    const [a1, a2] = [newAni(), newAni()];
    expect((await addAni(b, a1)).status).toBe(200);
    expect((await removeAni(b, a1)).status).toBe(200);
    expect((await addAni(b, a2)).status).toBe(200);
    const fourth = await addAni(b, a1);
    expect(fourth.status).toBe(429);
    expect(note(fourth)).toBe('Too many changes to the caller numbers of this ID today: try again tomorrow.');
    expect(listed(fourth)).toEqual([`+${a2}`]);
    // The refused number was not left in the index either.
    const q = await sw.request({ op: 'quote', ref: 7, ani: a1, dest: '4912345' });
    expect(q).toMatchObject({ op: 'error', reason: 'unknown_ani' });
  });

  it('a number not in international format is refused, and not echoed', async () => {
    const b = await buyOne();
    const r = await addAni(b, '030 1234567');
    expect(r.status).toBe(400);
    expect(note(r)).toContain('international format');
    expect(r.text).not.toContain('1234567');
  });
});

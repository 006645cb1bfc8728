/**
 * `tessera ani add|remove|list`: the operator's hand on an ID's caller numbers.
 * The product's limit holds; the owners' change rate does not; a number
 * registered to another ID moves only with --move, and a call from it is then
 * billed to the new ID.
 */
import { randomInt } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { aniPlace } from '../../src/ledger/anis';
import { cli, cliEnv, setEnv } from '../support/cli';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { idFields, idKeyOf } from '../support/redis';
import { Client } from '../support/ws-client';

let h: Harness;
let gw: Gateway;
let sw: Client;
let restoreEnv: (() => void) | undefined;
const P = talkProduct({ maxAnis: 2, aniChangesPerDay: 1 });

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [P]);
  gw = await gateway(h);
  sw = await Client.connect(gw.port, await token(h, 'switch'));
  restoreEnv = setEnv(cliEnv(h));
});
afterAll(async () => {
  restoreEnv?.();
  await sw?.close();
  await gw?.close();
  await h?.stop();
});

let refs = 0;
const newAni = (): string => `+4930${randomInt(10_000_000, 99_999_999)}`;
const json = (out: string): any => JSON.parse(out);

async function startBy(ani: string): Promise<Record<string, any>> {
  return sw.request({ op: 'start', ref: ++refs, call: `c-${randomInt(1e9)}`, ani, dest: '4912345' });
}

describe('tessera ani', () => {
  it('adds, lists and removes numbers; the change rate is the owners’, not the operator’s', async () => {
    const [id] = (await soldIds(h, P)) as [string];
    const [a1, a2, a3] = [newAni(), newAni(), newAni()];
    const added = await cli('ani', 'add', id, a1);
    expect(added.code).toBe(0);
    expect(json(added.out)).toEqual({ change: 'new', numbers: [a1] });
    // Spaces and 00 are normalised; the same number again changes nothing.
    const same = await cli('ani', 'add', id, `00${a1.slice(1, 5)} ${a1.slice(5)}`);
    expect(json(same.out)).toEqual({ change: 'same', numbers: [a1] });
    expect((await cli('ani', 'add', id, a2)).code).toBe(0);
    // The product's limit holds for the operator too.
    const third = await cli('ani', 'add', id, a3);
    expect(third).toMatchObject({
      code: 1,
      err: 'refused: too_many_anis: this ID has as many caller numbers as its product allows\n',
    });
    expect(json((await cli('ani', 'list', id)).out)).toEqual({ numbers: [a1, a2] });

    const removed = await cli('ani', 'remove', id, a1);
    expect(json(removed.out)).toEqual({ change: 'gone', numbers: [a2] });
    expect(await cli('ani', 'remove', id, a1)).toMatchObject({
      code: 1,
      err: 'refused: unknown_ani: no ID is registered to this caller number\n',
    });
    expect(await startBy(a1)).toMatchObject({ op: 'error', reason: 'unknown_ani' });
    expect(await startBy(a2)).toMatchObject({ op: 'started' });
  });

  it('a number registered to another ID moves only with --move; calls then bill the new ID', async () => {
    const [a, b] = (await soldIds(h, P, 2)) as [string, string];
    const ani = newAni();
    expect((await cli('ani', 'add', a, ani)).code).toBe(0);
    expect(await cli('ani', 'add', b, ani)).toMatchObject({
      code: 1,
      err: 'refused: ani_taken: this caller number is registered to another ID\n',
    });
    const moved = await cli('ani', 'add', b, ani, '--move');
    expect(moved.code).toBe(0);
    expect(json(moved.out)).toEqual({ change: 'new', numbers: [ani] });
    expect(json((await cli('ani', 'list', a)).out)).toEqual({ numbers: [] });
    expect(await startBy(ani)).toMatchObject({ op: 'started' });
    expect((await idFields(h, b)).act).toBe('1');
    expect((await idFields(h, a)).act).toBe('0');
  });

  it('bad input: a bad number, an unknown ID, a missing argument', async () => {
    const [id] = (await soldIds(h, P)) as [string];
    expect(await cli('ani', 'add', id, '0301234567')).toMatchObject({
      code: 1,
      err: 'refused: bad_ani: not a caller number: international format, 7 to 15 digits, country code first\n',
    });
    const unknown = id.slice(0, -2) + String((Number(id.slice(-2)) + 50) % 100).padStart(2, '0');
    const r = await cli('ani', 'list', unknown);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^refused: (unknown_id|bad_checksum): /);
    expect((await cli('ani', 'add', id)).code).toBe(2);
    expect((await cli('ani', 'frob', id)).code).toBe(2);
  });
});

describe('what a crash between the two writes leaves', () => {
  it('an index naming an ID that does not list the number is taken over by the next add', async () => {
    const [a, b] = (await soldIds(h, P, 2)) as [string, string];
    const ani = newAni();
    // A crash after the index was claimed for A, before A listed the number.
    await h.r.set(aniPlace(h.ctx.ids, ani)!.key, idKeyOf(h, a));
    expect(await startBy(ani)).toMatchObject({ op: 'error', reason: 'unknown_ani' });
    const r = await cli('ani', 'add', b, ani);
    expect(r.code).toBe(0);
    expect(await h.r.get(aniPlace(h.ctx.ids, ani)!.key)).toBe(idKeyOf(h, b));
    expect(await startBy(ani)).toMatchObject({ op: 'started' });
    expect((await idFields(h, b)).act).toBe('1');
  });

  it('listing an ID drops a number whose index names another ID, without counting a change', async () => {
    const [a, b] = (await soldIds(h, P, 2)) as [string, string];
    const ani = newAni();
    expect((await cli('ani', 'add', a, ani)).code).toBe(0);
    // A listed the number, but the index names B (a move that stopped half-way, then B listed it).
    await h.r.set(aniPlace(h.ctx.ids, ani)!.key, idKeyOf(h, b));
    expect(json((await cli('ani', 'list', a)).out)).toEqual({ numbers: [] });
    expect((await idFields(h, a)).anis).toBe('');
    expect((await idFields(h, a)).anich).toBeUndefined();
    expect(await startBy(ani)).toMatchObject({ op: 'error', reason: 'unknown_ani' });
  });
});

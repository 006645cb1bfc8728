/**
 * Every answer of the scanner protocol, over a real
 * /v1/scanner socket against a real Redis: what `ok` grants for each kind of
 * product, and each refusal with the details a gate screen shows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { activateId, setIdState } from '../../src/ledger/ids';
import type { Gateway } from '../../src/gateway/server';
import { generateId } from '../../src/ids/idnum';
import { gateway, mint, seedCatalog, soldIds, startHarness, talkProduct, uniq, type Harness } from '../support/harness';
import { balanceOf, idFields, idKeyOf } from '../support/redis';
import { Scanner } from '../support/ws-client';
import {
  DAY,
  loadRedemptionCatalog,
  OTHER_VENUE,
  PRICE,
  recordsOf,
  scannerToken,
  streamLength,
  VENUE,
  WALLET_FACE,
  type Catalog,
} from './fixtures';

let h: Harness;
let gw: Gateway;
let cat: Catalog;
/** A scanner at the arena, not bound to a gate. */
let arena: Scanner;
let arenaName: string;
/** A scanner at the arena bound to the north gate. */
let north: Scanner;
let northName: string;
/** A scanner at the arena bound to the south gate. */
let south: Scanner;
/** A scanner at the club. */
let club: Scanner;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  cat = await loadRedemptionCatalog(h);
  gw = await gateway(h);
  const a = await scannerToken(h);
  arenaName = a.name;
  arena = await Scanner.connect(gw.port, a.tok);
  const n = await scannerToken(h, { venue: VENUE, gate: 'north' });
  northName = n.name;
  north = await Scanner.connect(gw.port, n.tok);
  south = await Scanner.connect(gw.port, (await scannerToken(h, { venue: VENUE, gate: 'south' })).tok);
  club = await Scanner.connect(gw.port, (await scannerToken(h, { venue: OTHER_VENUE })).tok, { binary: true });
});
afterAll(async () => {
  await Promise.all([arena, north, south, club].map((s) => s?.close()));
  await gw?.close();
  await h?.stop();
});

const sold = async (p: Parameters<typeof soldIds>[1]): Promise<string> => (await soldIds(h, p, 1))[0]!;
const badCheck = (id: string): string => id.slice(0, -1) + String((Number(id.slice(-1)) + 1) % 10);

describe('ok: entry tickets', () => {
  it('a single-entry ticket: entry granted, entriesLeft 0, then already_redeemed with when and where', async () => {
    const id = await sold(cat.ticket);
    const scan = uniq();
    const t0 = Date.now();
    expect(await arena.redeem({ scan, id, gate: 'east' })).toEqual({
      op: 'redeemed',
      scan,
      kind: 'entry',
      action: 'entry',
      amount: 1,
      entriesLeft: 0,
    });
    const t1 = Date.now();
    const f = await idFields(h, id);
    expect(f).toMatchObject({ bal: '0', inside: '1', fven: VENUE, fgate: 'east' });
    const first = Number(f.first);
    expect(first).toBeGreaterThanOrEqual(t0);
    expect(first).toBeLessThanOrEqual(t1);

    const again = uniq();
    expect(await arena.redeem({ scan: again, id, gate: 'west' })).toEqual({
      op: 'refused',
      scan: again,
      reason: 'already_redeemed',
      message: 'already used',
      firstUsed: { time: first, venue: VENUE, gate: 'east' },
    });
    // The refusal changed nothing and wrote no record.
    expect(await recordsOf(h, id)).toHaveLength(1);
    expect(await idFields(h, id)).toEqual(f);
  });

  it('a three-entry ticket counts down 2, 1, 0, then refuses', async () => {
    const id = await sold(cat.ticket3);
    for (const left of [2, 1, 0]) {
      const scan = uniq();
      expect(await arena.redeem({ scan, id })).toEqual({
        op: 'redeemed',
        scan,
        kind: 'entry',
        action: 'entry',
        amount: 1,
        entriesLeft: left,
      });
      expect(await balanceOf(h, id)).toBe(left);
    }
    const r = await arena.redeem({ scan: uniq(), id });
    expect(r).toMatchObject({ op: 'refused', reason: 'already_redeemed', firstUsed: { venue: VENUE, gate: '' } });
    expect(r.firstUsed.time).toBe(Number((await idFields(h, id)).first));
    expect((await recordsOf(h, id)).map((x) => [x.action, x.amount, x.before, x.after])).toEqual([
      ['entry', '1', '3', '2'],
      ['entry', '1', '2', '1'],
      ['entry', '1', '1', '0'],
    ]);
  });
});

describe('ok: goods (stored value)', () => {
  it('debits price × qty and answers valueLeft and the item', async () => {
    const id = await sold(cat.wallet);
    const scan = uniq();
    expect(await arena.redeem({ scan, id, item: 'water', qty: 3 })).toEqual({
      op: 'redeemed',
      scan,
      kind: 'goods',
      action: 'spend',
      amount: 3 * PRICE.water,
      valueLeft: WALLET_FACE - 3 * PRICE.water,
      item: 'water',
    });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - 3 * PRICE.water);
  });

  it('prices come from the scanning venue: the same item costs what that venue charges', async () => {
    const id = await sold(cat.wallet);
    const scan = uniq();
    expect(await club.redeem({ scan, id, item: 'beer' })).toEqual({
      op: 'redeemed',
      scan,
      kind: 'goods',
      action: 'spend',
      amount: PRICE.clubBeer,
      valueLeft: WALLET_FACE - PRICE.clubBeer,
      item: 'beer',
    });
  });

  it('partial debits down to exactly 0, then insufficient_value with the value left (0)', async () => {
    const id = await sold(cat.wallet);
    // 10.00 = 2 × 4.50 + 1.00
    const s1 = uniq();
    expect(await arena.redeem({ scan: s1, id, item: 'beer', qty: 2 })).toEqual({
      op: 'redeemed',
      scan: s1,
      kind: 'goods',
      action: 'spend',
      amount: 2 * PRICE.beer,
      valueLeft: 1_000_000,
      item: 'beer',
    });
    // More than is left: refused with what is left, nothing taken.
    const s2 = uniq();
    expect(await arena.redeem({ scan: s2, id, item: 'beer' })).toEqual({
      op: 'refused',
      scan: s2,
      reason: 'insufficient_value',
      message: 'not enough value left',
      valueLeft: 1_000_000,
    });
    const s3 = uniq();
    expect(await arena.redeem({ scan: s3, id, item: 'water' })).toEqual({
      op: 'redeemed',
      scan: s3,
      kind: 'goods',
      action: 'spend',
      amount: PRICE.water,
      valueLeft: 0,
      item: 'water',
    });
    expect(await balanceOf(h, id)).toBe(0);
    const s4 = uniq();
    expect(await arena.redeem({ scan: s4, id, item: 'water' })).toEqual({
      op: 'refused',
      scan: s4,
      reason: 'insufficient_value',
      message: 'not enough value left',
      valueLeft: 0,
    });
    expect(await balanceOf(h, id)).toBe(0);
    expect((await recordsOf(h, id)).map((r) => [r.amount, r.before, r.after])).toEqual([
      [String(2 * PRICE.beer), String(WALLET_FACE), '1000000'],
      [String(PRICE.water), '1000000', '0'],
    ]);
  });

  it('a goods ID is valid for expiryDays from its first use: exp is set then, and once past, expired', async () => {
    const id = await sold(cat.wallet);
    expect((await idFields(h, id)).exp).toBe('0');
    expect(await arena.redeem({ scan: uniq(), id, item: 'water' })).toMatchObject({
      op: 'redeemed',
      valueLeft: WALLET_FACE - PRICE.water,
    });
    const f = await idFields(h, id);
    expect(Number(f.exp)).toBe(Number(f.first) + cat.wallet.expiryDays * DAY);
    expect(cat.wallet.expiryDays).toBe(365);
    // A second use does not move the expiry.
    expect(await arena.redeem({ scan: uniq(), id, item: 'water' })).toMatchObject({ op: 'redeemed' });
    expect((await idFields(h, id)).exp).toBe(f.exp);

    await h.r.hset(idKeyOf(h, id), 'exp', Date.now() - 1);
    const scan = uniq();
    expect(await arena.redeem({ scan, id, item: 'water' })).toEqual({
      op: 'refused',
      scan,
      reason: 'expired',
      message: 'the ID has expired',
    });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - 2 * PRICE.water);
  });
});

describe('ok: services', () => {
  it('counts uses down; the item is optional and, when given, must be the service', async () => {
    const id = await sold(cat.spa);
    const s1 = uniq();
    expect(await arena.redeem({ scan: s1, id })).toEqual({
      op: 'redeemed',
      scan: s1,
      kind: 'service',
      action: 'use',
      amount: 1,
      usesLeft: 1,
    });
    const bad = uniq();
    expect(await arena.redeem({ scan: bad, id, item: 'haircut' })).toEqual({
      op: 'refused',
      scan: bad,
      reason: 'unknown_item',
      message: 'this item is not sold here',
    });
    expect(await balanceOf(h, id)).toBe(1);
    const s2 = uniq();
    expect(await arena.redeem({ scan: s2, id, item: 'massage' })).toEqual({
      op: 'redeemed',
      scan: s2,
      kind: 'service',
      action: 'use',
      amount: 1,
      usesLeft: 0,
      item: 'massage',
    });
    const s3 = uniq();
    const first = Number((await idFields(h, id)).first);
    expect(await arena.redeem({ scan: s3, id, item: 'massage' })).toEqual({
      op: 'refused',
      scan: s3,
      reason: 'already_redeemed',
      message: 'already used',
      firstUsed: { time: first, venue: VENUE, gate: '' },
    });
    // Services too count their validity from first use.
    expect(Number((await idFields(h, id)).exp)).toBe(first + 365 * DAY);
  });
});

describe('refusals before Redis is asked', () => {
  it('bad_checksum for a mistyped ID, bad_format for what is not an ID', async () => {
    const [id] = await soldIds(h, cat.ticket);
    const scan = uniq();
    expect(await arena.redeem({ scan, id: badCheck(id!) })).toEqual({
      op: 'refused',
      scan,
      reason: 'bad_checksum',
      message: 'the ID is mistyped (check digit)',
    });
    for (const bad of ['12345', 'abcdabcdabcdabcd', `${id}0`, '']) {
      expect(await arena.redeem({ scan, id: bad })).toEqual({
        op: 'refused',
        scan,
        reason: 'bad_format',
        message: 'not an ID number',
      });
    }
    // Spaces and dashes as a person types them are fine.
    const typed = `${id!.slice(0, 4)} ${id!.slice(4, 8)}-${id!.slice(8)}`;
    expect(await arena.redeem({ scan, id: typed })).toEqual({
      op: 'redeemed',
      scan,
      kind: 'entry',
      action: 'entry',
      amount: 1,
      entriesLeft: 0,
    });
  });

  it('unknown_id for a well-formed ID that was never minted', async () => {
    const scan = uniq();
    expect(await arena.redeem({ scan, id: generateId(16) })).toEqual({
      op: 'refused',
      scan,
      reason: 'unknown_id',
      message: 'no such ID',
    });
  });
});

describe('refusals by life cycle and validity', () => {
  it('not_active: minted but not sold; the same ID redeems once sold', async () => {
    const [id] = await mint(h, cat.ticket);
    const scan = uniq();
    expect(await arena.redeem({ scan, id: id! })).toEqual({
      op: 'refused',
      scan,
      reason: 'not_active',
      message: 'the ID has not been sold',
    });
    expect(await balanceOf(h, id!)).toBe(0);
    expect(await activateId(h.ctx, id!, { price: 1 })).toMatchObject({ ok: true });
    // The refused scan id was not kept: the retry now redeems.
    expect(await arena.redeem({ scan, id: id! })).toMatchObject({ op: 'redeemed', entriesLeft: 0 });
  });

  it('blocked: a blocked ID is refused and keeps its value; unblocked it works again', async () => {
    const id = await sold(cat.wallet);
    expect(await setIdState(h.ctx, id, 'block', 'stolen')).toEqual({ ok: true, state: 'blocked' });
    const scan = uniq();
    expect(await arena.redeem({ scan, id, item: 'beer' })).toEqual({
      op: 'refused',
      scan,
      reason: 'blocked',
      message: 'the ID is blocked',
    });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE);
    await setIdState(h.ctx, id, 'unblock');
    expect(await arena.redeem({ scan, id, item: 'beer' })).toMatchObject({
      op: 'redeemed',
      valueLeft: WALLET_FACE - PRICE.beer,
    });
  });

  it('expired: a ticket past its validUntil', async () => {
    const id = await sold(cat.past);
    const scan = uniq();
    expect(await arena.redeem({ scan, id })).toEqual({
      op: 'refused',
      scan,
      reason: 'expired',
      message: 'the ID has expired',
    });
    expect(await balanceOf(h, id)).toBe(1);
  });

  it('expired: a ticket whose exp (validity from first use) is behind us', async () => {
    const id = await sold(cat.ticket3);
    expect(await arena.redeem({ scan: uniq(), id })).toMatchObject({ op: 'redeemed', entriesLeft: 2 });
    await h.r.hset(idKeyOf(h, id), 'exp', Date.now() - 1000);
    const scan = uniq();
    expect(await arena.redeem({ scan, id })).toEqual({
      op: 'refused',
      scan,
      reason: 'expired',
      message: 'the ID has expired',
    });
    // exp just ahead: valid again (the check compares with now, nothing was changed by the refusal).
    await h.r.hset(idKeyOf(h, id), 'exp', Date.now() + 60_000);
    expect(await arena.redeem({ scan, id })).toMatchObject({ op: 'redeemed', entriesLeft: 1 });
  });

  it('not_yet_valid: a ticket before its validFrom, with validFrom in the answer', async () => {
    const id = await sold(cat.future);
    expect(typeof cat.future.validFrom).toBe('number');
    const scan = uniq();
    expect(await arena.redeem({ scan, id })).toEqual({
      op: 'refused',
      scan,
      reason: 'not_yet_valid',
      message: 'not valid yet',
      validFrom: cat.future.validFrom,
    });
    expect(await balanceOf(h, id)).toBe(1);
  });
});

describe('refusals by place: venue and gate', () => {
  it('wrong_venue: a scanner of another venue, whatever venue it claims in the message', async () => {
    const id = await sold(cat.ticket);
    const scan = uniq();
    expect(await club.redeem({ scan, id, venue: VENUE })).toEqual({
      op: 'refused',
      scan,
      reason: 'wrong_venue',
      message: 'not valid at this venue',
    });
    const w = await sold(cat.arenaWallet);
    expect(await club.redeem({ scan, id: w, item: 'beer', venue: VENUE })).toEqual({
      op: 'refused',
      scan,
      reason: 'wrong_venue',
      message: 'not valid at this venue',
    });
    expect(await balanceOf(h, id)).toBe(1);
    expect(await balanceOf(h, w)).toBe(WALLET_FACE);
  });

  it('wrong_venue says nothing of the ID’s state: unsold, used, blocked or expired, another venue hears only wrong_venue', async () => {
    const [unsold] = await mint(h, cat.ticket);
    const used = await sold(cat.ticket);
    expect(await arena.redeem({ scan: uniq(), id: used })).toMatchObject({ op: 'redeemed' });
    const blocked = await sold(cat.ticket);
    await setIdState(h.ctx, blocked, 'block', 'stolen');
    const past = await sold(cat.past);
    const early = await sold(cat.future);
    const usedUp = await sold(cat.spa);
    await h.r.hset(idKeyOf(h, usedUp), 'bal', 0);
    const wrongVenue = { op: 'refused', reason: 'wrong_venue', message: 'not valid at this venue' };
    for (const id of [unsold!, used, blocked, past, early, usedUp]) {
      const scan = uniq();
      expect(await club.redeem({ scan, id }), id).toEqual({ ...wrongVenue, scan });
      expect(await club.validate({ id }), id).toMatchObject(wrongVenue);
      expect(await club.validate({ id, dir: 'out' }), id).toMatchObject(wrongVenue);
    }
    // Nothing was changed by the refusals.
    expect(await balanceOf(h, used)).toBe(0);
    expect(await balanceOf(h, past)).toBe(1);
    expect((await idFields(h, unsold!)).st).toBe('minted');
  });

  it('wrong_gate: a scanner without a gate uses the gate it sends', async () => {
    const id = await sold(cat.gated);
    const s1 = uniq();
    expect(await arena.redeem({ scan: s1, id, gate: 'south' })).toEqual({
      op: 'refused',
      scan: s1,
      reason: 'wrong_gate',
      message: 'not valid at this gate',
    });
    const s2 = uniq();
    expect(await arena.redeem({ scan: s2, id })).toEqual({
      op: 'refused',
      scan: s2,
      reason: 'wrong_gate',
      message: 'not valid at this gate',
    });
    const s3 = uniq();
    expect(await arena.redeem({ scan: s3, id, gate: 'north' })).toEqual({
      op: 'redeemed',
      scan: s3,
      kind: 'entry',
      action: 'entry',
      amount: 1,
      entriesLeft: 0,
    });
    expect((await recordsOf(h, id)).map((r) => [r.scanner, r.venue, r.gate])).toEqual([[arenaName, VENUE, 'north']]);
  });

  it('wrong_gate: a scanner bound to a gate cannot redeem for another gate, whatever gate it sends', async () => {
    const id = await sold(cat.gated);
    const s1 = uniq();
    expect(await south.redeem({ scan: s1, id, gate: 'north' })).toEqual({
      op: 'refused',
      scan: s1,
      reason: 'wrong_gate',
      message: 'not valid at this gate',
    });
    expect(await balanceOf(h, id)).toBe(1);
    // The north scanner redeems at north even when it claims south; the record says north.
    const s2 = uniq();
    expect(await north.redeem({ scan: s2, id, gate: 'south' })).toEqual({
      op: 'redeemed',
      scan: s2,
      kind: 'entry',
      action: 'entry',
      amount: 1,
      entriesLeft: 0,
    });
    expect((await recordsOf(h, id)).map((r) => [r.scanner, r.venue, r.gate])).toEqual([[northName, VENUE, 'north']]);
    expect((await idFields(h, id)).fgate).toBe('north');
  });
});

describe('refusals by what is asked', () => {
  it('unknown_item: an item the venue does not sell, one only another venue sells, or no item', async () => {
    const id = await sold(cat.wallet);
    for (const item of ['cake', 'cocktail', undefined]) {
      const scan = uniq();
      expect(await arena.redeem({ scan, id, ...(item ? { item } : {}) })).toEqual({
        op: 'refused',
        scan,
        reason: 'unknown_item',
        message: 'this item is not sold here',
      });
    }
    expect(await balanceOf(h, id)).toBe(WALLET_FACE);
    expect(await recordsOf(h, id)).toEqual([]);
  });

  it('wrong_kind: a talk ID at a gate', async () => {
    const [talk] = await soldIds(h, talkProduct());
    const scan = uniq();
    expect(await arena.redeem({ scan, id: talk! })).toEqual({
      op: 'refused',
      scan,
      reason: 'wrong_kind',
      message: 'this ID is not for this use',
    });
    expect(await arena.redeem({ scan, id: talk!, item: 'beer' })).toEqual({
      op: 'refused',
      scan,
      reason: 'wrong_kind',
      message: 'this ID is not for this use',
    });
    expect(await balanceOf(h, talk!)).toBe(talkProduct().face);
    expect(await recordsOf(h, talk!)).toEqual([]);
  });
});

describe('what a scan is for', () => {
  const WRONG_KIND = { op: 'refused', reason: 'wrong_kind', message: 'this ID is not for this use' };

  it('wrong_kind: a ticket at a till, whatever gates it lists; an exit scan of a card or a service', async () => {
    const gated = await sold(cat.gated);
    const wallet = await sold(cat.wallet);
    const spa = await sold(cat.spa);
    expect(await arena.redeem({ scan: uniq(), id: gated, item: 'beer' })).toMatchObject(WRONG_KIND);
    expect(await north.redeem({ scan: uniq(), id: wallet, item: 'beer', dir: 'out' })).toMatchObject(WRONG_KIND);
    expect(await north.redeem({ scan: uniq(), id: spa, dir: 'out' })).toMatchObject(WRONG_KIND);
    expect(await balanceOf(h, gated)).toBe(1);
    expect(await balanceOf(h, wallet)).toBe(WALLET_FACE);
    expect(await balanceOf(h, spa)).toBe(2);
    for (const id of [gated, wallet, spa]) expect(await recordsOf(h, id)).toEqual([]);
  });

  it('wrong_kind: a service ID scanned in at a gate without its service, and no use is lost', async () => {
    const spa = await sold(cat.spa);
    // A gate-bound token, and a handheld that names the gate it stands at.
    expect(await north.redeem({ scan: uniq(), id: spa })).toMatchObject(WRONG_KIND);
    expect(await arena.redeem({ scan: uniq(), id: spa, gate: 'east' })).toMatchObject(WRONG_KIND);
    expect(await north.validate({ id: spa })).toMatchObject(WRONG_KIND);
    expect(await balanceOf(h, spa)).toBe(2);
    expect(await recordsOf(h, spa)).toEqual([]);
    // At a gate the desk names its service; without a gate the name stays optional.
    expect(await north.redeem({ scan: uniq(), id: spa, item: 'massage' })).toMatchObject({ usesLeft: 1 });
    expect(await arena.redeem({ scan: uniq(), id: spa })).toMatchObject({ action: 'use', usesLeft: 0 });
  });
});

describe('re-entry', () => {
  it('one exit lets back in no more people than the ticket let in', async () => {
    const id = await sold(cat.reentry);
    expect(await north.redeem({ scan: uniq(), id })).toMatchObject({ action: 'entry', entriesLeft: 0 });
    expect(await north.redeem({ scan: uniq(), id, dir: 'out' })).toMatchObject({ action: 'exit' });
    expect(await north.redeem({ scan: uniq(), id, qty: 3 })).toMatchObject({
      op: 'refused',
      reason: 'insufficient_value',
      valueLeft: 1,
    });
    expect(await north.redeem({ scan: uniq(), id })).toMatchObject({ action: 'reentry', amount: 0 });
  });

  it('a group on one ticket: as many come back as went out, no more', async () => {
    const id = await sold(cat.reentry3);
    const scan = (over: object) => north.redeem({ scan: uniq(), id, ...over });
    expect(await scan({ qty: 2 })).toMatchObject({ action: 'entry', entriesLeft: 1 });
    // One of the two goes out: the other two may not come back on that exit.
    expect(await scan({ dir: 'out' })).toMatchObject({ action: 'exit' });
    expect(await scan({ qty: 2 })).toMatchObject({ op: 'refused', reason: 'insufficient_value', valueLeft: 1 });
    expect(await scan({})).toMatchObject({ action: 'reentry', amount: 0 });
    expect(await scan({})).toMatchObject({ action: 'entry', entriesLeft: 0 });
    expect(await scan({})).toMatchObject({ op: 'refused', reason: 'already_redeemed' });
    // All three go out together and come back one by one.
    expect(await scan({ dir: 'out', qty: 3 })).toMatchObject({ action: 'exit' });
    for (let i = 0; i < 3; i++) expect(await scan({})).toMatchObject({ action: 'reentry', amount: 0 });
    expect(await scan({})).toMatchObject({ op: 'refused', reason: 'already_redeemed' });
  });

  it('past its validity, those inside still get out; nobody else, and nobody back in', async () => {
    const id = await sold(cat.reentry3);
    const scan = (over: object) => north.redeem({ scan: uniq(), id, ...over });
    expect(await scan({ qty: 3 })).toMatchObject({ action: 'entry', entriesLeft: 0 });
    // The ticket's validUntil passes while the three are inside.
    await h.r.hset(idKeyOf(h, id), 'until', Date.now() - 1000);
    const expired = { op: 'refused', reason: 'expired' };
    expect(await north.validate({ id, dir: 'out', qty: 2 })).toMatchObject({ op: 'valid', action: 'exit' });
    expect(await scan({ dir: 'out', qty: 2 })).toMatchObject({ op: 'redeemed', action: 'exit', amount: 0 });
    // One is left inside: two more may not go out on this ticket, one may.
    expect(await scan({ dir: 'out', qty: 2 })).toMatchObject(expired);
    expect(await scan({ dir: 'out' })).toMatchObject({ op: 'redeemed', action: 'exit' });
    expect(await scan({ dir: 'out' })).toMatchObject(expired);
    // Their exits let nobody back in once the ticket has expired.
    expect(await scan({})).toMatchObject(expired);
    expect(await north.validate({ id })).toMatchObject(expired);
    expect((await recordsOf(h, id)).map((r) => r.action)).toEqual(['entry', 'exit', 'exit']);

    // Expired by exp (validity from first use) alike; a ticket never used lets nobody out.
    const other = await sold(cat.reentry);
    expect(await north.redeem({ scan: uniq(), id: other })).toMatchObject({ action: 'entry' });
    await h.r.hset(idKeyOf(h, other), 'exp', Date.now() - 1000);
    expect(await north.redeem({ scan: uniq(), id: other, dir: 'out' })).toMatchObject({ action: 'exit' });
    const unused = await sold(cat.past);
    expect(await north.redeem({ scan: uniq(), id: unused, dir: 'out' })).toMatchObject(expired);
  });

  it('out through an older version (during an upgrade), back in here: a re-entry, not a new entry', async () => {
    const id = await sold(cat.reentry3);
    expect(await north.redeem({ scan: uniq(), id })).toMatchObject({ action: 'entry', entriesLeft: 2 });
    // An earlier redeem.lua's exit: `inside` alone, no count of who went out.
    await h.r.hset(idKeyOf(h, id), 'inside', '0');
    expect(await north.redeem({ scan: uniq(), id })).toMatchObject({ action: 'reentry', amount: 0 });
    expect(await balanceOf(h, id)).toBe(2);
  });

  it('a re-entry ticket: in, out, back in without using an entry; twice in a row is already_redeemed', async () => {
    const id = await sold(cat.reentry);
    const s = [uniq('a'), uniq('b'), uniq('c'), uniq('d'), uniq('e'), uniq('f')] as const;
    expect(await north.redeem({ scan: s[0], id })).toEqual({
      op: 'redeemed',
      scan: s[0],
      kind: 'entry',
      action: 'entry',
      amount: 1,
      entriesLeft: 0,
    });
    const first = Number((await idFields(h, id)).first);
    // Still inside: a second "in" is a second person.
    expect(await arena.redeem({ scan: s[1], id })).toMatchObject({
      op: 'refused',
      reason: 'already_redeemed',
      firstUsed: { time: first, venue: VENUE, gate: 'north' },
    });
    expect(await north.redeem({ scan: s[2], id, dir: 'out' })).toEqual({
      op: 'redeemed',
      scan: s[2],
      kind: 'entry',
      action: 'exit',
      amount: 0,
      entriesLeft: 0,
    });
    expect((await idFields(h, id)).inside).toBe('0');
    expect(await south.redeem({ scan: s[3], id })).toEqual({
      op: 'redeemed',
      scan: s[3],
      kind: 'entry',
      action: 'reentry',
      amount: 0,
      entriesLeft: 0,
    });
    expect((await idFields(h, id)).inside).toBe('1');
    expect(await south.redeem({ scan: s[4], id })).toMatchObject({
      op: 'refused',
      reason: 'already_redeemed',
      firstUsed: { time: first, venue: VENUE, gate: 'north' },
    });
    // The exit does not move the first use.
    expect(Number((await idFields(h, id)).first)).toBe(first);
    expect((await recordsOf(h, id)).map((r) => [r.action, r.amount, r.before, r.after, r.gate])).toEqual([
      ['entry', '1', '1', '0', 'north'],
      ['exit', '0', '0', '0', 'north'],
      ['reentry', '0', '0', '0', 'south'],
    ]);
  });

  it('without re-entry, an exit scan does not let the holder back in', async () => {
    const id = await sold(cat.ticket);
    expect(await arena.redeem({ scan: uniq(), id })).toMatchObject({ op: 'redeemed', action: 'entry', entriesLeft: 0 });
    expect(await arena.redeem({ scan: uniq(), id, dir: 'out' })).toMatchObject({
      op: 'redeemed',
      action: 'exit',
      amount: 0,
      entriesLeft: 0,
    });
    expect(await arena.redeem({ scan: uniq(), id })).toMatchObject({ op: 'refused', reason: 'already_redeemed' });
    expect(await balanceOf(h, id)).toBe(0);
  });
});

describe('validate: the same checks, nothing changed', () => {
  it('a fresh ticket says ok (what a redeem would grant) and stays unused', async () => {
    const id = await sold(cat.ticket);
    const before = await idFields(h, id);
    const len = await streamLength(h, id);
    expect(await arena.validate({ id })).toEqual({
      op: 'valid',
      kind: 'entry',
      action: 'entry',
      amount: 1,
      entriesLeft: 0,
    });
    expect(await arena.validate({ id })).toEqual({
      op: 'valid',
      kind: 'entry',
      action: 'entry',
      amount: 1,
      entriesLeft: 0,
    });
    expect(await idFields(h, id)).toEqual(before);
    expect(await streamLength(h, id)).toBe(len);
    // And the real thing agrees with the preview.
    expect(await arena.redeem({ scan: 'v1', id })).toEqual({
      op: 'redeemed',
      scan: 'v1',
      kind: 'entry',
      action: 'entry',
      amount: 1,
      entriesLeft: 0,
    });
  });

  it('a used ticket says already_redeemed, with the first use', async () => {
    const id = await sold(cat.ticket);
    await north.redeem({ scan: uniq(), id });
    const f = await idFields(h, id);
    expect(await arena.validate({ id })).toEqual({
      op: 'refused',
      reason: 'already_redeemed',
      message: 'already used',
      firstUsed: { time: Number(f.first), venue: VENUE, gate: 'north' },
    });
    expect(await idFields(h, id)).toEqual(f);
  });

  it('goods: the value left after the item, without debiting; refusals as redeem gives them', async () => {
    const id = await sold(cat.wallet);
    expect(await arena.validate({ id, item: 'beer', qty: 2 })).toEqual({
      op: 'valid',
      kind: 'goods',
      action: 'spend',
      amount: 2 * PRICE.beer,
      valueLeft: 1_000_000,
      item: 'beer',
    });
    expect(await arena.validate({ id, item: 'beer', qty: 3 })).toEqual({
      op: 'refused',
      reason: 'insufficient_value',
      message: 'not enough value left',
      valueLeft: WALLET_FACE,
    });
    expect(await arena.validate({ id, item: 'cake' })).toEqual({
      op: 'refused',
      reason: 'unknown_item',
      message: 'this item is not sold here',
    });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE);
    expect((await idFields(h, id)).first).toBeUndefined();
    expect(await recordsOf(h, id)).toEqual([]);
  });

  it('gives the other refusals too: wrong_venue, wrong_gate, not_yet_valid, not_active, unknown_id, bad_checksum', async () => {
    const t = await sold(cat.ticket);
    expect(await club.validate({ id: t })).toMatchObject({ op: 'refused', reason: 'wrong_venue' });
    const g = await sold(cat.gated);
    expect(await south.validate({ id: g, gate: 'north' })).toMatchObject({ op: 'refused', reason: 'wrong_gate' });
    expect(await north.validate({ id: g })).toMatchObject({ op: 'valid', entriesLeft: 0 });
    const f = await sold(cat.future);
    expect(await arena.validate({ id: f })).toMatchObject({
      op: 'refused',
      reason: 'not_yet_valid',
      validFrom: cat.future.validFrom,
    });
    const [m] = await mint(h, cat.ticket);
    expect(await arena.validate({ id: m! })).toMatchObject({ op: 'refused', reason: 'not_active' });
    expect(await arena.validate({ id: generateId(16) })).toMatchObject({ op: 'refused', reason: 'unknown_id' });
    expect(await arena.validate({ id: badCheck(t) })).toMatchObject({ op: 'refused', reason: 'bad_checksum' });
    for (const id of [t, g, f]) expect(await balanceOf(h, id)).toBe(1);
  });
});

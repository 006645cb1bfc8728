/**
 * Scan ids: a retry returns the first answer and changes nothing, the same scan
 * id for something else is a conflict, a reversal undoes one scan once, and
 * fifty scanners racing for one single-entry ticket let exactly one person in.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { generateId } from '../../src/ids/idnum';
import { gateway, sameBucketIds, seedCatalog, soldIds, startHarness, uniq, type Harness } from '../support/harness';
import { jsonCall } from '../support/http';
import { balanceOf, hashOf, idFields, idKeyOf } from '../support/redis';
import { Scanner, type Msg, type Reply } from '../support/ws-client';
import {
  claimsNow,
  loadRedemptionCatalog,
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
let tok: string;
let name: string;
let s: Scanner;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  cat = await loadRedemptionCatalog(h);
  gw = await gateway(h);
  ({ tok, name } = await scannerToken(h));
  s = await Scanner.connect(gw.port, tok);
});
afterAll(async () => {
  await s?.close();
  await gw?.close();
  await h?.stop();
});

const sold = async (p: Parameters<typeof soldIds>[1]): Promise<string> => (await soldIds(h, p, 1))[0]!;
const CONFLICT = { op: 'refused', reason: 'scan_conflict', message: 'this scan id was used for another ID or item' };

/** Sends a journal in one frame (or, `oneByOne`, each message in a frame of its own back to back) and gathers its answers, by ref. */
async function answersTo(frame: Msg[], oneByOne = false): Promise<Reply[]> {
  if (oneByOne) for (const m of frame) s.send(m);
  else s.send(frame);
  return Promise.all(frame.map((m) => s.waitFor((x) => x.ref === m.ref)));
}

describe('idempotent retries', () => {
  it('entry: a retry returns the first answer with duplicate:true and lets nobody else in', async () => {
    const id = await sold(cat.ticket);
    const scan = uniq();
    const first = await s.redeem({ scan, id });
    expect(first).toEqual({ op: 'redeemed', scan, kind: 'entry', action: 'entry', amount: 1, entriesLeft: 0 });
    const fields = await idFields(h, id);
    const len = await streamLength(h, id);
    for (let i = 0; i < 3; i++) expect(await s.redeem({ scan, id })).toEqual({ ...first, duplicate: true });
    expect(await idFields(h, id)).toEqual(fields);
    expect(await streamLength(h, id)).toBe(len);
    expect(await recordsOf(h, id)).toHaveLength(1);
  });

  it('goods: a late retry returns the value left at the time of the first answer, and debits nothing', async () => {
    const id = await sold(cat.wallet);
    const a = uniq('a');
    const b = uniq('b');
    expect(await s.redeem({ scan: a, id, item: 'beer' })).toEqual({
      op: 'redeemed',
      scan: a,
      kind: 'goods',
      action: 'spend',
      amount: PRICE.beer,
      valueLeft: 5_500_000,
      item: 'beer',
    });
    expect(await s.redeem({ scan: b, id, item: 'water', qty: 2 })).toMatchObject({
      op: 'redeemed',
      valueLeft: 3_500_000,
    });
    const len = await streamLength(h, id);
    expect(await s.redeem({ scan: a, id, item: 'beer' })).toEqual({
      op: 'redeemed',
      scan: a,
      kind: 'goods',
      action: 'spend',
      amount: PRICE.beer,
      valueLeft: 5_500_000,
      item: 'beer',
      duplicate: true,
    });
    expect(await s.redeem({ scan: b, id, item: 'water', qty: 2 })).toMatchObject({
      op: 'redeemed',
      valueLeft: 3_500_000,
      duplicate: true,
    });
    expect(await balanceOf(h, id)).toBe(3_500_000);
    expect(await streamLength(h, id)).toBe(len);
  });

  it('service: a retry uses nothing', async () => {
    const id = await sold(cat.spa);
    const scan = uniq();
    expect(await s.redeem({ scan, id, item: 'massage' })).toMatchObject({ op: 'redeemed', usesLeft: 1 });
    expect(await s.redeem({ scan, id, item: 'massage' })).toEqual({
      op: 'redeemed',
      scan,
      kind: 'service',
      action: 'use',
      amount: 1,
      usesLeft: 1,
      item: 'massage',
      duplicate: true,
    });
    expect(await balanceOf(h, id)).toBe(1);
  });

  it('a scanner that lost its socket retries over HTTP with the same scan id: the first answer, no second debit', async () => {
    const id = await sold(cat.wallet);
    const scan = uniq();
    expect(await s.redeem({ scan, id, item: 'beer' })).toMatchObject({
      op: 'redeemed',
      valueLeft: WALLET_FACE - PRICE.beer,
    });
    const r = await jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { scan, id, item: 'beer' } });
    expect(r).toEqual({
      status: 200,
      json: {
        kind: 'goods',
        action: 'spend',
        amount: PRICE.beer,
        valueLeft: WALLET_FACE - PRICE.beer,
        item: 'beer',
        duplicate: true,
      },
    });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.beer);
    expect(await recordsOf(h, id)).toHaveLength(1);
  });

  it('twenty copies of one scan sent at once: one redemption, every answer the same grant', async () => {
    const id = await sold(cat.wallet);
    const scan = uniq();
    const answers = await Promise.all(Array.from({ length: 20 }, () => s.redeem({ scan, id, item: 'water' })));
    const want = {
      op: 'redeemed',
      scan,
      kind: 'goods',
      action: 'spend',
      amount: PRICE.water,
      valueLeft: WALLET_FACE - PRICE.water,
      item: 'water',
    };
    expect(answers.filter((a) => !a.duplicate)).toEqual([want]);
    expect(answers.filter((a) => a.duplicate)).toEqual(Array(19).fill({ ...want, duplicate: true }));
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.water);
    expect(await recordsOf(h, id)).toHaveLength(1);
  });

  it("a granted scan whose claim is gone (a retry that raced a refusal's delete) is still answered from its record, not redeemed again", async () => {
    const id = await sold(cat.wallet);
    const scan = uniq();
    const first = await s.redeem({ scan, id, item: 'water' });
    expect(first).toMatchObject({ op: 'redeemed', valueLeft: WALLET_FACE - PRICE.water });
    // The state that race leaves: the record in the ID's bucket, no claim.
    const scanKey = `${name}:${scan}`;
    expect(await h.r.hdel(claimsNow(h, scanKey), scanKey)).toBe(1);
    expect(await s.redeem({ scan, id, item: 'water' })).toEqual({ ...first, duplicate: true });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.water);
    expect(await recordsOf(h, id)).toHaveLength(1);
  });

  it('a copy granted on a claim that a refused copy on another gateway dropped meanwhile claims its scan id again', async () => {
    const [id, other] = (await soldIds(h, cat.wallet, 2)) as [string, string];
    const scan = uniq('cg');
    const scanKey = `${name}:${scan}`;
    // Another gateway's copy of the scan claimed it first...
    await h.r.hset(claimsNow(h, scanKey), scanKey, `${idKeyOf(h, id)}|water|1|in`);
    // ...and, refused there, dropped the claim once this copy had found it (a retry's) but before its redeem.
    type Claimed = (p: { scanKey: string }, err: unknown, claim?: number) => void;
    const svc = gw.redemption as unknown as { claimed: Claimed };
    const claimed = svc.claimed;
    svc.claimed = (p, err, claim) =>
      void h.r.hdel(claimsNow(h, p.scanKey), p.scanKey).then(() => claimed(p, err, claim));
    try {
      expect(await s.redeem({ scan, id, item: 'water' })).toMatchObject({ op: 'redeemed' });
    } finally {
      svc.claimed = claimed;
    }
    // The scan id is that sale's: it redeems no other ID.
    expect(await s.redeem({ scan, id: other, item: 'water' })).toEqual({ ...CONFLICT, scan });
    expect(await balanceOf(h, other)).toBe(WALLET_FACE);
  });
});

describe('scan_conflict', () => {
  it('the same scan id with another ID, item, quantity or direction is refused and changes nothing', async () => {
    const [id, other] = (await soldIds(h, cat.wallet, 2)) as [string, string];
    const scan = uniq();
    expect(await s.redeem({ scan, id, item: 'water' })).toMatchObject({
      op: 'redeemed',
      valueLeft: WALLET_FACE - PRICE.water,
    });
    expect(await s.redeem({ scan, id: other, item: 'water' })).toEqual({ ...CONFLICT, scan });
    expect(await s.redeem({ scan, id, item: 'beer' })).toEqual({ ...CONFLICT, scan });
    expect(await s.redeem({ scan, id, item: 'water', qty: 2 })).toEqual({ ...CONFLICT, scan });
    expect(await s.redeem({ scan, id, item: 'water', dir: 'out' })).toEqual({ ...CONFLICT, scan });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.water);
    expect(await balanceOf(h, other)).toBe(WALLET_FACE);
    expect(await recordsOf(h, other)).toEqual([]);
    // The conflicts did not disturb the first answer: a true retry still gets it.
    expect(await s.redeem({ scan, id, item: 'water', qty: 1 })).toMatchObject({
      op: 'redeemed',
      valueLeft: WALLET_FACE - PRICE.water,
      duplicate: true,
    });
  });

  it('a ticket scan id reused for another ticket is a conflict: the second ticket is not used', async () => {
    const [a, b] = (await soldIds(h, cat.ticket, 2)) as [string, string];
    const scan = uniq();
    expect(await s.redeem({ scan, id: a })).toMatchObject({ op: 'redeemed' });
    expect(await s.redeem({ scan, id: b })).toEqual({ ...CONFLICT, scan });
    expect(await balanceOf(h, b)).toBe(1);
  });

  it('scan ids belong to one scanner: another scanner may use the same scan id', async () => {
    const [a, b] = (await soldIds(h, cat.ticket, 2)) as [string, string];
    const other = await Scanner.connect(gw.port, (await scannerToken(h)).tok);
    expect(await s.redeem({ scan: 'shared-1', id: a })).toMatchObject({ op: 'redeemed', entriesLeft: 0 });
    expect(await other.redeem({ scan: 'shared-1', id: b })).toEqual({
      op: 'redeemed',
      scan: 'shared-1',
      kind: 'entry',
      action: 'entry',
      amount: 1,
      entriesLeft: 0,
    });
    await other.close();
  });

  it('a refused scan keeps nothing: its scan id may be used again for another ID', async () => {
    const [used, fresh] = (await soldIds(h, cat.ticket, 2)) as [string, string];
    await s.redeem({ scan: uniq(), id: used });
    const scan = uniq();
    expect(await s.redeem({ scan, id: used })).toMatchObject({ op: 'refused', reason: 'already_redeemed' });
    expect(await s.redeem({ scan, id: fresh })).toEqual({
      op: 'redeemed',
      scan,
      kind: 'entry',
      action: 'entry',
      amount: 1,
      entriesLeft: 0,
    });
  });
});

describe('a journal in one frame is applied in the order it was rung up', () => {
  it('spends on one card in frame order: each answer leaves what the ones before it left', async () => {
    for (let round = 0; round < 3; round++) {
      const id = await sold(cat.wallet);
      // Ten waters on a 10 EUR card, scan ids spread over every claim bucket.
      const scans = Array.from({ length: 11 }, () => uniq('j'));
      const refs = scans.map((scan) => `${scan}-r`);
      s.send(scans.map((scan, i) => ({ op: 'redeem', ref: refs[i], scan, id, item: 'water' })));
      const got = await Promise.all(refs.map((r) => s.waitFor((m) => m.ref === r)));
      expect(got.slice(0, 10).map((g) => g.msg.valueLeft)).toEqual(
        Array.from({ length: 10 }, (_, i) => WALLET_FACE - (i + 1) * PRICE.water),
      );
      expect(got[10]!.msg).toMatchObject({ op: 'refused', reason: 'insufficient_value' });
    }
  });

  it('a sale and its reversal in one frame: reversed, not unknown_scan', async () => {
    for (let round = 0; round < 5; round++) {
      const id = await sold(cat.wallet);
      const scan = uniq('jr');
      const [r, v] = [`${scan}-r`, `${scan}-v`];
      s.send([
        { op: 'redeem', ref: r, scan, id, item: 'beer' },
        { op: 'reverse', ref: v, scan, reason: 'rung up twice' },
      ]);
      expect((await s.waitFor((m) => m.ref === r)).msg).toMatchObject({ op: 'redeemed', valueLeft: 5_500_000 });
      expect((await s.waitFor((m) => m.ref === v)).msg).toMatchObject({ op: 'reversed', amount: PRICE.beer });
      expect(await balanceOf(h, id)).toBe(WALLET_FACE);
    }
    // Nothing is kept once the scans are answered.
    expect([gw.redemption.arrivals.size, gw.redemption.underWay.size]).toEqual([0, 0]);
  });

  it('a reverse naming its ID keeps its place in the frame, though its sale was answered long before', async () => {
    for (let round = 0; round < 3; round++) {
      const id = await sold(cat.wallet);
      const [k1, k2, kA, kB] = [uniq('n1'), uniq('n2'), uniq('nA'), uniq('nB')];
      expect(await s.redeem({ scan: k1, id, item: 'beer' })).toMatchObject({ valueLeft: 5_500_000 });
      expect(await s.redeem({ scan: k2, id, item: 'beer' })).toMatchObject({ valueLeft: 1_000_000 });
      // 1.00 left. In frame order: a beer that does not fit, the first beer given back, a beer that fits.
      const frame = [
        { op: 'redeem', ref: `${kA}-r`, scan: kA, id, item: 'beer' },
        { op: 'reverse', ref: `${k1}-v`, scan: k1, id },
        { op: 'redeem', ref: `${kB}-r`, scan: kB, id, item: 'beer' },
      ];
      const got = await answersTo(frame);
      expect(got.map((g) => [g.msg.op, g.msg.reason ?? g.msg.valueLeft])).toEqual([
        ['refused', 'insufficient_value'],
        ['reversed', 5_500_000],
        ['redeemed', 1_000_000],
      ]);
    }
    // A malformed ID is refused as in a redeem, and nothing is reversed.
    expect(await s.request({ op: 'reverse', scan: uniq('n4'), id: '1234' })).toMatchObject({ reason: 'bad_format' });
  });

  it('a refused sale sent again behind a reverse keeps its scan id: granted once, reversible, never another ID’s', async () => {
    for (let round = 0; round < 3; round++) {
      const [id, other] = [await sold(cat.wallet), await sold(cat.wallet)];
      const [k0, k1] = [uniq('c0'), uniq('c1')];
      expect(await s.redeem({ scan: k0, id, item: 'beer' })).toMatchObject({ valueLeft: 5_500_000 });
      // Two beers do not fit in 5.50; the first beer given back, the same scan sent again fits.
      const frame = [
        { op: 'redeem', ref: `${k1}-a`, scan: k1, id, item: 'beer', qty: 2 },
        { op: 'reverse', ref: `${k0}-v`, scan: k0, id },
        { op: 'redeem', ref: `${k1}-b`, scan: k1, id, item: 'beer', qty: 2 },
      ];
      const got = await answersTo(frame);
      expect(got.map((g) => [g.msg.op, g.msg.reason ?? g.msg.valueLeft])).toEqual([
        ['refused', 'insufficient_value'],
        ['reversed', WALLET_FACE],
        ['redeemed', 1_000_000],
      ]);
      // The scan id is the sale's: it reverses, and it redeems no other card.
      expect(await s.reverse(k1)).toMatchObject({ op: 'reversed', amount: 2 * PRICE.beer });
      expect(await s.redeem({ scan: k1, id: other, item: 'beer', qty: 2 })).toMatchObject({ reason: 'scan_conflict' });
      expect([await balanceOf(h, id), await balanceOf(h, other)]).toEqual([WALLET_FACE, WALLET_FACE]);
    }
  });

  it('copies of a scan all refused keep nothing: the scan id is free again, as after one refusal', async () => {
    const id = await sold(cat.wallet);
    const k = uniq('rr');
    const frame = [1, 2].map((n) => ({ op: 'redeem', ref: `${k}-${n}`, scan: k, id, item: 'beer', qty: 3 }));
    const got = await answersTo(frame);
    expect(got.map((g) => g.msg.reason)).toEqual(['insufficient_value', 'insufficient_value']);
    expect(await s.redeem({ scan: k, id, item: 'water' })).toMatchObject({ op: 'redeemed' });
    expect([gw.redemption.arrivals.size, gw.redemption.underWay.size]).toEqual([0, 0]);
  });

  it('a refused scan sent again with other terms behind it is judged afresh, as after its answer', async () => {
    // Found by the redemption model fuzzer: the copy behind was refused scan_conflict on the
    // claim of the one ahead, which was refused and so kept nothing.
    for (let round = 0; round < 3; round++) {
      const [notYet, ticket, card] = [await sold(cat.future), await sold(cat.ticket), await sold(cat.wallet)];
      const [other, group, card2] = [await sold(cat.ticket), await sold(cat.ticket3), await sold(cat.wallet)];
      const [k1, k2, k3, k4, k5, kg] = ['fa', 'fb', 'fc', 'fd', 'fe', 'fg'].map((t) => uniq(t)) as [
        string,
        string,
        string,
        string,
        string,
        string,
      ];
      expect(await s.redeem({ scan: kg, id: group })).toMatchObject({ op: 'redeemed', entriesLeft: 2 });
      const frame = [
        // A ticket not valid yet, then the same scan id for a valid one (a gate that re-used it).
        { op: 'redeem', ref: `${k1}-a`, scan: k1, id: notYet },
        { op: 'redeem', ref: `${k1}-b`, scan: k1, id: ticket },
        // Three beers that do not fit, then the same scan id for one that does.
        { op: 'redeem', ref: `${k2}-a`, scan: k2, id: card, item: 'beer', qty: 3 },
        { op: 'redeem', ref: `${k2}-b`, scan: k2, id: card, item: 'beer' },
        // A reverse of the scan id keeps its place among its redeems: three entries do not fit on a
        // ticket with two left; another scan of it given back (the reverse waits for that one's
        // answer); nothing to reverse yet; then the same scan id for another ticket, and its reverse.
        { op: 'redeem', ref: `${k3}-a`, scan: k3, id: group, qty: 3 },
        { op: 'reverse', ref: `${k3}-g`, scan: kg, id: group },
        { op: 'reverse', ref: `${k3}-v`, scan: k3, id: group },
        { op: 'redeem', ref: `${k3}-b`, scan: k3, id: other },
        { op: 'reverse', ref: `${k3}-w`, scan: k3, id: other },
        // A reverse naming its sale's card keeps its place in that card's line, whatever waits
        // behind the sale for the scan id: the two beers after it find the value it gave back.
        { op: 'redeem', ref: `${k4}-a`, scan: k4, id: card2, item: 'beer' },
        { op: 'redeem', ref: `${k4}-b`, scan: k4, id: card, item: 'water' },
        { op: 'reverse', ref: `${k4}-v`, scan: k4, id: card2 },
        { op: 'redeem', ref: `${k5}-a`, scan: k5, id: card2, item: 'beer', qty: 2 },
      ];
      // In one frame, and in one frame each sent back to back.
      const got = await answersTo(frame, round === 1);
      expect(got.map((g) => [g.msg.op, g.msg.reason ?? g.msg.action])).toEqual([
        ['refused', 'not_yet_valid'],
        ['redeemed', 'entry'],
        ['refused', 'insufficient_value'],
        ['redeemed', 'spend'],
        ['refused', 'insufficient_value'],
        ['reversed', 'reverse'],
        ['refused', 'unknown_scan'],
        ['redeemed', 'entry'],
        ['reversed', 'reverse'],
        ['redeemed', 'spend'],
        ['refused', 'scan_conflict'],
        ['reversed', 'reverse'],
        ['redeemed', 'spend'],
      ]);
      // The scan ids are the grants': retries answer them, other terms conflict.
      expect(await s.redeem({ scan: k1, id: ticket })).toMatchObject({ op: 'redeemed', duplicate: true });
      expect(await s.redeem({ scan: k2, id: card, item: 'beer', qty: 3 })).toMatchObject(CONFLICT);
      expect(await balanceOf(h, card)).toBe(WALLET_FACE - PRICE.beer);
      expect(await balanceOf(h, other)).toBe(1);
      expect(await balanceOf(h, card2)).toBe(WALLET_FACE - 2 * PRICE.beer);
      expect([gw.redemption.arrivals.size, gw.redemption.underWay.size, gw.redemption.waiting]).toEqual([0, 0, 0]);
    }
  });

  it('a reverse behind redeems of its scan id for two IDs waits for both, whichever ID it names', async () => {
    for (let round = 0; round < 3; round++) {
      const [notYet, ticket] = [await sold(cat.future), await sold(cat.ticket)];
      const k = uniq('fr');
      // The scan id refused for a ticket not valid yet, then granted for another: a reverse naming
      // the first is refused scan_conflict (the scan is the second's), one naming the second undoes it.
      const frame = [
        { op: 'redeem', ref: `${k}-a`, scan: k, id: notYet },
        { op: 'redeem', ref: `${k}-b`, scan: k, id: ticket },
        { op: 'reverse', ref: `${k}-v`, scan: k, id: notYet },
        { op: 'reverse', ref: `${k}-w`, scan: k, id: ticket },
      ];
      const got = await answersTo(frame, round === 1);
      expect(got.map((g) => [g.msg.op, g.msg.reason ?? g.msg.action])).toEqual([
        ['refused', 'not_yet_valid'],
        ['redeemed', 'entry'],
        ['refused', 'scan_conflict'],
        ['reversed', 'reverse'],
      ]);
      expect(await balanceOf(h, ticket)).toBe(1);
      expect([gw.redemption.arrivals.size, gw.redemption.underWay.size, gw.redemption.waiting]).toEqual([0, 0, 0]);
    }
  });

  it('copies of a scan of an unknown ID, all refused, keep nothing either', async () => {
    // Found by the redemption model fuzzer: each copy's refusal waits for its guess to be counted,
    // so each saw the other still under way and left it the claim: nobody dropped it.
    const { tok: t2 } = await scannerToken(h);
    const s2 = await Scanner.connect(gw.port, t2);
    try {
      for (let round = 0; round < 3; round++) {
        const ticket = await sold(cat.ticket);
        const k = uniq('ru');
        const frame = [1, 2].map((n) => ({ op: 'redeem', ref: `${k}-${n}`, scan: k, id: generateId(16) }));
        frame[1]!.id = frame[0]!.id;
        s2.send(frame);
        const got = await Promise.all(frame.map((m) => s2.waitFor((x) => x.ref === m.ref)));
        expect(got.map((g) => g.msg.reason)).toEqual(['unknown_id', 'unknown_id']);
        expect(await s2.redeem({ scan: k, id: ticket })).toMatchObject({ op: 'redeemed', action: 'entry' });
        expect([gw.redemption.arrivals.size, gw.redemption.underWay.size]).toEqual([0, 0]);
      }
    } finally {
      await s2.close();
    }
  });

  it('a reverse naming another ID than its scan’s is refused scan_conflict, and nothing is reversed', async () => {
    const [id, other] = [await sold(cat.wallet), await sold(cat.wallet)];
    const scan = uniq('nx');
    expect(await s.redeem({ scan, id, item: 'beer' })).toMatchObject({ valueLeft: 5_500_000 });
    expect(await s.request({ op: 'reverse', scan, id: other })).toMatchObject({ reason: 'scan_conflict' });
    const http = await jsonCall(gw, 'POST', '/v1/reverse', { token: tok, body: { scan, id: other } });
    expect([http.status, http.json.error.reason]).toEqual([409, 'scan_conflict']);
    expect(await balanceOf(h, id)).toBe(5_500_000);
    expect(await s.request({ op: 'reverse', scan, id })).toMatchObject({ op: 'reversed', amount: PRICE.beer });
  });

  it('a reversal holds back what came after it: the next sale finds the value it gave back', async () => {
    for (let round = 0; round < 3; round++) {
      const id = await sold(cat.wallet);
      // 10 EUR: beer (4.50) twice leaves 1.00; the reversal between them gives 4.50 back first.
      const [k1, k2, k3] = [uniq('b1'), uniq('b2'), uniq('b3')];
      const frame = [
        { op: 'redeem', ref: `${k1}-r`, scan: k1, id, item: 'beer' },
        { op: 'redeem', ref: `${k2}-r`, scan: k2, id, item: 'beer' },
        { op: 'reverse', ref: `${k1}-v`, scan: k1 },
        { op: 'redeem', ref: `${k3}-r`, scan: k3, id, item: 'beer' },
        // A retry of the reversed sale after its reversal says so.
        { op: 'redeem', ref: `${k1}-again`, scan: k1, id, item: 'beer' },
      ];
      const got = await answersTo(frame);
      expect(got.map((g) => [g.msg.op, g.msg.valueLeft])).toEqual([
        ['redeemed', 5_500_000],
        ['redeemed', 1_000_000],
        ['reversed', 5_500_000],
        ['redeemed', 1_000_000],
        ['redeemed', 5_500_000],
      ]);
      expect(got[4]!.msg).toMatchObject({ duplicate: true, reversed: true });
      expect(await balanceOf(h, id)).toBe(1_000_000);
    }
    expect([gw.redemption.arrivals.size, gw.redemption.underWay.size]).toEqual([0, 0]);
  });
});

describe('a journal longer than the lookups a scanner may have in flight keeps its order', () => {
  // Past GUESS_LIMIT + 1 lookups of one token name, the later redeems wait their turn in the guess
  // throttle; a reverse, which takes no turn, must not overtake them.
  const over = (): number => h.ctx.cfg.guessLimit + 5;

  it('a reverse naming its ID after many sales runs after all of them', async () => {
    const id = await sold(cat.wallet);
    const scans = Array.from({ length: over() }, () => uniq('lj'));
    const frame: Msg[] = scans.map((scan) => ({ op: 'redeem', ref: `${scan}-r`, scan, id, item: 'water' }));
    frame.push({ op: 'reverse', ref: `${scans[0]}-v`, scan: scans[0], id });
    const got = await answersTo(frame);
    // 10 waters fit on the 10 EUR card, the rest are refused; then the first is given back.
    const granted = got.filter((g) => g.msg.op === 'redeemed').length;
    expect([granted, got.at(-1)!.msg.op, await balanceOf(h, id)]).toEqual([10, 'reversed', PRICE.water]);
    expect([gw.redemption.arrivals.size, gw.redemption.underWay.size]).toEqual([0, 0]);
  });

  it('a reverse without ID after many sales finds its sale: reversed, not unknown_scan', async () => {
    const ids = await soldIds(h, cat.wallet, over());
    const scans = ids.map(() => uniq('ln'));
    const last = scans.at(-1)!;
    const frame: Msg[] = ids.map((id, i) => ({ op: 'redeem', ref: `${scans[i]}-r`, scan: scans[i], id, item: 'beer' }));
    frame.push({ op: 'reverse', ref: `${last}-v`, scan: last });
    const got = await answersTo(frame);
    expect(got.at(-1)!.msg).toMatchObject({ op: 'reversed', amount: PRICE.beer });
    expect(await balanceOf(h, ids.at(-1)!)).toBe(WALLET_FACE);
  });
});

describe('reverse', () => {
  it('goods: gives the value back once; a second reverse answers the same with duplicate:true', async () => {
    const id = await sold(cat.wallet);
    const scan = uniq();
    const t0 = Date.now();
    await s.redeem({ scan, id, item: 'beer', qty: 2 });
    await s.redeem({ scan: uniq(), id, item: 'water' });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - 2 * PRICE.beer - PRICE.water);

    const first = await s.reverse(scan, 'not handed over');
    expect(first).toEqual({
      op: 'reversed',
      scan,
      kind: 'goods',
      action: 'reverse',
      amount: 2 * PRICE.beer,
      valueLeft: WALLET_FACE - PRICE.water,
    });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.water);
    const len = await streamLength(h, id);
    expect(await s.reverse(scan, 'again')).toEqual({ ...first, duplicate: true });
    expect(await s.reverse(scan)).toEqual({ ...first, duplicate: true });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.water);
    expect(await streamLength(h, id)).toBe(len);

    const recs = await recordsOf(h, id);
    expect(recs).toHaveLength(3);
    const rev = recs[2]!;
    expect(rev).toEqual({
      streamId: expect.any(String),
      type: 'reverse',
      scan,
      scanner: name,
      id: hashOf(h, id),
      kind: 'goods',
      action: 'spend',
      venue: VENUE,
      gate: '',
      item: 'beer',
      qty: '2',
      amount: String(-2 * PRICE.beer),
      before: String(WALLET_FACE - 2 * PRICE.beer - PRICE.water),
      after: String(WALLET_FACE - PRICE.water),
      time: expect.any(String),
      reason: 'not handed over',
    });
    expect(Number(rev.time)).toBeGreaterThanOrEqual(t0);
    expect(Number(rev.time)).toBeLessThanOrEqual(Date.now());

    // A retry of the reversed redeem returns its first answer and takes nothing again.
    expect(await s.redeem({ scan, id, item: 'beer', qty: 2 })).toMatchObject({
      op: 'redeemed',
      amount: 2 * PRICE.beer,
      duplicate: true,
    });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.water);
    expect(await recordsOf(h, id)).toHaveLength(3);
  });

  it('entry: gives the entry back once', async () => {
    const id = await sold(cat.ticket);
    const scan = uniq();
    await s.redeem({ scan, id, gate: 'east' });
    expect(await s.reverse(scan, 'misread')).toEqual({
      op: 'reversed',
      scan,
      kind: 'entry',
      action: 'reverse',
      amount: 1,
      entriesLeft: 1,
    });
    expect(await s.reverse(scan, 'misread')).toEqual({
      op: 'reversed',
      scan,
      kind: 'entry',
      action: 'reverse',
      amount: 1,
      entriesLeft: 1,
      duplicate: true,
    });
    const f = await idFields(h, id);
    expect(f.bal).toBe('1');
    expect(f.inside).not.toBe('1'); // the holder is not inside
    expect((await recordsOf(h, id)).map((r) => [r.type, r.action, r.amount, r.before, r.after, r.gate])).toEqual([
      ['redeem', 'entry', '1', '1', '0', 'east'],
      ['reverse', 'entry', '-1', '0', '1', 'east'],
    ]);
    // The entry is there to use again, once.
    expect(await s.redeem({ scan: uniq(), id })).toMatchObject({ op: 'redeemed', action: 'entry', entriesLeft: 0 });
    expect(await s.redeem({ scan: uniq(), id })).toMatchObject({ op: 'refused', reason: 'already_redeemed' });
  });

  it('service: gives the use back once', async () => {
    const id = await sold(cat.spa);
    const scan = uniq();
    await s.redeem({ scan, id });
    await s.redeem({ scan: uniq(), id });
    expect(await balanceOf(h, id)).toBe(0);
    expect(await s.reverse(scan)).toEqual({
      op: 'reversed',
      scan,
      kind: 'service',
      action: 'reverse',
      amount: 1,
      usesLeft: 1,
    });
    expect(await s.reverse(scan)).toMatchObject({ usesLeft: 1, duplicate: true });
    expect(await balanceOf(h, id)).toBe(1);
  });

  it('a reversed entry on a re-entry ticket leaves one entry: one admission after it, not two', async () => {
    const id = await sold(cat.reentry);
    const scan = uniq();
    await s.redeem({ scan, id });
    expect(await s.reverse(scan, 'misread')).toMatchObject({ op: 'reversed', entriesLeft: 1 });
    // The holder is not inside and has one entry: coming in uses it, and a second
    // "in" while the first holder is inside is a second person.
    const ins = [await s.redeem({ scan: uniq('in'), id }), await s.redeem({ scan: uniq('in2'), id })];
    expect(ins.map((a) => [a.op, a.action ?? a.reason, a.entriesLeft])).toEqual([
      ['redeemed', 'entry', 0],
      ['refused', 'already_redeemed', undefined],
    ]);
    expect(await balanceOf(h, id)).toBe(0);
  });

  it('a reversed exit on a re-entry ticket puts the holder back inside: nobody else comes in on it', async () => {
    const id = await sold(cat.reentry);
    await s.redeem({ scan: uniq('in'), id });
    const out = uniq('out');
    expect(await s.redeem({ scan: out, id, dir: 'out' })).toMatchObject({ op: 'redeemed', action: 'exit' });
    expect(await s.reverse(out, 'misread')).toEqual({
      op: 'reversed',
      scan: out,
      kind: 'entry',
      action: 'reverse',
      amount: 0,
      entriesLeft: 0,
    });
    // The holder never left, so an "in" on the same ticket is a second person.
    expect(await s.redeem({ scan: uniq('in2'), id })).toMatchObject({ op: 'refused', reason: 'already_redeemed' });
  });

  it('reversing an older way in or out of a re-entry ticket leaves the holder where the later scans put them', async () => {
    // Inside after in, out, in, out, in: undoing the second "in" must not let a second person in.
    const inside = await sold(cat.reentry);
    const moves = ['in', 'out', 'in', 'out', 'in'].map((dir) => ({ scan: uniq(dir), dir: dir as 'in' | 'out' }));
    for (const m of moves) expect(await s.redeem({ ...m, id: inside })).toMatchObject({ op: 'redeemed' });
    expect(await s.reverse(moves[2]!.scan)).toMatchObject({ op: 'reversed' });
    expect(await s.redeem({ scan: uniq('in'), id: inside })).toMatchObject({ reason: 'already_redeemed' });
    // Outside after in, out, in, out: undoing the first "out" must not keep the holder out.
    const outside = await sold(cat.reentry);
    const back = moves.slice(0, 4).map((m) => ({ ...m, scan: uniq(m.dir) }));
    for (const m of back) expect(await s.redeem({ ...m, id: outside })).toMatchObject({ op: 'redeemed' });
    expect(await s.reverse(back[1]!.scan)).toMatchObject({ op: 'reversed' });
    expect(await s.redeem({ scan: uniq('in'), id: outside })).toMatchObject({ op: 'redeemed', action: 'reentry' });
  });

  it('reverses of a ticket’s scans, latest first, leave the holder where the scans still standing put them', async () => {
    const walk = async (dirs: ('in' | 'out')[], undo: number[]): Promise<Msg> => {
      const id = await sold(cat.reentry);
      const scans = dirs.map((dir) => ({ scan: uniq(dir), dir }));
      for (const m of scans) expect(await s.redeem({ ...m, id })).toMatchObject({ op: 'redeemed' });
      for (const i of undo) expect(await s.reverse(scans[i]!.scan)).toMatchObject({ op: 'reversed' });
      return s.redeem({ scan: uniq('in'), id });
    };
    // in, out, in; the last in and the out undone: only the first in stands, the holder is inside.
    expect(await walk(['in', 'out', 'in'], [2, 1])).toMatchObject({ reason: 'already_redeemed' });
    // in, out, in, out; the last out and in undone: in, out stand, the holder may come back.
    expect(await walk(['in', 'out', 'in', 'out'], [3, 2])).toMatchObject({ action: 'reentry' });
    // Undone in any order, the same: the out, then the last in.
    expect(await walk(['in', 'out', 'in'], [1, 2])).toMatchObject({ reason: 'already_redeemed' });
  });

  it('a reversed re-entry puts back out only those it let in: past validity, whoever never left still gets out', async () => {
    const id = await sold(cat.reentry3);
    expect(await s.redeem({ scan: uniq('in'), id, qty: 2 })).toMatchObject({ action: 'entry' });
    expect(await s.redeem({ scan: uniq('out'), id, dir: 'out' })).toMatchObject({ action: 'exit' });
    const back = uniq('back');
    expect(await s.redeem({ scan: back, id })).toMatchObject({ action: 'reentry' });
    expect(await s.reverse(back, 'misread')).toMatchObject({ op: 'reversed', amount: 0 });
    // One went out and is not back; the other never left, and the ticket now expires.
    await h.r.hset(idKeyOf(h, id), 'until', Date.now() - 1000);
    expect(await s.redeem({ scan: uniq('out'), id, dir: 'out', qty: 2 })).toMatchObject({ reason: 'expired' });
    expect(await s.redeem({ scan: uniq('out'), id, dir: 'out' })).toMatchObject({ op: 'redeemed', action: 'exit' });
    expect(await s.redeem({ scan: uniq('out'), id, dir: 'out' })).toMatchObject({ reason: 'expired' });
  });

  it('after any reversal of a ticket’s way in or out, who is out is as if that scan had never been made', async () => {
    // Who is out and may come back (or, past validity, who may still go out), as redeem_check.lua counts it.
    const outCount = async (id: string): Promise<{ bal: number; out: number }> => {
      const f = await idFields(h, id);
      const bal = Number(f.bal);
      const used = Number(f.face) - bal;
      const out = f.inside === '0' ? Math.min(f.outq === undefined ? used : Number(f.outq), used) : 0;
      return { bal, out };
    };
    type Step = { dir: 'in' | 'out'; qty: number };
    /** Scans the steps on a new ticket; the granted ones with their scan ids and actions. */
    const walk = async (steps: Step[]): Promise<{ id: string; done: (Step & { scan: string; action: string })[] }> => {
      const id = await sold(cat.reentry3);
      const done: (Step & { scan: string; action: string })[] = [];
      for (const step of steps) {
        const scan = uniq(step.dir);
        const a = await s.redeem({ scan, id, dir: step.dir, qty: step.qty });
        if (a.op === 'redeemed') done.push({ dir: step.dir, qty: step.qty, scan, action: String(a.action) });
      }
      return { id, done };
    };
    const step = fc.record({
      dir: fc.constantFrom<'in' | 'out'>('in', 'out'),
      qty: fc.constantFrom(1, 1, 2),
    });
    let compared = 0;
    await fc.assert(
      // A group comes in first: who is out is then a count, not just the holder's side.
      fc.asyncProperty(
        fc.integer({ min: 2, max: 3 }),
        fc.array(step, { maxLength: 7 }),
        fc.nat(),
        async (n, more, pick) => {
          const a = await walk([{ dir: 'in', qty: n }, ...more]);
          if (a.done.length === 0) return;
          const k = pick % a.done.length;
          expect(await s.reverse(a.done[k]!.scan)).toMatchObject({ op: 'reversed' });
          // The same ticket had the reversed scan never been made: comparable when every other scan is
          // granted as it was (else the later scans would have been judged otherwise).
          const rest = a.done.filter((_, i) => i !== k);
          const b = await walk(rest);
          if (b.done.map((d) => d.action).join() !== rest.map((d) => d.action).join()) return;
          compared++;
          expect(await outCount(a.id)).toEqual(await outCount(b.id));
        },
      ),
      // A fixed seed: the same walks on every run.
      { numRuns: 150, seed: 20261207 },
    );
    expect(compared).toBeGreaterThan(50);
  });

  it("unknown_scan: never redeemed, refused, or another scanner's scan", async () => {
    expect(await s.reverse('never-seen')).toEqual({
      op: 'refused',
      scan: 'never-seen',
      reason: 'unknown_scan',
      message: 'no redemption with this scan id',
    });
    const id = await sold(cat.wallet);
    const refused = uniq();
    expect(await s.redeem({ scan: refused, id, item: 'beer', qty: 3 })).toMatchObject({
      op: 'refused',
      reason: 'insufficient_value',
    });
    expect(await s.reverse(refused)).toMatchObject({ op: 'refused', scan: refused, reason: 'unknown_scan' });
    const mine = uniq();
    await s.redeem({ scan: mine, id, item: 'beer' });
    const other = await Scanner.connect(gw.port, (await scannerToken(h)).tok);
    expect(await other.reverse(mine)).toMatchObject({ op: 'refused', reason: 'unknown_scan' });
    await other.close();
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.beer);
    expect(await recordsOf(h, id)).toHaveLength(1);
  });
});

describe('conservation', () => {
  it('after a mixed run on one goods ID, face = value left + the sum of its record amounts', async () => {
    const id = await sold(cat.wallet);
    const scans = Array.from({ length: 8 }, (_, i) => uniq(`m${i}`));
    const ops: Promise<Msg>[] = [
      s.redeem({ scan: scans[0]!, id, item: 'water', qty: 2 }),
      s.redeem({ scan: scans[1]!, id, item: 'beer' }),
      s.redeem({ scan: scans[2]!, id, item: 'water' }),
      s.redeem({ scan: scans[3]!, id, item: 'beer', qty: 2 }),
      s.redeem({ scan: scans[4]!, id, item: 'cake' }),
    ];
    await Promise.all(ops);
    await s.redeem({ scan: scans[0]!, id, item: 'water', qty: 2 }); // retry
    await s.reverse(scans[1]!);
    await s.reverse(scans[1]!); // second reverse gives nothing
    await s.validate({ id, item: 'beer' });
    await s.redeem({ scan: scans[5]!, id, item: 'beer' });
    await jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { scan: scans[6]!, id, item: 'water' } });
    await jsonCall(gw, 'POST', '/v1/reverse', { token: tok, body: { scan: scans[2]! } });
    await s.redeem({ scan: scans[7]!, id, item: 'water', qty: 5 });

    const recs = await recordsOf(h, id);
    const bal = await balanceOf(h, id);
    expect(recs.filter((r) => r.type === 'reverse')).toHaveLength(2);
    expect(recs.every((r) => (r.type === 'reverse') === Number(r.amount) < 0)).toBe(true);
    expect(WALLET_FACE).toBe(bal + recs.reduce((sum, r) => sum + Number(r.amount), 0));
    // Each record starts where the one before ended.
    let prev = WALLET_FACE;
    for (const r of recs) {
      expect(Number(r.before)).toBe(prev);
      expect(Number(r.after)).toBe(Number(r.before) - Number(r.amount));
      prev = Number(r.after);
    }
    expect(prev).toBe(bal);
    expect(bal).toBeGreaterThanOrEqual(0);
  });
});

describe('concurrency', () => {
  it('50 scanners on 50 sockets redeem one single-entry ticket at once: exactly one ok', async () => {
    const id = await sold(cat.ticket);
    const scanners = await Promise.all(
      Array.from({ length: 50 }, async (_, i) =>
        Scanner.connect(gw.port, (await scannerToken(h, { venue: VENUE, gate: `g${i}` })).tok, { binary: i % 2 === 0 }),
      ),
    );
    try {
      const answers = await Promise.all(scanners.map((sc, i) => sc.redeem({ scan: `race-${i}`, id })));
      const ok = answers.filter((a) => a.op === 'redeemed');
      expect(ok).toHaveLength(1);
      expect(ok[0]).toMatchObject({ kind: 'entry', action: 'entry', amount: 1, entriesLeft: 0 });
      const winner = answers.indexOf(ok[0]!);
      const f = await idFields(h, id);
      expect(f.fgate).toBe(`g${winner}`);
      const refused = answers.filter((a) => a.op !== 'redeemed');
      expect(refused).toHaveLength(49);
      for (const r of refused) {
        expect(r).toEqual({
          op: 'refused',
          scan: r.scan,
          reason: 'already_redeemed',
          message: 'already used',
          firstUsed: { time: Number(f.first), venue: VENUE, gate: `g${winner}` },
        });
      }
      const recs = await recordsOf(h, id);
      expect(recs).toHaveLength(1);
      expect(recs[0]).toMatchObject({
        scan: `race-${winner}`,
        gate: `g${winner}`,
        amount: '1',
        before: '1',
        after: '0',
      });
      expect(await balanceOf(h, id)).toBe(0);
    } finally {
      await Promise.all(scanners.map((sc) => sc.close()));
    }
  });

  it('50 HTTP requests redeem one single-entry ticket at once: exactly one 200', async () => {
    const id = await sold(cat.ticket);
    const rs = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { scan: `hrace-${i}`, id } }),
      ),
    );
    expect(rs.filter((r) => r.status === 200)).toEqual([
      { status: 200, json: { kind: 'entry', action: 'entry', amount: 1, entriesLeft: 0 } },
    ]);
    const conflicts = rs.filter((r) => r.status === 409);
    expect(conflicts).toHaveLength(49);
    for (const r of conflicts)
      expect(r.json.error).toMatchObject({ reason: 'already_redeemed', firstUsed: { venue: VENUE, gate: '' } });
    expect(await recordsOf(h, id)).toHaveLength(1);
  });

  it('50 spends of 1.00 on a 10.00 wallet at once: exactly ten go through, the value ends at 0', async () => {
    const id = await sold(cat.wallet);
    const answers = await Promise.all(
      Array.from({ length: 50 }, (_, i) => s.redeem({ scan: `spend-${i}`, id, item: 'water' })),
    );
    const ok = answers.filter((a) => a.op === 'redeemed');
    expect(ok).toHaveLength(10);
    expect(ok.map((a) => a.valueLeft).sort((a, b) => a - b)).toEqual(
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => n * 1_000_000),
    );
    expect(answers.filter((a) => a.op === 'refused')).toEqual(
      Array(40).fill(expect.objectContaining({ op: 'refused', reason: 'insufficient_value', valueLeft: 0 })),
    );
    expect(await balanceOf(h, id)).toBe(0);
    expect(await recordsOf(h, id)).toHaveLength(10);
  });

  it('a scan that fails in the script (a damaged ID) fails alone: the scan batched with it goes through', async () => {
    const ids = await soldIds(h, cat.wallet, 24);
    const [bad, good] = sameBucketIds(h, ids, 2);
    await h.r.hset(idKeyOf(h, bad!), 'bal', 'not-a-number');
    const from = s.got.length;
    s.send([
      { op: 'redeem', ref: 9100, scan: uniq('bad'), id: bad, item: 'water' },
      { op: 'redeem', ref: 9101, scan: uniq('good'), id: good, item: 'water' },
    ]);
    const [b, g] = await Promise.all([s.waitFor((m) => m.ref === 9100, from), s.waitFor((m) => m.ref === 9101, from)]);
    expect(b.msg).toMatchObject({ op: 'error', reason: 'internal' });
    expect(g.msg).toMatchObject({ op: 'redeemed', valueLeft: WALLET_FACE - PRICE.water });
    expect(await balanceOf(h, good!)).toBe(WALLET_FACE - PRICE.water);
  });

  it('scans of one bucket that arrive together share a redeem call (group commit), each still applied once and in order', async () => {
    const id = await sold(cat.wallet);
    const scriptCalls = async (): Promise<number> =>
      Number(/cmdstat_fcall:calls=(\d+)/.exec(await h.r.info('commandstats'))?.[1] ?? 0);
    await h.r.config('RESETSTAT');
    const from = s.got.length;
    // One frame: the gateway sees all ten in one event-loop turn (the wallet holds ten waters).
    s.send(
      Array.from({ length: 10 }, (_, i) => ({ op: 'redeem', ref: 9000 + i, scan: `batch-${i}`, id, item: 'water' })),
    );
    const got = await Promise.all(Array.from({ length: 10 }, (_, i) => s.waitFor((m) => m.ref === 9000 + i, from)));
    expect(got.map((g) => g.msg.op)).toEqual(Array(10).fill('redeemed'));
    expect(got.map((g) => g.msg.valueLeft as number).sort((a, b) => b - a)).toEqual(
      Array.from({ length: 10 }, (_, i) => WALLET_FACE - (i + 1) * PRICE.water),
    );
    expect(await balanceOf(h, id)).toBe(0);
    expect(await recordsOf(h, id)).toHaveLength(10);
    // One scan_claim per scan-key bucket (at most ten) and a redeem call or two for the ID's bucket,
    // where a call per scan and round would make twenty.
    const calls = await scriptCalls();
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(calls).toBeLessThanOrEqual(13);
  });
});

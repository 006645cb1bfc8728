/**
 * Offline scans: a till or gate that lost its connection keeps a journal and
 * uploads it later, each redeem with `at`, the time it was made. Over a real
 * /v1/scanner socket and POST /v1/redeem against a real Redis: judged at its
 * own time, applied in arrival order, refused `bad_scan_time` out of bounds,
 * recorded and exported with both times.
 */
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { putProducts } from '../../src/catalog/store';
import type { EntryProduct } from '../../src/catalog/schema';
import type { Gateway } from '../../src/gateway/server';
import { keys } from '../../src/redis/keys';
import { SCAN_CLOCK_SKEW_MS } from '../../src/redemption/service';
import { cli, cliEnv, lines, setEnv } from '../support/cli';
import { gateway, seedCatalog, soldIds, startHarness, uniq, type Harness } from '../support/harness';
import { jsonCall } from '../support/http';
import { balanceOf, bucketOf, hashOf, idFields, idKeyOf } from '../support/redis';
import { sleep } from '../support/wait';
import { Scanner } from '../support/ws-client';
import {
  claimsNow,
  DAY,
  loadRedemptionCatalog,
  PRICE,
  recordsOf,
  scannerToken,
  streamLength,
  VENUE,
  WALLET_FACE,
  type Catalog,
} from './fixtures';

const HOUR = 3_600_000;

let h: Harness;
let gw: Gateway;
let cat: Catalog;
/** Valid from six hours ago until an hour ago. */
let ended: EntryProduct;
/** Its validFrom and validUntil (ms). */
let validFrom: number;
let validUntil: number;
let till: Scanner;
let tillName: string;
let tillTok: string;
let restoreEnv: (() => void) | undefined;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  cat = await loadRedemptionCatalog(h);
  const now = Date.now();
  [validFrom, validUntil] = [now - 6 * HOUR, now - HOUR];
  [ended] = (await putProducts(h.ctx.redis, [
    {
      name: 'ended',
      kind: 'entry',
      currency: 'EUR',
      price: 1,
      venues: [VENUE],
      validFrom,
      validUntil,
    },
  ])) as [EntryProduct];
  gw = await gateway(h);
  const t = await scannerToken(h);
  tillName = t.name;
  tillTok = t.tok;
  till = await Scanner.connect(gw.port, t.tok);
  restoreEnv = setEnv(cliEnv(h));
});
afterAll(async () => {
  restoreEnv?.();
  await till?.close();
  await gw?.close();
  await h?.stop();
});

/** Sold two days ago, before any scan time these tests send (a scan is never judged before its ID's sale). */
const soldEarlier = async (p: Parameters<typeof soldIds>[1], n = 1): Promise<string[]> => {
  const ids = await soldIds(h, p, n);
  for (const id of ids) await h.r.hset(idKeyOf(h, id), 'sold', Date.now() - 2 * DAY);
  return ids;
};
const sold = async (p: Parameters<typeof soldIds>[1]): Promise<string> => (await soldEarlier(p))[0]!;
const post = (path: string, body: unknown) => jsonCall(gw, 'POST', path, { token: tillTok, body });
const badTime = (scan: string) => ({
  op: 'refused',
  scan,
  reason: 'bad_scan_time',
  message: 'the time the scan says it was made (at) is in the future or too long ago',
});

describe('an offline scan is judged at the time it was made', () => {
  it('a sale made before the card expired, uploaded after: granted; the record keeps both times', async () => {
    const id = await sold(cat.wallet);
    // The card expired an hour ago; the till sold a beer two hours ago, offline.
    await h.r.hset(idKeyOf(h, id), 'exp', Date.now() - HOUR);
    const at = Date.now() - 2 * HOUR;
    const scan = uniq('off');
    const before = Date.now();
    expect(await till.redeem({ scan, id, item: 'beer', at })).toEqual({
      op: 'redeemed',
      scan,
      kind: 'goods',
      action: 'spend',
      amount: PRICE.beer,
      valueLeft: WALLET_FACE - PRICE.beer,
      item: 'beer',
    });
    const [rec] = await recordsOf(h, id);
    expect(rec).toMatchObject({ type: 'redeem', scan, scanner: tillName, amount: String(PRICE.beer), at: String(at) });
    // `time`: when it reached Tessera (the gateway's clock), not when it was made.
    expect(Number(rec!.time)).toBeGreaterThanOrEqual(before);
    // Its first use was the sale, when it was made.
    expect(await idFields(h, id)).toMatchObject({ first: String(at) });

    // The same card, scanned online now: expired.
    const late = uniq('on');
    expect(await till.redeem({ scan: late, id, item: 'water' })).toMatchObject({ op: 'refused', reason: 'expired' });

    // The export shows both: `time` and `at`.
    const csv = await cli('export', 'redemptions', '--format', 'csv');
    expect(csv.code).toBe(0);
    const rows = parse<Record<string, string>>(csv.out, { columns: true });
    expect(rows.find((r) => r.scan === scan)).toMatchObject({ time: rec!.time, at: String(at), id: hashOf(h, id) });
    const nd = await cli('export', 'redemptions', '--format', 'ndjson');
    const obj = lines(nd.out)
      .map((l) => JSON.parse(l) as Record<string, string>)
      .find((o) => o.scan === scan);
    expect(obj).toMatchObject({ time: rec!.time, at: String(at) });
  });

  it('validity from first use counts from when the offline sale was made', async () => {
    const id = await sold(cat.wallet);
    const at = Date.now() - 3 * HOUR;
    expect(await till.redeem({ scan: uniq('off'), id, item: 'water', at })).toMatchObject({ op: 'redeemed' });
    const f = await idFields(h, id);
    expect(f.first).toBe(String(at));
    expect(Number(f.exp)).toBe(at + cat.wallet.expiryDays * DAY);
  });

  it('made before the first use recorded: it becomes the first use, where and when, and validity counts from it', async () => {
    const id = await sold(cat.ticket3);
    // Valid for a day from its first use (the ID's own term).
    await h.r.hset(idKeyOf(h, id), 'expd', 1);
    expect(await till.redeem({ scan: uniq('on'), id, gate: 'north' })).toMatchObject({ entriesLeft: 2 });
    const online = await idFields(h, id);
    expect(Number(online.exp)).toBe(Number(online.first) + DAY);
    // An entry made offline at the east gate nearly a day ago, uploaded now.
    const at = Date.now() - DAY + 2000;
    expect(await till.redeem({ scan: uniq('off'), id, gate: 'east', at })).toMatchObject({ entriesLeft: 1 });
    expect(await idFields(h, id)).toMatchObject({
      first: String(at),
      fven: VENUE,
      fgate: 'east',
      exp: String(at + DAY),
    });
    // A later scan, offline too, moves nothing.
    expect(await till.redeem({ scan: uniq('off'), id, gate: 'south', at: at + 1000 })).toMatchObject({
      entriesLeft: 0,
    });
    expect(await till.redeem({ scan: uniq('on'), id })).toMatchObject({
      reason: 'already_redeemed',
      firstUsed: { time: at, venue: VENUE, gate: 'east' },
    });
    // A day after the entry made offline, not after the one recorded first: expired.
    await sleep(2500);
    expect(await till.validate({ id, dir: 'out' })).toMatchObject({ op: 'valid', action: 'exit' });
    expect(await till.redeem({ scan: uniq('on'), id })).toMatchObject({ op: 'refused', reason: 'expired' });
  });

  it('a ticket scanned inside its validity window, uploaded after validUntil: admitted; before validFrom: not_yet_valid', async () => {
    const [inTime, early, online] = await soldEarlier(ended, 3);
    const scan = uniq('gate');
    const at = validUntil - HOUR;
    expect(await till.redeem({ scan, id: inTime!, at })).toEqual({
      op: 'redeemed',
      scan,
      kind: 'entry',
      action: 'entry',
      amount: 1,
      entriesLeft: 0,
    });
    expect((await recordsOf(h, inTime!))[0]).toMatchObject({ action: 'entry', at: String(at) });
    expect(await idFields(h, inTime!)).toMatchObject({ first: String(at) });
    // A second scan of it, made offline later: already used, at the first scan's time.
    expect(await till.redeem({ scan: uniq('gate'), id: inTime!, at: at + 60_000 })).toMatchObject({
      reason: 'already_redeemed',
      firstUsed: { time: at, venue: VENUE },
    });

    expect(await till.redeem({ scan: uniq('gate'), id: early!, at: validFrom - 60_000 })).toMatchObject({
      op: 'refused',
      reason: 'not_yet_valid',
      validFrom,
    });
    expect(await till.redeem({ scan: uniq('gate'), id: online! })).toMatchObject({ op: 'refused', reason: 'expired' });
    expect(await balanceOf(h, early!)).toBe(1);
    expect(await balanceOf(h, online!)).toBe(1);
  });

  it('never before the ID was sold: a scan time before its sale is judged at the sale', async () => {
    // Sold now, an hour after its window closed: a scan dated back into the window is still too late.
    const [ticket] = await soldIds(h, ended, 1);
    expect(await till.redeem({ scan: uniq('gate'), id: ticket!, at: validUntil - HOUR })).toMatchObject({
      op: 'refused',
      reason: 'expired',
    });
    expect(await balanceOf(h, ticket!)).toBe(1);
    // A card sold now, its first sale dated three hours back: first use and validity count from the sale.
    const [id] = (await soldIds(h, cat.wallet, 1)) as [string];
    const soldAt = Number((await idFields(h, id)).sold);
    const at = soldAt - 3 * HOUR;
    expect(await till.redeem({ scan: uniq('off'), id, item: 'water', at })).toMatchObject({ op: 'redeemed' });
    const f = await idFields(h, id);
    expect(f.first).toBe(String(soldAt));
    expect(Number(f.exp)).toBe(soldAt + cat.wallet.expiryDays * DAY);
    // The record keeps the time the scanner sent.
    expect((await recordsOf(h, id))[0]).toMatchObject({ at: String(at) });
  });

  it('value is still taken in arrival order: an offline sale the card no longer covers is refused', async () => {
    const id = await sold(cat.wallet);
    expect(await till.redeem({ scan: uniq('on'), id, item: 'beer', qty: 2 })).toMatchObject({
      op: 'redeemed',
      valueLeft: WALLET_FACE - 2 * PRICE.beer,
    });
    await h.r.hset(idKeyOf(h, id), 'exp', Date.now() - HOUR);
    // A sale made offline earlier, before the card expired, arrives after it: judged at its time, paid from what is left now.
    const scan = uniq('off');
    expect(await till.redeem({ scan, id, item: 'beer', at: Date.now() - 2 * HOUR })).toMatchObject({
      op: 'refused',
      scan,
      reason: 'insufficient_value',
      valueLeft: WALLET_FACE - 2 * PRICE.beer,
    });
    expect(await recordsOf(h, id)).toHaveLength(1);
  });

  it('a journal in one frame mixing offline and online scans: each judged at its own time', async () => {
    const id = await sold(cat.wallet);
    await h.r.hset(idKeyOf(h, id), 'exp', Date.now() - HOUR);
    const at = Date.now() - 2 * HOUR;
    const [a, b, c] = [uniq('j'), uniq('j'), uniq('j')];
    const got = await till.requestAll([
      { op: 'redeem', ref: a, scan: a, id, item: 'water', at },
      { op: 'redeem', ref: b, scan: b, id, item: 'water' },
      { op: 'redeem', ref: c, scan: c, id, item: 'water', at: at + 1000 },
    ]);
    expect(got.map((m) => [m.op, m.reason ?? m.valueLeft])).toEqual([
      ['redeemed', WALLET_FACE - PRICE.water],
      ['refused', 'expired'],
      ['redeemed', WALLET_FACE - 2 * PRICE.water],
    ]);
    expect((await recordsOf(h, id)).map((r) => [r.scan, r.at])).toEqual([
      [a, String(at)],
      [c, String(at + 1000)],
    ]);
  });

  it('a retry of a granted offline scan answers the first answer, even once its time is out of bounds', async () => {
    const id = await sold(cat.wallet);
    const scan = uniq('off');
    // Just inside OFFLINE_MAX_AGE_MS (24 h by default) now, outside it two seconds later.
    const at = Date.now() - h.cfg.offlineMaxAgeMs + 1500;
    expect(await till.redeem({ scan, id, item: 'water', at })).toMatchObject({ op: 'redeemed' });
    await sleep(2000);
    expect(await till.redeem({ scan, id, item: 'water', at })).toMatchObject({ op: 'redeemed', duplicate: true });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.water);
    expect((await recordsOf(h, id)).map((r) => [r.scan, r.at])).toEqual([[scan, String(at)]]);
  });
});

describe('bad_scan_time: a scan time out of bounds is refused, nothing written', () => {
  it('older than OFFLINE_MAX_AGE_MS, or ahead of the gateway by more than the clock skew', async () => {
    expect(h.cfg.offlineMaxAgeMs).toBe(DAY);
    const id = await sold(cat.wallet);
    const len = await streamLength(h, id);
    const old = uniq('old');
    expect(await till.redeem({ scan: old, id, item: 'water', at: Date.now() - DAY - 60_000 })).toEqual(badTime(old));
    const ahead = uniq('ahead');
    expect(await till.redeem({ scan: ahead, id, item: 'water', at: Date.now() + SCAN_CLOCK_SKEW_MS + 60_000 })).toEqual(
      badTime(ahead),
    );
    expect(await balanceOf(h, id)).toBe(WALLET_FACE);
    expect(await streamLength(h, id)).toBe(len);
    expect(await idFields(h, id)).not.toHaveProperty('first');
    // No claim kept: the scan id is free for the sale made again with a time in bounds.
    expect(await h.r.hget(claimsNow(h, `${tillName}:${old}`), `${tillName}:${old}`)).toBeNull();
    expect(await till.redeem({ scan: old, id, item: 'water', at: Date.now() - HOUR })).toMatchObject({
      op: 'redeemed',
      valueLeft: WALLET_FACE - PRICE.water,
    });
  });

  it('a scanner clock a little ahead is taken as now', async () => {
    const [id] = await soldIds(h, ended, 1);
    // Now is after validUntil: judged now, not at its time ahead.
    expect(await till.redeem({ scan: uniq(), id: id!, at: Date.now() + 60_000 })).toMatchObject({ reason: 'expired' });
    const w = await sold(cat.wallet);
    const at = Date.now() + 60_000;
    expect(await till.redeem({ scan: uniq(), id: w, item: 'water', at })).toMatchObject({ op: 'redeemed' });
    const [rec] = await recordsOf(h, w);
    expect(rec!.at).toBe(String(at));
    expect(Number((await idFields(h, w)).first)).toBeLessThan(at);
  });

  it('over HTTP: 422 with the reason; a malformed at is a bad request', async () => {
    const id = await sold(cat.wallet);
    expect(await post('/v1/redeem', { scan: uniq(), id, item: 'water', at: Date.now() - 2 * DAY })).toEqual({
      status: 422,
      json: {
        error: {
          reason: 'bad_scan_time',
          message: 'the time the scan says it was made (at) is in the future or too long ago',
        },
      },
    });
    await h.r.hset(idKeyOf(h, id), 'exp', Date.now() - HOUR);
    expect(await post('/v1/redeem', { scan: uniq(), id, item: 'water', at: Date.now() - 2 * HOUR })).toMatchObject({
      status: 200,
      json: { action: 'spend', valueLeft: WALLET_FACE - PRICE.water },
    });
    for (const at of [-1, 1.5, '1795608478587'])
      expect((await post('/v1/redeem', { scan: uniq(), id, item: 'water', at })).status).toBe(400);
    expect(
      await till.request({ op: 'redeem', ref: 'm', scan: uniq(), id, item: 'water', at: '1795608478587' }),
    ).toMatchObject({ op: 'error', ref: 'm', reason: 'bad_type' });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.water);
  });
});

describe('a void made offline: reverse with at', () => {
  it('is recorded with the time it was made, in the record and the export; a repeat answers the first answer', async () => {
    const id = await sold(cat.wallet);
    const [sale, other] = [uniq('j'), uniq('j')];
    const [a, v] = [Date.now() - 2 * HOUR, Date.now() - HOUR];
    // A journal: a sale and its void, both made offline, uploaded in one frame.
    const got = await till.requestAll([
      { op: 'redeem', ref: 1, scan: sale, id, item: 'beer', at: a },
      { op: 'reverse', ref: 2, scan: sale, id, reason: 'spilt', at: v },
    ]);
    expect(got[1]).toEqual({
      op: 'reversed',
      ref: 2,
      scan: sale,
      kind: 'goods',
      action: 'reverse',
      amount: PRICE.beer,
      valueLeft: WALLET_FACE,
    });
    const recs = await recordsOf(h, id);
    expect(recs.map((r) => [r.type, r.at, r.reason])).toEqual([
      ['redeem', String(a), undefined],
      ['reverse', String(v), 'spilt'],
    ]);
    const csv = await cli('export', 'redemptions', '--format', 'csv');
    const rows = parse<Record<string, string>>(csv.out, { columns: true });
    expect(rows.find((r) => r.scan === sale && r.type === 'reverse')).toMatchObject({ at: String(v), reason: 'spilt' });
    // Sent again, even with a time now out of bounds: the first answer, nothing given back twice.
    expect(await till.request({ op: 'reverse', ref: 3, scan: sale, at: Date.now() - 2 * DAY })).toMatchObject({
      op: 'reversed',
      duplicate: true,
    });
    // A void sent without at is recorded as before, with no at.
    expect(await till.redeem({ scan: other, id, item: 'water' })).toMatchObject({ op: 'redeemed' });
    expect(await till.reverse(other)).toMatchObject({ op: 'reversed' });
    expect((await recordsOf(h, id)).at(-1)).not.toHaveProperty('at');
    expect(await balanceOf(h, id)).toBe(WALLET_FACE);
  });

  it('out of bounds: bad_scan_time and nothing reversed; never recorded before the redemption it undoes', async () => {
    const id = await sold(cat.wallet);
    const sale = uniq('on');
    expect(await till.redeem({ scan: sale, id, item: 'beer' })).toMatchObject({ op: 'redeemed' });
    for (const at of [Date.now() - DAY - 60_000, Date.now() + SCAN_CLOCK_SKEW_MS + 60_000])
      expect(await till.request({ op: 'reverse', ref: 'r', scan: sale, at })).toMatchObject({
        op: 'refused',
        scan: sale,
        reason: 'bad_scan_time',
      });
    expect(await post('/v1/reverse', { scan: sale, at: Date.now() - 2 * DAY })).toMatchObject({
      status: 422,
      json: { error: { reason: 'bad_scan_time' } },
    });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.beer);
    expect(await recordsOf(h, id)).toHaveLength(1);
    // Dated before the sale it voids (the till's clock behind the gateway's): recorded at the sale's time.
    expect(await post('/v1/reverse', { scan: sale, at: Date.now() - HOUR })).toMatchObject({
      status: 200,
      json: { action: 'reverse', valueLeft: WALLET_FACE },
    });
    const [red, rev] = await recordsOf(h, id);
    expect(rev).toMatchObject({ type: 'reverse', at: red!.time });

    // An offline sale's void dated before it: recorded at the sale's at.
    const off = uniq('off');
    const at = Date.now() - 2 * HOUR;
    expect(await till.redeem({ scan: off, id, item: 'water', at })).toMatchObject({ op: 'redeemed' });
    expect(await till.request({ op: 'reverse', ref: 'o', scan: off, at: at - HOUR })).toMatchObject({ op: 'reversed' });
    expect((await recordsOf(h, id)).at(-1)).toMatchObject({ type: 'reverse', scan: off, at: String(at) });
    for (const bad of [-1, 1.5, 'soon']) expect((await post('/v1/reverse', { scan: off, at: bad })).status).toBe(400);
  });
});

describe('without at: as before', () => {
  it('judged and recorded when it reaches Tessera; the export’s at column is empty', async () => {
    const id = await sold(cat.wallet);
    const scan = uniq('on');
    expect(await till.redeem({ scan, id, item: 'water' })).toMatchObject({ op: 'redeemed' });
    // One packed field, as before offline scans.
    const entries = await h.r.xrange(keys.redemptions(bucketOf(h, id)), '-', '+');
    expect(entries.find(([, f]) => f[1]!.includes(`|${scan}|`))![1]).toHaveLength(2);
    const f = await idFields(h, id);
    const [rec] = await recordsOf(h, id);
    expect(rec).not.toHaveProperty('at');
    expect(f.first).toBe(rec!.time);
    await h.r.hset(idKeyOf(h, id), 'exp', Date.now() - 1);
    expect(await till.redeem({ scan: uniq(), id, item: 'water' })).toMatchObject({ reason: 'expired' });

    const csv = await cli('export', 'redemptions', '--format', 'csv');
    const header = lines(csv.out)[0]!.split(',');
    expect(header.slice(-2)).toEqual(['reason', 'at']);
    const rows = parse<Record<string, string>>(csv.out, { columns: true });
    expect(rows.find((r) => r.scan === scan)).toMatchObject({ time: rec!.time, at: '' });
  });
});

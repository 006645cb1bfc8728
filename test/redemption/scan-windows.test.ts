/**
 * Where scans are remembered: claims and records live in per-bucket hashes,
 * one per window of time, found from any window a scan can be in; scans kept
 * in a key each by earlier versions are still answered while they can be left.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { CLOCK_SKEW_MS, openScanWindows, ScanWindows, windowMsFor } from '../../src/redemption/scan-windows';
import { keys } from '../../src/redis/keys';
import { gateway, seedCatalog, soldIds, startHarness, uniq, type Harness } from '../support/harness';
import { balanceOf } from '../support/redis';
import { Scanner } from '../support/ws-client';
import {
  claimBucket,
  claimsNow,
  loadRedemptionCatalog,
  PRICE,
  recordsOf,
  scannerToken,
  WALLET_FACE,
  type Catalog,
} from './fixtures';

let h: Harness;
let cat: Catalog;
let tok: string;
let name: string;
let windows: ScanWindows;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  cat = await loadRedemptionCatalog(h);
  ({ tok, name } = await scannerToken(h));
  windows = new ScanWindows(h.cfg.scanTtlSec);
});
afterAll(async () => {
  await h?.stop();
});

const sold = async (): Promise<string> => (await soldIds(h, cat.wallet, 1))[0]!;
/** The window scans are written to now. */
const now = (): number => windows.at(Date.now())[0]!;

/** Moves a hash field from one window's hash to another's, as a gateway writing at that time would have put it. */
async function moveField(from: string, to: string, field: string): Promise<string> {
  const v = await h.r.hget(from, field);
  expect(v).not.toBeNull();
  await h.r.hdel(from, field);
  await h.r.hset(to, field, v!);
  return v!;
}

describe('openScanWindows', () => {
  it('decides once, for every gateway: the window length, and no per-scan keys on a Redis that never granted a scan', async () => {
    await h.r.del(keys.scanWindows);
    const first = await openScanWindows(h.r, h.cfg);
    expect(first.legacyUntil).toBe(0);
    expect(first.windowMs).toBe(windowMsFor(h.cfg.scanTtlSec));
    expect(await h.r.hgetall(keys.scanWindows)).toEqual({ legacyUntil: '0', windowMs: String(first.windowMs) });
    // Started later with another SCAN_TTL_SEC: the same windows, or every scan kept so far would be lost.
    const later = await openScanWindows(h.r, { ...h.cfg, scanTtlSec: 2 * 86_400 });
    expect(later.windowMs).toBe(first.windowMs);
    expect(windowMsFor(2 * 86_400)).not.toBe(first.windowMs);
  });

  it('gives per-scan keys SCAN_TTL_SEC to run out on a Redis that granted scans before the windows', async () => {
    await h.r.del(keys.scanWindows);
    await h.r.xadd(keys.redemptions(3), '*', 'r', 'earlier');
    const t = Date.now();
    const first = await openScanWindows(h.r, h.cfg, t);
    expect(first.legacyUntil).toBe(t + h.cfg.scanTtlSec * 1000);
    expect(first.legacyAt(t + h.cfg.scanTtlSec * 1000 - 1)).toBe(true);
    expect(first.legacyAt(t + h.cfg.scanTtlSec * 1000)).toBe(false);
    // A later start keeps the first decision, whatever it would decide itself.
    expect((await openScanWindows(h.r, h.cfg, t + 60_000)).legacyUntil).toBe(first.legacyUntil);
    await h.r.del(keys.redemptions(3), keys.scanWindows);
  });

  it('looks a scan up in every window a gateway could have written it to within the TTL, and keeps each window that long', () => {
    const w = new ScanWindows(30 * 86400);
    const ttl = 30 * 86_400_000;
    for (const t of [Date.UTC(2026, 11, 6), Date.UTC(2026, 11, 6) + w.windowMs - 1, 1_234_567_890_123]) {
      const at = w.at(t);
      expect(at[0]).toBe(Math.floor(t / w.windowMs));
      expect(new Set(at).size).toBe(at.length);
      // Written by a clock up to CLOCK_SKEW_MS off, at any time in the last TTL: in a window read now.
      for (const written of [t - ttl - CLOCK_SKEW_MS, t - ttl / 3, t, t + CLOCK_SKEW_MS])
        expect(at).toContain(Math.floor(written / w.windowMs));
      // ...and its window has not expired yet.
      expect(w.expiresAt(at[0]!)).toBeGreaterThanOrEqual(t + ttl);
      expect(w.expiresAt(Math.floor((t - ttl) / w.windowMs))).toBeGreaterThanOrEqual(t);
    }
  });

  it('reads at most four windows per scan, whatever SCAN_TTL_SEC (60 s to 366 days)', () => {
    for (const ttlSec of [60, 600, 3600, 86_400, 30 * 86_400, 366 * 86_400]) {
      const w = new ScanWindows(ttlSec);
      for (let t = 1_800_000_000_000; t < 1_800_000_000_000 + 2 * w.windowMs; t += w.windowMs / 7)
        expect(w.at(t).length).toBeLessThanOrEqual(4);
      // Kept at least the TTL, whatever the window.
      expect(w.expiresAt(0) - w.windowMs).toBeGreaterThanOrEqual(ttlSec * 1000);
    }
  });

  it('answers one time as a fresh instance would, whatever it was asked before (it keeps its last answer)', () => {
    const w = new ScanWindows(3600);
    const start = 1_800_000_000_000;
    // Steps that cross every kind of edge: the written window's, and the skewed newest and oldest ones'.
    for (let t = start; t < start + 3 * w.windowMs; t += 7_919) expect(w.at(t)).toEqual(new ScanWindows(3600).at(t));
    expect(w.at(start)).toEqual(new ScanWindows(3600).at(start));
  });
});

describe('the windows', () => {
  let gw: Gateway;
  let s: Scanner;
  beforeAll(async () => {
    await h.r.del(keys.scanWindows);
    gw = await gateway(h);
    s = await Scanner.connect(gw.port, tok);
  });
  afterAll(async () => {
    await s?.close();
    await gw?.close();
  });

  it('a granted scan writes no key of its own: its claim and record are fields of their window hashes, which expire', async () => {
    const id = await sold();
    const scan = uniq();
    const scanKey = `${name}:${scan}`;
    expect(await s.redeem({ scan, id, item: 'water' })).toMatchObject({ op: 'redeemed' });
    const { bucket } = h.ctx.ids.hash(id);
    const w = now();
    const claims = keys.scanClaims(claimBucket(h, scanKey), w);
    const records = keys.scans(bucket, w);
    expect(await h.r.hget(claims, scanKey)).toMatch(/^ts:\{b\d+\}:id:[0-9a-f]+\|water\|1\|in$/);
    expect(await h.r.hget(records, scanKey)).toContain('|water|1|in|goods|spend|');
    for (const key of [claims, records]) expect(await h.r.pexpiretime(key)).toBe(windows.expiresAt(w));
    expect(await h.r.exists(keys.scan(bucket, scanKey), keys.scanIndex(claimBucket(h, scanKey), scanKey))).toBe(0);
    // A second scan into the same windows adds fields, not keys.
    let next = uniq();
    while (claimBucket(h, `${name}:${next}`) !== claimBucket(h, scanKey)) next = uniq();
    const keysBefore = await h.r.dbsize();
    expect(await s.redeem({ scan: next, id, item: 'water' })).toMatchObject({ op: 'redeemed' });
    expect(await h.r.dbsize()).toBe(keysBefore);
    expect(await h.r.hlen(records)).toBeGreaterThanOrEqual(2);
  });

  it('a scan written in an earlier window is still answered as a retry, refused for other terms, and reversed once', async () => {
    const id = await sold();
    const scan = uniq();
    const scanKey = `${name}:${scan}`;
    const first = await s.redeem({ scan, id, item: 'beer' });
    expect(first).toMatchObject({ op: 'redeemed', valueLeft: WALLET_FACE - PRICE.beer });
    const { bucket } = h.ctx.ids.hash(id);
    const w = now();
    const old = windows.at(Date.now()).at(-1)!;
    expect(old).toBeLessThan(w);
    await moveField(
      keys.scanClaims(claimBucket(h, scanKey), w),
      keys.scanClaims(claimBucket(h, scanKey), old),
      scanKey,
    );
    await moveField(keys.scans(bucket, w), keys.scans(bucket, old), scanKey);

    expect(await s.redeem({ scan, id, item: 'beer' })).toEqual({ ...first, duplicate: true });
    expect(await s.redeem({ scan, id, item: 'water' })).toMatchObject({ op: 'refused', reason: 'scan_conflict' });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.beer);
    expect(await s.reverse(scan)).toMatchObject({ op: 'reversed', amount: PRICE.beer, valueLeft: WALLET_FACE });
    expect(await s.reverse(scan)).toMatchObject({ op: 'reversed', valueLeft: WALLET_FACE, duplicate: true });
    // The reversal stays where the record was: the old window, which expires first.
    expect(await h.r.hexists(keys.scans(bucket, w), scanKey)).toBe(0);
    expect(await h.r.hget(keys.scans(bucket, old), scanKey)).toContain('|reversed|');
    expect(await balanceOf(h, id)).toBe(WALLET_FACE);
    expect(await recordsOf(h, id)).toHaveLength(2);
  });

  it('a gateway started with another SCAN_TTL_SEC still answers a retry and reverses once, and never shortens a window', async () => {
    const id = await sold();
    const scan = uniq();
    const scanKey = `${name}:${scan}`;
    const first = await s.redeem({ scan, id, item: 'water' });
    const { bucket } = h.ctx.ids.hash(id);
    const records = keys.scans(bucket, now());
    const claims = claimsNow(h, scanKey);
    const expiry = await h.r.pexpiretime(records);
    const gw2 = await gateway(h, { scanTtlSec: 2 * 86_400 });
    const s2 = await Scanner.connect(gw2.port, tok);
    try {
      expect(await s2.redeem({ scan, id, item: 'water' })).toEqual({ ...first, duplicate: true });
      expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.water);
      expect(await s2.reverse(scan)).toMatchObject({ op: 'reversed', valueLeft: WALLET_FACE });
      expect(await s.reverse(scan)).toMatchObject({ op: 'reversed', duplicate: true });
      // Its scans go into the same windows, which keep the longer life the first gateway gave them.
      let next = uniq();
      while (claimBucket(h, `${name}:${next}`) !== claimBucket(h, scanKey)) next = uniq();
      expect(await s2.redeem({ scan: next, id, item: 'water' })).toMatchObject({ op: 'redeemed' });
      expect(await h.r.hexists(records, `${name}:${next}`)).toBe(1);
      expect(await h.r.pexpiretime(records)).toBe(expiry);
      expect(await h.r.pexpiretime(claims)).toBe(expiry);
    } finally {
      await s2.close();
      await gw2.close();
    }
  });

  it('a refused scan leaves nothing in the windows', async () => {
    const id = await sold();
    const scan = uniq();
    const scanKey = `${name}:${scan}`;
    expect(await s.redeem({ scan, id, item: 'no-such-item' })).toMatchObject({ reason: 'unknown_item' });
    const { bucket } = h.ctx.ids.hash(id);
    expect(await h.r.hexists(claimsNow(h, scanKey), scanKey)).toBe(0);
    expect(await h.r.hexists(keys.scans(bucket, now()), scanKey)).toBe(0);
  });
});

describe('scans kept in a key each, by earlier versions', () => {
  let gw: Gateway;
  let s: Scanner;
  beforeAll(async () => {
    // As the first start after an upgrade decides on a Redis that has granted scans.
    await h.r.hset(keys.scanWindows, 'legacyUntil', Date.now() + h.cfg.scanTtlSec * 1000);
    gw = await gateway(h);
    s = await Scanner.connect(gw.port, tok);
  });
  afterAll(async () => {
    await s?.close();
    await gw?.close();
    await h.r.hset(keys.scanWindows, 'legacyUntil', 0);
  });

  /** Redeems, then puts the scan's claim and record where earlier versions kept them. */
  async function legacyScan(item: string, asHash: boolean): Promise<{ id: string; scan: string; first: unknown }> {
    const id = await sold();
    const scan = uniq();
    const scanKey = `${name}:${scan}`;
    const first = await s.redeem({ scan, id, item });
    const { bucket } = h.ctx.ids.hash(id);
    const cb = claimBucket(h, scanKey);
    const terms = await h.r.hget(keys.scanClaims(cb, now()), scanKey);
    await h.r.hdel(keys.scanClaims(cb, now()), scanKey);
    await h.r.set(keys.scanIndex(cb, scanKey), terms!, 'EX', 3600);
    const packed = (await h.r.hget(keys.scans(bucket, now()), scanKey))!;
    await h.r.hdel(keys.scans(bucket, now()), scanKey);
    const legacy = keys.scan(bucket, scanKey);
    if (!asHash) await h.r.set(legacy, packed, 'EX', 3600);
    else {
      // Before records were packed: a hash with the same fields.
      const names = ['id', 'item', 'qty', 'dir', 'kind', 'action', 'amount', 'left', 'rec', 'venue', 'gate', 'idh'];
      const values = packed.split('|');
      await h.r.hset(legacy, {
        ...Object.fromEntries(names.map((n, i) => [n, values[i]!])),
        time: values[12]!,
        st: 'ok',
      });
    }
    return { id, scan, first };
  }

  for (const asHash of [false, true])
    it(`a scan kept ${asHash ? 'as a hash' : 'packed'} in a key of its own is answered as a retry, refused for other terms, and reversed once`, async () => {
      const { id, scan, first } = await legacyScan('beer', asHash);
      expect(first).toMatchObject({ op: 'redeemed', valueLeft: WALLET_FACE - PRICE.beer });
      expect(await s.redeem({ scan, id, item: 'beer' })).toEqual({ ...(first as object), duplicate: true });
      expect(await s.redeem({ scan, id, item: 'water' })).toMatchObject({ op: 'refused', reason: 'scan_conflict' });
      expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.beer);
      expect(await s.reverse(scan, 'upgrade')).toMatchObject({
        op: 'reversed',
        amount: PRICE.beer,
        valueLeft: WALLET_FACE,
      });
      expect(await s.reverse(scan, 'upgrade')).toMatchObject({ op: 'reversed', duplicate: true });
      expect(await balanceOf(h, id)).toBe(WALLET_FACE);
    });

  it('a scan claimed where still earlier versions kept claims (the HMAC bucket of the scan key) is reversed, once', async () => {
    const id = await sold();
    let scan = uniq();
    const legacyOf = (scanKey: string): string => keys.scanIndex(h.ctx.ids.bucketOf(scanKey), scanKey);
    while (legacyOf(`${name}:${scan}`) === keys.scanIndex(claimBucket(h, `${name}:${scan}`), `${name}:${scan}`))
      scan = uniq();
    const scanKey = `${name}:${scan}`;
    await s.redeem({ scan, id, item: 'water' });
    const terms = await h.r.hget(claimsNow(h, scanKey), scanKey);
    await h.r.hdel(claimsNow(h, scanKey), scanKey);
    await h.r.set(legacyOf(scanKey), terms!);
    expect(await s.reverse(scan)).toMatchObject({ op: 'reversed', scan, amount: PRICE.water, valueLeft: WALLET_FACE });
    expect(await s.reverse(scan)).toMatchObject({ op: 'reversed', duplicate: true });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE);
  });

  it('a scan whose claim fails (a damaged claim key) fails alone: the scan claimed in the same call goes through', async () => {
    const [a, b] = (await soldIds(h, cat.wallet, 2)) as [string, string];
    const bad = uniq('bad');
    let good = uniq('good');
    while (claimBucket(h, `${name}:${good}`) !== claimBucket(h, `${name}:${bad}`)) good = uniq('good');
    await h.r.hset(keys.scanIndex(claimBucket(h, `${name}:${bad}`), `${name}:${bad}`), 'damaged', '1');
    const from = s.got.length;
    s.send([
      { op: 'redeem', ref: 9200, scan: bad, id: a, item: 'water' },
      { op: 'redeem', ref: 9201, scan: good, id: b, item: 'water' },
    ]);
    const [rb, rg] = await Promise.all([
      s.waitFor((m) => m.ref === 9200, from),
      s.waitFor((m) => m.ref === 9201, from),
    ]);
    expect(rb.msg).toMatchObject({ op: 'error', reason: 'internal' });
    expect(rg.msg).toMatchObject({ op: 'redeemed', valueLeft: WALLET_FACE - PRICE.water });
    expect(await balanceOf(h, a)).toBe(WALLET_FACE);
  });
});

describe('gateways whose clocks disagree (windows of 10 minutes)', () => {
  let gw: Gateway;
  let s: Scanner;
  beforeAll(async () => {
    await h.r.del(keys.scanWindows);
    gw = await gateway(h, { scanTtlSec: 600, offlineMaxAgeMs: 600_000 });
    s = await Scanner.connect(gw.port, tok);
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await s?.close();
    await gw?.close();
    await h.r.del(keys.scanWindows);
  });

  it('a scan granted while the clock ran 15 minutes fast is found by its retry once NTP steps it back', async () => {
    const id = await sold();
    const scan = uniq();
    const real = Date.now.bind(Date);
    vi.spyOn(Date, 'now').mockImplementation(() => real() + 15 * 60_000);
    const first = await s.redeem({ scan, id, item: 'beer' });
    expect(first).toMatchObject({ op: 'redeemed', valueLeft: WALLET_FACE - PRICE.beer });
    vi.restoreAllMocks();
    // Redeemed once: the retry answers the first answer, wherever its gateway's clock put the scan.
    expect(await s.redeem({ scan, id, item: 'beer' })).toEqual({ ...first, duplicate: true });
    expect(await balanceOf(h, id)).toBe(WALLET_FACE - PRICE.beer);
  });
});

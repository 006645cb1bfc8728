/**
 * An offline scan's age is judged when it reached the gateway, not when its
 * turn came: a journal uploaded behind a redeem that Redis holds (here a
 * CLIENT PAUSE of writes) waits in its ID's line, and a void or sale that was
 * within OFFLINE_MAX_AGE_MS when the till sent it must not be refused
 * `bad_scan_time` because Redis was slow. Over a real /v1/scanner socket
 * against a real Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { gateway, seedCatalog, soldIds, startHarness, uniq, type Harness } from '../support/harness';
import { balanceOf, idKeyOf } from '../support/redis';
import { Scanner } from '../support/ws-client';
import { DAY, loadRedemptionCatalog, PRICE, scannerToken, WALLET_FACE, type Catalog } from './fixtures';

const MAX_AGE_MS = 60_000;
/** How far inside the bound the scans are when sent. */
const MARGIN_MS = 2_000;
/** How long Redis holds writes: longer than the margin, so a scan judged at its turn is out of bounds. */
const PAUSE_MS = 2 * MARGIN_MS;

let h: Harness;
let gw: Gateway;
let cat: Catalog;
let till: Scanner;

beforeAll(async () => {
  // Commands wait out the pause rather than time out.
  h = await startHarness({ OFFLINE_MAX_AGE_MS: String(MAX_AGE_MS), REDIS_TIMEOUT_MS: '20000' });
  await seedCatalog(h);
  cat = await loadRedemptionCatalog(h);
  gw = await gateway(h);
  till = await Scanner.connect(gw.port, (await scannerToken(h)).tok);
});
afterAll(async () => {
  await till?.close();
  await gw?.close();
  await h?.stop();
});

describe('an offline scan queued behind a redeem Redis holds', () => {
  it('is judged by its age when it arrived: a void and a sale in time then are applied', async () => {
    const [id] = await soldIds(h, cat.wallet, 1);
    // Sold before any scan time sent here (a scan is never judged before its ID's sale).
    await h.r.hset(idKeyOf(h, id!), 'sold', Date.now() - 2 * DAY);
    const sale = uniq('q');
    expect(await till.redeem({ scan: sale, id: id!, item: 'beer' })).toMatchObject({ op: 'redeemed' });
    const at = Date.now() - MAX_AGE_MS + MARGIN_MS;
    await h.r.call('CLIENT', 'PAUSE', String(PAUSE_MS), 'WRITE');
    // One frame: a redeem (held by the pause), then a void and an offline sale of the same ID behind it.
    const got = await till.requestAll([
      { op: 'redeem', ref: 1, scan: uniq('q'), id, item: 'water' },
      { op: 'reverse', ref: 2, scan: sale, id, reason: 'spilt', at },
      { op: 'redeem', ref: 3, scan: uniq('q'), id, item: 'water', at },
    ]);
    expect(Date.now() - at).toBeGreaterThan(MAX_AGE_MS);
    expect(got.map((m) => m.op)).toEqual(['redeemed', 'reversed', 'redeemed']);
    expect(await balanceOf(h, id!)).toBe(WALLET_FACE - 2 * PRICE.water);
  }, 30_000);
});

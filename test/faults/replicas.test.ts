/**
 * A Redis without the replicas it must write to: with replicated
 * acknowledgements on and no replica, or with min-replicas-to-write refusing
 * writes, starts, stops and redemptions are answered `unavailable` (never
 * `internal`, never a success), and go through once the setting is off again.
 * A failed redemption gives back its scanner's lookup slot.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GoodsProduct, RechargeProduct } from '../../src/catalog/schema';
import { putItems } from '../../src/catalog/store';
import type { Gateway } from '../../src/gateway/server';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { jsonCall } from '../support/http';
import { balanceOf } from '../support/redis';
import { Client } from '../support/ws-client';
import { newCall } from '../metering/fixtures';

const TALK = talkProduct();
const WALLET: GoodsProduct = {
  name: 'wallet-r',
  kind: 'goods',
  currency: 'EUR',
  face: 10_000_000,
  price: 10_000_000,
  venues: [],
  expiryDays: 0,
};
const VOUCHER: RechargeProduct = {
  name: 'voucher-r',
  kind: 'recharge',
  currency: 'EUR',
  price: 2_000_000,
  face: 2_000_000,
  into: [],
};
let h: Harness;
let gw: Gateway;
let sw: Client;
let scanTok: string;
let refs = 0;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK, WALLET, VOUCHER]);
  await putItems(h.ctx.redis, [{ venue: 'arena', item: 'beer', price: 4_500_000 }]);
  gw = await gateway(h);
  sw = await Client.connect(gw.port, await token(h, 'switch'));
  scanTok = await token(h, 'scanner', 'scn-r');
});
afterAll(async () => {
  await sw?.close();
  await gw?.close();
  await h?.stop();
});

const redeem = (scan: string, id: string): Promise<{ status: number; json: any }> =>
  jsonCall(gw, 'POST', '/v1/redeem', { token: scanTok, body: { scan, id, item: 'beer' } });

describe('a primary short of replicas', () => {
  it('min-replicas-to-write refusing writes: starts and redemptions are unavailable, not internal; they go through afterwards', async () => {
    const [id] = await soldIds(h, TALK);
    const [wallet] = await soldIds(h, WALLET);
    const call = newCall();
    await h.r.config('SET', 'min-replicas-to-write', '1');
    try {
      expect(await sw.request({ op: 'start', ref: ++refs, call, id, dest: '4912345' })).toMatchObject({
        op: 'error',
        reason: 'unavailable',
      });
      expect(await redeem('r-1', wallet!)).toMatchObject({ status: 503, json: { error: { reason: 'unavailable' } } });
      // A failed redemption gave back its scanner's lookup slot: nothing of the scanner is left in flight.
      expect(gw.redemption.throttle.tracked).toBe(0);
    } finally {
      await h.r.config('SET', 'min-replicas-to-write', '0');
    }
    expect(await sw.request({ op: 'start', ref: ++refs, call, id, dest: '4912345' })).toMatchObject({ op: 'started' });
    expect(await redeem('r-1', wallet!)).toMatchObject({ status: 200, json: { valueLeft: 5_500_000 } });
  });

  it('replicated acknowledgements on and no replica: a start and a redemption are unavailable, never a success', async () => {
    const strict = await gateway(h, { redis: { ...h.cfg.redis, acks: { replicated: true, timeoutMs: 50 } } });
    const c = await Client.connect(strict.port, await token(h, 'switch'));
    try {
      const [id] = await soldIds(h, TALK);
      const [wallet] = await soldIds(h, WALLET);
      expect(await c.request({ op: 'start', ref: ++refs, call: newCall(), id, dest: '4912345' })).toMatchObject({
        op: 'error',
        reason: 'unavailable',
      });
      expect(
        await jsonCall(strict, 'POST', '/v1/redeem', {
          token: scanTok,
          body: { scan: 'r-2', id: wallet, item: 'beer' },
        }),
      ).toMatchObject({ status: 503, json: { error: { reason: 'unavailable' } } });
      expect(strict.redemption.throttle.tracked).toBe(0);
      // Applied on the primary all the same: the retry (here through a gateway that does not wait) answers it.
      expect(await redeem('r-2', wallet!)).toMatchObject({ status: 200, json: { duplicate: true } });
      expect(await balanceOf(h, wallet!)).toBe(WALLET.face - 4_500_000);
    } finally {
      await c.close();
      await strict.close();
    }
  });

  it('a retried top-up is no success either until a replica has the credit its first try made', async () => {
    const strict = await gateway(h, { redis: { ...h.cfg.redis, acks: { replicated: true, timeoutMs: 50 } } });
    try {
      const [id] = await soldIds(h, TALK);
      const admin = await token(h, 'admin', 'ops-rep');
      const topup = (): Promise<{ status: number; json: any }> =>
        jsonCall(strict, 'POST', `/v1/admin/ids/${id}/topup`, {
          token: admin,
          body: { amount: 1000 },
          idem: 'retry-0001',
        });
      expect(await topup()).toMatchObject({ status: 503, json: { error: { reason: 'unavailable' } } });
      // The first try's credit is on the primary only: its retry must not be told it is safe.
      expect(await balanceOf(h, id!)).toBe(TALK.face + 1000);
      expect(await topup()).toMatchObject({ status: 503, json: { error: { reason: 'unavailable' } } });
      // A voucher's transfer likewise, however often it is retried: its take and credit are the first try's.
      const [voucher] = await soldIds(h, VOUCHER);
      const till = await token(h, 'sales', 'till-rep');
      for (let i = 0; i < 3; i++)
        expect(await jsonCall(strict, 'POST', '/v1/topups', { token: till, body: { id, voucher } })).toMatchObject({
          status: 503,
          json: { error: { reason: 'unavailable' } },
        });
    } finally {
      await strict.close();
    }
  });
});

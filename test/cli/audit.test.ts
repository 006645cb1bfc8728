/**
 * `tessera audit`: value sold + top-ups = balance + calls + redemptions +
 * refunds + vouchers sent, for every ID, from Redis alone. A day of mixed
 * traffic balances; a balance or a
 * record changed behind Tessera's back is reported with the ID and the
 * difference, and the exit code says so.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditReport } from '../../src/ledger/audit';
import { keys } from '../../src/redis/keys';
import { refundSale } from '../../src/sales/admin';
import { HttpProvider } from '../../src/sales/provider';
import type { Gateway } from '../../src/gateway/server';
import { runCliIn } from '../support/cli';
import { gateway, mint, seedCatalog, soldIds, startHarness, talkProduct, uniq, type Harness } from '../support/harness';
import { jsonCall } from '../support/http';
import { hashOf } from '../support/redis';
import { type Client } from '../support/ws-client';
import { connectSwitch, newCall } from '../metering/fixtures';
import { loadRedemptionCatalog, PRICE, scannerToken, WALLET_FACE, type Catalog } from '../redemption/fixtures';

let h: Harness;
let gw: Gateway;
let sw: Client;
let cat: Catalog;
const TALK = talkProduct({ name: 'talk-audit', face: 1_000_000, price: 1_000_000 });
const DEST = '4912345'; // plan std: 100 micro-units a second

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK]);
  cat = await loadRedemptionCatalog(h);
  gw = await gateway(h);
  ({ c: sw } = await connectSwitch(h, gw.port));
});
afterAll(async () => {
  await sw?.close();
  await gw?.close();
  await h?.stop();
});

/** What `audit --json` prints. */
type Audit = AuditReport & { ok: boolean };

async function audit(): Promise<{ code: number; r: Audit }> {
  const run = await runCliIn(h, 'audit', '--json');
  return { code: run.code, r: JSON.parse(run.out) as Audit };
}

describe('tessera audit', () => {
  let wallet: string;
  let callEnded: string;

  it('balances after calls (one still live), redemptions, a reversal, a refund, and unsold stock', async () => {
    // Talk: one call of 10 s, stopped; one of 5 s so far, still live; one ID refunded unused.
    const [a, b, unused] = await soldIds(h, TALK, 3);
    const c1 = newCall('aud');
    expect(await sw.request({ op: 'start', ref: uniq('r'), call: c1, id: a!, dest: DEST })).toMatchObject({
      op: 'started',
    });
    expect(await sw.request({ op: 'stop', ref: uniq('r'), call: c1, sec: 10 })).toMatchObject({
      op: 'stopped',
      cost: 1000,
    });
    callEnded = a!;
    const c2 = newCall('aud');
    expect(await sw.request({ op: 'start', ref: uniq('r'), call: c2, id: b!, dest: DEST })).toMatchObject({
      op: 'started',
    });
    expect(await sw.request({ op: 'tick', ref: uniq('r'), call: c2, sec: 5 })).toMatchObject({
      op: 'ticked',
      balance: 1_000_000 - 500,
    });
    const refund = await refundSale(h.ctx, new HttpProvider(h.cfg.provider.url!, 2000), unused, 'test', 'test');
    expect(refund.ok).toBe(true);

    // Redemption: a beer and a water from a wallet, the water reversed; one entry of three.
    const { tok } = await scannerToken(h);
    wallet = (await soldIds(h, cat.wallet))[0]!;
    const [ticket] = await soldIds(h, cat.ticket3);
    expect(
      (await jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { scan: uniq(), id: wallet, item: 'beer' } }))
        .status,
    ).toBe(200);
    const water = uniq();
    expect(
      (await jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { scan: water, id: wallet, item: 'water' } }))
        .status,
    ).toBe(200);
    expect((await jsonCall(gw, 'POST', '/v1/reverse', { token: tok, body: { scan: water } })).status).toBe(200);
    expect((await jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { scan: uniq(), id: ticket } })).status).toBe(
      200,
    );
    // Stock nobody bought.
    await mint(h, TALK, 5);

    const { code, r } = await audit();
    expect(r.problems).toEqual([]);
    expect(code).toBe(0);
    expect(r.ok).toBe(true);
    expect(r.sold).toBe(5);
    expect(r.ids).toBe(10);
    expect(r.valueSold).toBe(3 * 1_000_000 + WALLET_FACE + 3);
    expect(r.calls).toBe(1000 + 500);
    expect(r.redeemed).toBe(PRICE.beer + 1);
    expect(r.refunded).toBe(1_000_000);
    expect(r.balances).toBe(r.valueSold - r.calls - r.redeemed - r.refunded);

    const text = await runCliIn(h, 'audit');
    expect(text.code).toBe(0);
    expect(text.out).toContain('audit: ok, every ID balances');
  });

  it('reports value that appeared on an ID, with the ID and the difference, and exits 1', async () => {
    const key = keys.id(h.ctx.ids.hash(wallet).bucket, hashOf(h, wallet));
    await h.r.hincrby(key, 'bal', 7);
    try {
      const { code, r } = await audit();
      expect(code).toBe(1);
      expect(r.ok).toBe(false);
      expect(r.problems).toEqual([
        expect.objectContaining({ id: hashOf(h, wallet), problem: 'more taken than sold', difference: -7 }),
      ]);
      const text = await runCliIn(h, 'audit');
      expect(text.code).toBe(1);
      expect(text.out).toContain(`id ${hashOf(h, wallet)} (sold): more taken than sold`);
      expect(text.out).toContain('audit: 1 ID(s) do not balance');
    } finally {
      await h.r.hincrby(key, 'bal', -7);
    }
  });

  it('counts an ID with two problems once', async () => {
    // A talk ID after a call keeps what is free beside its balance: a forged balance shows twice.
    const key = keys.id(h.ctx.ids.hash(callEnded).bucket, hashOf(h, callEnded));
    await h.r.hincrby(key, 'bal', 7);
    try {
      const { r } = await audit();
      expect(r.problems.map((p) => p.id)).toEqual([hashOf(h, callEnded), hashOf(h, callEnded)]);
      const text = await runCliIn(h, 'audit');
      expect(text.code).toBe(1);
      expect(text.out).toContain('audit: 1 ID(s) do not balance');
    } finally {
      await h.r.hincrby(key, 'bal', -7);
    }
  });

  it('reports a balance that is no number by name, and keeps the totals numbers', async () => {
    const key = keys.id(h.ctx.ids.hash(wallet).bucket, hashOf(h, wallet));
    const was = await h.r.hget(key, 'bal');
    await h.r.hset(key, 'bal', 'lots');
    try {
      const { code, r } = await audit();
      expect(code).toBe(1);
      expect(r.problems).toEqual([
        expect.objectContaining({ id: hashOf(h, wallet), problem: 'balance "lots" is no whole number of micro-units' }),
      ]);
      expect(Number.isFinite(r.balances)).toBe(true);
    } finally {
      await h.r.hset(key, 'bal', was!);
    }
  });

  it('reports a call record that went missing', async () => {
    const b = h.ctx.ids.hash(callEnded).bucket;
    const rec = (await h.r.xrange(keys.cdr(b), '-', '+')).find(([, f]) => f.includes(hashOf(h, callEnded)));
    await h.r.xdel(keys.cdr(b), rec![0]);
    const { code, r } = await audit();
    expect(code).toBe(1);
    expect(r.problems).toEqual([
      expect.objectContaining({ id: hashOf(h, callEnded), problem: 'value missing', difference: 1000 }),
    ]);
  });
});

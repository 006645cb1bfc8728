/**
 * The gateway keeps nothing that matters: a call started on one copy goes on
 * through another (after a restart, or concurrently), found through the call
 * index in Redis, billed exactly once per second, closed with one record.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { Client } from '../support/ws-client';
import type { Gateway } from '../../src/gateway/server';
import { idStatus } from '../../src/ledger/ids';

let h: Harness;
const open: Gateway[] = [];
beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
});
afterAll(async () => {
  for (const g of open) await g.close();
  await h?.stop();
});

async function gw(): Promise<Gateway> {
  const g = await gateway(h);
  open.push(g);
  return g;
}

async function closeGw(g: Gateway): Promise<void> {
  open.splice(open.indexOf(g), 1);
  await g.close();
}

/** Every call detail record in every bucket for this switch and call id. */
async function cdrsOf(sw: string, call: string): Promise<Record<string, string>[]> {
  const out: Record<string, string>[] = [];
  for (let b = 0; b < h.cfg.buckets; b++) {
    for (const [, flat] of await h.r.xrange(`ts:{b${b}}:cdr`, '-', '+')) {
      const rec: Record<string, string> = {};
      for (let i = 0; i < flat.length; i += 2) rec[flat[i]!] = flat[i + 1]!;
      if (rec.switch === sw && rec.call === call) out.push(rec);
    }
  }
  return out;
}

const RATE = 100;
const FACE = 1_000_000;

describe('gateway restart mid-call', () => {
  it('a call started on gateway A goes on through gateway B after A closes, billed from where it was', async () => {
    const [id] = (await soldIds(h, talkProduct())) as [string];
    const name = 'sw-restart';
    const tok = await token(h, 'switch', name);
    const call = 'restart-1';

    const a = await gw();
    const ca = await Client.connect(a.port, tok);
    const started = await ca.request({ op: 'start', ref: 's', call, id, dest: '4912345' });
    expect(started).toMatchObject({ op: 'started', call, maxSec: FACE / RATE, balance: FACE, rate: RATE });
    for (let sec = 1; sec <= 10; sec++) {
      const t = await ca.request({ op: 'tick', ref: `a${sec}`, call, sec });
      expect(t).toMatchObject({
        op: 'ticked',
        ref: `a${sec}`,
        call,
        balance: FACE - sec * RATE,
        secLeft: (FACE - sec * RATE) / RATE,
      });
    }

    const closedByServer = new Promise<number>((r) => ca.ws.once('close', (code) => r(code)));
    await closeGw(a);
    expect(await closedByServer).toBe(1001);

    const b = await gw();
    const cb = await Client.connect(b.port, tok, { binary: true });
    // The last tick repeated after the reconnect bills nothing.
    expect(await cb.request({ op: 'tick', ref: 'b10', call, sec: 10 })).toMatchObject({
      op: 'ticked',
      ref: 'b10',
      call,
      balance: FACE - 10 * RATE,
      secLeft: 9_990,
    });
    for (let sec = 11; sec <= 20; sec++) {
      const t = await cb.request({ op: 'tick', ref: `b${sec}`, call, sec });
      expect(t).toMatchObject({
        op: 'ticked',
        ref: `b${sec}`,
        call,
        balance: FACE - sec * RATE,
        secLeft: (FACE - sec * RATE) / RATE,
      });
    }
    const stopped = await cb.request({ op: 'stop', ref: 'e', call, sec: 25, cause: 'normal' });
    expect(stopped).toEqual({
      op: 'stopped',
      ref: 'e',
      call,
      billedSec: 25,
      cost: 25 * RATE,
      balance: FACE - 25 * RATE,
    });

    const cdrs = await cdrsOf(name, call);
    expect(cdrs).toHaveLength(1);
    expect(cdrs[0]).toMatchObject({
      sec: '25',
      rate: String(RATE),
      cost: String(25 * RATE),
      bal: String(FACE - 25 * RATE),
      cause: 'normal',
      dest: '4912345',
    });

    const st = await idStatus(h.ctx, id);
    expect(st).toMatchObject({ ok: true, state: 'sold', balance: FACE - 25 * RATE, activeCalls: 0 });
    await cb.close();
  });

  it('a stop repeated on the new gateway returns the record written before the restart', async () => {
    const [id] = (await soldIds(h, talkProduct())) as [string];
    const name = 'sw-restart-2';
    const tok = await token(h, 'switch', name);
    const a = await gw();
    const ca = await Client.connect(a.port, tok);
    await ca.request({ op: 'start', ref: 's', call: 'rs-2', id, dest: '4412345' });
    const first = await ca.request({ op: 'stop', ref: 'e1', call: 'rs-2', sec: 30 });
    expect(first).toEqual({ op: 'stopped', ref: 'e1', call: 'rs-2', billedSec: 30, cost: 6000, balance: FACE - 6000 });
    await closeGw(a);

    const b = await gw();
    const cb = await Client.connect(b.port, tok);
    const again = await cb.request({ op: 'stop', ref: 'e2', call: 'rs-2', sec: 45 });
    expect(again).toEqual({ op: 'stopped', ref: 'e2', call: 'rs-2', billedSec: 30, cost: 6000, balance: FACE - 6000 });
    expect(await cdrsOf(name, 'rs-2')).toHaveLength(1);
    await cb.close();
  });
});

describe('two gateways at once', () => {
  it('a second gateway ticks and stops a call started on the first', async () => {
    const [id] = (await soldIds(h, talkProduct())) as [string];
    const name = 'sw-pair';
    const tok = await token(h, 'switch', name);
    const call = 'pair-1';
    const a = await gw();
    const b = await gw();
    const ca = await Client.connect(a.port, tok);
    const cb = await Client.connect(b.port, tok);

    expect(await ca.request({ op: 'start', ref: 1, call, id, dest: '4912345' })).toMatchObject({
      op: 'started',
      maxSec: 10_000,
    });
    expect(await cb.request({ op: 'tick', ref: 2, call, sec: 5 })).toMatchObject({
      op: 'ticked',
      ref: 2,
      call,
      balance: FACE - 500,
      secLeft: 9_995,
    });
    expect(await ca.request({ op: 'tick', ref: 3, call, sec: 8 })).toMatchObject({
      op: 'ticked',
      ref: 3,
      call,
      balance: FACE - 800,
      secLeft: 9_992,
    });
    // A tick that goes back, on the other gateway, changes nothing.
    expect(await cb.request({ op: 'tick', ref: 4, call, sec: 6 })).toMatchObject({
      op: 'ticked',
      ref: 4,
      call,
      balance: FACE - 800,
      secLeft: 9_992,
    });
    expect(await cb.request({ op: 'stop', ref: 5, call, sec: 12 })).toEqual({
      op: 'stopped',
      ref: 5,
      call,
      billedSec: 12,
      cost: 1200,
      balance: FACE - 1200,
    });
    // The first gateway, which started the call, sees it closed: the same record, nothing billed twice.
    expect(await ca.request({ op: 'stop', ref: 6, call, sec: 20 })).toEqual({
      op: 'stopped',
      ref: 6,
      call,
      billedSec: 12,
      cost: 1200,
      balance: FACE - 1200,
    });
    expect(await ca.request({ op: 'tick', ref: 7, call, sec: 21 })).toMatchObject({
      op: 'error',
      ref: 7,
      call,
      reason: 'call_ended',
    });

    expect(await cdrsOf(name, call)).toHaveLength(1);
    expect(await idStatus(h.ctx, id)).toMatchObject({ ok: true, balance: FACE - 1200, activeCalls: 0 });
    await ca.close();
    await cb.close();
  });

  it('call ids are per switch: another switch cannot tick or stop this call', async () => {
    const [id] = (await soldIds(h, talkProduct())) as [string];
    const a = await gw();
    const b = await gw();
    const owner = await Client.connect(a.port, await token(h, 'switch', 'sw-owner'));
    const other = await Client.connect(b.port, await token(h, 'switch', 'sw-other'));
    await owner.request({ op: 'start', ref: 1, call: 'mine', id, dest: '4912345' });
    expect(await other.request({ op: 'tick', ref: 2, call: 'mine', sec: 50 })).toMatchObject({
      op: 'error',
      ref: 2,
      call: 'mine',
      reason: 'unknown_call',
    });
    expect(await other.request({ op: 'stop', ref: 3, call: 'mine', sec: 50 })).toMatchObject({
      op: 'error',
      ref: 3,
      call: 'mine',
      reason: 'unknown_call',
    });
    expect(await owner.request({ op: 'stop', ref: 4, call: 'mine', sec: 3 })).toEqual({
      op: 'stopped',
      ref: 4,
      call: 'mine',
      billedSec: 3,
      cost: 300,
      balance: FACE - 300,
    });
    await owner.close();
    await other.close();
  });
});

/**
 * The connector and a start whose outcome is unknown: Tessera answered
 * `unavailable` (its Redis reply was lost) but the start was applied. The
 * connector refuses the INVITE (503) and must stop the call it may have
 * started, or the caller's ID stays held (its balance reserved, a call of its
 * limit taken) until the reaper's RING_TIMEOUT_MS: a redial is refused.
 * Kamailio is stood in for by a TCP peer speaking evapi's netstrings.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KamailioConnector } from '../../src/kamailio/connector';
import { encodeNetstring, NetstringReader } from '../../src/kamailio/netstring';
import { startGateway, type Gateway } from '../../src/gateway/server';
import { createLogger } from '../../src/observability/log';
import { seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { HoldProxy } from '../support/hold-proxy';
import { until } from '../support/wait';

let h: Harness;
let proxy: HoldProxy;
let gw: Gateway;
let gwB: Gateway;
let server: Server;
/** The connectors' evapi sockets, in the order they attached: the first is `connector`'s. */
const socks: Socket[] = [];
let connector: KamailioConnector;
/** A second connector of the same Kamailio, its gateway's Redis replies never held. */
let other: KamailioConnector;
/** What the connector answered Kamailio, by transaction (ti). */
const replies = new Map<number, Record<string, unknown>>();

beforeAll(async () => {
  h = await startHarness({ REDIS_TIMEOUT_MS: '300' });
  await seedCatalog(h);
  proxy = new HoldProxy(Number(new URL(h.redis.url).port));
  gw = await startGateway(h.cfg, createLogger('silent'), await proxy.listen());
  server = createServer((s) => {
    socks.push(s);
    const reader = new NetstringReader();
    s.on('data', (chunk: Buffer) => {
      for (const p of reader.push(chunk)) {
        // '.' is evapi's acknowledgement of an event that got no answer in its turn.
        if (!p.startsWith('{')) continue;
        const m = JSON.parse(p) as Record<string, unknown>;
        if (typeof m.ti === 'number' && !replies.has(m.ti)) replies.set(m.ti, m);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  gwB = await startGateway(h.cfg, createLogger('silent'), h.redis.url);
  const tok = await token(h, 'switch', 'kam-amb');
  const attach = async (port: number): Promise<KamailioConnector> => {
    const c = new KamailioConnector({
      evapiHost: '127.0.0.1',
      evapiPort: (server.address() as AddressInfo).port,
      rpcUrl: 'http://127.0.0.1:9/RPC',
      gateways: [`ws://127.0.0.1:${port}/v1/switch`],
      token: tok,
      log: pino({ level: 'silent' }),
    });
    const n = socks.length;
    c.start();
    await until(() => socks.length > n);
    return c;
  };
  connector = await attach(gw.port);
  other = await attach(gwB.port);
}, 30_000);

afterAll(async () => {
  await connector?.close(0);
  await other?.close(0);
  await new Promise((r) => server?.close(r));
  await gw?.close();
  await gwB?.close();
  await proxy?.close();
  await h?.stop();
});

let ti = 0;
const send = (s: Socket, e: Record<string, unknown>): boolean => s.write(encodeNetstring(JSON.stringify(e)));
/** An INVITE's event to the first connector only, and its answer. */
async function invite(id: string): Promise<Record<string, unknown>> {
  const t = ++ti;
  const e = { ev: 'invite', ci: `amb-${t}`, ti: t, tl: t, he: t, hi: t, id, dest: '4912345', ts: Date.now() / 1000 };
  send(socks[0]!, e);
  await until(() => replies.has(t), 5000);
  return replies.get(t)!;
}
/** Kamailio's failed event of the call a refusal answered (as it sends once it has refused the INVITE). */
const failed = (t: number, id: string): void => {
  for (const s of socks)
    send(s, { ev: 'failed', code: '503', ci: `amb-${t}`, he: t, hi: t, id, dest: '4912345', ts: Date.now() / 1000 });
};

describe('a start answered unavailable that was applied all the same', () => {
  it('is stopped by the connector: the ID is not held, a redial is admitted', async () => {
    const [id] = await soldIds(h, talkProduct({ maxCalls: 1 }));
    proxy.holdAfter('call_start_');
    expect(await invite(id!)).toMatchObject({ reason: 'unavailable' });
    proxy.release();
    // Kamailio refuses the INVITE 503 and tells every connector the dialog failed.
    failed(ti, id!);
    // The start went through: its session was live, holding the ID's only call.
    await until(async () => (await h.r.keys('ts:*:call:kam-amb:amb-1:*')).length === 1);
    // Its stop (0 s, nothing billed) gives the ID back: the redial is admitted.
    await until(async () => (await h.r.hget((await h.r.keys('ts:*:call:kam-amb:amb-1:*'))[0]!, 'st')) !== 'live', 5000);
    expect(await invite(id!)).toMatchObject({ sec: expect.any(Number) });
  }, 30_000);
});

describe('a start answered unavailable to one connector, started by another', () => {
  it('is not stopped: Kamailio admitted the call on the other answer', async () => {
    const [id] = await soldIds(h, talkProduct({ maxCalls: 1 }));
    const t = ++ti;
    const call = `amb-${t}`;
    const e = { ev: 'invite', ci: call, ti: t, tl: t, he: t, hi: t, id, dest: '4912345', ts: Date.now() / 1000 };
    // The other connector answers first: Kamailio relays the INVITE (the later answer finds no suspended transaction).
    send(socks[1]!, e);
    await until(() => replies.has(t), 5000);
    expect(replies.get(t)).toMatchObject({ sec: expect.any(Number) });
    // This one's start, a repeat of the first, is applied but its reply lost: unavailable.
    proxy.holdAfter('call_start_');
    replies.delete(t);
    send(socks[0]!, e);
    await until(() => replies.has(t), 5000);
    expect(replies.get(t)).toMatchObject({ reason: 'unavailable' });
    proxy.release();
    // The call rings on, admitted: its session stays live for its answer.
    const [skey] = await h.r.keys(`ts:*:call:kam-amb:${call}:*`);
    await new Promise((r) => setTimeout(r, 1000));
    expect(await h.r.hget(skey!, 'st')).toBe('live');
    // Answered, it is metered (the slow connector adopts it); its end bills it.
    for (const s of socks)
      send(s, { ev: 'answer', ci: call, he: t, hi: t, id, dest: '4912345', ts: Date.now() / 1000 });
    await new Promise((r) => setTimeout(r, 1500));
    expect(await h.r.hget(skey!, 'st')).toBe('live');
    for (const s of socks)
      send(s, { ev: 'end', ci: call, he: t, hi: t, id, dest: '4912345', ats: e.ts + 1, ts: Date.now() / 1000 });
    await until(async () => (await h.r.hget(skey!, 'st')) !== 'live', 5000);
  }, 30_000);
});

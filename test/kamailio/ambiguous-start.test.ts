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
let server: Server;
let sock: Socket | undefined;
let connector: KamailioConnector;
/** What the connector answered Kamailio, by transaction (ti). */
const replies = new Map<number, Record<string, unknown>>();

beforeAll(async () => {
  h = await startHarness({ REDIS_TIMEOUT_MS: '300' });
  await seedCatalog(h);
  proxy = new HoldProxy(Number(new URL(h.redis.url).port));
  gw = await startGateway(h.cfg, createLogger('silent'), await proxy.listen());
  server = createServer((s) => {
    sock = s;
    const reader = new NetstringReader();
    s.on('data', (chunk: Buffer) => {
      for (const p of reader.push(chunk)) {
        // '.' is evapi's acknowledgement of an event that got no answer in its turn.
        if (!p.startsWith('{')) continue;
        const m = JSON.parse(p) as Record<string, unknown>;
        if (typeof m.ti === 'number') replies.set(m.ti, m);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  connector = new KamailioConnector({
    evapiHost: '127.0.0.1',
    evapiPort: (server.address() as AddressInfo).port,
    rpcUrl: 'http://127.0.0.1:9/RPC',
    gateways: [`ws://127.0.0.1:${gw.port}/v1/switch`],
    token: await token(h, 'switch', 'kam-amb'),
    log: pino({ level: 'silent' }),
  });
  connector.start();
  await until(() => sock !== undefined);
}, 30_000);

afterAll(async () => {
  connector?.close();
  await new Promise((r) => server?.close(r));
  await gw?.close();
  await proxy?.close();
  await h?.stop();
});

let ti = 0;
async function invite(id: string): Promise<Record<string, unknown>> {
  const t = ++ti;
  const e = { ev: 'invite', ci: `amb-${t}`, ti: t, tl: t, he: t, hi: t, id, dest: '4912345', ts: Date.now() / 1000 };
  sock!.write(encodeNetstring(JSON.stringify(e)));
  await until(() => replies.has(t), 5000);
  return replies.get(t)!;
}

describe('a start answered unavailable that was applied all the same', () => {
  it('is stopped by the connector: the ID is not held, a redial is admitted', async () => {
    const [id] = await soldIds(h, talkProduct({ maxCalls: 1 }));
    proxy.holdAfter('call_start_');
    expect(await invite(id!)).toMatchObject({ reason: 'unavailable' });
    proxy.release();
    // The start went through: its session was live, holding the ID's only call.
    await until(async () => (await h.r.keys('ts:*:call:kam-amb:amb-1:*')).length === 1);
    // Its stop (0 s, nothing billed) gives the ID back: the redial is admitted.
    await until(async () => (await h.r.hget((await h.r.keys('ts:*:call:kam-amb:amb-1:*'))[0]!, 'st')) !== 'live', 5000);
    expect(await invite(id!)).toMatchObject({ sec: expect.any(Number) });
  }, 30_000);
});

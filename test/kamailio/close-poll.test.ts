/**
 * A closing connector against a stand-in for Kamailio (an evapi peer and a
 * JSON-RPC stub) and a real gateway: a call whose end its last dlg.list of
 * the close's wait finds is not lost when that answer comes after the wait.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { callIdOf } from '../../src/kamailio/call-id';
import { KamailioConnector } from '../../src/kamailio/connector';
import { encodeNetstring } from '../../src/kamailio/netstring';
import { createLogger } from '../../src/observability/log';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { SwitchProxy } from '../support/switch-proxy';
import { fakeEvapi, fakeRpc, type FakeEvapi, type FakeRpc } from './fake-kamailio';
import { recordOf } from './records';
import { until } from './stack';

const TALK = talkProduct({ name: 'talk-close-poll', face: 1_000_000, price: 1_000_000 });

describe('kamailio connector: the close wait polling dialogs', () => {
  let h: Harness;
  let gw: Gateway;
  let evapi: FakeEvapi;
  let rpc: FakeRpc;
  let tok: string;

  beforeAll(async () => {
    h = await startHarness();
    await seedCatalog(h, [TALK]);
    tok = await token(h, 'switch', 'kamailio-close-poll');
    gw = await gateway(h);
    evapi = await fakeEvapi();
    rpc = await fakeRpc();
  });

  afterAll(async () => {
    await new Promise((r) => evapi?.server.close(r));
    await new Promise((r) => rpc?.server.close(r));
    await gw?.close();
    await h?.stop();
  });

  it('stops, or hands on, a call whose end a dlg.list answered after the wait found', async () => {
    // One call's stop is refused `unavailable`, so the connector waits to close; another call hangs
    // up meanwhile, and the dlg.list that finds its end answers after the wait is over. Until
    // 2026-12-07 the wait's end handed on only what was owed before that answer: the call's stop,
    // made after, went out on a closed link, lost, and no connector had it to send.
    const [owedId, endedId] = (await soldIds(h, TALK, 2)) as [string, string];
    const owedDlg = { ci: 'owed@close-poll', he: 31, hi: 3001, id: owedId, dest: '33612345678' };
    const endedDlg = { ci: 'ended@close-poll', he: 32, hi: 3002, id: endedId, dest: '33612345678' };
    const owedCall = callIdOf(owedDlg.ci, owedDlg.he, owedDlg.hi);
    let refuseOwed = true;
    const proxy = new SwitchProxy(gw.port, (m) =>
      refuseOwed && m.op === 'stop' && m.call === owedCall ? 'unavailable' : undefined,
    );
    const url = await proxy.listen();
    const connector = (): KamailioConnector =>
      new KamailioConnector({
        evapiHost: '127.0.0.1',
        evapiPort: evapi.port,
        rpcUrl: rpc.url,
        gateways: [url],
        token: tok,
        log: createLogger('silent'),
      });
    const c = connector();
    c.start();
    let next: KamailioConnector | undefined;
    try {
      await until('the connector to attach', () => evapi.socks.size > 0);
      for (const [ti, d] of [owedDlg, endedDlg].entries()) {
        evapi.send({ ev: 'invite', ...d, ti, tl: 7, si: '127.0.0.9', ts: Date.now() / 1000 });
        await until('the call to be admitted', () => evapi.answers.find((a) => a.ti === ti && a.sec !== undefined));
      }
      const answered = Date.now() / 1000;
      for (const d of [owedDlg, endedDlg]) evapi.send({ ev: 'answer', ...d, ts: answered });
      await until('both calls to be answered', () => c.liveCalls === 2);
      evapi.send({ ev: 'end', ...owedDlg, ats: answered, ts: answered + 0.4 });
      await until('the owed stop to be refused', () => proxy.refused.length > 0);
      // The other call hangs up as the connector closes; dlg.list lists its dialog deleted, and
      // takes longer to answer than the rest of the wait.
      const endTs = answered + 1.3;
      rpc.dialogs.push({ 'call-id': endedDlg.ci, h_entry: endedDlg.he, h_id: endedDlg.hi, state: 5, variables: [] });
      rpc.ends.set(
        `${endedDlg.he}:${endedDlg.hi}`,
        JSON.stringify({ ev: 'end', ats: answered, ts: Number(endTs.toFixed(6)), ...endedDlg }),
      );
      rpc.listDelayMs = 900;
      await c.close(1000);
      rpc.listDelayMs = 0;
      rpc.dialogs.length = 0;
      // The next connector sends what was handed on; nothing is refused now.
      refuseOwed = false;
      next = connector();
      next.start();
      const rec = await recordOf(h, endedDlg.ci, 5000);
      expect([rec.cause, rec.sec]).toEqual(['hangup', String(Math.ceil(endTs - answered))]);
      expect(await recordOf(h, owedDlg.ci, 5000)).toMatchObject({ cause: 'hangup', sec: '1' });
      await until('the stops handed on to be dropped once answered', () => rpc.owed.size === 0, 5000);
    } finally {
      await c.close(0);
      await next?.close(0);
      await proxy.close();
    }
  });
  it('drops a stop handed on for a call it stopped itself, once it reads it', async () => {
    // Two connectors on one Kamailio: both hear the call end; the one closing could not deliver its
    // stop and handed it on, the other's was answered. Reading `owed` again (evapi back after a
    // loss), the survivor skipped the call it had stopped and left its entry: until 2026-12-07 it
    // stayed a day, sent again by every connector that attached, though the stop was answered.
    const [id] = await soldIds(h, TALK, 1);
    const d = { ci: 'stopped@close-poll', he: 33, hi: 3003, id: id!, dest: '33612345678' };
    const call = callIdOf(d.ci, d.he, d.hi);
    const proxy = new SwitchProxy(gw.port, () => undefined);
    const c = new KamailioConnector({
      evapiHost: '127.0.0.1',
      evapiPort: evapi.port,
      rpcUrl: rpc.url,
      gateways: [await proxy.listen()],
      token: tok,
      log: createLogger('silent'),
    });
    c.start();
    try {
      await until('the connector to attach', () => evapi.socks.size > 0);
      evapi.send({ ev: 'invite', ...d, ti: 9, tl: 9, si: '127.0.0.9', ts: Date.now() / 1000 });
      await until('the call to be admitted', () => evapi.answers.find((a) => a.ti === 9 && a.sec !== undefined));
      const answered = Date.now() / 1000;
      evapi.send({ ev: 'answer', ...d, ts: answered });
      evapi.send({ ev: 'end', ...d, ats: answered, ts: answered + 0.5 });
      expect(await recordOf(h, d.ci, 5000)).toMatchObject({ cause: 'hangup', sec: '1' });
      await until('its stop to be answered', () => c.liveCalls === 0);
      // The other connector's stop of it, handed on as it closed.
      rpc.owed.set(call, JSON.stringify({ op: 'stop', call, sec: 1, cause: 'hangup', id, dest: d.dest }));
      const dumps = (): number => rpc.calls.filter((r) => r.method === 'htable.dump').length;
      const before = dumps();
      for (const sock of evapi.socks) sock.destroy();
      await until('the connector to read the stops handed on again', () => dumps() > before);
      await until('the answered stop to be dropped from `owed`', () => rpc.owed.size === 0, 3000);
    } finally {
      rpc.owed.clear();
      await c.close(0);
      await proxy.close();
    }
  });

  it('stops a call whose end Kamailio relayed as the connector left', async () => {
    // Kamailio counts a connector attached until its evapi process reads the connector's end, and
    // relays it every event until then. Until 2026-12-08 the connector destroyed its socket: an end
    // relayed in that instant was dropped, neither heard nor kept (htable `ends` is written only
    // while no connector is attached), and the call billed by the reaper to its last tick.
    const [id] = await soldIds(h, TALK, 1);
    const d = { ci: 'leaving@close-poll', he: 34, hi: 3004, id: id!, dest: '33612345678' };
    const c = new KamailioConnector({
      evapiHost: '127.0.0.1',
      evapiPort: evapi.port,
      rpcUrl: rpc.url,
      gateways: [`ws://127.0.0.1:${gw.port}/v1/switch`],
      token: tok,
      log: createLogger('silent'),
    });
    c.start();
    try {
      await until('the connector to attach', () => evapi.socks.size > 0);
      evapi.send({ ev: 'invite', ...d, ti: 11, tl: 11, si: '127.0.0.9', ts: Date.now() / 1000 });
      await until('the call to be admitted', () => evapi.answers.find((a) => a.ti === 11 && a.sec !== undefined));
      const answered = Date.now() / 1000;
      evapi.send({ ev: 'answer', ...d, ts: answered });
      await until('the call to be answered', () => c.liveCalls === 1);
      evapi.onLeave = (sock) =>
        sock.write(encodeNetstring(JSON.stringify({ ev: 'end', ...d, ats: answered, ts: answered + 0.6 })));
      await c.close();
      expect(await recordOf(h, d.ci, 3000)).toMatchObject({ cause: 'hangup', sec: '1' });
    } finally {
      evapi.onLeave = undefined;
      await c.close(0);
    }
  });
});

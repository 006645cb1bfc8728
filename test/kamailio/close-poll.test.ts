/**
 * A closing connector against a stand-in for Kamailio (an evapi peer and a
 * JSON-RPC stub) and a real gateway: a call whose end its last dlg.list of
 * the close's wait finds is not lost when that answer comes after the wait.
 */
import { describe, expect, it } from 'vitest';
import { callIdOf } from '../../src/kamailio/call-id';
import { KamailioConnector } from '../../src/kamailio/connector';
import { encodeNetstring } from '../../src/kamailio/netstring';
import { soldIds, talkProduct } from '../support/harness';
import { SwitchProxy } from '../support/switch-proxy';
import { useFakeStack } from './fake-kamailio';
import { recordOf } from './records';
import { until } from './stack';

const TALK = talkProduct({ name: 'talk-close-poll', face: 1_000_000, price: 1_000_000 });

describe('kamailio connector: the close wait polling dialogs', () => {
  const s = useFakeStack([TALK], 'kamailio-close-poll');

  it('stops, or hands on, a call whose end a dlg.list answered after the wait found', async () => {
    // One call's stop is refused `unavailable`, so the connector waits to close; another call hangs
    // up meanwhile, and the dlg.list that finds its end answers after the wait is over. Until
    // 2026-12-07 the wait's end handed on only what was owed before that answer: the call's stop,
    // made after, went out on a closed link, lost, and no connector had it to send.
    const [owedId, endedId] = (await soldIds(s.h, TALK, 2)) as [string, string];
    const owedDlg = { ci: 'owed@close-poll', he: 31, hi: 3001, id: owedId, dest: '33612345678' };
    const endedDlg = { ci: 'ended@close-poll', he: 32, hi: 3002, id: endedId, dest: '33612345678' };
    const owedCall = callIdOf(owedDlg.ci, owedDlg.he, owedDlg.hi);
    let refuseOwed = true;
    const proxy = new SwitchProxy(s.gw.port, (m) =>
      refuseOwed && m.op === 'stop' && m.call === owedCall ? 'unavailable' : undefined,
    );
    const url = await proxy.listen();
    const connector = (): KamailioConnector => s.connector({ gateway: url });
    const c = connector();
    c.start();
    let next: KamailioConnector | undefined;
    try {
      await until('the connector to attach', () => s.evapi.socks.size > 0);
      for (const [ti, d] of [owedDlg, endedDlg].entries()) {
        s.evapi.send({ ev: 'invite', ...d, ti, tl: 7, si: '127.0.0.9', ts: Date.now() / 1000 });
        await until('the call to be admitted', () => s.evapi.answers.find((a) => a.ti === ti && a.sec !== undefined));
      }
      const answered = Date.now() / 1000;
      for (const d of [owedDlg, endedDlg]) s.evapi.send({ ev: 'answer', ...d, ts: answered });
      await until('both calls to be answered', () => c.liveCalls === 2);
      s.evapi.send({ ev: 'end', ...owedDlg, ats: answered, ts: answered + 0.4 });
      await until('the owed stop to be refused', () => proxy.refused.length > 0);
      // The other call hangs up as the connector closes; dlg.list lists its dialog deleted, and
      // takes longer to answer than the rest of the wait.
      const endTs = answered + 1.3;
      s.rpc.dialogs.push({ 'call-id': endedDlg.ci, h_entry: endedDlg.he, h_id: endedDlg.hi, state: 5, variables: [] });
      s.rpc.ends.set(
        `${endedDlg.he}:${endedDlg.hi}`,
        JSON.stringify({ ev: 'end', ats: answered, ts: Number(endTs.toFixed(6)), ...endedDlg }),
      );
      s.rpc.listDelayMs = 900;
      await c.close(1000);
      s.rpc.listDelayMs = 0;
      s.rpc.dialogs.length = 0;
      // The next connector sends what was handed on; nothing is refused now.
      refuseOwed = false;
      next = connector();
      next.start();
      const rec = await recordOf(s.h, endedDlg.ci, 5000);
      expect([rec.cause, rec.sec]).toEqual(['hangup', String(Math.ceil(endTs - answered))]);
      expect(await recordOf(s.h, owedDlg.ci, 5000)).toMatchObject({ cause: 'hangup', sec: '1' });
      await until('the stops handed on to be dropped once answered', () => s.rpc.owed.size === 0, 5000);
    } finally {
      await c.close(0);
      await next?.close(0);
      await proxy.close();
    }
  });
  it('drops a stop handed on for a call it stopped itself, once it reads it', async () => {
    // Two connectors on one Kamailio: both hear the call end; the one closing could not deliver its
    // stop and handed it on, the other's was answered. Reading `owed` again (s.evapi back after a
    // loss), the survivor skipped the call it had stopped and left its entry: until 2026-12-07 it
    // stayed a day, sent again by every connector that attached, though the stop was answered.
    const [id] = await soldIds(s.h, TALK, 1);
    const d = { ci: 'stopped@close-poll', he: 33, hi: 3003, id: id!, dest: '33612345678' };
    const call = callIdOf(d.ci, d.he, d.hi);
    const proxy = new SwitchProxy(s.gw.port, () => undefined);
    const c = s.connector({ gateway: await proxy.listen() });
    c.start();
    try {
      await until('the connector to attach', () => s.evapi.socks.size > 0);
      s.evapi.send({ ev: 'invite', ...d, ti: 9, tl: 9, si: '127.0.0.9', ts: Date.now() / 1000 });
      await until('the call to be admitted', () => s.evapi.answers.find((a) => a.ti === 9 && a.sec !== undefined));
      const answered = Date.now() / 1000;
      s.evapi.send({ ev: 'answer', ...d, ts: answered });
      s.evapi.send({ ev: 'end', ...d, ats: answered, ts: answered + 0.5 });
      expect(await recordOf(s.h, d.ci, 5000)).toMatchObject({ cause: 'hangup', sec: '1' });
      await until('its stop to be answered', () => c.liveCalls === 0);
      // The other connector's stop of it, handed on as it closed.
      s.rpc.owed.set(call, JSON.stringify({ op: 'stop', call, sec: 1, cause: 'hangup', id, dest: d.dest }));
      const dumps = (): number => s.rpc.calls.filter((r) => r.method === 'htable.dump').length;
      const before = dumps();
      for (const sock of s.evapi.socks) sock.destroy();
      await until('the connector to read the stops handed on again', () => dumps() > before);
      await until('the answered stop to be dropped from `owed`', () => s.rpc.owed.size === 0, 3000);
    } finally {
      s.rpc.owed.clear();
      await c.close(0);
      await proxy.close();
    }
  });

  it('stops a call whose end Kamailio relayed as the connector left', async () => {
    // Kamailio counts a connector attached until its s.evapi process reads the connector's end, and
    // relays it every event until then. Until 2026-12-08 the connector destroyed its socket: an end
    // relayed in that instant was dropped, neither heard nor kept (htable `ends` is written only
    // while no connector is attached), and the call billed by the reaper to its last tick.
    const [id] = await soldIds(s.h, TALK, 1);
    const d = { ci: 'leaving@close-poll', he: 34, hi: 3004, id: id!, dest: '33612345678' };
    const c = s.connector();
    c.start();
    try {
      await until('the connector to attach', () => s.evapi.socks.size > 0);
      s.evapi.send({ ev: 'invite', ...d, ti: 11, tl: 11, si: '127.0.0.9', ts: Date.now() / 1000 });
      await until('the call to be admitted', () => s.evapi.answers.find((a) => a.ti === 11 && a.sec !== undefined));
      const answered = Date.now() / 1000;
      s.evapi.send({ ev: 'answer', ...d, ts: answered });
      await until('the call to be answered', () => c.liveCalls === 1);
      s.evapi.onLeave = (sock) =>
        sock.write(encodeNetstring(JSON.stringify({ ev: 'end', ...d, ats: answered, ts: answered + 0.6 })));
      await c.close();
      expect(await recordOf(s.h, d.ci, 3000)).toMatchObject({ cause: 'hangup', sec: '1' });
    } finally {
      s.evapi.onLeave = undefined;
      await c.close(0);
    }
  });
});

/**
 * The connector against a stand-in for Kamailio (an evapi peer and a
 * JSON-RPC stub) and a real gateway: a call admitted by a connector process
 * that is gone, and failed while it rang, is stopped by the one that took
 * over, and a failed call Tessera never started is billed nothing.
 */
import type { Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { callIdOf } from '../../src/kamailio/call-id';
import { KamailioConnector } from '../../src/kamailio/connector';
import { idStatus } from '../../src/ledger/ids';
import { createLogger } from '../../src/observability/log';
import { captureLog } from '../support/log';
import { LinkGate } from '../support/link-gate';
import { metricsText, sample } from '../support/metrics';
import { Client } from '../support/ws-client';
import { generateId } from '../../src/ids/idnum';
import { SwitchProxy } from '../support/switch-proxy';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { callRecords, recordOf } from './records';
import { fakeEvapi, fakeRpc, type FakeEvapi, type FakeRpc } from './fake-kamailio';
import { spawnConnector, until } from './stack';

const TALK = talkProduct({ name: 'talk-r', face: 1_000_000, price: 1_000_000 });

describe('kamailio connector: calls it did not see start', () => {
  let h: Harness;
  let gw: Gateway;
  let evapi: FakeEvapi;
  let rpc: FakeRpc;
  let tok: string;
  const connectors: KamailioConnector[] = [];

  /** Every connector of the earlier tests closed and gone from the stand-in Kamailio. */
  const detachAll = async (): Promise<void> => {
    await Promise.all(connectors.splice(0).map((c) => c.close(0)));
    await until('the other connectors to leave', () => evapi.socks.size === 0);
  };
  /** The stand-in Kamailio's htables emptied, and its RPC answering again. */
  const forgetKept = (): void => {
    rpc.busy.clear();
    rpc.owed.clear();
    rpc.ends.clear();
  };
  const attach = async (o: { gateway?: string; log?: Logger } = {}): Promise<KamailioConnector> => {
    const c = new KamailioConnector({
      evapiHost: '127.0.0.1',
      evapiPort: evapi.port,
      rpcUrl: rpc.url,
      gateways: [o.gateway ?? `ws://127.0.0.1:${gw.port}/v1/switch`],
      token: tok,
      log: o.log ?? createLogger('silent'),
    });
    connectors.push(c);
    const before = evapi.socks.size;
    c.start();
    await until('the connector to attach', () => evapi.socks.size > before);
    return c;
  };
  /**
   * A call admitted (transaction index `ti`), answered and ticked through `gate`; then the gateway
   * goes, and with it what Redis held of the call (a restore from before it); meanwhile the token
   * name went past its guess limit on `guesser`'s gateway, which the connector comes back to.
   * Returns the answer's time (s).
   */
  const lostAndThrottled = async (
    dialog: { ci: string; he: number; hi: number; id: string; dest: string },
    ti: number,
    gate: LinkGate,
    guesser: Client,
  ): Promise<number> => {
    const call = callIdOf(dialog.ci, dialog.he, dialog.hi);
    evapi.send({ ev: 'invite', ...dialog, ti, tl: ti + 1, si: '127.0.0.9', ts: Date.now() / 1000 });
    await until('the call to be admitted', () => evapi.answers.find((a) => a.ti === ti && a.sec !== undefined));
    const answered = Date.now() / 1000;
    evapi.send({ ev: 'answer', ...dialog, ts: answered });
    await until('the call to be ticked', async () => {
      const [session] = await h.r.keys(`ts:*:call:kamailio-restart:${call}`);
      return session !== undefined && Number(await h.r.hget(session, 'used')) >= 1;
    });
    gate.shut();
    await until('the connector to try the gateway again', () => gate.waiting > 0);
    for (const key of await h.r.keys(`*${call}*`)) {
      await h.r.del(key);
      for (const live of await h.r.keys('ts:*:live')) await h.r.zrem(live, key);
    }
    const guess = (): Promise<Record<string, unknown>> =>
      guesser.request({
        op: 'stop',
        ref: `g${Math.random()}`,
        call: `guess-${Math.random()}`,
        sec: 0,
        id: generateId(h.cfg.idLength),
        dest: dialog.dest,
      });
    await guess();
    await guess();
    expect(await guess()).toMatchObject({ reason: 'throttled' });
    return answered;
  };

  const activeCalls = async (id: string): Promise<number> => {
    const s = await idStatus(h.ctx, id);
    return s.ok ? s.activeCalls : -1;
  };

  beforeAll(async () => {
    h = await startHarness();
    await seedCatalog(h, [TALK]);
    tok = await token(h, 'switch', 'kamailio-restart');
    gw = await gateway(h);
    evapi = await fakeEvapi();
    rpc = await fakeRpc();
  });

  afterAll(async () => {
    await Promise.all(connectors.map((c) => c.close(0)));
    await new Promise((r) => evapi?.server.close(r));
    await new Promise((r) => rpc?.server.close(r));
    await gw?.close();
    await h?.stop();
  });

  it('stops a ringing call admitted before a restart when it fails, and bills a never-started one nothing', async () => {
    const [id, other] = await soldIds(h, TALK, 2);
    const dialog = { ci: 'ringing@probe', he: 7, hi: 1001, id: id!, dest: '33612345678' };
    const first = await attach();
    evapi.send({ ev: 'invite', ...dialog, ti: 1, tl: 2, si: '127.0.0.9', ts: Date.now() / 1000 });
    await until('the call to be admitted', () => evapi.answers.find((a) => a.ti === 1 && a.sec !== undefined));
    expect(await activeCalls(id!)).toBe(1);
    // The connector process goes; another one takes over while the call rings.
    void first.close();
    await until('the first connector to detach', () => evapi.socks.size === 0);
    await attach();
    // A dialog Tessera never heard of fails first, then the ringing one (the callee was busy).
    const never = { ci: 'never@probe', he: 8, hi: 1002, id: other!, dest: '33612345678' };
    evapi.send({ ev: 'failed', ...never, code: '487', ts: Date.now() / 1000 });
    evapi.send({ ev: 'failed', ...dialog, code: '486', ts: Date.now() / 1000 });
    // Freed now, not at the reaper's RING_TIMEOUT_MS (3 minutes).
    await until('the ringing call to be stopped', async () => (await activeCalls(id!)) === 0);
    const records = await callRecords(h);
    expect(records.filter((r) => r.call === callIdOf(dialog.ci, dialog.he, dialog.hi))).toMatchObject([
      { sec: '0', cost: '0', cause: 'failed-486' },
    ]);
    // Its stop was answered before the ringing call's: unknown_call, no recovered record.
    expect(records.filter((r) => r.call === callIdOf(never.ci, never.he, never.hi))).toEqual([]);
    expect(await activeCalls(other!)).toBe(0);
  });

  it('stops a call whose dialog Kamailio lists as ended when evapi comes back', async () => {
    // The caller hung up while Kamailio restarted: the Kamailio started again ended the dialog
    // before any connector was attached (its end event went nowhere), and dlg.list still shows
    // it, deleted (state 5), for a few seconds. Taken for alive, the call was ticked on, its ID
    // busy, until the next restart or its paid end.
    const [id] = await soldIds(h, TALK, 1);
    const dialog = { ci: 'ended-while-away@probe', he: 9, hi: 1003, id: id!, dest: '33612345678' };
    await attach();
    evapi.send({ ev: 'invite', ...dialog, ti: 3, tl: 4, si: '127.0.0.9', ts: Date.now() / 1000 });
    await until('the call to be admitted', () => evapi.answers.find((a) => a.ti === 3 && a.sec !== undefined));
    const answered = Date.now() / 1000;
    evapi.send({ ev: 'answer', ...dialog, ts: answered });
    // Its end as dlg.list gives it, in whole seconds: the caller's BYE, resent, reached the
    // Kamailio started again after the connector had lost evapi.
    const endTs = Math.floor(answered) + 3;
    rpc.dialogs.push({
      'call-id': dialog.ci,
      h_entry: dialog.he,
      h_id: dialog.hi,
      state: 5,
      end_ts: endTs,
      variables: [{ tessera: '1' }, { pid: id }, { dest: dialog.dest }],
    });
    const before = evapi.socks.size;
    for (const sock of evapi.socks) sock.destroy();
    await until('the connector to attach again', () => evapi.socks.size === before);
    await until('the call to be stopped', async () => (await activeCalls(id!)) === 0, 5000);
    // Billed to the dialog's end (a started second a billed one), not only to when evapi was lost.
    expect((await callRecords(h)).filter((r) => r.call === callIdOf(dialog.ci, dialog.he, dialog.hi))).toMatchObject([
      { cause: 'lost', sec: String(Math.ceil(endTs - answered)) },
    ]);
    rpc.dialogs.length = 0;
  });
  it('delivers on SIGTERM the stop of a call that ended while no gateway was up', async () => {
    // systemd stops the connector (`tessera kamailio`, SIGTERM) while the gateways are out of
    // reach: until 2026-12-07 the stop it was holding for them went with the process, and the
    // call was reaped `stale` 10-15 s on, billed to its last tick.
    // The only connector: the earlier tests' would stop the call themselves (each gets every event).
    await detachAll();
    const [id] = await soldIds(h, TALK, 1);
    const dialog = { ci: 'closed-while-away@probe', he: 10, hi: 1004, id: id!, dest: '33612345678' };
    const gate = new LinkGate(gw.port);
    const before = evapi.socks.size;
    const proc = spawnConnector({
      kamailio: { evapiPort: evapi.port, rpcUrl: rpc.url },
      gateways: [await gate.listen()],
      token: tok,
    });
    const exited = new Promise((r) => proc.once('exit', (code) => r(code)));
    try {
      await until('the connector process to attach', () => evapi.socks.size > before, 20_000);
      evapi.send({ ev: 'invite', ...dialog, ti: 5, tl: 6, si: '127.0.0.9', ts: Date.now() / 1000 });
      await until('the call to be admitted', () => evapi.answers.find((a) => a.ti === 5 && a.sec !== undefined));
      const answered = Date.now() / 1000;
      evapi.send({ ev: 'answer', ...dialog, ts: answered });
      await until('Tessera to count the call answered', async () => {
        const [session] = await h.r.keys(`ts:*:call:kamailio-restart:${callIdOf(dialog.ci, dialog.he, dialog.hi)}`);
        return session !== undefined && Boolean(await h.r.hget(session, 'ans'));
      });
      gate.shut();
      await until('the connector to try the gateway again', () => gate.waiting > 0);
      const acks = evapi.acks;
      evapi.send({ ev: 'end', ...dialog, ats: answered, ts: answered + 1.5 });
      await until('the connector to read the end', () => evapi.acks > acks);
      proc.kill('SIGTERM');
      await until('the connector to leave Kamailio', () => evapi.socks.size === before);
      gate.open();
      const rec = await recordOf(h, dialog.ci, 5000);
      expect([rec.sec, rec.cause]).toEqual(['2', 'hangup']);
      expect(await exited).toBe(0);
    } finally {
      proc.kill('SIGKILL');
      await gate.close();
    }
  });

  it('hands on through Kamailio, when its time to close is up, each stop it could not deliver', async () => {
    const [id] = await soldIds(h, TALK, 1);
    const dialog = { ci: 'undelivered@probe', he: 11, hi: 1005, id: id!, dest: '33612345678' };
    await until('the other connectors to leave', () => evapi.socks.size === 0);
    const gate = new LinkGate(gw.port);
    const { log, lines } = captureLog();
    const c = await attach({ gateway: await gate.listen(), log });
    try {
      evapi.send({ ev: 'invite', ...dialog, ti: 7, tl: 8, si: '127.0.0.9', ts: Date.now() / 1000 });
      await until('the call to be admitted', () => evapi.answers.find((a) => a.ti === 7 && a.sec !== undefined));
      const answered = Date.now() / 1000;
      evapi.send({ ev: 'answer', ...dialog, ts: answered });
      gate.shut();
      await until('the connector to try the gateway again', () => gate.waiting > 0);
      const acks = evapi.acks;
      evapi.send({ ev: 'end', ...dialog, ats: answered, ts: answered + 0.5 });
      await until('the connector to read the end', () => evapi.acks > acks);
      await c.close(300);
      const call = callIdOf(dialog.ci, dialog.he, dialog.hi);
      expect(lines.filter((l) => l.level >= 40 && l.call === call)).toMatchObject([{ sec: 1, cause: 'hangup' }]);
      expect(JSON.parse(rpc.owed.get(call) ?? '{}')).toEqual({
        op: 'stop',
        call,
        sec: 1,
        cause: 'hangup',
        id,
        dest: dialog.dest,
      });
    } finally {
      rpc.owed.clear();
      await gate.close();
    }
  });

  it("hands on a lost call's stop still waiting out `throttled` at its close: the next connector bills it", async () => {
    // As below, but the connector is stopped while the stop waits out its retryAfter (up to a minute):
    // past its 5 s wait to close, until 2026-12-07 the stop was dropped, and nothing billed the call.
    await detachAll();
    const fresh = await gateway(h, { guessLimit: 1, guessWindowSec: 5 });
    const [id] = await soldIds(h, TALK, 1);
    const dialog = { ci: 'handed-on@probe', he: 15, hi: 1009, id: id!, dest: '33612345678' };
    const call = callIdOf(dialog.ci, dialog.he, dialog.hi);
    const gate = new LinkGate(gw.port);
    const guesser = await Client.connect(fresh.port, tok);
    try {
      const first = await attach({ gateway: await gate.listen() });
      const answered = await lostAndThrottled(dialog, 17, gate, guesser);
      // The caller hangs up; the stop goes to the throttled gateway, refused until retryAfter.
      const acks = evapi.acks;
      evapi.send({ ev: 'end', ...dialog, ats: answered, ts: answered + 1.5 });
      await until('the connector to read the end', () => evapi.acks > acks);
      gate.retarget(fresh.port);
      gate.open();
      const refusedStops = async (): Promise<number> =>
        sample(await metricsText(fresh.port), 'tessera_events_total', { op: 'stop', outcome: 'throttled' }) ?? 0;
      await until('the stop to be refused `throttled`', async () => (await refusedStops()) >= 2, 5000);
      await first.close(300);
      expect(await callRecords(h, dialog.ci)).toEqual([]);
      expect(JSON.parse(rpc.owed.get(call) ?? '{}')).toMatchObject({ call, sec: 2, id });
      // The next connector sends it (again after retryAfter): billed, and gone from Kamailio.
      await attach({ gateway: `ws://127.0.0.1:${fresh.port}/v1/switch` });
      const rec = await recordOf(h, dialog.ci, 10_000);
      expect([rec.cause, rec.sec]).toEqual(['recovered', '2']);
      await until('the stop handed on to be dropped', () => !rpc.owed.has(call));
    } finally {
      await Promise.all(connectors.splice(0).map((c) => c.close(0)));
      rpc.owed.clear();
      await guesser.close();
      await gate.close();
      await fresh.close();
    }
  });

  it('restarted alone after its whole wait to close, takes up the calls still talking: none is reaped', async () => {
    // A lone connector is restarted while one call's stop gets `unavailable` (its bucket's Redis
    // away) and the other calls tick on. It ticks none of them while it waits to deliver that stop;
    // the next connector takes them up once it is gone. Until 2026-12-07 the wait (10 s) was as
    // long as the reaper's default STALE_AFTER_MS: every call still talking was reaped meanwhile,
    // and the next connector cut it (its start answered call_ended).
    await until('the other connectors to leave', () => evapi.socks.size === 0);
    // The reaper's default stale time, swept every 100 ms: reaped as soon as it is due.
    const reaping = await gateway(h, { staleAfterMs: 10_000, reapIntervalMs: 100 });
    const [id, other] = (await soldIds(h, TALK, 2)) as [string, string];
    const talking = { ci: 'talking@probe', he: 12, hi: 1006, id, dest: '33612345678' };
    const owed = { ci: 'owed@probe', he: 13, hi: 1007, id: other, dest: '33612345678' };
    const owedCall = callIdOf(owed.ci, owed.he, owed.hi);
    const proxy = new SwitchProxy(reaping.port, (m) =>
      m.op === 'stop' && m.call === owedCall ? 'unavailable' : undefined,
    );
    try {
      const first = await attach({ gateway: await proxy.listen() });
      for (const [d, ti] of [
        [talking, 9],
        [owed, 11],
      ] as const) {
        evapi.send({ ev: 'invite', ...d, ti, tl: ti + 1, si: '127.0.0.9', ts: Date.now() / 1000 });
        await until('the call to be admitted', () => evapi.answers.find((a) => a.ti === ti && a.sec !== undefined));
      }
      const answered = Date.now() / 1000;
      for (const d of [talking, owed]) evapi.send({ ev: 'answer', ...d, ts: answered });
      const [session] = await until('the talking call to be ticked', async () => {
        const keys = await h.r.keys(`ts:*:call:kamailio-restart:${callIdOf(talking.ci, talking.he, talking.hi)}`);
        return keys.length > 0 && Number(await h.r.hget(keys[0]!, 'used')) >= 1 ? keys : undefined;
      });
      evapi.send({ ev: 'end', ...owed, ats: answered, ts: answered + 1.5 });
      await until('the owed stop to be answered unavailable', () => proxy.refused.length > 0);
      // Its whole wait: the owed stop is never delivered.
      await first.close();
      rpc.dialogs.push({
        'call-id': talking.ci,
        h_entry: talking.he,
        h_id: talking.hi,
        state: 4,
        variables: [{ tessera: '1' }, { pid: id }, { dest: talking.dest }, { ats: String(answered) }],
      });
      await attach({ gateway: `ws://127.0.0.1:${reaping.port}/v1/switch` });
      const since = Math.floor(Date.now() / 1000 - answered);
      await until('the taken-up call to be ticked on, or recorded', async () => {
        if ((await callRecords(h, talking.ci)).length > 0) return true;
        return Number(await h.r.hget(session!, 'used')) > since;
      });
      evapi.send({ ev: 'end', ...talking, ats: answered, ts: Date.now() / 1000 });
      await recordOf(h, talking.ci, 5000);
      expect((await callRecords(h, talking.ci)).map((r) => r.cause)).toEqual(['hangup']);
    } finally {
      rpc.dialogs.length = 0;
      rpc.owed.clear();
      await proxy.close();
      await reaping.close();
    }
  });

  it('takes up a call Kamailio holds though its first listing of them timed out', async () => {
    // Kamailio too busy, as the connector attaches, to list its dialogs within the RPC's 2 s.
    // Until 2026-12-08 the listing was not tried again: the call talked on unmetered to its
    // fail-safe (here the ID's whole balance), and one the reaper had closed was never cut.
    await detachAll();
    const [id] = await soldIds(h, TALK, 1);
    const dialog = { ci: 'slow-list@probe', he: 16, hi: 1010, id: id!, dest: '33612345678' };
    const answered = Date.now() / 1000;
    const lists = (): number => rpc.calls.filter((c) => c.method === 'dlg.list').length;
    const listed = lists();
    rpc.dialogs.push({
      'call-id': dialog.ci,
      h_entry: dialog.he,
      h_id: dialog.hi,
      state: 4,
      variables: [{ tessera: '1' }, { pid: id }, { dest: dialog.dest }, { ats: String(answered) }],
    });
    rpc.listDelayMs = 2500;
    try {
      await attach();
      await until('the connector to list the dialogs', () => lists() > listed);
      rpc.listDelayMs = 0;
      await until('the call to be taken up', async () => (await activeCalls(id!)) === 1, 10_000);
      evapi.send({ ev: 'end', ...dialog, ats: answered, ts: Date.now() / 1000 });
      expect((await recordOf(h, dialog.ci, 5000)).cause).toBe('hangup');
    } finally {
      rpc.listDelayMs = 0;
      rpc.dialogs.length = 0;
    }
  });

  it('reads again what Kamailio kept for it when its first read failed', async () => {
    // Kamailio too busy, as the connector attaches, to dump htables `owed` (a stop a closing
    // connector handed on) and `ends` (an end no connector heard). Until 2026-12-08 each read was
    // tried once: the stop waited for the next connector to attach, and the call that ended held
    // its ID, reaped in the end and billed to its last tick.
    await detachAll();
    const [handedId, endedId] = (await soldIds(h, TALK, 2)) as [string, string];
    const handed = { ci: 'handed-busy@probe', he: 17, hi: 1011, id: handedId, dest: '33612345678' };
    const ended = { ci: 'ended-busy@probe', he: 18, hi: 1012, id: endedId, dest: '33612345678' };
    const call = callIdOf(handed.ci, handed.he, handed.hi);
    const stop = { op: 'stop', call, sec: 2, cause: 'hangup', id: handedId, dest: handed.dest };
    const at = Date.now() / 1000;
    rpc.owed.set(call, JSON.stringify(stop));
    rpc.ends.set(`${ended.he}:${ended.hi}`, JSON.stringify({ ev: 'end', ats: at - 3, ts: at, ...ended }));
    rpc.busy.set('htable.dump owed', 2).set('htable.dump ends', 2);
    try {
      await attach();
      expect((await recordOf(h, handed.ci, 10_000)).cause).toBe('recovered');
      expect((await recordOf(h, ended.ci, 10_000)).cause).toBe('recovered');
      await until('both entries to be dropped once answered', () => rpc.owed.size + rpc.ends.size === 0, 5000);
    } finally {
      forgetKept();
    }
  });

  it("bills a handed-on stop's seconds when its call's end was kept too and the first read failed", async () => {
    // A closing connector cut a call at its paid end and handed its stop on; the dialog's end came
    // after it left evapi (htable `ends`), a second later than the cut's paid seconds. The next
    // connector's read of `owed` failed once: until 2026-12-08 the end event was then handled
    // first, and the call billed to Kamailio's end, a second past what it paid, not as cut.
    await detachAll();
    const [id] = (await soldIds(h, TALK, 1)) as [string];
    const dialog = { ci: 'cut-handed@probe', he: 19, hi: 1013, id, dest: '33612345678' };
    const call = callIdOf(dialog.ci, dialog.he, dialog.hi);
    const at = Date.now() / 1000;
    rpc.owed.set(call, JSON.stringify({ op: 'stop', call, sec: 2, cause: 'cutoff', id, dest: dialog.dest }));
    rpc.ends.set(`${dialog.he}:${dialog.hi}`, JSON.stringify({ ev: 'end', ats: at - 2.5, ts: at, ...dialog }));
    rpc.busy.set('htable.dump owed', 1);
    try {
      await attach();
      expect(await recordOf(h, dialog.ci, 10_000)).toMatchObject({ sec: '2' });
      await until('both entries to be dropped once answered', () => rpc.owed.size + rpc.ends.size === 0, 5000);
    } finally {
      forgetKept();
    }
  });

  it('takes up no call once closed, when its listing of dialogs is answered after the close', async () => {
    // The connector closes while its listing of the dialogs to take up is still under way (a Kamailio
    // slow to answer). Until 2026-12-08 the listing's answer, after the close, took the call up: its
    // start went on a link closed, its tick timer ran on in a connector no one would close again.
    await detachAll();
    const [id] = (await soldIds(h, TALK, 1)) as [string];
    const dialog = { ci: 'closed-list@probe', he: 20, hi: 1014, id, dest: '33612345678' };
    const lists = (): number => rpc.calls.filter((c) => c.method === 'dlg.list').length;
    const listed = lists();
    rpc.dialogs.push({
      'call-id': dialog.ci,
      h_entry: dialog.he,
      h_id: dialog.hi,
      state: 4,
      variables: [{ tessera: '1' }, { pid: id }, { dest: dialog.dest }, { ats: String(Date.now() / 1000) }],
    });
    rpc.listDelayMs = 600;
    const { log, lines } = captureLog('info');
    try {
      const c = await attach({ log });
      await until('the connector to list the dialogs', () => lists() > listed);
      await c.close(0);
      const closed = lines.length;
      // The listing's answer, and a tick's time after it.
      await new Promise((r) => setTimeout(r, 1600));
      expect(lines.slice(closed).map((l) => l.msg)).not.toContain('took up a call already answered');
    } finally {
      rpc.listDelayMs = 0;
      rpc.dialogs.length = 0;
    }
  });

  it("sends a lost call's stop refused `throttled` again after retryAfter: the call is billed", async () => {
    // Redis lost the call's writes and the connector came back on a gateway that never saw it: its
    // stop is billed as a recovered stop, which is refused `throttled` while the token name is past
    // its guess limit. Until 2026-12-07 the connector took that answer as final and dropped the stop:
    // the call was billed nothing.
    await detachAll();
    // A window longer than the connector takes to come back: its stop meets the throttle.
    const fresh = await gateway(h, { guessLimit: 1, guessWindowSec: 5 });
    const [id] = await soldIds(h, TALK, 1);
    const dialog = { ci: 'lost-throttled@probe', he: 14, hi: 1008, id: id!, dest: '33612345678' };
    const gate = new LinkGate(gw.port);
    const guesser = await Client.connect(fresh.port, tok);
    try {
      await attach({ gateway: await gate.listen() });
      await lostAndThrottled(dialog, 15, gate, guesser);
      gate.retarget(fresh.port);
      gate.open();
      // Its ticks find no call: it is cut, and its stop names the ID and destination.
      const rec = await recordOf(h, dialog.ci, 10_000);
      expect(rec).toMatchObject({ cause: 'recovered' });
      expect(Number(rec.sec)).toBeGreaterThanOrEqual(1);
      // Billed after a refusal, not instead of one: the guesser's third stop and the connector's.
      const refused = sample(await metricsText(fresh.port), 'tessera_events_total', {
        op: 'stop',
        outcome: 'throttled',
      });
      expect(refused).toBeGreaterThanOrEqual(2);
    } finally {
      await guesser.close();
      await gate.close();
      await fresh.close();
    }
  });
});

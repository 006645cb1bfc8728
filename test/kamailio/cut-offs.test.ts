/**
 * Cut-offs in bulk through a real Kamailio: many calls whose balances run
 * out together, each cut by the connector's dlg.end_dlg (or, with the
 * connector gone, by Kamailio's own fail-safe), and every callee gets its BYE. Kamailio 5.6 sends the callee's BYE after the caller's, and
 * only while the dialog is confirmed: the caller's 2xx, handled in between
 * by another Kamailio process, would end the dialog first
 * (deploy/kamailio/kamailio.cfg, reply_route). Kamailio runs on one CPU
 * here, so that reply preempts the RPC mid-way and the race shows.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { sipCallIdOf } from '../../src/kamailio/call-id';
import { KamailioConnector } from '../../src/kamailio/connector';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { jsonCall } from '../support/http';
import { callRecords } from './records';
import {
  answeredDialogs,
  attachConnector,
  connectorsAttached,
  haveKamailio,
  runUac,
  sipInvite,
  startKamailio,
  startUas,
  stopAll,
  until,
  type KamailioChild,
  type Uas,
} from './stack';

/** Requests Kamailio itself has sent so far (tm's UAC transactions). */
async function uacTransactions(k: KamailioChild): Promise<number> {
  const stats = (await k.rpc('stats.get_statistics', ['tmx:'])).result as string[];
  return Number(/^tmx:UAC_transactions = (\d+)$/m.exec(stats.join('\n'))?.[1]);
}

/** 100 micro-units a second everywhere (STD_RATES): 3 seconds of credit. */
const SHORT = talkProduct({ name: 'talk-3s', face: 300, price: 300 });
/** 8 seconds of credit: time for every call to be answered before the connector goes. */
const LONGER = talkProduct({ name: 'talk-8s', face: 800, price: 800 });
/** Before the fix about one cut-off in sixty left its callee without a BYE here. */
const CALLS = 150;

describe.skipIf(!haveKamailio())('kamailio: cut-offs in bulk', () => {
  let h: Harness;
  let gw: Gateway;
  let k: KamailioChild;
  let uas: Uas;
  let connector: KamailioConnector;
  let dir: string;
  let tok: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-kamailio-'));
    h = await startHarness();
    await seedCatalog(h, [SHORT, LONGER]);
    tok = await token(h, 'switch', 'kamailio-test');
    gw = await gateway(h);
    uas = await startUas(dir);
    k = await startKamailio({ dir, pstnPort: uas.port, cpus: '0' });
    connector = await attachConnector(k, [`ws://127.0.0.1:${gw.port}/v1/switch`], tok);
  });

  afterAll(async () => {
    await connector?.close(0);
    await gw?.close();
    await stopAll();
    await h?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends both sides their BYE when many calls are cut at once', async () => {
    const ids = await soldIds(h, SHORT, CALLS);
    const run = await runUac({
      dir,
      kamailio: k,
      scenario: 'uac-wait',
      rows: ids.map((id): [string, string] => [`${id}*33612345678`, 'X-Test: bulk-cut-off']),
    });
    // Every caller got its BYE (uac-wait ends on it)...
    expect(run.code, run.stdout).toBe(0);
    expect(run.calls.size).toBe(CALLS);
    const records = await until('every call record', async () => {
      const r = await callRecords(h);
      return r.length === CALLS ? r : undefined;
    });
    // Each cut at its paid end by dlg.end_dlg: on Tessera's cutoff, or by the connector itself when
    // that cutoff is not back by the next second's tick (max_sec: a machine too busy to answer 150
    // at once in time). Either way the 3 s paid, no more.
    for (const r of records) {
      expect(['cutoff', 'max_sec']).toContain(r.cause);
      expect([r.sec, r.cost]).toEqual(['3', '300']);
    }
    // ...and every callee too: a BYE Kamailio never sent would not come later.
    const missing = (): string[] => [...run.calls.keys()].filter((ci) => !uas.calls().get(ci)?.byeUs);
    await until('every callee to log its BYE', () => missing().length === 0, 5000).catch(() => undefined);
    expect(missing()).toEqual([]);
    expect(k.logs.filter((l) => l.includes('send_bye'))).toEqual([]);
  }, 60_000);

  it('sends each side one BYE when two connectors cut the same calls', async () => {
    // Each connector gets every event (evapi broadcasts) and ends each cut-off dialog: the second
    // dlg.end_dlg found the dialog still confirmed (its BYEs' replies wait for the first one's
    // lock) and sent both BYEs again, 481 from a UA that had hung up.
    const second = await attachConnector(k, [`ws://127.0.0.1:${gw.port}/v1/switch`], tok);
    try {
      const calls = 20;
      const ids = await soldIds(h, SHORT, calls);
      const sent = await uacTransactions(k);
      const run = await runUac({
        dir,
        kamailio: k,
        scenario: 'uac-wait',
        rows: ids.map((id): [string, string] => [`${id}*33612345678`, 'X-Test: two-connectors-cut']),
      });
      expect(run.code, run.stdout).toBe(0);
      const records = await until('every call record', async () => {
        const r = (await callRecords(h)).filter((c) => run.calls.has(sipCallIdOf(c.call!) ?? ''));
        return r.length === calls ? r : undefined;
      });
      expect(records.map((r) => [r.cause, r.sec])).toEqual(records.map(() => ['cutoff', '3']));
      // Kamailio's own requests here are the BYEs of the cut-offs: one to each side of each call.
      expect((await uacTransactions(k)) - sent).toBe(2 * calls);
      // A repeat is answered as JSON-RPC, whatever kind of id it names itself by.
      const [, he, hi] = /:(\d+)\.(\d+)$/.exec(records[0]!.call!)!;
      expect(await k.rpc('dlg.end_dlg', [Number(he), Number(hi)], 'again')).toEqual({
        jsonrpc: '2.0',
        result: {},
        id: 'again',
      });
      expect((await uacTransactions(k)) - sent).toBe(2 * calls);
    } finally {
      void second.close();
      await until('the second connector to detach', async () => (await connectorsAttached(k)) === 1);
    }
  }, 60_000);

  it('admits at once a redial on a maxCalls-1 ID whose call was cut off', async () => {
    // A caller whose balance runs out tops up (Tessera's cut-off already sent: the call is cut
    // all the same) and dials again the moment the BYE comes: the ID's one call must be free by
    // then, not refused `486` concurrent_limit. The cut's stop is sent as the cut is ordered; until
    // 2026-12-07 it waited for the dialog's end event, 15-50 ms after the caller's BYE here, which
    // evapi relayed ahead of the redial's INVITE (60 of 60 redials admitted when measured): only
    // an end event Kamailio lost kept the ID busy (test/kamailio/cut-race.test.ts).
    const calls = 20;
    const ids = await soldIds(h, SHORT, calls);
    const admin = await token(h, 'admin', 'kamailio-redial');
    const redials = await Promise.all(
      ids.map(async (id, i) => {
        const ci = `redial-${i}@probe`;
        const cut = sipInvite(k, `${id}*33612345678`, { callId: ci, awaitBye: true, talkMs: 10_000 });
        await until(`the cut-off of ${ci}`, async () => {
          const [session] = await h.r.keys(`ts:*:call:kamailio-test:${ci}:*`);
          return session !== undefined && (await h.r.hget(session, 'cut'));
        });
        const topup = await jsonCall(gw, 'POST', `/v1/admin/ids/${id}/topup`, {
          token: admin,
          idem: `redial-${id}`,
          body: { amount: 300 },
        });
        expect(topup.status).toBe(200);
        expect((await cut).byeUs).toBeDefined();
        const again = await sipInvite(k, `${id}*33612345678`);
        return [again.code, again.headers.get('x-prepaid-reason')];
      }),
    );
    expect(redials).toEqual(ids.map(() => [200, undefined]));
  }, 60_000);

  // Last: it takes the connector away.
  it("sends both sides their BYE when Kamailio's fail-safe cuts many calls at once", async () => {
    const ids = await soldIds(h, LONGER, CALLS);
    const call = runUac({
      dir,
      kamailio: k,
      scenario: 'uac-wait',
      rows: ids.map((id): [string, string] => [`${id}*33612345678`, 'X-Test: bulk-fail-safe']),
    });
    await until('every call to be answered', async () => (await answeredDialogs(k)).length === CALLS, 20_000);
    // No connector, no dlg.end_dlg: each dialog ends at its timeout (8 s + grace), in the same second or two.
    void connector.close();
    await until('the connector to detach', async () => (await connectorsAttached(k)) === 0);
    const run = await call;
    expect(run.code, run.stdout).toBe(0);
    expect(run.calls.size).toBe(CALLS);
    for (const c of run.calls.values()) expect(c.byeUs! - c.answerUs!).toBeGreaterThanOrEqual(8 * 1e6 - 1000);
    const missing = (): string[] => [...run.calls.keys()].filter((ci) => !uas.calls().get(ci)?.byeUs);
    await until('every callee to log its BYE', () => missing().length === 0, 5000).catch(() => undefined);
    expect(missing()).toEqual([]);
  }, 60_000);
});

/**
 * An INVITE caught mid-admission by a Kamailio restart: its transaction,
 * suspended while the connector asks Tessera, dies with the Kamailio that
 * held it. The caller must still get a final answer, from the Kamailio
 * started again (its INVITE sent again), and the lost admission is billed
 * nothing.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { audit } from '../../src/ledger/audit';
import { idStatus } from '../../src/ledger/ids';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { callRecords } from './records';
import {
  connectorsAttached,
  haveKamailio,
  sipInvite,
  sleep,
  spawnConnector,
  startKamailio,
  startUas,
  stopAll,
  until,
  type KamailioChild,
} from './stack';

const TALK = talkProduct({ name: 'talk-ra', face: 1_000_000, price: 1_000_000 });

describe.skipIf(!haveKamailio())('kamailio: a restart during admission', () => {
  let h: Harness;
  let gw: Gateway;
  let k: KamailioChild;
  let dir: string;
  let tok: string;
  let uasPort: number;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-kamailio-'));
    h = await startHarness();
    await seedCatalog(h, [TALK]);
    tok = await token(h, 'switch', 'kamailio-restart-admission');
    gw = await gateway(h);
    uasPort = (await startUas(dir)).port;
    k = await startKamailio({ dir, pstnPort: uasPort });
  });

  afterAll(async () => {
    await gw?.close();
    await stopAll();
    await h?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const attached = async (): Promise<ChildProcess> => {
    const child = spawnConnector({ kamailio: k, gateways: [`ws://127.0.0.1:${gw.port}/v1/switch`], token: tok });
    await until('the connector to attach', async () => (await connectorsAttached(k)) === 1, 20_000);
    return child;
  };

  /**
   * An INVITE suspended in Kamailio (its connector frozen: the event waits unread), then
   * Kamailio restarted on its ports and directory, and the connector let go `thawAfterMs`
   * after. The caller retransmits its INVITE as a UAC over UDP does; with `resendOnceBack`, its
   * retransmissions start once the connector is attached again (on a loaded machine the
   * connector can be back after the retransmissions of the first seconds, each refused 503).
   */
  const inviteAcrossRestart = async (id: string, callId: string, thawAfterMs: number, resendOnceBack = false) => {
    const child = await attached();
    child.kill('SIGSTOP');
    let back = (): void => undefined;
    const isBack = new Promise<void>((resolve) => (back = resolve));
    const answer = sipInvite(k, `${id}*33612345678`, {
      callId,
      retransmit: true,
      retransmitAfter: resendOnceBack ? isBack : undefined,
      talkMs: 1200,
    });
    // Kamailio's admission timeout (3 s) is far: the INVITE waits, suspended.
    await sleep(100);
    const ports = { sipPort: k.sipPort, evapiPort: k.evapiPort, httpPort: k.httpPort };
    await k.stop();
    k = await startKamailio({ dir, pstnPort: uasPort, ports });
    await sleep(thawAfterMs);
    child.kill('SIGCONT');
    try {
      if (resendOnceBack) {
        await until('the connector to attach again', async () => (await connectorsAttached(k)) === 1, 20_000);
        back();
      }
      return await answer;
    } finally {
      await until('the connector to attach again', async () => (await connectorsAttached(k)) === 1, 20_000);
      // Back on evapi, it stops the calls whose dialogs are gone (the lost admission): let it, or a
      // kill right after it attached leaves that call live until the reaper's RING_TIMEOUT_MS.
      await until('the connector to stop the calls of the ID', async () => {
        const s = await idStatus(h.ctx, id);
        return s.ok && s.activeCalls === 0;
      });
      child.kill('SIGKILL');
      await until('the connector to detach', async () => (await connectorsAttached(k)) === 0);
    }
  };

  it('refuses it 503 when no connector is back yet, and bills nothing', async () => {
    // The caller was told 100 while its INVITE was suspended, so it never sent it again: no
    // Kamailio answered it (10 s and more with no final answer).
    const [id] = await soldIds(h, TALK, 1);
    const callId = `mid-admission-503-${Date.now()}@127.0.0.1`;
    const answer = await inviteAcrossRestart(id!, callId, 1500);
    expect([answer.code, answer.headers.get('x-prepaid-reason')]).toEqual([503, 'unavailable']);
    // The start Tessera answered while the INVITE was lost: stopped at 0 s, the ID free again.
    const recs = await until('the lost admission stopped', async () => {
      const r = await callRecords(h, callId);
      return r.length === 1 ? r : undefined;
    });
    expect(recs.map((r) => [r.cause, r.sec])).toEqual([['lost', '0']]);
    expect(await idStatus(h.ctx, id!)).toMatchObject({ ok: true, activeCalls: 0, balance: 1_000_000 });
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('admits it anew once the connector is back: the call is metered, the lost admission billed nothing', async () => {
    const [id] = await soldIds(h, TALK, 1);
    const callId = `mid-admission-200-${Date.now()}@127.0.0.1`;
    const answer = await inviteAcrossRestart(id!, callId, 0, true);
    expect(answer.code).toBe(200);
    const recs = await until('both dialogs stopped', async () => {
      const r = await callRecords(h, callId);
      return r.length === 2 ? r : undefined;
    });
    // The dialog of the first INVITE (lost) and that of its retransmission (talked 1.2 s).
    expect(recs.map((r) => [r.cause, r.sec]).sort()).toEqual([
      ['hangup', '2'],
      ['lost', '0'],
    ]);
    expect(await idStatus(h.ctx, id!)).toMatchObject({ ok: true, activeCalls: 0, balance: 1_000_000 - 200 });
    expect((await audit(h.ctx)).problems).toEqual([]);
  });
});

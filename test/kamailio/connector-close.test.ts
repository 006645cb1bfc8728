/**
 * A lone connector closing (systemd stops it) in front of a real Kamailio
 * (deploy/kamailio/kamailio.cfg), with calls placed by sipp: while it waits
 * to deliver a stop it owes, it has left evapi, and a call that ends then is
 * still billed to its hang-up.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { billedSeconds } from '../../src/kamailio/billing';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { SwitchProxy } from '../support/switch-proxy';
import { recordOf } from './records';
import {
  attachConnector,
  connectorsAttached,
  haveKamailio,
  runUac,
  startKamailio,
  startUas,
  stopAll,
  until,
  type KamailioChild,
  type Uas,
} from './stack';

const TALK = talkProduct({ name: 'talk-close', face: 1_000_000, price: 1_000_000 });

describe.skipIf(!haveKamailio())('kamailio: a lone connector closing', () => {
  let h: Harness;
  let gw: Gateway;
  let k: KamailioChild;
  let uas: Uas;
  let dir: string;
  let tok: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-kamailio-close-'));
    h = await startHarness();
    await seedCatalog(h, [TALK]);
    tok = await token(h, 'switch', 'kamailio-close');
    // The reaper at its default stale time, swept often: a call no stop reaches is reaped `stale`.
    gw = await gateway(h, { staleAfterMs: 10_000, reapIntervalMs: 100 });
    uas = await startUas(dir);
    k = await startKamailio({ dir, pstnPort: uas.port });
  });

  afterAll(async () => {
    await gw?.close();
    await stopAll();
    await h?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('bills a call that ends during its wait to close to its hang-up', async () => {
    // One call's stop gets `unavailable` (its bucket's Redis away): the connector waits up to 5 s to
    // deliver it. It has left evapi first, so the end event of another call that hangs up meanwhile
    // goes to no one: until 2026-12-07 that call was reaped `stale`, billed to its last tick.
    const [owedId, talkingId] = (await soldIds(h, TALK, 2)) as [string, string];
    const proxy = SwitchProxy.refusingStopsOf(gw.port, owedId);
    const c = await attachConnector(k, [await proxy.listen()], tok);
    try {
      const owedRun = runUac({
        dir,
        kamailio: k,
        scenario: 'uac-hangup',
        rows: [[`${owedId}*33612345678`, 'X-Test: owed']],
        talkMs: 1000,
      });
      const talkingRun = runUac({
        dir,
        kamailio: k,
        scenario: 'uac-hangup',
        rows: [[`${talkingId}*33612345678`, 'X-Test: talking']],
        talkMs: 3500,
      });
      expect((await owedRun).code).toBe(0);
      await until('the owed stop to be refused', () => proxy.refused.length > 0);
      // The close's wait begins; the other call is still up, and hangs up during it.
      const closed = c.close();
      await until('the connector to leave evapi', async () => (await connectorsAttached(k)) === 0);
      const run = await talkingRun;
      expect(run.code, run.stdout).toBe(0);
      const [sipCall] = [...run.calls.values()];
      const rec = await recordOf(h, sipCall!.ci, 20_000);
      expect([rec.cause, Number(rec.sec)]).toEqual(['hangup', billedSeconds(sipCall!.answerUs!, sipCall!.hangupUs!)]);
      await closed;
      // The stop it could not deliver is kept in Kamailio for the next connector (its other test: connector-restart).
      const owed = (await k.rpc('htable.dump', ['owed'])) as { result: { slot: { value: string }[] }[] };
      expect(owed.result.flatMap((e) => e.slot.map((x) => JSON.parse(x.value) as object))).toMatchObject([
        { op: 'stop', call: proxy.refused[0]!.call, cause: 'hangup', id: owedId },
      ]);
    } finally {
      await c.close(0);
      await proxy.close();
    }
  });
});

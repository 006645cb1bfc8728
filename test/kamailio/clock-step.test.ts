/**
 * The connector ticks by a steady clock: an NTP step of the host's wall clock
 * mid-call neither stops its ticks (the gateway would reap the call and it
 * would be cut `stale`) nor bills the seconds it jumped.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import type { KamailioConnector } from '../../src/kamailio/connector';
import { billedSeconds } from '../../src/kamailio/billing';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { callRecords, recordOf } from './records';
import {
  attachConnector,
  haveKamailio,
  runUac,
  sleep,
  startKamailio,
  startUas,
  stopAll,
  until,
  type KamailioChild,
  type Uas,
} from './stack';

const TALK = talkProduct({ name: 'talk-step', face: 1_000_000, price: 1_000_000 });

describe.skipIf(!haveKamailio())('kamailio: the host clock stepped mid-call', () => {
  let h: Harness;
  let gw: Gateway;
  let k: KamailioChild;
  let uas: Uas;
  let connector: KamailioConnector;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-kamailio-'));
    h = await startHarness();
    await seedCatalog(h, [TALK]);
    const tok = await token(h, 'switch', 'kamailio-step');
    // Reaped after 2 s without a tick, swept every 200 ms.
    gw = await gateway(h, { staleAfterMs: 2000, reapIntervalMs: 200 });
    uas = await startUas(dir);
    k = await startKamailio({ dir, pstnPort: uas.port });
    connector = await attachConnector(k, [`ws://127.0.0.1:${gw.port}/v1/switch`], tok);
  });

  afterAll(async () => {
    vi.restoreAllMocks();
    await connector?.close(0);
    await gw?.close();
    await stopAll();
    await h?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a step back of 5 s while the call talks leaves it ticking, billed as Kamailio timed it', async () => {
    const [id] = await soldIds(h, TALK, 1);
    const done = runUac({
      dir,
      kamailio: k,
      scenario: 'uac-hangup',
      rows: [[`${id}*33612345678`, 'X-Test: step']],
      talkMs: 6300,
    });
    await sleep(2500);
    const real = Date.now.bind(Date);
    vi.spyOn(Date, 'now').mockImplementation(() => real() - 5000);
    const run = await done;
    vi.restoreAllMocks();
    expect(run.code, run.stdout).toBe(0);
    const [rec] = await until('the call record', async () => {
      const r = await callRecords(h);
      return r.length > 0 ? r : undefined;
    });
    const sipCall = [...run.calls.values()][0]!;
    expect(rec).toMatchObject({ cause: 'hangup', sec: String(billedSeconds(sipCall.answerUs!, sipCall.hangupUs!)) });
  });

  it("a call Kamailio lost, on a host 30 s behind the connector's, is billed its talk, not the skew", async () => {
    const [id] = await soldIds(h, TALK, 1);
    // Kamailio on another host whose clock is 30 s behind this one's: its answer is placed on arrival.
    const real = Date.now.bind(Date);
    vi.spyOn(Date, 'now').mockImplementation(() => real() + 30_000);
    const done = runUac({
      dir,
      kamailio: k,
      scenario: 'uac-hangup',
      rows: [[`${id}*33612345678`, 'X-Test: lost-skew']],
      talkMs: 2600,
      timeoutSec: 10,
    });
    await sleep(1800);
    // Kamailio crashes (its dialogs are lost) and comes back: the connector stops the call `lost`.
    const ports = { sipPort: k.sipPort, evapiPort: k.evapiPort, httpPort: k.httpPort };
    await k.crash();
    k = await startKamailio({ dir, pstnPort: uas.port, ports });
    const run = await done;
    const rec = await recordOf(h, [...run.calls.values()][0]!.ci, 20_000);
    vi.restoreAllMocks();
    // It talked about 2 s before the crash: the evapi loss is timed by this host, the answer by it too.
    expect(rec.cause).toBe('lost');
    expect(Number(rec.sec)).toBeLessThanOrEqual(4);
  });
});

/**
 * What a prepaid call survives: the connector killed (Kamailio's own
 * fail-safe cuts the call at its granted time, the grant it was last given
 * when grants come in slices; a second connector carries the call on), a gateway going away (the connector fails over and comes
 * back), and Kamailio restarted (its calls metered on) or crashed (calls it
 * lost are stopped, new calls are metered again). Billing stays exact and the audit balances throughout.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { billedSeconds } from '../../src/kamailio/billing';
import { KamailioConnector } from '../../src/kamailio/connector';
import { audit } from '../../src/ledger/audit';
import { idStatus } from '../../src/ledger/ids';
import { createLogger } from '../../src/observability/log';
import { freePort } from '../../src/redis/embedded';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { callRecords, recordOf } from './records';
import {
  answeredDialogs,
  connectorsAttached,
  endDialogs,
  haveKamailio,
  runUac,
  sleep,
  spawnConnector,
  startKamailio,
  startUas,
  stopAll,
  until,
  type KamailioChild,
  type UacRun,
} from './stack';

const TALK = talkProduct({ name: 'talk-f', face: 1_000_000, price: 1_000_000 });
/** Two seconds of credit at 100 micro-units a second. */
const TWO_SEC = talkProduct({ name: 'talk-2s', face: 200, price: 200 });
/** 100 s of credit, shared by up to two calls, reserved 4 s at a time. */
const SLICES = talkProduct({ name: 'talk-slices-f', face: 10_000, price: 10_000, maxCalls: 2, grantSec: 4 });
const GRACE_SEC = 1;

describe.skipIf(!haveKamailio())('kamailio: failures', () => {
  let h: Harness;
  let gw1: Gateway;
  let gw2: Gateway;
  let gw1Port: number;
  let k: KamailioChild;
  let dir: string;
  let tok: string;
  let uasPort: number;
  const connectors: KamailioConnector[] = [];
  /** The connector processes and sipp callers a test started: afterEach ends them, passed or failed. */
  const started: ChildProcess[] = [];

  const url = (port: number): string => `ws://127.0.0.1:${port}/v1/switch`;
  // The reaper closes a call 2 s after its last tick (or its start, if it was never ticked),
  // so a call whose connector died is closed quickly.
  const startGw = (port = 0): Promise<Gateway> =>
    gateway(h, { port, staleAfterMs: 2000, ringTimeoutMs: 2000, reapIntervalMs: 250 });

  const attach = async (gateways: string[]): Promise<KamailioConnector> => {
    const c = new KamailioConnector({
      evapiHost: '127.0.0.1',
      evapiPort: k.evapiPort,
      rpcUrl: k.rpcUrl,
      gateways,
      token: tok,
      log: createLogger('silent'),
    });
    connectors.push(c);
    const before = await connectorsAttached(k);
    c.start();
    await until('the connector to attach', async () => (await connectorsAttached(k)) > before);
    return c;
  };
  /** The connector as its own process, on gw1, so that it can be killed; the only one attached. */
  const spawnAttached = async (): Promise<ChildProcess> => {
    const child = spawnConnector({ kamailio: k, gateways: [url(gw1.port)], token: tok });
    started.push(child);
    await until('the connector process to attach', async () => (await connectorsAttached(k)) === 1, 20_000);
    return child;
  };
  const detachAll = async (): Promise<void> => {
    await Promise.all(connectors.splice(0).map((c) => c.close(0)));
    await until('every connector to detach', async () => (await connectorsAttached(k)) === 0);
  };
  /** runUac, its sipp ended by afterEach if the test leaves it running. */
  const caller = (o: Omit<Parameters<typeof runUac>[0], 'dir' | 'kamailio' | 'onStart'>): Promise<UacRun> =>
    runUac({ ...o, dir, kamailio: k, onStart: (p) => started.push(p) });
  const admitted = (id: string): Promise<boolean> =>
    until(`a live call on ${id}`, async () => {
      const s = await idStatus(h.ctx, id);
      return s.ok && s.activeCalls === 1;
    });
  const recordOfRun = (run: UacRun): Promise<Record<string, string>> =>
    recordOf(h, [...run.calls.values()][0]!.ci, 20_000);

  /** The run's one call ended by its caller and was billed exactly its talk; the audit balances. */
  const expectBilledItsTalk = async (run: UacRun): Promise<void> => {
    expect(run.code, run.stdout).toBe(0);
    const [c] = [...run.calls.values()];
    const rec = await recordOfRun(run);
    expect(rec.cause).toBe('hangup');
    expect(Number(rec.sec)).toBe(billedSeconds(c!.answerUs!, c!.hangupUs!));
    expect((await audit(h.ctx)).problems).toEqual([]);
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-kamailio-'));
    h = await startHarness();
    await seedCatalog(h, [TALK, TWO_SEC, SLICES]);
    tok = await token(h, 'switch', 'kamailio-failover');
    gw1Port = await freePort();
    gw1 = await startGw(gw1Port);
    gw2 = await startGw();
    const uas = await startUas(dir);
    uasPort = uas.port;
    k = await startKamailio({ dir, pstnPort: uasPort, defines: [`GRACE_SEC=${GRACE_SEC}`] });
  });

  // What a test started ends with it, even when it fails: a connector it left attached made each
  // next spawnAttached wait for a count it never saw, and a call it left talking was the next one's.
  afterEach(async () => {
    for (const p of started.splice(0)) p.kill('SIGKILL');
    await detachAll();
    await endDialogs(k);
  });

  afterAll(async () => {
    await Promise.all(connectors.map((c) => c.close(0)));
    await gw1?.close();
    await gw2?.close();
    await stopAll();
    await h?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('cuts a call at its granted time through Kamailio when its only connector is killed', async () => {
    const child = await spawnAttached();
    const [id] = await soldIds(h, TWO_SEC, 1);
    const dialogs = (await answeredDialogs(k)).length;
    const call = caller({ scenario: 'uac-wait', rows: [[`${id}*33612345678`, 'X-Test: killed']] });
    await admitted(id!);
    // Killed once Kamailio has the call answered: a kill between Tessera's start and the
    // connector's answer to the suspended INVITE would leave the call refused, not cut.
    await until('Kamailio to answer the call', async () => (await answeredDialogs(k)).length > dialogs);
    child.kill('SIGKILL');
    const run = await call;
    expect(run.code, run.stdout).toBe(0);
    const [c] = [...run.calls.values()];
    // Kamailio's dialog timeout (granted seconds + grace, on its 1 s timer): never before the granted time.
    expect(c!.byeUs! - c!.answerUs!).toBeGreaterThanOrEqual(2 * 1e6 - 1000);
    // The reaper closed the call at its last tick: nothing billed twice, nothing beyond the balance.
    const rec = await recordOfRun(run);
    expect(rec.cause).toBe('stale');
    expect(Number(rec.sec)).toBeLessThanOrEqual(2);
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('cuts a call at its current grant, not its maxSec, when its only connector is killed', async () => {
    const child = await spawnAttached();
    const [id] = await soldIds(h, SLICES, 1);
    const call = caller({
      scenario: 'uac-wait',
      rows: [[`${id}*33612345678`, 'X-Test: killed-slices']],
      timeoutSec: 20,
    });
    // Granted 4 s, re-granted at second 3 to 7 s: killed once Kamailio's timeout follows that
    // (7 s + grace from the answer, within its whole seconds), not the first grant's 5 s nor maxSec's 101 s.
    await until('the fail-safe to follow the re-grant', async () =>
      (await answeredDialogs(k)).some((d) => d.timeout - d.startTs >= 7 && d.timeout - d.startTs <= 7 + GRACE_SEC + 2),
    );
    child.kill('SIGKILL');
    const run = await call;
    expect(run.code, run.stdout).toBe(0);
    const [c] = [...run.calls.values()];
    const talkedSec = (c!.byeUs! - c!.answerUs!) / 1e6;
    // Never before the grant it held (7 s); at that grant plus grace, or a slice later if the
    // kill came after the next re-grant (second 6): far from the 100 s the balance pays.
    expect(talkedSec).toBeGreaterThanOrEqual(7 - 0.001);
    expect(talkedSec).toBeLessThanOrEqual(10 + GRACE_SEC + 2);
    // Billed once, by the reaper, up to the last tick: within the grant, the rest of the reservation given back.
    const rec = await recordOfRun(run);
    await sleep(500);
    expect(await callRecords(h, c!.ci)).toHaveLength(1);
    expect(rec.cause).toBe('stale');
    expect(Number(rec.sec)).toBeGreaterThanOrEqual(3);
    expect(Number(rec.sec)).toBeLessThanOrEqual(talkedSec);
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  // Each wait bounded on its own (the cut's well inside sipp's timeout, which only ends a call
  // nothing cut), and the test's budget over their sum: with the call's sipp given vitest's 30 s,
  // a take-up that failed timed out the test with nothing said of what was not met.
  it('a connector started after its call was answered takes it up: the reaped call is cut and billed its seconds', async () => {
    const child = await spawnAttached();
    const [id] = await soldIds(h, TALK, 1);
    const dialogs = (await answeredDialogs(k)).length;
    const call = caller({
      scenario: 'uac-wait',
      rows: [[`${id}*33612345678`, 'X-Test: taken-up']],
      timeoutSec: 60,
    });
    let cut = false;
    void call.then(() => (cut = true));
    await admitted(id!);
    await until('Kamailio to answer the call', async () => (await answeredDialogs(k)).length > dialogs);
    child.kill('SIGKILL');
    // The reaper closes the call 2 s after its last tick; Kamailio's fail-safe would let it talk
    // to its maxSec (10,000 s: the ID's whole balance is its grant).
    await until('the reaper to close the call', async () => {
      const s = await idStatus(h.ctx, id!);
      return s.ok && s.activeCalls === 0;
    });
    await attach([url(gw1.port)]);
    await until('the connector that took the call up to cut it', () => cut, 10_000);
    const run = await call;
    expect(run.code, run.stdout).toBe(0);
    const [c] = [...run.calls.values()];
    const talkedSec = (c!.byeUs! - c!.answerUs!) / 1e6;
    expect(talkedSec).toBeLessThan(15);
    // The reaper's record up to the last tick, then the connector's stop for the rest: every second
    // talked billed once, by the started-second rule.
    const recs = await until('both records', async () => {
      const r = await callRecords(h, c!.ci);
      return r.length === 2 ? r : undefined;
    });
    expect(recs.map((r) => r.cause)).toEqual(['stale', 'late']);
    const billed = recs.reduce((sum, r) => sum + Number(r.sec), 0);
    expect(billed).toBeGreaterThanOrEqual(Math.floor(talkedSec));
    expect(billed).toBeLessThanOrEqual(Math.ceil(talkedSec) + 1);
    expect((await audit(h.ctx)).problems).toEqual([]);
  }, 90_000);

  it('bills exactly when one of two connectors is killed mid-call', async () => {
    const child = await spawnAttached();
    await attach([url(gw2.port)]);
    const [id] = await soldIds(h, TALK, 1);
    const call = caller({
      scenario: 'uac-hangup',
      rows: [[`${id}*33612345678`, 'X-Test: two-connectors']],
      talkMs: 2600,
    });
    await admitted(id!);
    await sleep(1200);
    child.kill('SIGKILL');
    await expectBilledItsTalk(await call);
  });

  it('fails over to another gateway mid-call and comes back to a restarted one', async () => {
    await attach([url(gw1Port), url(gw2.port)]);
    const [a, b] = await soldIds(h, TALK, 2);
    // The connector is on gw1 (first in its list): gw1 goes away mid-call.
    const first = caller({
      scenario: 'uac-hangup',
      rows: [[`${a}*33612345678`, 'X-Test: failover']],
      talkMs: 2600,
    });
    await admitted(a!);
    await sleep(1200);
    await gw1.close();
    const run1 = await first;
    expect(run1.code, run1.stdout).toBe(0);
    const [c1] = [...run1.calls.values()];
    expect(Number((await recordOfRun(run1)).sec)).toBe(billedSeconds(c1!.answerUs!, c1!.hangupUs!));
    // gw1 restarts on its port, gw2 goes away mid-call: the connector is back on gw1.
    gw1 = await startGw(gw1Port);
    const second = caller({
      scenario: 'uac-hangup',
      rows: [[`${b}*33612345678`, 'X-Test: restart']],
      talkMs: 2600,
    });
    await admitted(b!);
    await sleep(1200);
    await gw2.close();
    const run2 = await second;
    expect(run2.code, run2.stdout).toBe(0);
    const [c2] = [...run2.calls.values()];
    const rec2 = await recordOfRun(run2);
    expect(Number(rec2.sec)).toBe(billedSeconds(c2!.answerUs!, c2!.hangupUs!));
    expect((await audit(h.ctx)).problems).toEqual([]);
    gw2 = await startGw();
  });

  /** Kamailio down by `down` (a stop or a crash) and started again on its ports and directory. */
  const restartKamailio = async (down: () => Promise<void>): Promise<void> => {
    const ports = { sipPort: k.sipPort, evapiPort: k.evapiPort, httpPort: k.httpPort };
    await down();
    k = await startKamailio({ dir, pstnPort: uasPort, ports, defines: [`GRACE_SEC=${GRACE_SEC}`] });
  };

  it('keeps metering the calls of a Kamailio restarted mid-call: each is billed its whole talk', async () => {
    // A restart lost every dialog: the connector stopped their calls (cause lost) and both legs
    // talked on, unmetered, until one hung up.
    await attach([url(gw1.port)]);
    const [a] = await soldIds(h, TALK, 1);
    const run = caller({
      scenario: 'uac-hangup',
      rows: [[`${a}*33612345678`, 'X-Test: kept']],
      talkMs: 3600,
      timeoutSec: 12,
    });
    await admitted(a!);
    await sleep(1200);
    await restartKamailio(() => k.stop());
    await until('the connector to attach again', async () => (await connectorsAttached(k)) === 1);
    await expectBilledItsTalk(await run);
  });

  it('stops the calls Kamailio lost in a crash and meters new ones once it is back', async () => {
    await attach([url(gw1.port)]);
    const [a, b] = await soldIds(h, TALK, 2);
    const lost = caller({
      scenario: 'uac-hangup',
      rows: [[`${a}*33612345678`, 'X-Test: lost']],
      talkMs: 2600,
      timeoutSec: 10,
    });
    await admitted(a!);
    await sleep(1200);
    await restartKamailio(() => k.crash());
    const run1 = await lost;
    const [c1] = [...run1.calls.values()];
    const rec1 = await recordOfRun(run1);
    expect(rec1.cause).toBe('lost');
    expect(Number(rec1.sec)).toBeGreaterThanOrEqual(1);
    expect(Number(rec1.sec)).toBeLessThanOrEqual(billedSeconds(c1!.answerUs!, c1!.hangupUs ?? c1!.answerUs! + 2.6e6));
    await until('the connector to attach again', async () => (await connectorsAttached(k)) === 1);
    const run2 = await caller({
      scenario: 'uac-hangup',
      rows: [[`${b}*33612345678`, 'X-Test: after-restart']],
      talkMs: 1300,
    });
    expect(run2.code, run2.stdout).toBe(0);
    const [c2] = [...run2.calls.values()];
    expect(Number((await recordOfRun(run2)).sec)).toBe(billedSeconds(c2!.answerUs!, c2!.hangupUs!));
    expect((await audit(h.ctx)).problems).toEqual([]);
  });
});

/**
 * Prepaid calls through a real Kamailio (deploy/kamailio/kamailio.cfg), placed
 * by a real sipp and metered by the connector against a real gateway and
 * Redis: billing by the started-second rule, refusals as SIP answers, the
 * cut-off, Kamailio's fail-safe following a call's grants, and Kamailio
 * refusing prepaid calls while no connector is attached.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { KamailioConnector } from '../../src/kamailio/connector';
import { audit } from '../../src/ledger/audit';
import { idStatus, setIdState } from '../../src/ledger/ids';
import { keys } from '../../src/redis/keys';
import { jsonCall } from '../support/http';
import { idFields } from '../support/redis';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { billedSeconds } from '../../src/kamailio/billing';
import { sipCallIdOf } from '../../src/kamailio/call-id';
import { callRecords, luhnId, recordOf } from './records';
import {
  answeredDialogs,
  attachConnector,
  connectorsAttached,
  haveKamailio,
  listenEvents,
  runUac,
  sipInvite,
  sleep,
  startKamailio,
  startUas,
  stopAll,
  until,
  type KamailioChild,
  type Uas,
} from './stack';

const TALK = talkProduct({ name: 'talk-k', face: 1_000_000, price: 1_000_000 });
/** 100 micro-units a second everywhere (STD_RATES): 3 seconds of credit. */
const SHORT = talkProduct({ name: 'talk-3s', face: 300, price: 300 });
/** The same 3 seconds, for a call topped up while it talks. */
const TOPPED = talkProduct({ name: 'talk-topped', face: 300, price: 300 });
const NOWHERE = talkProduct({ name: 'talk-nowhere', plan: 'nowhere' });
/** 100 s of credit, shared by up to two calls, reserved 3 s at a time. */
const SLICES = talkProduct({ name: 'talk-slices', face: 10_000, price: 10_000, maxCalls: 2, grantSec: 3 });
/** 10 s of credit shared by up to two calls, reserved 3 s at a time: each call's last grant ends before its maxSec. */
const SHARED = talkProduct({ name: 'talk-shared', face: 1000, price: 1000, maxCalls: 2, grantSec: 3 });
/** kamailio.cfg's default. */
const GRACE_SEC = 2;

describe.skipIf(!haveKamailio())('kamailio: metered calls', () => {
  let h: Harness;
  let gw: Gateway;
  let k: KamailioChild;
  let uas: Uas;
  let connector: KamailioConnector;
  let dir: string;
  let tok: string;

  const attach = (to: KamailioChild = k): Promise<KamailioConnector> =>
    attachConnector(to, [`ws://127.0.0.1:${gw.port}/v1/switch`], tok);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-kamailio-'));
    h = await startHarness();
    await seedCatalog(h, [TALK, SHORT, TOPPED, NOWHERE, SLICES, SHARED]);
    tok = await token(h, 'switch', 'kamailio-test');
    gw = await gateway(h);
    uas = await startUas(dir);
    k = await startKamailio({ dir, pstnPort: uas.port });
    connector = await attach();
  });

  afterAll(async () => {
    await connector?.close(0);
    await gw?.close();
    await stopAll();
    await h?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('bills each answered call its started seconds, from the header and from the dial string', async () => {
    const [a, b] = await soldIds(h, TALK, 2);
    const run = await runUac({
      dir,
      kamailio: k,
      scenario: 'uac-hangup',
      rows: [
        [`${a}*33612345678`, 'X-Test: dial-string'],
        ['4420123456', `X-Prepaid-ID: ${b}`],
      ],
      talkMs: 2300,
    });
    expect(run.code, run.stdout).toBe(0);
    const records = await until('both call records', async () => {
      const r = await callRecords(h);
      return r.length === 2 ? r : undefined;
    });
    for (const sipCall of run.calls.values()) {
      const rec = records.find((r) => sipCallIdOf(r.call!) === sipCall.ci)!;
      expect(rec, sipCall.ci).toBeDefined();
      // The answered duration sipp measured, by the started-second rule (2.3 s: 3 s).
      expect(Number(rec.sec)).toBe(billedSeconds(sipCall.answerUs!, sipCall.hangupUs!));
      expect(rec.cause).toBe('hangup');
    }
    const byId = Object.fromEntries(records.map((r) => [r.dest, r]));
    expect(Number(byId['33612345678']!.cost)).toBe(3 * 100);
    expect(Number(byId['4420123456']!.cost)).toBe(3 * 200);
  });

  it('bills a caller that ignores Record-Route to its hang-up: its BYE without Route reaches the callee', async () => {
    // Until 2026-12-07 its ACK was dropped and its BYE answered 404 Not Here: the call stayed up,
    // billed on to its paid end, and the callee never heard the BYE.
    const [id] = await soldIds(h, TALK, 1);
    const run = await runUac({
      dir,
      kamailio: k,
      scenario: 'uac-norr',
      rows: [[`${id}*33612345678`, 'X-Test: no-route']],
      talkMs: 1300,
    });
    expect(run.code, run.stdout).toBe(0);
    const [call] = [...run.calls.values()];
    const rec = await recordOf(h, call!.ci);
    expect(rec.cause).toBe('hangup');
    expect(Number(rec.sec)).toBe(billedSeconds(call!.answerUs!, call!.hangupUs!));
    await until('the callee to log the BYE', () => uas.calls().get(call!.ci)?.byeUs);
  });

  it('cuts a call when its balance runs out: BYE to both sides, the call stopped', async () => {
    const [id] = await soldIds(h, SHORT, 1);
    const run = await runUac({
      dir,
      kamailio: k,
      scenario: 'uac-wait',
      rows: [[`${id}*33612345678`, 'X-Test: cut-off']],
    });
    expect(run.code, run.stdout).toBe(0);
    const [call] = [...run.calls.values()];
    const rec = await recordOf(h, call!.ci);
    expect(rec.cause).toBe('cutoff');
    expect(Number(rec.sec)).toBe(3);
    expect(Number(rec.bal)).toBe(0);
    // The callee got its BYE too (sent at all: cut-offs.test.ts). Over UDP a lost BYE is
    // retransmitted for up to 64 × T1 = 32 s, so wait that long: under load a copy may be dropped.
    const callee = await until(
      'the callee to log its BYE',
      () => {
        const c = uas.calls().get(call!.ci);
        return c?.byeUs ? c : undefined;
      },
      35_000,
    );
    // Never early: the BYE leaves once the 3 paid seconds are over. Timed at the callee, from just
    // before its 200 OK left to the BYE's arrival: a span that scheduling delays can only lengthen
    // (the caller's own times are not: a caller scheduled late to read the 200 OK sees the BYE early).
    expect((callee.byeUs! - callee.answerUs!) / 1000 - 3000).toBeGreaterThan(0);
    const lateMs = (call!.byeUs! - call!.answerUs!) / 1000 - 3000;
    console.log(`cut-off: BYE ${lateMs.toFixed(1)} ms after the balance ran out (at the caller)`);
    // The ID is now exhausted: its next call is refused with 402.
    const again = await runUac({
      dir,
      kamailio: k,
      scenario: 'uac-hangup',
      rows: [[`${id}*33612345678`, 'X-Test: exhausted']],
    });
    expect([...again.calls.values()][0]!.refused).toBe(402);
  }, 60_000);

  it('lets a call topped up while it talks go on past the maxSec of its start, billed exactly', async () => {
    const [id] = await soldIds(h, TOPPED, 1);
    const admin = await token(h, 'admin', 'kamailio-topup');
    const call = runUac({
      dir,
      kamailio: k,
      scenario: 'uac-hangup',
      rows: [[`${id}*33612345678`, 'X-Test: topped-up']],
      talkMs: 5500,
    });
    // 3 s of credit at start (maxSec 3); 10 s more a moment after the answer.
    await until('the call to be answered', async () => (await answeredDialogs(k)).length > 0);
    const topup = await jsonCall(gw, 'POST', `/v1/admin/ids/${id}/topup`, {
      token: admin,
      idem: `topped-${id}`,
      body: { amount: 1000 },
    });
    expect(topup).toMatchObject({ status: 200, json: { balance: expect.any(Number) } });
    const run = await call;
    // sipp hung up itself at 5.5 s: neither the connector nor Kamailio's fail-safe cut it at 3 s.
    expect(run.code, run.stdout).toBe(0);
    const [sipCall] = [...run.calls.values()];
    const rec = await recordOf(h, sipCall!.ci);
    expect(rec.cause).toBe('hangup');
    expect(Number(rec.sec)).toBe(billedSeconds(sipCall!.answerUs!, sipCall!.hangupUs!));
    expect(Number(rec.sec)).toBeGreaterThan(3);
    expect(Number(rec.cost)).toBe(Number(rec.sec) * 100);
    expect(await idFields(h, id!)).toMatchObject({ bal: String(1300 - Number(rec.cost)) });
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it("moves Kamailio's fail-safe on at each re-grant of a call granted in slices", async () => {
    const [id] = await soldIds(h, SLICES, 1);
    let talking = true;
    const call = runUac({
      dir,
      kamailio: k,
      scenario: 'uac-hangup',
      rows: [[`${id}*33612345678`, 'X-Test: slices']],
      talkMs: 7500,
    }).finally(() => (talking = false));
    // Seconds from the answer to the dialog's timeout, as Kamailio holds it while the call talks.
    const lifetimes: number[] = [];
    while (talking) {
      for (const d of await answeredDialogs(k)) lifetimes.push(d.timeout - d.startTs);
      await sleep(200);
    }
    const run = await call;
    // Kamailio did not cut it at its first grant plus grace (5 s): the re-grants moved the timeout on.
    expect(run.code, run.stdout).toBe(0);
    expect(lifetimes.length).toBeGreaterThan(10);
    // First the first grant plus grace (3 + 2 s, within Kamailio's whole seconds), never maxSec (100 s):
    // a connector lost now would cost at most a slice, not the shared balance.
    expect(lifetimes[0]).toBeGreaterThanOrEqual(3 + GRACE_SEC - 1);
    expect(lifetimes[0]).toBeLessThanOrEqual(3 + GRACE_SEC + 1);
    // Re-granted at seconds 2, 4 and 6 (to 5, 7, 9 s): the timeout moved past the first grant, never far ahead.
    expect(Math.max(...lifetimes)).toBeGreaterThanOrEqual(7 + GRACE_SEC);
    expect(Math.max(...lifetimes)).toBeLessThanOrEqual(9 + GRACE_SEC + 2);
    const [sipCall] = [...run.calls.values()];
    const rec = await recordOf(h, sipCall!.ci);
    expect(rec.cause).toBe('hangup');
    expect(Number(rec.sec)).toBe(billedSeconds(sipCall!.answerUs!, sipCall!.hangupUs!));
    expect(Number(rec.cost)).toBe(Number(rec.sec) * 100);
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('two calls sharing a balance are cut at their final grants, ordered before the paid time ends', async () => {
    const [id] = await soldIds(h, SHARED, 1);
    const { hash, bucket } = h.ctx.ids.hash(id!);
    // When each session's cut-off was ordered, by Tessera's clock (ms), polled while the calls run.
    const cutSeen = new Map<string, number>();
    let running = true;
    const run = runUac({
      dir,
      kamailio: k,
      scenario: 'uac-wait',
      rows: [
        [`${id}*33612345678`, 'X-Test: shared-a'],
        [`${id}*33612345678`, 'X-Test: shared-b'],
      ],
    }).finally(() => (running = false));
    while (running) {
      for (const key of await h.r.keys(keys.call(bucket, 'kamailio-test:*'))) {
        if (cutSeen.has(key)) continue;
        const [idh, cut] = await h.r.hmget(key, 'idh', 'cut');
        if (idh === hash && cut) cutSeen.set(key, Date.now());
      }
      await sleep(10);
    }
    const done = await run;
    expect(done.code, done.stdout).toBe(0);
    const records = await until('both call records', async () => {
      const r = (await callRecords(h)).filter((x) => x.id === hash);
      return r.length === 2 ? r : undefined;
    });
    // The balance went to the two calls, none of it unpaid.
    expect(records.reduce((sum, r) => sum + Number(r.cost), 0)).toBe(1000);
    expect(records.map((r) => r.short)).toEqual(['0', '0']);
    expect((await idFields(h, id!)).bal).toBe('0');
    let beforeMaxSec = 0;
    for (const rec of records) {
      const sipCall = done.calls.get(sipCallIdOf(rec.call!)!)!;
      expect(rec.cause, rec.call).toBe('cutoff');
      // Never early: the BYE leaves once the call's paid seconds are over.
      expect((sipCall.byeUs! - sipCall.answerUs!) / 1000).toBeGreaterThan(Number(rec.sec) * 1000 - 1);
      const session = keys.call(bucket, `kamailio-test:${rec.call!}`);
      const [ans, maxs] = (await h.r.hmget(session, 'ans', 'maxs')).map(Number);
      if (Number(rec.sec) >= maxs!) continue;
      // Its grant went final below the maxSec of its start: the tick of its last paid second
      // still went early, so the cut-off was known before that second ended, whatever the round trip.
      beforeMaxSec++;
      expect(cutSeen.get(session)! - ans!, rec.call).toBeLessThan(Number(rec.sec) * 1000 - 20);
    }
    expect(beforeMaxSec).toBeGreaterThan(0);
    expect((await audit(h.ctx)).problems).toEqual([]);
  }, 60_000);

  it('refuses unknown, blocked, unrated, over-limit and missing IDs with the documented SIP codes', async () => {
    const [blocked, busy] = await soldIds(h, TALK, 2);
    const [unrated] = await soldIds(h, NOWHERE, 1);
    await setIdState(h.ctx, blocked!, 'block');
    // One live call on `busy` (maxCalls 1) while the others are tried.
    const live = runUac({
      dir,
      kamailio: k,
      scenario: 'uac-hangup',
      rows: [[`${busy}*33612345678`, 'X-Test: live']],
      talkMs: 2500,
    });
    await until('the live call to be admitted', async () => (await activeCalls(h, busy!)) === 1);
    const run = await runUac({
      dir,
      kamailio: k,
      scenario: 'uac-hangup',
      rows: [
        [`${luhnId('123456789012345')}*33612345678`, 'X-Test: unknown'],
        [`${blocked}*33612345678`, 'X-Test: blocked'],
        [`${unrated}*33612345678`, 'X-Test: no-rate'],
        [`${busy}*33612345678`, 'X-Test: busy'],
        // Longer than any ID the protocol takes: a wrong ID, not a wrong destination.
        [`${'4'.repeat(60)}*33612345678`, 'X-Test: too-long'],
        // No ID at all: refused, not relayed to the PSTN gateway unmetered.
        ['33612345678', 'X-Test: no-id'],
      ],
    });
    expect(run.code, run.stdout).toBe(0);
    expect([...run.calls.values()].map((c) => c.refused)).toEqual([404, 403, 484, 486, 404, 403]);
    // Each refusal says why, for the IVR's announcement and the operator's logs.
    for (const [ruser, code, reason] of [
      [`${luhnId('123456789012345')}*33612345678`, 404, 'unknown_id'],
      [`${blocked}*33612345678`, 403, 'blocked'],
      [`${unrated}*33612345678`, 484, 'no_rate'],
      ['33612345678', 403, 'missing_field'],
    ] as const) {
      const answer = await sipInvite(k, ruser);
      expect([answer.code, answer.headers.get('x-prepaid-reason')], ruser).toEqual([code, reason]);
    }
    expect((await live).code).toBe(0);
  });

  it('a caller keying unknown IDs is throttled (403) alone: other callers of the switch still get through', async () => {
    const [id] = await soldIds(h, TALK, 1);
    const limit = h.cfg.guessLimit;
    const unknown = Array.from({ length: limit + 2 }, (_, i): [string, string] => [
      `${luhnId(String(123456789000000 + i))}*33612345678`,
      `X-Test: guess-${i}`,
    ]);
    const guesser = await runUac({
      dir,
      kamailio: k,
      scenario: 'uac-hangup',
      ip: '127.0.0.2',
      rate: 50,
      limit: 1,
      rows: [...unknown, [`${id}*33612345678`, 'X-Test: guesser-real']],
    });
    expect(guesser.code, guesser.stdout).toBe(0);
    // Up to the limit and the one over it: 404; then the caller is refused, its real ID too.
    expect([...guesser.calls.values()].map((c) => c.refused)).toEqual([
      ...Array<number>(limit + 1).fill(404),
      403,
      403,
    ]);
    const other = await runUac({
      dir,
      kamailio: k,
      scenario: 'uac-hangup',
      rows: [[`${id}*33612345678`, 'X-Test: other-caller']],
    });
    expect(other.code, other.stdout).toBe(0);
    expect([...other.calls.values()].map((c) => c.refused)).toEqual([undefined]);
  });

  it('sends an admitted call to the PSTN gateway whatever host its R-URI names: no open proxy', async () => {
    const [id] = await soldIds(h, TALK, 1);
    const run = await runUac({
      dir,
      kamailio: k,
      scenario: 'uac-elsewhere',
      rows: [[`${id}*33612345678`, 'X-Test: elsewhere']],
      timeoutSec: 10,
    });
    expect(run.code, run.stdout).toBe(0);
    expect([...run.calls.values()].map((c) => c.refused)).toEqual([undefined]);
  });

  it("a second dialog with a live call's Call-ID is a call of its own: its CANCEL leaves the live call metered", async () => {
    const [id] = await soldIds(h, TALK, 1);
    const live = runUac({
      dir,
      kamailio: k,
      scenario: 'uac-hangup',
      rows: [[`${id}*33612345678`, 'X-Test: first-dialog']],
      talkMs: 4000,
    });
    const [dialog] = await until('the live call to be answered', async () => {
      const d = await answeredDialogs(k);
      return d.length === 1 ? d : undefined;
    });
    // The same Call-ID, a new From-tag: another dialog, on the same ID (maxCalls 1), cancelled at once.
    const second = await sipInvite(k, `${id}*33612345678`, { callId: dialog!.ci, cancel: true });
    expect([486, 487]).toContain(second.code);
    const run = await live;
    expect(run.code, run.stdout).toBe(0);
    const [sipCall] = [...run.calls.values()];
    const rec = await recordOf(h, sipCall!.ci);
    // Billed its whole talk: the second dialog's failure did not stop it at 0 s.
    expect(rec.cause).toBe('hangup');
    expect(Number(rec.sec)).toBe(billedSeconds(sipCall!.answerUs!, sipCall!.hangupUs!));
    expect(Number(rec.cost)).toBe(Number(rec.sec) * 100);
    expect(await callRecords(h, sipCall!.ci)).toHaveLength(1);
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('admits an INVITE sent again with the Call-ID of a refused one (overlap dialling, RFC 3578)', async () => {
    const [id] = await soldIds(h, NOWHERE, 1);
    const callId = `overlap-${Math.random().toString(36).slice(2)}@127.0.0.1`;
    // Too few digits for the ID's rate plan (999...): 484, and the caller dials on under the same Call-ID.
    const first = await sipInvite(k, `${id}*99`, { callId, fromTag: 'overlap' });
    expect([first.code, first.headers.get('x-prepaid-reason')]).toEqual([484, 'no_rate']);
    const second = await sipInvite(k, `${id}*9991234`, { callId, fromTag: 'overlap', cseq: 2, talkMs: 1500 });
    expect(second.code).toBe(200);
    const rec = await recordOf(h, callId);
    expect(rec.cause).toBe('hangup');
    expect(Number(rec.sec)).toBe(2);
  });

  it('meters a call whose Call-ID or ID JSON must escape: an apostrophe, quotes, a TAB', async () => {
    const [id] = await soldIds(h, TALK, 1);
    const { hash } = h.ctx.ids.hash(id!);
    // An apostrophe and a double quote are legal in a Call-ID (RFC 3261's `word`).
    const callId = `o'brien"${Math.random().toString(36).slice(2)}@probe`;
    const answered = await sipInvite(k, `${id}*33612345678`, { callId, talkMs: 1500 });
    expect(answered.code).toBe(200);
    const rec = await until('the record of the call', async () => (await callRecords(h)).find((r) => r.id === hash));
    // Every event of the call reached the connector: answered, hung up, billed.
    expect(rec.cause).toBe('hangup');
    expect(Number(rec.sec)).toBe(2);
    // An ID header with a TAB, a backslash or double quotes reaches Tessera, which answers it (not a lost
    // event: 503 after ADMIT_TIMEOUT_MS). Spaced out, the ID is still the ID; the others are no IDs.
    const answers = [];
    for (const written of [`${id!.slice(0, 4)}\t${id!.slice(4)}`, `${id}\\`, `"${id}"`]) {
      const answer = await sipInvite(k, '33612345678', { extra: [`X-Prepaid-ID: ${written}`] });
      answers.push([answer.code, answer.headers.get('x-prepaid-reason')]);
    }
    expect(answers).toEqual([
      [200, undefined],
      [404, 'bad_format'],
      [404, 'bad_format'],
    ]);
  });

  it("refuses at once an INVITE whose Call-ID is no UTF-8: no event with the call before's strings", async () => {
    // One SIP worker: the strings of the call before are the ones its variables still hold.
    const single = await startKamailio({ dir, pstnPort: uas.port, children: 1 });
    const listener = await listenEvents(single);
    let c: KamailioConnector | undefined;
    try {
      c = await attach(single);
      const [before, next] = await soldIds(h, TALK, 2);
      expect((await sipInvite(single, `${before}*33612345678`, { talkMs: 500 })).code).toBe(200);
      // A raw 0xff byte: jansson has no JSON string for it.
      const callId = `evil-\xff-${Math.random().toString(36).slice(2)}@probe`;
      const refused = await sipInvite(single, `${next}*33612345678`, { callId, encoding: 'latin1' });
      expect([refused.code, refused.headers.get('x-prepaid-reason')]).toEqual([400, 'bad_value']);
      // The worker's next event comes after any the refused INVITE sent: then every one is in.
      expect((await sipInvite(single, `${next}*33612345678`)).code).toBe(200);
      await until('the next call to end', () => listener.events.find((e) => e.ev === 'end' && e.id === next));
      expect(listener.unparsed).toEqual([]);
      expect(listener.events.filter((e) => e.ev === 'invite').map((e) => e.id)).toEqual([before, next]);
      expect(listener.events.filter((e) => e.id === before).map((e) => e.ev)).toEqual(['invite', 'answer', 'end']);
    } finally {
      void c?.close();
      listener.close();
      await single.stop();
    }
  });

  it('refuses an initial INVITE with a forged To-tag: it would skip metering, or go anywhere unmetered', async () => {
    const [id] = await soldIds(h, TALK, 1);
    const run = await runUac({
      dir,
      kamailio: k,
      scenario: 'uac-forged',
      rows: [
        [`33612345678@127.0.0.1:${uas.port}`, `X-Prepaid-ID: ${id}`],
        [`${id}*33612345678@127.0.0.1:${uas.port}`, 'X-Test: dial-string'],
        // No ID at all, to a host of the caller's choice: an open proxy if relayed.
        [`33612345678@127.0.0.1:${uas.port}`, 'X-Test: no-id'],
      ],
      talkMs: 500,
    });
    expect(
      [...run.calls.values()].map((c) => c.refused),
      run.stdout,
    ).toEqual([481, 481, 481]);
    expect(await idFields(h, id!)).toMatchObject({ bal: String(TALK.face), act: '0' });
  });

  it('with RELAY_UNMETERED, relays calls without an ID and their BYEs, and still no forged in-dialog INVITE', async () => {
    const unmetered = await startKamailio({ dir, pstnPort: uas.port, defines: ['RELAY_UNMETERED'] });
    try {
      const call = await runUac({
        dir,
        kamailio: unmetered,
        scenario: 'uac-hangup',
        rows: [['33612345678', 'X-Test: unmetered']],
        talkMs: 500,
      });
      // Answered and hung up: its BYE went through Kamailio to the callee.
      expect(call.code, call.stdout).toBe(0);
      const [sipCall] = [...call.calls.values()];
      await until('the callee to log its BYE', () => uas.calls().get(sipCall!.ci)?.byeUs);
      const forged = await runUac({
        dir,
        kamailio: unmetered,
        scenario: 'uac-forged',
        rows: [[`33612345678@127.0.0.1:${uas.port}`, 'X-Test: forged-unmetered']],
        talkMs: 500,
      });
      expect(
        [...forged.calls.values()].map((c) => c.refused),
        forged.stdout,
      ).toEqual([481]);
    } finally {
      await unmetered.stop();
    }
  });

  it("rates a header-form call by the number alone, its R-URI user's parameters left for the PSTN gateway", async () => {
    const [id] = await soldIds(h, TALK, 1);
    // Number portability parameters, as carriers send them.
    const answer = await sipInvite(k, '+33612345678;npdi;rn=+33699999999', {
      extra: [`X-Prepaid-ID: ${id}`],
      talkMs: 200,
    });
    expect([answer.code, answer.headers.get('x-prepaid-reason')]).toEqual([200, undefined]);
    const { hash } = h.ctx.ids.hash(id!);
    const rec = await until('the record of the call', async () => (await callRecords(h)).find((r) => r.id === hash));
    expect([rec.dest, rec.cause]).toEqual(['33612345678', 'hangup']);
  });

  it('reads a dial string escaped, E.164 or with parameters, as a phone sends it', async () => {
    // RFC 3261 lets the user part be escaped: a phone dialling +33... sends %2B or '+', a '*' may
    // come as %2A, and ;user=phone names the user a telephone number (a URI parameter, some put
    // it in the user too). Until 2026-12-07 these were refused 484, the %2A one 403 (no ID).
    const forms: [string, string?][] = [
      ['*%2B33612345678'],
      ['*+33612345678', ';user=phone'],
      ['%2A33612345678'],
      ['%2a%2B33612345678', ';user=phone'],
      ['*33612345678;user=phone'],
    ];
    const ids = await soldIds(h, TALK, forms.length);
    const answers = await Promise.all(
      forms.map(([dial, uriParams], i) => sipInvite(k, `${ids[i]}${dial}`, { uriParams, talkMs: 200 })),
    );
    expect(answers.map((a) => [a.code, a.headers.get('x-prepaid-reason')])).toEqual(forms.map(() => [200, undefined]));
    for (const id of ids) {
      const { hash } = h.ctx.ids.hash(id);
      const rec = await until(`the record of ${id}`, async () => (await callRecords(h)).find((r) => r.id === hash));
      expect([rec.dest, rec.cause]).toEqual(['33612345678', 'hangup']);
    }
  });

  it('refuses a dial string whose destination is no number 484, with RELAY_UNMETERED too: never relayed unmetered', async () => {
    const [id] = await soldIds(h, TALK, 1);
    const unmetered = await startKamailio({ dir, pstnPort: uas.port, defines: ['RELAY_UNMETERED'] });
    try {
      // A '#' the phone appended (escaped in the URI), letters, a second '*'.
      // A broken escape (%ZZ, a %2 cut off): no number either, not a call without an ID.
      const broken = [`${id}*%ZZ33612345678`, `${id}*33612345678%2`, `${id}%ZZ33612345678`];
      for (const ruser of [`${id}*33612345678%23`, `${id}*336abc`, `${id}**33612345678`, ...broken]) {
        for (const to of [k, unmetered]) {
          const answer = await sipInvite(to, ruser, { talkMs: 200 });
          expect([answer.code, answer.headers.get('x-prepaid-reason')], ruser).toEqual([484, 'bad_value']);
        }
      }
    } finally {
      await unmetered.stop();
    }
  });

  it('refuses prepaid calls with 503 while no connector is attached', async () => {
    void connector.close();
    await until('the connector to detach', async () => (await connectorsAttached(k)) === 0);
    const [id] = await soldIds(h, TALK, 1);
    const run = await runUac({
      dir,
      kamailio: k,
      scenario: 'uac-hangup',
      rows: [[`${id}*33612345678`, 'X-Test: fail-closed']],
    });
    expect([...run.calls.values()][0]?.refused, run.stdout).toBe(503);
    const answer = await sipInvite(k, `${id}*33612345678`);
    expect([answer.code, answer.headers.get('x-prepaid-reason')]).toEqual([503, 'unavailable']);
    connector = await attach();
    const ok = await runUac({
      dir,
      kamailio: k,
      scenario: 'uac-hangup',
      rows: [[`${id}*33612345678`, 'X-Test: back']],
      talkMs: 500,
    });
    expect(ok.code, ok.stdout).toBe(0);
    expect([...ok.calls.values()][0]!.answerUs).toBeDefined();
  });
});

async function activeCalls(h: Harness, id: string): Promise<number> {
  const s = await idStatus(h.ctx, id);
  return s.ok ? s.activeCalls : -1;
}

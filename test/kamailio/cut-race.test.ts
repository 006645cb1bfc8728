/**
 * Hang-ups racing the connector's cut-off. A call whose caller hangs up in
 * the milliseconds between the end of its paid seconds and the cut is
 * billed its paid seconds, as the call the cut reaches is, not one more
 * unpaid second (taking what was left on the ID and recording the rest
 * short). A call whose BYE beat the cut of a blocked ID is billed the
 * seconds Kamailio timed, not the second the cut would have added.
 * Kamailio is stood in for by a TCP peer speaking evapi's netstrings (and
 * an HTTP one for its RPC), so the BYE lands in the window every time.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { setIdState } from '../../src/ledger/ids';
import { KamailioConnector } from '../../src/kamailio/connector';
import { encodeNetstring, NetstringReader } from '../../src/kamailio/netstring';
import { createLogger } from '../../src/observability/log';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { jsonCall } from '../support/http';
import { LinkGate } from '../support/link-gate';
import { captureLog, type LogLine } from '../support/log';
import { idFields } from '../support/redis';
import { sleep, until } from '../support/wait';
import { callRecords, recordOf } from './records';

/** 250 micro-units at 100 a second: 2 paid seconds, 50 left over. */
const SHORT = talkProduct({ name: 'talk-2s', face: 250, price: 250 });
/** 450 micro-units at 100 a second: 4 paid seconds, 50 left over. */
const FOUR = talkProduct({ name: 'talk-4s', face: 450, price: 450 });

let h: Harness;
let gw: Gateway;
let server: Server;
let kamailio: Socket | undefined;
let connector: KamailioConnector;
const replies: Record<string, unknown>[] = [];
/** The connector's '.' acknowledgements: it writes one once it has read an event it does not answer. */
let acks = 0;
/** What Kamailio does with a dlg.end_dlg before it answers (success, as for a dialog already ended too). */
let onEndDialog: (() => Promise<void>) | undefined;
/** What Kamailio does once it has answered a dlg.end_dlg. */
let afterEndDialog: (() => void) | undefined;
/** dlg.end_dlg requests the connector gave up on (closed before their answer: its RPC timeout). */
let abandoned = 0;
/** The method of every RPC request, in order. */
const rpcMethods: string[] = [];
const rpc = createHttpServer((req: IncomingMessage, res: ServerResponse) => {
  let body = '';
  req.on('data', (d: Buffer) => (body += d.toString()));
  res.on('close', () => {
    if (!res.writableFinished) abandoned++;
  });
  res.on('finish', () => afterEndDialog?.());
  req.on('end', () => {
    rpcMethods.push(String((JSON.parse(body) as { method?: unknown }).method));
    void (onEndDialog?.() ?? Promise.resolve()).then(() =>
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ jsonrpc: '2.0', result: {}, id: 1 })),
    );
  });
});
const send = (e: Record<string, unknown>): boolean => kamailio!.write(encodeNetstring(JSON.stringify(e)));

/** A connector on the stand-in Kamailio and the test's gateway, started. */
async function attach(
  gateway = `ws://127.0.0.1:${gw.port}/v1/switch`,
  log = createLogger('silent'),
  tickLeadMs?: number,
): Promise<KamailioConnector> {
  const c = new KamailioConnector({
    evapiHost: '127.0.0.1',
    evapiPort: (server.address() as AddressInfo).port,
    // The cut's BYE goes nowhere: only the caller's BYE ends the dialog.
    rpcUrl: `http://127.0.0.1:${(rpc.address() as AddressInfo).port}/RPC`,
    gateways: [gateway],
    token: await token(h, 'switch', 'kam-cut'),
    log,
    tickLeadMs,
  });
  c.start();
  return c;
}

interface StandInCall {
  ci: string;
  he: number;
  hi: number;
}

/** Sends the call's INVITE as transaction `ti` and waits for the connector's admission. */
async function admit(call: StandInCall & { id: string | undefined; dest: string }, ti: number): Promise<void> {
  send({ ev: 'invite', ti, tl: ti, ...call, ts: Date.now() / 1000 });
  await until(() => replies.some((r) => r.ti === ti && r.sec !== undefined), 5000);
}

/** Waits until Tessera's session of the call has `field` (`ans`: answered; `cut`: cut off). */
async function sessionHas(call: StandInCall, field: string): Promise<void> {
  await until(async () => {
    const [session] = await h.r.keys(`ts:*:call:kam-cut:${call.ci}:${call.he}.${call.hi}`);
    return session !== undefined && Boolean(await h.r.hget(session, field));
  }, 5000);
}

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [SHORT, FOUR]);
  gw = await gateway(h);
  server = createServer((s) => {
    kamailio = s;
    const reader = new NetstringReader();
    s.on('data', (chunk: Buffer) => {
      for (const p of reader.push(chunk)) {
        if (p.startsWith('{')) replies.push(JSON.parse(p) as Record<string, unknown>);
        else acks++;
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => rpc.listen(0, '127.0.0.1', r));
  connector = await attach();
  await until(() => kamailio !== undefined);
});

afterAll(async () => {
  await connector?.close(0);
  await new Promise((r) => server?.close(r));
  rpc.closeAllConnections();
  await new Promise((r) => rpc.close(r));
  await gw?.close();
  await h?.stop();
});

describe('a hang-up racing the cut-off at the end of the paid seconds', () => {
  it('is billed the paid seconds, nothing short', async () => {
    const [id] = await soldIds(h, SHORT, 1);
    const call = { ci: 'cut-race', he: 7, hi: 9, id, dest: '33612345678' };
    await admit(call, 1);
    const ats = Date.now() / 1000;
    send({ ev: 'answer', ...call, ts: ats });
    // The tick of the last paid second (sent early) brought the cut-off: the cut is on its way.
    await sessionHas(call, 'cut');
    // The caller's BYE, 2 ms past the 2 paid seconds by Kamailio's clock, reaches the connector first.
    send({ ev: 'end', ...call, ats, ts: ats + 2.002 });
    const rec = await recordOf(h, 'cut-race');
    // Ended past its paid seconds, as another connector's cut on this Kamailio would end it: a cut-off.
    expect([rec.cause, rec.sec, rec.cost, rec.short]).toEqual(['cutoff', '2', '200', '0']);
    expect((await idFields(h, id!)).bal).toBe('50');
  });
});

describe("a hang-up racing a blocked ID's cut-off", () => {
  it('is billed the seconds Kamailio timed', async () => {
    const [id] = await soldIds(h, SHORT, 1);
    const call = { ci: 'block-race', he: 8, hi: 9, id, dest: '33612345678' };
    await admit(call, 2);
    // The caller's BYE reached Kamailio 1 ms before the second the cut comes at ended: its end
    // event left before Kamailio handled dlg.end_dlg, and the answer comes once the connector read it.
    let ats = 0;
    onEndDialog = async () => {
      const before = acks;
      send({ ev: 'end', ...call, ats, ts: ats + 0.999 });
      await until(() => acks > before, 5000);
    };
    ats = Date.now() / 1000;
    send({ ev: 'answer', ...call, ts: ats });
    // Blocked once it talks: the tick of its first second brings the cut-off, and the cut.
    await sessionHas(call, 'ans');
    await setIdState(h.ctx, id!, 'block');
    const rec = await recordOf(h, 'block-race');
    onEndDialog = undefined;
    expect([rec.sec, rec.cost, rec.cause]).toEqual(['1', '100', 'cutoff']);
  });

  it("is billed the seconds Kamailio timed when its end event trails dlg.end_dlg's answer", async () => {
    const [id] = await soldIds(h, SHORT, 1);
    const call = { ci: 'block-trail', he: 10, hi: 9, id, dest: '33612345678' };
    await admit(call, 4);
    // The BYE ended the dialog before Kamailio handled dlg.end_dlg, but evapi's process relayed
    // its event after the RPC's answer: through real Kamailio, 19 of 300 BYEs handled up to 3 ms
    // before the RPC was sent had their end events read 0.5-4 ms after its answer.
    let ats = 0;
    afterEndDialog = () => {
      afterEndDialog = undefined;
      send({ ev: 'end', ...call, ats, ts: ats + 0.999 });
    };
    ats = Date.now() / 1000;
    send({ ev: 'answer', ...call, ts: ats });
    await sessionHas(call, 'ans');
    await setIdState(h.ctx, id!, 'block');
    const rec = await recordOf(h, 'block-trail');
    afterEndDialog = undefined;
    expect([rec.sec, rec.cost, rec.cause]).toEqual(['1', '100', 'cutoff']);
  });
});

describe('a cut whose dlg.end_dlg hangs (Kamailio stalled, its RPC socket gone)', () => {
  it('is stopped without waiting for the RPC to time out, billed the same', async () => {
    const [id] = await soldIds(h, SHORT, 1);
    const call = { ci: 'hung-cut', he: 9, hi: 9, id, dest: '33612345678' };
    await admit(call, 3);
    // Kamailio never answers: the connector's RPC gives up after its timeout (2 s).
    let release = (): void => undefined;
    onEndDialog = () => new Promise<void>((r) => (release = r));
    const ats = Date.now() / 1000;
    send({ ev: 'answer', ...call, ts: ats });
    await sessionHas(call, 'ans');
    const before = abandoned;
    await setIdState(h.ctx, id!, 'block');
    const rec = await recordOf(h, 'hung-cut');
    // Stopped while dlg.end_dlg still waited: until 2026-12-07 the stop waited for the RPC's
    // timeout, 2 s for each 16 cuts at once (the RPC's sockets), the ID busy meanwhile.
    expect(abandoned).toBe(before);
    // Cut at its first second's tick: two seconds started, as before.
    expect([rec.sec, rec.cost, rec.cause]).toEqual(['2', '200', 'cutoff']);
    onEndDialog = undefined;
    release();
  });
});

/**
 * A call cut off (its ID blocked once it is answered) whose first dlg.end_dlg Kamailio never
 * answers: the connector's RPC gives up on it after 2 s. `release` lets that answer go.
 */
async function cutUnanswered(ci: string, he: number, ti: number) {
  const [id] = await soldIds(h, SHORT, 1);
  const call = { ci, he, hi: 9, id, dest: '33612345678' };
  await admit(call, ti);
  let answer = (): void => undefined;
  onEndDialog = () => {
    onEndDialog = undefined;
    return new Promise<void>((r) => (answer = r));
  };
  const release = (): void => {
    onEndDialog = undefined;
    answer();
  };
  const ends = (): number => rpcMethods.filter((m) => m === 'dlg.end_dlg').length;
  const before = { ends: ends(), abandoned };
  try {
    send({ ev: 'answer', ...call, ts: Date.now() / 1000 });
    await sessionHas(call, 'ans');
    await setIdState(h.ctx, id!, 'block');
  } catch (err) {
    release();
    throw err;
  }
  return { ends, before, release };
}

describe('a cut whose dlg.end_dlg gets no answer (Kamailio too busy for the RPC)', () => {
  it('sends it again until Kamailio answers: the call does not talk on to its fail-safe', async () => {
    // Until 2026-12-08 the cut was given up when its dlg.end_dlg failed: the call was stopped, and
    // its dialog talked on, unmetered, to Kamailio's fail-safe (for a taken-up call the reaper had
    // closed, the ID's whole balance).
    const cut = await cutUnanswered('unanswered-cut', 15, 15);
    try {
      expect((await recordOf(h, 'unanswered-cut')).cause).toBe('cutoff');
      await until(() => cut.ends() === cut.before.ends + 2, 10_000);
      expect(abandoned).toBe(cut.before.abandoned + 1);
    } finally {
      cut.release();
    }
  });
});

describe('a connector closed while its cut waits to send dlg.end_dlg again', () => {
  it('sends it no more once closed', async () => {
    // Until 2026-12-08 the retry's timer outlived the close: a dlg.end_dlg left the closed
    // connector 0.5-8 s later, on an RPC agent already closed (the dialog is the next one's).
    const attached = kamailio;
    const own = await attach();
    await until(() => kamailio !== attached);
    const cut = await cutUnanswered('closed-retry', 16, 16);
    try {
      // The first dlg.end_dlg timed out (the RPC's 2 s): its retry is due 500 ms on.
      await until(() => abandoned > cut.before.abandoned, 10_000);
      await own.close(0);
      await sleep(1500);
      expect(cut.ends()).toBe(cut.before.ends + 1);
    } finally {
      cut.release();
    }
  });
});

describe('a connector stopped while its cut waits for dlg.end_dlg', () => {
  it('still sends the stop: the call is not left to the reaper', async () => {
    // A connector of its own (the stand-in sends events to the last one attached), stopped
    // (SIGTERM: close()) once Kamailio has its dlg.end_dlg. Until 2026-12-07 the stop was
    // dropped: the call was reaped `stale` 10-15 s later, billed to its last tick.
    const attached = kamailio;
    const second = await attach();
    await until(() => kamailio !== attached);
    const [id] = await soldIds(h, SHORT, 1);
    const call = { ci: 'closed-cut', he: 11, hi: 9, id, dest: '33612345678' };
    await admit(call, 5);
    onEndDialog = () => {
      onEndDialog = undefined;
      void second.close();
      return Promise.resolve();
    };
    send({ ev: 'answer', ...call, ts: Date.now() / 1000 });
    await sessionHas(call, 'ans');
    await setIdState(h.ctx, id!, 'block');
    const rec = await recordOf(h, 'closed-cut', 5000);
    expect([rec.sec, rec.cost, rec.cause]).toEqual(['2', '200', 'cutoff']);
  });
});

describe('a call whose gateway is out of reach at its paid end', () => {
  it('talks on when the link comes back before that end with a top-up', async () => {
    // No gateway to ask at the last paid second's tick (800 ms before its end here, and 4 paid
    // seconds: the test has its setup done 3 s after the answer, under load too): the connector
    // orders its own cut at the paid end. The link comes back the moment it has (not at a time
    // of the test's clock: a tick stalled past it found the link back, ordered no cut, and the
    // test passed with nothing to call off), and the tick's answer re-grants the call (topped up
    // before). Until 2026-12-07 the cut went all the same: the caller was cut off with money
    // on the ID. The link's return and the answer must come before that end: at the default
    // lead, 200 ms, a machine under load missed it once in 11 runs, and the cut went.
    const gate = new LinkGate(gw.port);
    const call = { ci: 'back-in-time', he: 12, hi: 9, id: '', dest: '33612345678' };
    const ordered = (l: LogLine): boolean =>
      l.msg === 'no word of more at the paid end: cut ordered' && l.call === `${call.ci}:${call.he}.${call.hi}`;
    const { log, lines } = captureLog('info', (l) => {
      if (ordered(l)) gate.open();
    });
    const attached = kamailio;
    const gated = await attach(await gate.listen(), log, 800);
    await until(() => kamailio !== attached);
    try {
      [call.id] = (await soldIds(h, FOUR, 1)) as [string];
      const id = call.id;
      await admit(call, 6);
      const ats = Date.now() / 1000;
      send({ ev: 'answer', ...call, ts: ats });
      await sessionHas(call, 'ans');
      // Topped up before the link goes: no tick before the last paid second's asks for its answer,
      // so only that one's, once the link is back, can tell the connector of it.
      const topup = await jsonCall(gw, 'POST', `/v1/admin/ids/${id}/topup`, {
        token: await token(h, 'admin', 'kam-cut-topup'),
        idem: `back-in-time-${id}`,
        body: { amount: 1000 },
      });
      expect(topup.status).toBe(200);
      gate.shut();
      await until(() => gate.waiting > 0, 5000);
      // Ticked on past its first 4 paid seconds (or stopped, cut at them).
      await until(async () => {
        if ((await callRecords(h, call.ci)).length > 0) return true;
        const [session] = await h.r.keys(`ts:*:call:kam-cut:${call.ci}:${call.he}.${call.hi}`);
        return Number(await h.r.hget(session!, 'used')) >= 5;
      }, 8000);
      send({ ev: 'end', ...call, ats, ts: ats + 5.4 });
      const rec = await recordOf(h, 'back-in-time', 5000);
      // The case tested happened: a cut ordered at the 4 paid seconds, the link down then.
      expect(lines.filter(ordered).map((l) => [l.sec, l.gatewayUp])).toEqual([[4, false]]);
      expect([rec.sec, rec.cost, rec.cause]).toEqual(['6', '600', 'hangup']);
    } finally {
      await gated.close(0);
      await gate.close();
    }
  });
});

describe('a redial on a maxCalls-1 ID cut off at its paid end', () => {
  it('is admitted at once, though Kamailio sends no end event for the cut', async () => {
    // Kamailio loses the end event of about one dialog in ten ended by dlg.end_dlg. The cut's
    // stop waited 100 ms after the RPC's answer for it, its ID busy: a caller topped up who
    // redialled the moment the BYE came was refused 486 concurrent_limit until 2026-12-07.
    const attached = kamailio;
    const own = await attach();
    await until(() => kamailio !== attached);
    try {
      const [id] = await soldIds(h, SHORT, 1);
      const call = { ci: 'cut-redial', he: 13, hi: 9, id, dest: '33612345678' };
      await admit(call, 7);
      send({ ev: 'answer', ...call, ts: Date.now() / 1000 });
      // Tessera's cut-off came at the last paid second's early tick: a top-up now goes to the redial.
      await sessionHas(call, 'cut');
      const topup = await jsonCall(gw, 'POST', `/v1/admin/ids/${id}/topup`, {
        token: await token(h, 'admin', 'kam-cut-topup'),
        idem: `cut-redial-${id}`,
        body: { amount: 250 },
      });
      expect(topup.status).toBe(200);
      // The caller has its BYE once dlg.end_dlg is answered, and dials again.
      afterEndDialog = () => {
        afterEndDialog = undefined;
        send({
          ev: 'invite',
          ti: 8,
          tl: 8,
          ci: 'cut-redial-2',
          he: 14,
          hi: 9,
          id,
          dest: '33612345678',
          ts: Date.now() / 1000,
        });
      };
      await until(() => replies.some((r) => r.ti === 8), 5000);
      // Admitted: 50 left over and 250 topped up, 3 seconds.
      expect(replies.find((r) => r.ti === 8)).toMatchObject({ sec: 3 });
      const rec = await recordOf(h, 'cut-redial', 5000);
      expect([rec.sec, rec.cost, rec.cause]).toEqual(['2', '200', 'cutoff']);
    } finally {
      await own.close(0);
    }
  });
});

/**
 * Requests inside a dialog through a real Kamailio (deploy/kamailio/kamailio.cfg),
 * between a caller and a PSTN gateway written by hand: each is relayed to the
 * dialog's peer (the caller's to the contact the gateway answered with, the
 * gateway's to the caller's contact, or to the gateway itself while it has
 * not answered), and one whose request URI names any other host is refused,
 * not relayed there.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import type { KamailioConnector } from '../../src/kamailio/connector';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import {
  attachConnector,
  connectorsAttached,
  haveKamailio,
  responseTo,
  sipInvite,
  sipSocket,
  sleep,
  startKamailio,
  stopAll,
  type KamailioChild,
  type SipMessage,
  type SipSocket,
  until,
} from './stack';
import { luhnId } from './records';

const TALK = talkProduct({ name: 'talk-d', face: 1_000_000, price: 1_000_000 });
/** 100 micro-units a second everywhere (STD_RATES): 3 seconds of credit, the fail-safe 3 s + GRACE_SEC (2). */
const SHORT = talkProduct({ name: 'talk-d-3s', face: 300, price: 300 });

/** A dialog as its caller holds it. */
interface Dialog {
  callId: string;
  fromTag: string;
  toTag: string;
  /** The Route set (the Record-Route of the 200 OK, reversed). */
  routes: string[];
  /** The gateway's contact, from its 200 OK. */
  target: string;
  cseq: number;
}

describe.skipIf(!haveKamailio())('kamailio: requests inside a dialog', () => {
  let h: Harness;
  let gw: Gateway;
  let k: KamailioChild;
  let connector: KamailioConnector;
  let dir: string;
  /** The PSTN gateway: answers every request 200, INVITEs with its contact. */
  let pstn: SipSocket;
  /** A host the caller would like Kamailio to send its requests to: answers every request 200. */
  let elsewhere: SipSocket;
  let caller: SipSocket;
  let tok: string;
  let n = 0;

  /** Answers every request 200 OK, but a call whose Call-ID starts with `ringing-` only 183 at first (`answerRinging`). */
  const answerAll = (sock: SipSocket, contact: string) => (m: SipMessage) => {
    if (m.method === 'ACK') return;
    const invite = m.method === 'INVITE';
    const rr = invite ? m.all('record-route').map((r) => `Record-Route: ${r}`) : [];
    const initial = invite && !/;tag=/.test(m.get('to') ?? '');
    const status = initial && m.get('call-id')?.startsWith('ringing-') ? '183 Session Progress' : '200 OK';
    sock.send(responseTo(m, status, [...rr, `Contact: <${contact}>`], 'peer'), k.sipPort);
  };

  /**
   * A caller's request in `d` (From and To swapped with `asCallee`), and its final answer's code;
   * `route` is one more Route header, after the dialog's.
   */
  const request = async (
    d: Dialog,
    method: string,
    ruri: string,
    asCallee = false,
    route?: string,
  ): Promise<number> => {
    const branch = `z9hG4bK-${++n}-${method.toLowerCase()}`;
    const [fromTag, toTag] = asCallee ? [d.toTag, d.fromTag] : [d.fromTag, d.toTag];
    caller.send(
      [
        `${method} ${ruri} SIP/2.0`,
        `Via: SIP/2.0/UDP 127.0.0.1:${caller.port};branch=${branch}`,
        'Max-Forwards: 70',
        ...d.routes.map((r) => `Route: ${r}`),
        ...(route !== undefined ? [`Route: ${route}`] : []),
        `From: <sip:caller@127.0.0.1:${caller.port}>;tag=${fromTag}`,
        `To: <sip:callee@127.0.0.1>;tag=${toTag}`,
        `Call-ID: ${d.callId}`,
        `CSeq: ${++d.cseq} ${method}`,
        `Contact: <sip:caller@127.0.0.1:${caller.port}>`,
      ],
      k.sipPort,
    );
    const answer = await caller.next(
      `the answer to ${method} ${ruri}`,
      (m) => m.code >= 200 && (m.get('via') ?? '').includes(branch),
    );
    return answer.code;
  };

  /** The caller's ACK of the 200 OK to its INVITE. */
  const acknowledge = async (d: Dialog): Promise<void> => {
    caller.send(
      [
        `ACK ${d.target} SIP/2.0`,
        `Via: SIP/2.0/UDP 127.0.0.1:${caller.port};branch=z9hG4bK-${d.callId}-ack`,
        'Max-Forwards: 70',
        ...d.routes.map((r) => `Route: ${r}`),
        `From: <sip:caller@127.0.0.1:${caller.port}>;tag=${d.fromTag}`,
        `To: <sip:callee@127.0.0.1>;tag=${d.toTag}`,
        `Call-ID: ${d.callId}`,
        'CSeq: 1 ACK',
      ],
      k.sipPort,
    );
    await pstn.next('the ACK at the gateway', (m) => m.method === 'ACK' && m.get('call-id') === d.callId);
  };

  /** A prepaid call, answered by the gateway and acknowledged; or, `ringing`, only 183 so far (its early dialog). */
  const dial = async (ringing = false, product = TALK): Promise<Dialog> => {
    const [id] = await soldIds(h, product, 1);
    const d: Dialog = {
      callId: `${ringing ? 'ringing' : 'answered'}-${++n}@test`,
      fromTag: `caller-${n}`,
      toTag: '',
      routes: [],
      target: '',
      cseq: 1,
    };
    const ruri = `sip:${id}*33612345678@127.0.0.1:${k.sipPort}`;
    caller.send(
      [
        `INVITE ${ruri} SIP/2.0`,
        `Via: SIP/2.0/UDP 127.0.0.1:${caller.port};branch=z9hG4bK-${n}-invite`,
        'Max-Forwards: 70',
        `From: <sip:caller@127.0.0.1:${caller.port}>;tag=${d.fromTag}`,
        `To: <${ruri}>`,
        `Call-ID: ${d.callId}`,
        'CSeq: 1 INVITE',
        `Contact: <sip:caller@127.0.0.1:${caller.port}>`,
      ],
      k.sipPort,
    );
    const code = ringing ? 183 : 200;
    const ok = await caller.next(`the ${code}`, (m) => m.code === code && m.get('call-id') === d.callId);
    d.toTag = /;tag=([^;>]+)/.exec(ok.get('to') ?? '')![1]!;
    d.routes = ok.all('record-route').reverse();
    d.target = /<([^>]+)>/.exec(ok.get('contact') ?? '')![1]!;
    if (!ringing) await acknowledge(d);
    return d;
  };

  /** Until the gateway has received the dialog's BYE. */
  const byeAtGateway = (d: Dialog): Promise<SipMessage> =>
    pstn.next('the BYE at the gateway', (m) => m.method === 'BYE' && m.code === 0 && m.get('call-id') === d.callId);

  /** The gateway's 200 OK to a ringing call's INVITE. */
  const gatewayAnswers = (d: Dialog): void => {
    const invite = pstn.received.find((m) => m.method === 'INVITE' && m.code === 0 && m.get('call-id') === d.callId)!;
    const rr = invite.all('record-route').map((r) => `Record-Route: ${r}`);
    pstn.send(responseTo(invite, '200 OK', [...rr, `Contact: <sip:gw@127.0.0.1:${pstn.port}>`], 'peer'), k.sipPort);
  };

  /** The gateway answers a ringing call (200 OK to its INVITE), and the caller acknowledges. */
  const answerRinging = async (d: Dialog): Promise<void> => {
    gatewayAnswers(d);
    await caller.next(
      'the 200 OK',
      (m) => m.code === 200 && m.get('cseq') === '1 INVITE' && m.get('call-id') === d.callId,
    );
    await acknowledge(d);
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-in-dialog-'));
    h = await startHarness();
    await seedCatalog(h, [TALK, SHORT]);
    tok = await token(h, 'switch', 'kamailio-in-dialog');
    gw = await gateway(h);
    [pstn, elsewhere, caller] = await Promise.all([sipSocket(), sipSocket(), sipSocket()]);
    pstn.onRequest = answerAll(pstn, `sip:gw@127.0.0.1:${pstn.port}`);
    elsewhere.onRequest = answerAll(elsewhere, `sip:elsewhere@127.0.0.1:${elsewhere.port}`);
    caller.onRequest = answerAll(caller, `sip:caller@127.0.0.1:${caller.port}`);
    k = await startKamailio({ dir, pstnPort: pstn.port });
    connector = await attachConnector(k, [`ws://127.0.0.1:${gw.port}/v1/switch`], tok);
  });

  afterAll(async () => {
    await connector?.close(0);
    for (const s of [pstn, elsewhere, caller]) s?.close();
    await gw?.close();
    await stopAll();
    await h?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * The gateway's request `method` in `d`, along the Record-Route (or, not `routed`, with no Route:
   * a gateway that sends everything to Kamailio), to the caller's contact: its Via branch.
   */
  const fromGateway = (d: Dialog, method: string, cseq: number, extra: string[] = [], routed = true): string => {
    const branch = `z9hG4bK-${++n}-gw-${method.toLowerCase()}`;
    pstn.send(
      [
        `${method} sip:caller@127.0.0.1:${caller.port} SIP/2.0`,
        `Via: SIP/2.0/UDP 127.0.0.1:${pstn.port};branch=${branch}`,
        'Max-Forwards: 70',
        ...(routed ? [...d.routes].reverse().map((r) => `Route: ${r}`) : []),
        `From: <sip:callee@127.0.0.1>;tag=${d.toTag}`,
        `To: <sip:caller@127.0.0.1:${caller.port}>;tag=${d.fromTag}`,
        `Call-ID: ${d.callId}`,
        `CSeq: ${cseq} ${method}`,
        ...extra,
      ],
      k.sipPort,
    );
    return branch;
  };

  /** The gateway's BYE in `d`: once it reached the caller, its final answer's code. */
  const gatewayHangsUp = async (d: Dialog, routed = true): Promise<number> => {
    const branch = fromGateway(d, 'BYE', 1, [], routed);
    await caller.next(
      'the BYE at the caller',
      (m) => m.method === 'BYE' && m.code === 0 && m.get('call-id') === d.callId,
    );
    const answer = await pstn.next(
      'the answer to its BYE',
      (m) => m.code >= 200 && (m.get('via') ?? '').includes(branch),
    );
    return answer.code;
  };

  it("relays a call's requests to its peers: re-INVITE and OPTIONS to the gateway, the gateway's BYE to the caller", async () => {
    const d = await dial();
    expect(await request(d, 'INVITE', d.target)).toBe(200);
    expect(await request(d, 'OPTIONS', d.target)).toBe(200);
    // Kamailio may send the INVITE again (UDP): each request once, whatever came twice.
    const atGateway = pstn.received.filter((m) => m.code === 0 && m.get('call-id') === d.callId);
    expect(new Set(atGateway.map((m) => m.get('cseq')))).toEqual(
      new Set(['1 INVITE', '1 ACK', '2 INVITE', '3 OPTIONS']),
    );
    // The gateway hangs up: its BYE, along the Record-Route, reaches the caller's contact.
    expect(await gatewayHangsUp(d)).toBe(200);
  });

  it("sends the gateway's BYE that carries no Route to the caller, as a routed one", async () => {
    // A gateway that sends its requests to Kamailio as its outbound proxy, Record-Route ignored: the
    // request is matched to its dialog by Call-ID and tags. Until 2026-12-07 it was taken as the
    // caller's (rr's is_direction says downstream without a Route's ftag) and sent back to the
    // gateway: the dialog ended, billing stopped, and the caller's leg stayed up in silence.
    const d = await dial();
    expect(await gatewayHangsUp(d, false)).toBe(200);
  });

  it('refuses a request of a live call to any other host, from either end of its dialog: 403, never relayed', async () => {
    const d = await dial();
    const other = `127.0.0.1:${elsewhere.port}`;
    const codes = [
      await request(d, 'OPTIONS', `sip:evil@${other}`),
      await request(d, 'INVITE', `sip:33699999999@${other}`),
      await request(d, 'MESSAGE', `sip:evil@${other}`),
      // The tags swapped: dressed as the gateway's request to the caller.
      await request(d, 'OPTIONS', `sip:evil@${other}`, true),
    ];
    expect(codes).toEqual([403, 403, 403, 403]);
    expect(elsewhere.received).toEqual([]);
    // The call itself goes on: its BYE reaches the gateway.
    expect(await request(d, 'BYE', d.target)).toBe(200);
  });

  it("sends a ringing call's requests to the gateway, whatever host they name", async () => {
    const d = await dial(true);
    // Before the answer, the dialog module holds no contact of the gateway's: PSTN_GW is the peer.
    expect(await request(d, 'UPDATE', d.target)).toBe(200);
    expect(await request(d, 'UPDATE', `sip:evil@127.0.0.1:${elsewhere.port}`)).toBe(200);
    expect(elsewhere.received).toEqual([]);
    const atGateway = pstn.received.filter(
      (m) => m.method === 'UPDATE' && m.code === 0 && m.get('call-id') === d.callId,
    );
    expect(new Set(atGateway.map((m) => m.get('cseq')))).toEqual(new Set(['2 UPDATE', '3 UPDATE']));
    await answerRinging(d);
    expect(await request(d, 'BYE', d.target)).toBe(200);
  });

  it("sends a BYE naming another host to the dialog's peer: the dialog ended by it, the peer must hang up too", async () => {
    // loose_route ends the dialog on a BYE (the connector stops billing) before the peer check:
    // refused 403, the gateway's leg talked on, unmetered.
    const d = await dial();
    expect(await request(d, 'BYE', `sip:evil@127.0.0.1:${elsewhere.port}`)).toBe(200);
    await byeAtGateway(d);
    expect(elsewhere.received).toEqual([]);
  });

  it("sends the caller's BYE to the gateway after it moved its contact by UPDATE (a target refresh the dialog module misses)", async () => {
    const d = await dial();
    const branch = fromGateway(d, 'UPDATE', 50, [`Contact: <sip:gw-moved@127.0.0.1:${pstn.port}>`]);
    await pstn.next('the 200 to the UPDATE', (m) => m.code === 200 && (m.get('via') ?? '').includes(branch));
    expect(await request(d, 'BYE', `sip:gw-moved@127.0.0.1:${pstn.port}`)).toBe(200);
    await byeAtGateway(d);
  });

  it('never takes a Route header past its own to another host: refused, a BYE sent to the peer', async () => {
    const d = await dial();
    const route = `<sip:127.0.0.1:${elsewhere.port};lr>`;
    expect(await request(d, 'OPTIONS', d.target, false, route)).toBe(403);
    expect(await request(d, 'BYE', d.target, false, route)).toBe(200);
    await byeAtGateway(d);
    expect(elsewhere.received).toEqual([]);
  });

  /** The callee's contact in `d` as Kamailio's dialog module holds it. */
  const calleeContact = async (d: Dialog): Promise<string | undefined> => {
    type Listed = { 'call-id': string; caller?: { tag?: string }; callee?: { contact?: string } };
    return ((await k.rpc('dlg.list', [])).result as Listed[]).find(
      (x) => x['call-id'] === d.callId && x.caller?.tag === d.fromTag,
    )?.callee?.contact;
  };

  /**
   * A re-INVITE "from the gateway" sent from another address (127.0.0.2): the tags of `d` swapped, a
   * contact at `elsewhere`. Resolves to its final answer's code.
   */
  const forgedReinvite = async (d: Dialog): Promise<number> => {
    const attacker = await sipSocket('127.0.0.2');
    try {
      const branch = `z9hG4bK-${++n}-forged`;
      attacker.send(
        [
          `INVITE sip:caller@127.0.0.1:${caller.port} SIP/2.0`,
          `Via: SIP/2.0/UDP 127.0.0.2:${attacker.port};branch=${branch}`,
          'Max-Forwards: 70',
          ...d.routes.map((r) => `Route: ${r}`),
          `From: <sip:gw@127.0.0.1>;tag=${d.toTag}`,
          `To: <sip:caller@127.0.0.1:${caller.port}>;tag=${d.fromTag}`,
          `Call-ID: ${d.callId}`,
          'CSeq: 900 INVITE',
          `Contact: <sip:evil@127.0.0.1:${elsewhere.port}>`,
        ],
        k.sipPort,
      );
      const answer = await attacker.next(
        'the answer to the forged re-INVITE',
        (m) => m.code >= 200 && (m.get('via') ?? '').includes(branch),
      );
      return answer.code;
    } finally {
      attacker.close();
    }
  };

  /** The forged re-INVITE is refused 403 and changes nothing: the caller's BYE still reaches the gateway. */
  const expectForgeryRefused = async (d: Dialog): Promise<void> => {
    const before = await calleeContact(d);
    expect(await forgedReinvite(d)).toBe(403);
    expect(await calleeContact(d)).toBe(before);
    expect(await request(d, 'BYE', d.target)).toBe(200);
    await byeAtGateway(d);
    expect(elsewhere.received.filter((m) => m.get('call-id') === d.callId)).toEqual([]);
  };

  it("refuses a request dressed as the gateway's from another address: the dialog keeps the gateway's contact", async () => {
    // The caller swaps the tags of its own dialog, as if the gateway re-INVITEd with a new contact: the
    // dialog module took that contact as the gateway's, the peer every rule trusts, and the caller's
    // BYE went there, never to the gateway, whose leg talked on unmetered.
    const d = await dial();
    await expectForgeryRefused(d);
  });

  it('keeps that guard while any dialog of the Call-ID lives: another one failing with it does not lift it', async () => {
    // A second INVITE with the live call's Call-ID, refused (an unknown ID): its dialog's failure
    // removed the Call-ID's guard, and the forged re-INVITE above then went through.
    const d = await dial();
    const other = await sipInvite(k, `${luhnId('123456789012345')}*33612345678`, { callId: d.callId });
    expect(other.code).toBe(404);
    await expectForgeryRefused(d);
    // The last dialog of the Call-ID gone, so is its guard: nothing kept per Call-ID for good.
    type Dump = { slot: { name: string }[] }[];
    const kept = async (table: string): Promise<string[]> =>
      ((await k.rpc('htable.dump', [table])).result as Dump).flatMap((e) => e.slot.map((x) => x.name));
    await until('the guard to go', async () =>
      !(await kept('callers')).includes(d.callId) && !(await kept('dialogs')).includes(d.callId) ? true : undefined,
    );
  });

  /** Kamailio started again on its ports and directory, after `down` (a stop or a crash); the connector back on it. */
  const restart = async (down: () => Promise<void>): Promise<void> => {
    const ports = { sipPort: k.sipPort, evapiPort: k.evapiPort, httpPort: k.httpPort };
    await down();
    k = await startKamailio({ dir, pstnPort: pstn.port, ports });
    // The tests after this one dial through the restarted Kamailio: the connector must be back on it.
    await until('the connector to attach again', async () => (await connectorsAttached(k)) >= 1);
  };

  it("sends a caller's BYE to the gateway after a crash lost the dialog: the gateway's leg must not talk on", async () => {
    // The connector stops a call whose dialog a crash lost (cause lost); refused 481, the
    // caller's BYE never reached the gateway, whose leg talked on, unmetered.
    const d = await dial();
    await restart(() => k.crash());
    expect(await request(d, 'BYE', d.target)).toBe(200);
    await byeAtGateway(d);
  });

  it('sets up no call that rang across a restart: the gateway answering it reaches no caller, unmetered', async () => {
    // Early dialogs are not kept: the gateway's 200 OK, passed on as a stray reply, set the call up
    // with no dialog here and its connector's call stopped `lost` at 0 s, both legs free to talk.
    const d = await dial(true);
    await restart(() => k.stop());
    gatewayAnswers(d);
    await sleep(700);
    expect(caller.received.filter((m) => m.code === 200 && m.get('call-id') === d.callId)).toEqual([]);
  });

  it("keeps a call's dialog over a restart: the gateway's BYE reaches the caller, the caller's guard holds", async () => {
    // The dialog was lost in every restart: the gateway's BYE got 481 (the caller's phone talked on to
    // silence) and the forged re-INVITE met no guard.
    const d = await dial();
    await restart(() => k.stop());
    expect(await calleeContact(d)).toBe(d.target);
    expect(await forgedReinvite(d)).toBe(403);
    expect(await gatewayHangsUp(d)).toBe(200);
  });

  it('forgets, after a crash, the dialogs its last restart kept: ended since, they must not come back', async () => {
    // A crash writes nothing: the next start read the tables the restart wrote, and the call, over
    // since, came back answered with its guard. The connector took it up as live: once Tessera had
    // forgotten it (SESSION_TTL_SEC), metered anew from its old answer, its ID billed and kept busy.
    const d = await dial();
    await restart(() => k.stop());
    expect(await gatewayHangsUp(d)).toBe(200);
    await restart(() => k.crash());
    const dialogs = ((await k.rpc('dlg.list')).result ?? []) as Record<string, unknown>[];
    expect(dialogs.map((x) => x['call-id'])).not.toContain(d.callId);
    expect((await k.rpc('htable.get', ['callers', d.callId])).result).toBeUndefined();
  });

  it('cuts a call at its fail-safe with its connector gone, however many requests it sends inside its dialog', async () => {
    // By default each request inside a dialog re-armed the dialog module's timer for the whole
    // timeout: an OPTIONS a second, and the call talked on unmetered, never cut.
    const d = await dial(false, SHORT);
    await sleep(300);
    void connector.close();
    try {
      const deadline = Date.now() + 8000;
      while (Date.now() < deadline && !pstn.received.some((m) => m.method === 'BYE' && m.get('call-id') === d.callId)) {
        await sleep(1000);
        await request(d, 'OPTIONS', d.target).catch(() => 0);
      }
      expect(pstn.received.some((m) => m.method === 'BYE' && m.code === 0 && m.get('call-id') === d.callId)).toBe(true);
    } finally {
      connector = await attachConnector(k, [`ws://127.0.0.1:${gw.port}/v1/switch`], tok);
    }
  });
});

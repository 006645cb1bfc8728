/**
 * Ringing through a real Kamailio (deploy/kamailio/kamailio.cfg): a call rings
 * no longer than RING_MAX_MS, kept below Tessera's RING_TIMEOUT_MS, even when
 * the PSTN gateway sends its 180 again and again (tm restarts fr_inv_timer at
 * every provisional reply).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import type { KamailioConnector } from '../../src/kamailio/connector';
import { audit } from '../../src/ledger/audit';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { recordOf } from './records';
import {
  attachConnector,
  haveKamailio,
  replyAsGateway,
  responseTo,
  sipInvite,
  sipSocket,
  startKamailio,
  stopAll,
  type KamailioChild,
  type SipMessage,
  type SipSocket,
} from './stack';

const TALK = talkProduct({ name: 'talk-ring', face: 1_000_000, price: 1_000_000 });
/** The ringing cap of this Kamailio (RING_MAX_MS, 120 s as shipped). */
const RING_MAX_MS = 3000;
/** The gateway answers after this long, 180 again every second until then. */
const ANSWER_AFTER_MS = 6000;

describe.skipIf(!haveKamailio())('kamailio: ringing', () => {
  let h: Harness;
  let gw: Gateway;
  let k: KamailioChild;
  let connector: KamailioConnector;
  let dir: string;
  let pstn: SipSocket;

  /** Rings (180 every second), answers after ANSWER_AFTER_MS; a CANCEL ends the ringing with 487. */
  const ringing = new Map<string, NodeJS.Timeout[]>();
  /** The Call-IDs it refuses busy (486) after a first 180. */
  const busy = new Set<string>();
  const reply = (m: SipMessage, status: string): void => replyAsGateway(pstn, k.sipPort, m, status);
  const answer = (m: SipMessage): void => {
    const ci = m.get('call-id') ?? '';
    if (m.method === 'ACK') return;
    if (m.method === 'CANCEL') {
      pstn.send(responseTo(m, '200 OK', [], 'gw'), k.sipPort);
      const invite = pstn.received.find((r) => r.method === 'INVITE' && r.code === 0 && r.get('call-id') === ci);
      for (const t of ringing.get(ci) ?? []) clearTimeout(t);
      if (invite) reply(invite, '487 Request Terminated');
      return;
    }
    if (m.method !== 'INVITE' || /;tag=/.test(m.get('to') ?? '')) return reply(m, '200 OK');
    const timers: NodeJS.Timeout[] = [];
    ringing.set(ci, timers);
    if (busy.has(ci)) {
      reply(m, '180 Ringing');
      timers.push(setTimeout(() => reply(m, '486 Busy Here'), 300));
      return;
    }
    for (let at = 0; at < ANSWER_AFTER_MS; at += 1000) timers.push(setTimeout(() => reply(m, '180 Ringing'), at));
    timers.push(setTimeout(() => reply(m, '200 OK'), ANSWER_AFTER_MS));
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-ringing-'));
    h = await startHarness();
    await seedCatalog(h, [TALK]);
    const tok = await token(h, 'switch', 'kamailio-ringing');
    gw = await gateway(h);
    pstn = await sipSocket();
    pstn.onRequest = answer;
    k = await startKamailio({ dir, pstnPort: pstn.port, defines: [`RING_MAX_MS=${RING_MAX_MS}`] });
    connector = await attachConnector(k, [`ws://127.0.0.1:${gw.port}/v1/switch`], tok);
  });

  afterAll(async () => {
    await connector?.close(0);
    for (const timers of ringing.values()) for (const t of timers) clearTimeout(t);
    pstn?.close();
    await gw?.close();
    await stopAll();
    await h?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('ends a call ringing past RING_MAX_MS with 408, however often the gateway sends 180: billed nothing', async () => {
    const [id] = await soldIds(h, TALK, 1);
    const callId = `ring-${Math.random().toString(36).slice(2)}@127.0.0.1`;
    const t0 = Date.now();
    const a = await sipInvite(k, `${id}*33612345678`, { callId, talkMs: 500 });
    const rangMs = Date.now() - t0;
    expect(a.code).toBe(408);
    expect(rangMs).toBeGreaterThanOrEqual(RING_MAX_MS - 100);
    expect(rangMs).toBeLessThan(ANSWER_AFTER_MS - 1000);
    const rec = await recordOf(h, callId);
    expect([rec.sec, rec.cost]).toEqual(['0', '0']);
    expect((await audit(h.ctx)).problems).toEqual([]);
  });

  it('records a call the callee refuses with its reply code: failed-486', async () => {
    // Until 2026-12-08 kamailio.cfg sent $T_reply_code, 0 in event_route[dialog:failed]: every
    // failed call was recorded `failed`, whatever the callee answered.
    const [id] = await soldIds(h, TALK, 1);
    const callId = `busy-${Math.random().toString(36).slice(2)}@127.0.0.1`;
    busy.add(callId);
    expect((await sipInvite(k, `${id}*33612345678`, { callId })).code).toBe(486);
    expect(await recordOf(h, callId)).toMatchObject({ cause: 'failed-486', sec: '0', cost: '0' });
  });
});

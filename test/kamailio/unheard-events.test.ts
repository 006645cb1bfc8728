/**
 * Calls that end or fail while no connector hears Kamailio's events, through
 * a real Kamailio (deploy/kamailio/kamailio.cfg) and a PSTN gateway written
 * by hand (it rings, answers or refuses as a test says): kamailio.cfg keeps
 * those events (htable `ends`), and the connector closing or the next one to
 * attach stops each call as the event would have.
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
  replyAsGateway,
  sipInvite,
  sipSocket,
  startKamailio,
  stopAll,
  until,
  type KamailioChild,
  type SipMessage,
  type SipSocket,
} from './stack';

const TALK = talkProduct({ name: 'talk-unheard', face: 1_000_000, price: 1_000_000 });
const DEST = '33612345678';

describe.skipIf(!haveKamailio())('kamailio: events no connector hears', () => {
  let h: Harness;
  let gw: Gateway;
  let k: KamailioChild;
  let dir: string;
  let tok: string;
  let pstn: SipSocket;
  /** The Call-IDs the gateway lets ring (180) until the test refuses them; it answers the others at once. */
  const ringing = new Set<string>();

  const ringingInvite = (ci: string): Promise<SipMessage> =>
    pstn.next(
      `the INVITE of ${ci} at the gateway`,
      (m) => m.method === 'INVITE' && m.code === 0 && m.get('call-id') === ci,
    );

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-kamailio-unheard-'));
    h = await startHarness();
    await seedCatalog(h, [TALK]);
    tok = await token(h, 'switch', 'kamailio-unheard');
    // The reaper at its default stale time, swept often: a call no stop reaches is reaped `stale`.
    gw = await gateway(h, { staleAfterMs: 10_000, reapIntervalMs: 100 });
    pstn = await sipSocket();
    pstn.onRequest = (m) => {
      if (m.method === 'ACK') return;
      const status = m.method === 'INVITE' && ringing.has(m.get('call-id') ?? '') ? '180 Ringing' : '200 OK';
      replyAsGateway(pstn, k.sipPort, m, status);
    };
    k = await startKamailio({ dir, pstnPort: pstn.port });
  });

  afterAll(async () => {
    pstn?.close();
    await gw?.close();
    await stopAll();
    await h?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('stops a call whose INVITE fails during its wait to close', async () => {
    // One call's stop gets `unavailable`, so the lone connector waits to close, off evapi. A call
    // ringing then is refused busy: until 2026-12-08 the closing connector looked for ended
    // dialogs of answered calls only, and the call held its ID until Tessera's RING_TIMEOUT_MS.
    const [owedId, ringId] = (await soldIds(h, TALK, 2)) as [string, string];
    const proxy = SwitchProxy.refusingStopsOf(gw.port, owedId);
    const c = await attachConnector(k, [await proxy.listen()], tok);
    try {
      const ringCi = `ring-close-${Math.random().toString(36).slice(2)}@127.0.0.1`;
      ringing.add(ringCi);
      const ring = sipInvite(k, `${ringId}*${DEST}`, { callId: ringCi });
      const invite = await ringingInvite(ringCi);
      expect((await sipInvite(k, `${owedId}*${DEST}`, { talkMs: 300 })).code).toBe(200);
      await until('the owed stop to be refused', () => proxy.refused.length > 0);
      const closed = c.close();
      await until('the connector to leave evapi', async () => (await connectorsAttached(k)) === 0);
      replyAsGateway(pstn, k.sipPort, invite, '486 Busy Here');
      expect((await ring).code).toBe(486);
      expect(await recordOf(h, ringCi, 5000)).toMatchObject({ cause: 'failed-486', sec: '0', cost: '0' });
      await closed;
    } finally {
      await c.close(0);
      await proxy.close();
    }
  });

  it('bills a call that ends, and stops one that fails, between one connector and the next', async () => {
    // A lone connector that owes nothing leaves at once. A call hangs up and another one ringing is
    // refused before the next connector attaches: until 2026-12-08 no one heard either, the first
    // was billed to its last tick (reaped `stale`) and the second held its ID until the reaper's
    // RING_TIMEOUT_MS. The next connector now reads what kamailio.cfg kept of them.
    const [talkId, ringId] = (await soldIds(h, TALK, 2)) as [string, string];
    const gatewayUrl = `ws://127.0.0.1:${gw.port}/v1/switch`;
    const first = await attachConnector(k, [gatewayUrl], tok);
    const talkCi = `talk-gap-${Math.random().toString(36).slice(2)}@127.0.0.1`;
    const ringCi = `ring-gap-${Math.random().toString(36).slice(2)}@127.0.0.1`;
    ringing.add(ringCi);
    const ring = sipInvite(k, `${ringId}*${DEST}`, { callId: ringCi });
    const invite = await ringingInvite(ringCi);
    const talk = sipInvite(k, `${talkId}*${DEST}`, { callId: talkCi, talkMs: 2500 });
    await until(
      'the call to be answered',
      () => first.liveCalls === 2 && pstn.received.some((m) => m.method === 'ACK' && m.get('call-id') === talkCi),
    );
    await first.close();
    await until('the connector to leave evapi', async () => (await connectorsAttached(k)) === 0);
    replyAsGateway(pstn, k.sipPort, invite, '486 Busy Here');
    expect((await ring).code).toBe(486);
    const call = await talk;
    const next = await attachConnector(k, [gatewayUrl], tok);
    try {
      const rec = await recordOf(h, talkCi, 5000);
      expect([rec.cause, Number(rec.sec)]).toEqual(['hangup', billedSeconds(call.answerUs!, call.hangupUs!)]);
      expect(await recordOf(h, ringCi, 5000)).toMatchObject({ cause: 'failed-486', sec: '0', cost: '0' });
      // Each entry goes once its stop is answered.
      await until('the events kept to be dropped', async () => {
        const r = (await k.rpc('htable.dump', ['ends'])) as { result?: { slot?: unknown[] }[] };
        return (r.result ?? []).every((e) => (e.slot ?? []).length === 0);
      });
    } finally {
      await next.close(0);
    }
  });
});

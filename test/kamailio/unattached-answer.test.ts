/**
 * A prepaid call answered while no connector is attached, through a real
 * Kamailio (deploy/kamailio/kamailio.cfg): nobody meters it, so Kamailio ends
 * it at once, not at its fail-safe (its grant plus grace: on an ID with
 * maxCalls 1, the whole balance).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
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

/** 1,000 s of talk to France: a fail-safe far beyond the test. */
const TALK = talkProduct({ name: 'talk-unattached', face: 1_200_000, price: 1_200_000 });

describe.skipIf(!haveKamailio())('kamailio: a call answered with no connector attached', () => {
  let h: Harness;
  let gw: Gateway;
  let k: KamailioChild;
  let dir: string;
  let pstn: SipSocket;
  let tok: string;

  /** The PSTN gateway: an INVITE waits for the test to answer it; anything in a dialog gets 200. */
  const reply = (m: SipMessage, status: string): void => replyAsGateway(pstn, k.sipPort, m, status);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-unattached-'));
    h = await startHarness();
    await seedCatalog(h, [TALK]);
    tok = await token(h, 'switch', 'kamailio-unattached');
    gw = await gateway(h);
    pstn = await sipSocket();
    pstn.onRequest = (m) => {
      if (m.method !== 'INVITE' && m.method !== 'ACK') reply(m, '200 OK');
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

  it('is hung up once its ACK comes, never let talk unmetered to its fail-safe', async () => {
    const [id] = await soldIds(h, TALK, 1);
    const connector = await attachConnector(k, [`ws://127.0.0.1:${gw.port}/v1/switch`], tok);
    const callId = `unattached-${Math.random().toString(36).slice(2)}@127.0.0.1`;
    const caller = sipInvite(k, `${id}*33612345678`, { callId, talkMs: 8000 });
    const invite = await pstn.next('the admitted INVITE', (m) => m.method === 'INVITE' && m.get('call-id') === callId);

    // The only connector goes while the call rings; then the callee answers.
    void connector.close(0);
    await until('the connector to detach', async () => (await connectorsAttached(k)) === 0);
    reply(invite, '200 OK');
    const answeredAt = Date.now();

    // Kamailio's own BYE to the callee, within a few seconds: not the caller's, which leaves at 8 s.
    await until(
      'the BYE to the callee',
      () => pstn.received.find((m) => m.method === 'BYE' && m.code === 0 && m.get('call-id') === callId),
      5000,
    );
    expect(Date.now() - answeredAt).toBeLessThan(5000);
    await until('the dialog to end', async () => {
      const list = await k.rpc('dlg.list');
      return !(list.result ?? []).some((d: { 'call-id': string }) => d['call-id'] === callId);
    });
    expect((await caller).code).toBe(200);
  });
});

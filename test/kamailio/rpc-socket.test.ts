/**
 * The shipped kamailio.cfg answers JSON-RPC (dlg.end_dlg, and every other
 * RPC) on HTTP_LISTEN only. xhttp takes HTTP on every TCP socket: a SIP
 * listen over TCP (the gateway's leg, as docs/switches.md advises) answered
 * RPC to whoever reached it. Kamailio alone; no call is needed.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveKamailio, rpcCall, startKamailio, stopAll, type KamailioChild } from './stack';

describe.skipIf(!haveKamailio())('JSON-RPC on its own socket', () => {
  let dir: string;
  let k: KamailioChild;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-rpc-socket-'));
    // No call reaches the PSTN side: any port will do.
    k = await startKamailio({ dir, pstnPort: 9, sipProto: 'tcp' });
  }, 30_000);
  afterAll(async () => {
    await stopAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('answers on HTTP_LISTEN, and refuses 403 on the SIP socket over TCP', async () => {
    expect(await rpcCall(k.rpcUrl, 'core.version')).toMatchObject({ result: expect.stringContaining('kamailio') });
    const res = await fetch(`http://127.0.0.1:${k.sipPort}/RPC`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', method: 'dlg.list', id: 1 }),
    });
    expect(res.status).toBe(403);
    expect(await res.text()).not.toContain('jsonrpc');
  });

  it('answers any other path 404 on HTTP_LISTEN, instead of leaving the client waiting', async () => {
    // xhttp hands the event route only what its url_match takes: with "^/RPC",
    // GET / got no answer at all and a health check hung until its own timeout.
    for (const path of ['/', '/health', '/metrics']) {
      const res = await fetch(new URL(path, k.rpcUrl), { signal: AbortSignal.timeout(15_000) });
      expect(res.status, path).toBe(404);
    }
  });
});

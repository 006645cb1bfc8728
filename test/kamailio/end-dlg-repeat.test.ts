/**
 * The shipped kamailio.cfg's answer to a repeated dlg.end_dlg (its htable
 * `ended`: a second connector ending a dialog the first one ended): a
 * JSON-RPC success that names the request's id in the id's own JSON type,
 * as jsonrpcs answers every other request. Kamailio alone; no call is needed,
 * a dialog that never existed is noted ended all the same.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveKamailio, rpcCall, startKamailio, stopAll, type KamailioChild } from './stack';

describe.skipIf(!haveKamailio())('a repeated dlg.end_dlg', () => {
  let dir: string;
  let k: KamailioChild;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-end-dlg-'));
    // No call reaches the PSTN side: any port will do.
    k = await startKamailio({ dir, pstnPort: 9 });
  }, 30_000);
  afterAll(async () => {
    await stopAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** POSTs a JSON-RPC request as it is written (an id of any type, or none); the answer as text. */
  const post = async (body: string): Promise<string> =>
    (await fetch(k.rpcUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body })).text();
  const endDlg = (id: string): string => `{"jsonrpc":"2.0","method":"dlg.end_dlg","params":[4242,7],"id":${id}}`;

  it('echoes the id with its JSON type: a string of digits stays a string, a long number a number', async () => {
    // The first one runs: the dialog is not there, and it is noted ended.
    expect(await rpcCall(k.rpcUrl, 'dlg.end_dlg', [4242, 7], 1)).toMatchObject({ error: { code: 404 }, id: 1 });
    for (const id of [
      '"123"',
      '123',
      '-5',
      '0',
      '1796600846123',
      '"1796600846123"',
      '1.5',
      '"1.5"',
      '"again"',
      '"say \\"hi\\" \\\\ bye"',
      'null',
    ]) {
      const answer = await post(endDlg(id));
      expect(JSON.parse(answer), `id ${id}: ${answer}`).toEqual({ jsonrpc: '2.0', result: {}, id: JSON.parse(id) });
    }
    // Spaces around the id's colon are JSON too; a request without an id is answered id null.
    expect(JSON.parse(await post('{"jsonrpc":"2.0", "id" :  "77", "method":"dlg.end_dlg","params":[4242,7]}'))).toEqual(
      { jsonrpc: '2.0', result: {}, id: '77' },
    );
    expect(JSON.parse(await post('{"jsonrpc":"2.0","method":"dlg.end_dlg","params":[4242,7]}'))).toEqual({
      jsonrpc: '2.0',
      result: {},
      id: null,
    });
  });
});

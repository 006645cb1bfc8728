/**
 * HttpProvider reads whatever a card company (or a proxy in front of it) sends:
 * any answer without a readable `status` (or `state`) is an unknown outcome,
 * never a thrown error, since every caller, the abandoned-purchase sweep
 * included, acts on the outcome and a throw would stop it.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpProvider } from '../../src/sales/provider';

let server: Server;
let provider: HttpProvider;
/** The body every call is answered with, 200. */
let body = '';

beforeAll(async () => {
  server = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  provider = new HttpProvider(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, 2000);
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('JSON that is not an object', () => {
  it.each(['null', '[]', '[{"status":"approved"}]', '5', '"captured"', 'true'])(
    '%s is an unknown outcome for every call',
    async (answer) => {
      body = answer;
      const req = { reference: 'tsp_x', card: '4000000000000002', cardPin: '1234', amount: 1, currency: 'EUR' };
      expect((await provider.authorize(req)).status).toBe('unknown');
      expect((await provider.capture('tsp_x')).status).toBe('unknown');
      expect((await provider.void('tsp_x')).status).toBe('unknown');
      expect((await provider.status('tsp_x')).state).toBe('unknown');
    },
  );

  it('an object still reads as before', async () => {
    body = '{"status":"captured","commission":5}';
    expect(await provider.capture('tsp_x')).toEqual({ status: 'captured', commission: 5 });
    body = '{"state":"voided"}';
    expect((await provider.status('tsp_x')).state).toBe('voided');
  });
});

/**
 * The connector's JSON-RPC client against a server that closes each connection
 * after its reply, as a Kamailio whose event_route[xhttp:request] calls
 * set_reply_close() does (Debian's stock kamailio.cfg): the next request on
 * that kept-alive socket must not fail.
 */
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KamailioRpc } from '../../src/kamailio/rpc';

describe('KamailioRpc', () => {
  let server: Server;
  let port: number;
  let requests = 0;
  beforeAll(async () => {
    server = createServer((sock) => {
      let buf = '';
      let answered = false;
      sock.on('data', (d: Buffer) => {
        // A request on a socket already answered finds it closed: never read.
        if (answered) return void sock.destroy();
        buf += d.toString();
        const head = buf.indexOf('\r\n\r\n');
        const len = Number(/content-length: (\d+)/i.exec(buf)?.[1] ?? 0);
        if (head < 0 || buf.length < head + 4 + len) return;
        const { id } = JSON.parse(buf.slice(head + 4, head + 4 + len)) as { id: number };
        requests++;
        answered = true;
        const body = JSON.stringify({ jsonrpc: '2.0', result: [], id });
        // No "Connection: close": Kamailio just closes the socket after the reply.
        sock.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      });
      sock.on('error', () => undefined);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('sends a request again when the server closed the kept-alive socket it went out on', async () => {
    const rpc = new KamailioRpc(new URL(`http://127.0.0.1:${port}/RPC`));
    try {
      // Back to back, as takeUpDialogs follows recheckDialogs and cut-offs follow each other.
      for (let i = 0; i < 20; i++) await expect(rpc.call('dlg.list', [])).resolves.toEqual([]);
      await expect(Promise.all([rpc.endDialog(1, 2), rpc.endDialog(3, 4)])).resolves.toHaveLength(2);
      expect(requests).toBe(22);
    } finally {
      rpc.close();
    }
  });
});

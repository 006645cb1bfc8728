/**
 * The connector's evapi link against a real TCP peer standing in for
 * Kamailio's evapi: every event is acknowledged (evapi leaves Nagle on, so
 * an unacknowledged event holds the next one back), an answer is that
 * acknowledgement, and the answers of one turn leave framed and in order.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { EvapiLink } from '../../src/kamailio/evapi';
import { encodeNetstring, NetstringReader } from '../../src/kamailio/netstring';
import { sleep, until } from '../support/wait';

interface Peer {
  server: Server;
  port: number;
  /** The connector's side, once it connected. */
  sock: () => Socket | undefined;
  /** Every netstring the connector wrote, in order. */
  got: string[];
}

async function evapiPeer(port = 0): Promise<Peer> {
  const got: string[] = [];
  let sock: Socket | undefined;
  const server = createServer((s) => {
    sock = s;
    const reader = new NetstringReader();
    s.on('data', (chunk: Buffer) => got.push(...reader.push(chunk)));
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port, sock: () => sock, got };
}

const links: EvapiLink[] = [];
const peers: Peer[] = [];
afterEach(async () => {
  await Promise.all(links.splice(0).map((l) => l.close()));
  for (const p of peers.splice(0)) await new Promise((r) => p.server.close(r));
});

async function connected(onMessage: (payload: string, link: EvapiLink) => void): Promise<Peer> {
  const peer = await evapiPeer();
  peers.push(peer);
  const link: EvapiLink = new EvapiLink({
    host: '127.0.0.1',
    port: peer.port,
    log: pino({ level: 'silent' }),
    onMessage: (p) => onMessage(p, link),
  });
  links.push(link);
  link.start();
  await until(() => link.connected && peer.sock() !== undefined);
  return peer;
}

describe('evapi link', () => {
  it('acknowledges an event that gets no answer, once for a burst', async () => {
    const peer = await connected(() => undefined);
    peer.sock()!.write(Buffer.concat([encodeNetstring('{"ev":"answer"}'), encodeNetstring('{"ev":"end"}')]));
    await until(() => peer.got.length > 0);
    await sleep(50);
    expect(peer.got).toEqual(['.']);
    // A later event is acknowledged again.
    peer.sock()!.write(encodeNetstring('{"ev":"answer"}'));
    await until(() => peer.got.length > 1);
    expect(peer.got).toEqual(['.', '.']);
  });

  it('sends no acknowledgement when an answer carries it, and a turn of answers in order', async () => {
    const peer = await connected((payload, link) => {
      const n = (JSON.parse(payload) as { n: number }).n;
      link.send(JSON.stringify({ a: n }));
      link.send(JSON.stringify({ b: n }));
    });
    peer.sock()!.write(Buffer.concat([encodeNetstring('{"n":1}'), encodeNetstring('{"n":2}')]));
    await until(() => peer.got.length >= 4);
    await sleep(50);
    expect(peer.got).toEqual(['{"a":1}', '{"b":1}', '{"a":2}', '{"b":2}']);
  });

  it('is back within a fraction of a second once Kamailio is, after a restart of seconds', async () => {
    const peer = await connected(() => undefined);
    const { port } = peer;
    // Kamailio stops (its evapi socket closes) and is down for a while, as a restart that takes
    // 1.8 s: INVITEs meanwhile and until the connector is back get 503.
    await new Promise((r) => {
      peer.server.close(r);
      peer.sock()!.destroy();
    });
    await sleep(1600);
    const back = await evapiPeer(port);
    peers.push(back);
    const t0 = Date.now();
    await until(() => back.sock() !== undefined, 5000);
    // A back-off doubling to 2 s came back up to 1.5 s after Kamailio did.
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('frames by bytes, not characters', async () => {
    const peer = await connected((_p, link) => link.send('{"reason":"é€"}'));
    peer.sock()!.write(encodeNetstring('{"n":1}'));
    await until(() => peer.got.length >= 1);
    expect(peer.got).toEqual(['{"reason":"é€"}']);
  });
});

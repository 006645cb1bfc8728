/**
 * The connector's link to the gateways against a WebSocket server standing in for a gateway: how
 * soon it is back once a gateway that went away returns, and how often it asks one that refuses it.
 */
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { SwitchLink } from '../../src/kamailio/switch-link';
import { sleep, until } from '../support/wait';

const servers: WebSocketServer[] = [];
const links: SwitchLink[] = [];

afterEach(async () => {
  for (const l of links.splice(0)) l.close();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/** A stand-in gateway on `port` (0: any) counting the connections it was asked for. */
async function gatewayOn(
  port = 0,
  refuse = false,
): Promise<{ wss: WebSocketServer; port: number; asked: () => number }> {
  let asked = 0;
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port,
    verifyClient: (_info, done) => {
      asked++;
      done(!refuse, 401);
    },
  });
  servers.push(wss);
  await new Promise<void>((r) => wss.once('listening', r));
  return { wss, port: (wss.address() as AddressInfo).port, asked: () => asked };
}

function linkTo(port: number): SwitchLink {
  const link = new SwitchLink({
    urls: [`ws://127.0.0.1:${port}/v1/switch`],
    token: 'tok',
    log: pino({ level: 'silent' }),
    onMessage: () => undefined,
  });
  links.push(link);
  link.start();
  return link;
}

describe('switch link', () => {
  it('is back within a fraction of a second once its gateway is, after a restart of seconds', async () => {
    const first = await gatewayOn();
    const link = linkTo(first.port);
    await until(() => link.connected, 5000);
    // The gateway goes (a restart that takes 1.6 s): every start meanwhile and until the link is back waits.
    for (const c of first.wss.clients) c.terminate();
    await new Promise((r) => first.wss.close(r));
    await until(() => !link.connected, 5000);
    await sleep(1600);
    const back = await gatewayOn(first.port);
    const t0 = Date.now();
    await until(() => link.connected, 5000);
    // A back-off doubling to 2 s came back up to 1.5 s after the gateway did (tries at 0.1, 0.3, 0.7, 1.5, 3.1 s).
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(back.asked()).toBeGreaterThan(0);
  });

  it('asks a gateway that refuses it less and less often, up to every 2 s', async () => {
    const refusing = await gatewayOn(0, true);
    linkTo(refusing.port);
    await sleep(3500);
    // At most every 250 ms it would have asked 14 times or more; backing off to 2 s: 0.1, 0.3, 0.7, 1.5, 3.1 s.
    expect(refusing.asked()).toBeGreaterThanOrEqual(3);
    expect(refusing.asked()).toBeLessThanOrEqual(7);
  });
});

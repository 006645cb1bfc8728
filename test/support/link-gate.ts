/**
 * A TCP gate in front of a gateway, for a client that must find it
 * unreachable, then back at a moment of the test's choosing. Open, it pipes
 * each connection through. Shut, it cuts the connections it carries and
 * holds each new one (accepted, never answered: a WebSocket client waits in
 * its handshake); opened again, the held ones go through at once.
 */
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { paired } from './hold-proxy';

export class LinkGate {
  private readonly server: Server;
  private readonly piped = new Set<Socket>();
  private held: { client: Socket; data: Buffer[] }[] = [];
  private shut_ = false;

  constructor(private target: number) {
    this.server = createServer((client) => {
      client.on('error', () => undefined);
      if (!this.shut_) return this.pipe(client, []);
      const h = { client, data: [] as Buffer[] };
      this.held.push(h);
      client.on('data', (d: Buffer) => h.data.push(d));
      client.on('close', () => (this.held = this.held.filter((x) => x !== h)));
    });
  }

  /** Listens on a free loopback port; answers the gateway's switch URL through the gate. */
  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `ws://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1/switch`;
  }

  /** Connections waiting for the gate to open. */
  get waiting(): number {
    return this.held.length;
  }

  shut(): void {
    this.shut_ = true;
    for (const s of this.piped) s.destroy();
  }

  /** Pipes the connections made from now on to another port: a gateway restarted elsewhere. */
  retarget(port: number): void {
    this.target = port;
  }

  open(): void {
    this.shut_ = false;
    for (const h of this.held.splice(0)) {
      h.client.removeAllListeners('data').removeAllListeners('close');
      this.pipe(h.client, h.data);
    }
  }

  async close(): Promise<void> {
    this.shut();
    for (const h of this.held.splice(0)) h.client.destroy();
    await new Promise((r) => this.server.close(r));
  }

  private pipe(client: Socket, early: Buffer[]): void {
    const up = connect(this.target, '127.0.0.1');
    for (const d of early) up.write(d);
    paired(client, up, this.piped);
    client.on('data', (d: Buffer) => up.write(d));
    up.on('data', (d: Buffer) => client.write(d));
  }
}

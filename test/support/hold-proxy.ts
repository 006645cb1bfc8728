/**
 * A TCP proxy in front of a redis-server that can lose answers: armed with a
 * string, it lets every command through but holds back every reply from the
 * moment a command containing that string goes by (say a script's function
 * name), until `release`. The command runs, its client times out: the
 * ambiguous outcome ("did it happen?") without stopping Redis itself.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A proxied connection's two sockets, kept in `open` while they are: either one closing closes the
 * other, and their errors are only that (a test's proxy outlives what it carries).
 */
export function paired(client: Socket, up: Socket, open: Set<Socket>): void {
  open.add(client).add(up);
  for (const [a, b] of [
    [client, up],
    [up, client],
  ] as const) {
    a.on('close', () => (b.destroy(), open.delete(a)));
    a.on('error', () => undefined);
  }
}

export class HoldProxy {
  private readonly server: Server;
  private readonly socks = new Set<Socket>();
  private armed: string | undefined;
  private holding = false;
  private held: { to: Socket; data: Buffer }[] = [];

  constructor(private readonly target: number) {
    this.server = createServer((client) => {
      const up = connect(this.target, '127.0.0.1');
      paired(client, up, this.socks);
      client.on('data', (d: Buffer) => {
        if (this.armed !== undefined && d.includes(this.armed)) this.holding = true;
        up.write(d);
      });
      up.on('data', (d: Buffer) => (this.holding ? this.held.push({ to: client, data: d }) : client.write(d)));
    });
  }

  /** Listens on a free loopback port; answers the URL to give the client. */
  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `redis://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** From the next command containing `marker` on, replies are held back. */
  holdAfter(marker: string): void {
    this.armed = marker;
  }

  /** Whether a reply is held back: the command that armed the hold has run in Redis. */
  get holds(): boolean {
    return this.held.length > 0;
  }

  /** Lets the held replies (and all later ones) through. */
  release(): void {
    this.holding = false;
    this.armed = undefined;
    for (const h of this.held.splice(0)) h.to.write(h.data);
  }

  async close(): Promise<void> {
    for (const s of this.socks) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}

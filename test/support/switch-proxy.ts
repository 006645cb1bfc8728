/**
 * A WebSocket relay in front of a gateway's switch endpoint that answers the
 * requests a test picks with an error of its own (`unavailable`: what a
 * gateway answers for a bucket whose Redis is away) and relays the rest, both
 * ways, as they are. For a switch that must meet one call's trouble while its
 * other calls go on.
 */
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';

type Msg = Record<string, unknown>;

export class SwitchProxy {
  private readonly wss: WebSocketServer;
  /** Requests answered by the proxy so far. */
  readonly refused: Msg[] = [];
  /** The gateway's frames held back (holdAnswers), in order, while they are. */
  private held: (() => void)[] | undefined;

  /** `refuse`: the reason to answer a request with, or undefined to relay it. */
  constructor(
    private readonly gatewayPort: number,
    private readonly refuse: (m: Msg) => string | undefined,
  ) {
    this.wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    this.wss.on('connection', (client, req) => this.relay(client, req.headers.authorization ?? ''));
  }

  /**
   * A proxy that refuses `unavailable` every stop of the calls started on `id` (their bucket's Redis
   * away): a connector closing then owes those stops, and waits for them.
   */
  static refusingStopsOf(gatewayPort: number, id: string): SwitchProxy {
    const calls = new Set<string>();
    return new SwitchProxy(gatewayPort, (m) => {
      if (m.op === 'start' && m.id === id && typeof m.call === 'string') calls.add(m.call);
      return m.op === 'stop' && calls.has(String(m.call)) ? 'unavailable' : undefined;
    });
  }

  /** The switch URL to give the client. */
  async listen(): Promise<string> {
    if (!this.wss.address()) await new Promise((r) => this.wss.once('listening', r));
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}/v1/switch`;
  }

  /** Holds back whatever the gateway sends from now on (its answers, cut-offs) until releaseAnswers(). */
  holdAnswers(): void {
    this.held ??= [];
  }

  /** Lets the frames held back go, in order, and the next ones through as they come. */
  releaseAnswers(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const go of held) go();
  }

  async close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    await new Promise((r) => this.wss.close(r));
  }

  private relay(client: WebSocket, authorization: string): void {
    const up = new WebSocket(`ws://127.0.0.1:${this.gatewayPort}/v1/switch`, { headers: { authorization } });
    const early: string[] = [];
    up.on('open', () => early.splice(0).forEach((f) => up.send(f)));
    up.on('message', (data: Buffer, isBinary) => {
      const go = (): void => client.send(data, { binary: isBinary });
      if (this.held) this.held.push(go);
      else go();
    });
    client.on('message', (data: Buffer) => {
      const body = JSON.parse(data.toString('utf8')) as Msg | Msg[];
      const passed: Msg[] = [];
      for (const m of Array.isArray(body) ? body : [body]) {
        const reason = this.refuse(m);
        if (reason === undefined) passed.push(m);
        else {
          this.refused.push(m);
          client.send(
            JSON.stringify({ op: 'error', ref: m.ref, call: m.call, reason, message: `${String(m.op)}: ${reason}` }),
          );
        }
      }
      if (passed.length === 0) return;
      const frame = JSON.stringify(passed.length === 1 ? passed[0] : passed);
      if (up.readyState === WebSocket.OPEN) up.send(frame);
      else early.push(frame);
    });
    for (const [a, b] of [
      [client, up],
      [up, client],
    ] as const) {
      a.on('close', () => b.terminate());
      a.on('error', () => undefined);
    }
  }
}

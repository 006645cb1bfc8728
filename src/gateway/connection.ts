import type { WebSocket } from 'uWebSockets.js';
import type { TokenInfo } from '../catalog/schema';
import { encodeFrame, type Encoding } from '../protocol/codec';

export interface ConnData {
  token: TokenInfo;
  /** sha256 of the token: how a revocation or a change of the token finds its connections. */
  tokenHash: string;
  path: string;
  /** Its client group (an IPv6 client by its /64), counted against MAX_CONNECTIONS_PER_CLIENT until the connection closes. */
  client: string;
  conn?: Conn;
}

/**
 * One client connection. Replies and pushes queue here and leave in one frame
 * per encoding per event-loop turn (an array when there are several), which
 * keeps syscalls and encoder calls per message low at high tick rates.
 */
export class Conn {
  inflight = 0;
  closed = false;
  private out: Record<Encoding, object[]> = { msgpack: [], json: [] };
  private scheduled = false;

  /** One reply function per encoding, made once: no closure per message on the hot path. */
  readonly reply: Record<Encoding, (msg: object) => void> = {
    msgpack: (msg) => this.send(msg, 'msgpack'),
    json: (msg) => this.send(msg, 'json'),
  };

  constructor(
    readonly ws: WebSocket<ConnData>,
    readonly token: TokenInfo,
    readonly tokenHash: string,
    /** Told after each write: the gateway bounds all connections' unsent output together. */
    private readonly wrote: (conn: Conn) => void = () => undefined,
  ) {}

  /** Closes the connection with a close frame; nothing more is sent on it. */
  end(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.ws.end(code, reason);
  }

  /**
   * Closes the connection at once, no close frame: one that reads nothing would
   * hold a close frame, and its unsent output, until it timed out.
   */
  readonly drop = (): void => {
    if (this.closed) return;
    this.closed = true;
    this.ws.close();
  };

  send(msg: object, enc: Encoding): void {
    if (this.closed) return;
    this.out[enc].push(msg);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    if (this.closed) return;
    const { msgpack, json } = this.out;
    this.out = { msgpack: [], json: [] };
    this.ws.cork(() => {
      if (msgpack.length) this.ws.send(encodeFrame(msgpack, 'msgpack'), true);
      if (json.length) this.ws.send(encodeFrame(json, 'json'), false);
    });
    this.wrote(this);
  };
}

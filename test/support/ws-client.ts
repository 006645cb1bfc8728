/**
 * The WebSocket client of the tests: a real `ws` socket to the gateway that
 * keeps every message with the frame it came in (encoding, whether the frame
 * held an array, its bytes) and lets a test wait for the message it expects.
 * Client (switch), Scanner and Wire (frame level) are thin views of it that
 * differ only in how a request is sent and its answer found.
 */
import { request as httpRequest } from 'node:http';
import WebSocket from 'ws';
import { pack, Unpackr } from 'msgpackr';

/** The gateway sends integers beyond 32 bits as int64; a JS client reads them back as numbers ('auto'). */
const unpackr = new Unpackr({ mapsAsObjects: true, int64AsType: 'auto' as 'number' });

export type Msg = Record<string, any>;

/** One message as it arrived: which frame, in which encoding, and whether that frame held an array. */
export interface Got {
  msg: Msg;
  /** The frame was binary (MessagePack), else text (JSON). */
  binary: boolean;
  frame: number;
  inArray: boolean;
}

export interface Frame {
  binary: boolean;
  body: unknown;
  /** The frame's bytes as received. */
  raw: Buffer;
}

export interface ConnectOptions {
  /** Encoding of what `send` sends unless told otherwise: MessagePack, else JSON. */
  binary?: boolean;
  path?: string;
  query?: string;
  /** Extra upgrade request headers. */
  headers?: Record<string, string>;
}

/** A refused upgrade: the HTTP status and body the gateway answered with. */
export type UpgradeRefused = Error & { status: number; body: string };

const isAnswer = (ref: unknown) => (m: Msg) => m.ref === ref && m.op !== 'alert' && m.op !== 'cutoff';

export class WsClient {
  readonly frames: Frame[] = [];
  readonly got: Got[] = [];
  /** The messages of `got` alone, in arrival order. */
  readonly received: Msg[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: (() => void)[] = [];

  constructor(
    readonly ws: WebSocket,
    readonly binary = false,
  ) {
    ws.on('message', (data, isBinary) => {
      const buf = data as Buffer;
      const body: unknown = isBinary ? unpackr.unpack(buf) : JSON.parse(buf.toString('utf8'));
      const frame = this.frames.length;
      this.frames.push({ binary: isBinary, body, raw: Buffer.from(buf) });
      for (const msg of Array.isArray(body) ? (body as Msg[]) : [body as Msg]) {
        this.got.push({ msg, binary: isBinary, frame, inArray: Array.isArray(body) });
        this.received.push(msg);
      }
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
    this.closed = new Promise((resolve) =>
      ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
  }

  /**
   * Opens a socket (bearer `tok` when given) and wraps it with `make` before it
   * is open, so no message is missed. A refused upgrade rejects with an
   * UpgradeRefused.
   */
  static dial<C extends WsClient>(
    make: (ws: WebSocket) => C,
    port: number,
    tok: string | undefined,
    opts: ConnectOptions & { path: string },
  ): Promise<C> {
    return new Promise((resolve, reject) => {
      const url = `ws://127.0.0.1:${port}${opts.path}${opts.query ? `?${opts.query}` : ''}`;
      const ws = new WebSocket(url, {
        headers: { ...(tok ? { Authorization: `Bearer ${tok}` } : {}), ...opts.headers },
      });
      const client = make(ws);
      ws.once('open', () => resolve(client));
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () =>
          reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body })),
        );
      });
    });
  }

  static connect(port: number, tok: string | undefined, opts: ConnectOptions = {}): Promise<WsClient> {
    return WsClient.dial((ws) => new WsClient(ws, opts.binary), port, tok, {
      ...opts,
      path: opts.path ?? '/v1/switch',
    });
  }

  send(m: unknown, binary = this.binary): void {
    this.ws.send(binary ? pack(m) : JSON.stringify(m), { binary });
  }

  /** Sends bytes or text as they are, in a binary or a text frame. */
  sendRaw(data: Buffer | Uint8Array | string, binary: boolean): void {
    this.ws.send(data, { binary });
  }

  /**
   * The first message at index >= from matching pred, received already or
   * later. Rejects after timeoutMs with the last five messages.
   */
  arrival(pred: (m: Msg) => boolean, from = 0, timeoutMs = 5000): Promise<Got> {
    return new Promise((resolve, reject) => {
      const deadline = setTimeout(
        () => reject(new Error(`timed out; last received: ${JSON.stringify(this.got.slice(-5).map((g) => g.msg))}`)),
        timeoutMs,
      );
      const check = (): void => {
        const hit = this.got.slice(from).find((g) => pred(g.msg));
        if (hit) {
          clearTimeout(deadline);
          resolve(hit);
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }

  /** Waits until at least n frames have arrived. */
  async frameCount(n: number, timeoutMs = 5000): Promise<Frame[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length < n) {
      if (Date.now() > deadline) throw new Error(`expected ${n} frames, got ${this.frames.length}`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
    return this.frames;
  }

  /** Sends the messages (each with its own ref) in one frame and waits for every answer: in the order sent. */
  requestAll(ms: Msg[], binary = this.binary): Promise<Msg[]> {
    const from = this.got.length;
    this.send(ms, binary);
    return Promise.all(ms.map(async (m) => (await this.arrival(isAnswer(m.ref), from)).msg));
  }

  withRef(ref: unknown): Got[] {
    return this.got.filter((g) => g.msg.ref === ref);
  }

  close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    const done = this.closed.then(() => undefined);
    this.ws.close();
    return done;
  }
}

/** A switch (by default on /v1/switch): requests and waits answer with the message alone. */
export class Client extends WsClient {
  static override connect(port: number, tok: string, opts: ConnectOptions = {}): Promise<Client> {
    return WsClient.dial((ws) => new Client(ws, opts.binary), port, tok, { ...opts, path: opts.path ?? '/v1/switch' });
  }

  /** Waits for the first message (already received or future) matching pred. */
  async waitFor(pred: (m: Msg) => boolean, timeoutMs = 5000): Promise<Msg> {
    return (await this.arrival(pred, 0, timeoutMs)).msg;
  }

  /**
   * Sends a request with a ref and waits for the reply with that ref (alerts and cut-offs carry none)
   * that arrives after it: an earlier answer to the same ref is not this request's.
   */
  async request(m: Msg, timeoutMs?: number): Promise<Msg> {
    const from = this.got.length;
    this.send(m);
    return (await this.arrival(isAnswer(m.ref), from, timeoutMs)).msg;
  }
}

/** A scanner's view of a reply: the message and its frame's encoding. */
export type Reply = Pick<Got, 'msg' | 'binary'>;
const reply = ({ msg, binary }: Got): Reply => ({ msg, binary });

/** A scanner on /v1/scanner: a ref is added to a request that has none, and each reply keeps its frame's encoding. */
export class Scanner extends WsClient {
  private nextRef = 1;

  static override connect(port: number, tok: string, opts: ConnectOptions = {}): Promise<Scanner> {
    return WsClient.dial((ws) => new Scanner(ws, opts.binary), port, tok, {
      ...opts,
      path: opts.path ?? '/v1/scanner',
    });
  }

  async waitFor(pred: (m: Msg) => boolean, from = 0, timeoutMs = 5000): Promise<Reply> {
    return reply(await this.arrival(pred, from, timeoutMs));
  }

  /** Sends a message (a ref is added when missing) and waits for the reply with its ref. */
  async requestGot(m: Msg, binary = this.binary): Promise<Reply> {
    const msg = { ...m, ref: m.ref ?? this.nextRef++ };
    const from = this.got.length;
    this.send(msg, binary);
    return reply(await this.arrival((x) => x.ref === msg.ref, from));
  }

  async request(m: Msg, binary = this.binary): Promise<Msg> {
    return (await this.requestGot(m, binary)).msg;
  }

  /** redeem: the reply without its ref (scan is echoed). */
  async redeem(
    fields: { scan: string; id: string; item?: string; qty?: number; gate?: string; dir?: 'in' | 'out' } & Msg,
  ): Promise<Msg> {
    const { ref: _ref, ...rest } = await this.request({ op: 'redeem', ...fields });
    return rest;
  }

  async validate(
    fields: { id: string; item?: string; qty?: number; gate?: string; dir?: 'in' | 'out' } & Msg,
  ): Promise<Msg> {
    const { ref: _ref, ...rest } = await this.request({ op: 'validate', ...fields });
    return rest;
  }

  async reverse(scan: string, reason?: string): Promise<Msg> {
    const { ref: _ref, ...rest } = await this.request({
      op: 'reverse',
      scan,
      ...(reason === undefined ? {} : { reason }),
    });
    return rest;
  }
}

/**
 * A switch at frame level: every request names its encoding, and answers come
 * with their frame (type, boundaries, bytes), which the shared Client hides.
 */
export class Wire extends WsClient {
  static override connect(
    port: number,
    tok: string | undefined,
    opts: Omit<ConnectOptions, 'binary'> = {},
  ): Promise<Wire> {
    return WsClient.dial((ws) => new Wire(ws), port, tok, { ...opts, path: opts.path ?? '/v1/switch' });
  }

  json(m: unknown): void {
    this.send(m, false);
  }

  pack(m: unknown): void {
    this.send(m, true);
  }

  raw(data: Buffer | string, binary: boolean): void {
    this.sendRaw(data, binary);
  }

  /** First message at index >= from matching pred (already received or future). */
  waitFor(pred: (m: Msg) => boolean, from = 0, timeoutMs = 5000): Promise<Got> {
    return this.arrival(pred, from, timeoutMs);
  }

  /** Sends a message carrying a ref and waits for the answer with that ref. */
  request(m: Msg, binary: boolean, timeoutMs?: number): Promise<Got> {
    const from = this.got.length;
    this.send(m, binary);
    return this.arrival(isAnswer(m.ref), from, timeoutMs);
  }
}

/** A WebSocket upgrade request by hand, to see the status and body of a refused upgrade. */
export function upgrade(
  port: number,
  headers: Record<string, string>,
  path = '/v1/switch',
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      path,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
        ...headers,
      },
    });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 0, body: '' });
    });
    req.on('error', reject);
    req.end();
  });
}

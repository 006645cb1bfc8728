import { request } from 'node:http';
import WebSocket from 'ws';
import { pack, Unpackr } from 'msgpackr';
import { waitForGot, type Msg } from '../helpers/env';

/** The gateway sends integers beyond 32 bits as int64; a JS switch reads them back as numbers ('auto'). */
const unpackr = new Unpackr({ mapsAsObjects: true, int64AsType: 'auto' as 'number' });

/** One message as it arrived: which frame, in which encoding, and whether that frame held an array. */
export interface Got {
  msg: Msg;
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

/**
 * A switch client over a raw `ws` socket that keeps what the frame-level
 * helpers of the shared Client hide: the frame type (binary = MessagePack,
 * text = JSON) and the frame boundaries.
 */
export class Wire {
  readonly frames: Frame[] = [];
  readonly got: Got[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      const buf = data as Buffer;
      const body: unknown = isBinary ? unpackr.unpack(buf) : JSON.parse(buf.toString('utf8'));
      const frame = this.frames.length;
      this.frames.push({ binary: isBinary, body, raw: Buffer.from(buf) });
      const list = Array.isArray(body) ? (body as Msg[]) : [body as Msg];
      for (const msg of list) this.got.push({ msg, binary: isBinary, frame, inArray: Array.isArray(body) });
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  static connect(port: number, tok: string | undefined, opts: { path?: string; query?: string } = {}): Promise<Wire> {
    return new Promise((resolve, reject) => {
      const url = `ws://127.0.0.1:${port}${opts.path ?? '/v1/switch'}${opts.query ? `?${opts.query}` : ''}`;
      const ws = new WebSocket(url, { headers: tok ? { Authorization: `Bearer ${tok}` } : {} });
      const w = new Wire(ws);
      ws.once('open', () => resolve(w));
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })));
    });
  }

  json(m: unknown): void {
    this.ws.send(JSON.stringify(m), { binary: false });
  }

  pack(m: unknown): void {
    this.ws.send(pack(m), { binary: true });
  }

  send(m: unknown, binary: boolean): void {
    if (binary) this.pack(m);
    else this.json(m);
  }

  raw(data: Buffer | string, binary: boolean): void {
    this.ws.send(data, { binary });
  }

  /** First message at index >= from matching pred (already received or future). */
  waitFor(pred: (m: Msg) => boolean, from = 0, timeoutMs = 5000): Promise<Got> {
    return waitForGot(this.got, (check) => this.waiters.push(check), pred, from, timeoutMs);
  }

  /** Sends a message carrying a ref and waits for the answer with that ref. */
  request(m: Msg, binary: boolean, timeoutMs?: number): Promise<Got> {
    const from = this.got.length;
    this.send(m, binary);
    return this.waitFor((x) => x.ref === m.ref && x.op !== 'alert' && x.op !== 'cutoff', from, timeoutMs);
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

/** A WebSocket upgrade request by hand, to see the status and body of a refused upgrade. */
export function upgrade(port: number, headers: Record<string, string>, path = '/v1/switch'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({
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

/** Parses Prometheus text into samples; `sample` finds one by name and exact label set. */
export function parseMetrics(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).sort();
  const hit = parseMetrics(text).find((s) => {
    if (s.name !== name) return false;
    const have = Object.entries(s.labels).sort();
    return have.length === want.length && have.every(([k, v], i) => want[i]![0] === k && want[i]![1] === v);
  });
  return hit?.value;
}

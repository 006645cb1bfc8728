/**
 * A real HTTP webhook receiver for tests: it answers each POST as its current
 * behaviour says (2xx, a status, or no answer at all), records every request
 * with its raw body, and checks Tessera's signature the way a receiver would.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** How the receiver answers the next request: `ok` (204), a status code, or `hang` (never answers). */
export type Behaviour = 'ok' | 'hang' | number;

export interface Received {
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** What the receiver answered (0 for a request it left hanging). */
  status: number;
}

export class Receiver {
  readonly received: Received[] = [];
  /** Behaviours for the next requests, in order; when empty, `fallback`. */
  readonly script: Behaviour[] = [];
  fallback: Behaviour = 'ok';
  /** Answers (other than `hang`) wait this long: a slow receiver. */
  delayMs = 0;
  /** Called for each request it leaves unanswered (`hang`), once it has recorded it. */
  onHang?: () => void;
  /** The most requests it held unanswered at once (hanging ones included). */
  maxOpen = 0;
  private open = 0;
  private readonly hanging: ServerResponse[] = [];
  private readonly server: Server = createServer((req, res) => this.handle(req, res));
  /** Where it listens (set by start). */
  url = '';

  static async start(): Promise<Receiver> {
    const self = new Receiver();
    await new Promise<void>((ok) => self.server.listen(0, '127.0.0.1', ok));
    self.url = `http://127.0.0.1:${(self.server.address() as AddressInfo).port}/hook`;
    return self;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    this.maxOpen = Math.max(this.maxOpen, ++this.open);
    res.on('close', () => this.open--);
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const how = this.script.shift() ?? this.fallback;
      const status = how === 'ok' ? 204 : how === 'hang' ? 0 : how;
      this.received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), status });
      if (how === 'hang') {
        this.hanging.push(res);
        this.onHang?.();
      } else if (this.delayMs > 0) setTimeout(() => res.writeHead(status).end(), this.delayMs);
      else res.writeHead(status).end();
    });
  }

  /** The bodies of the events it answered 2xx, by event id: each event once, however often it came. */
  delivered(): Map<string, Record<string, unknown>> {
    const out = new Map<string, Record<string, unknown>>();
    for (const r of this.received) {
      if (r.status < 200 || r.status > 299) continue;
      const body = JSON.parse(r.body) as Record<string, unknown>;
      out.set(String(body.id), body);
    }
    return out;
  }

  async close(): Promise<void> {
    for (const res of this.hanging) res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((ok) => this.server.close(() => ok()));
  }
}

/** Whether a `Tessera-Signature` header (t=<unix>,v1=<hex>) is right for this body and secret. */
export function validSignature(header: unknown, body: string, secret: string): boolean {
  if (typeof header !== 'string') return false;
  const parts = Object.fromEntries(header.split(',').map((kv) => kv.split('=') as [string, string]));
  if (!parts.t || !parts.v1) return false;
  const want = createHmac('sha256', secret).update(`${parts.t}.${body}`).digest();
  const got = Buffer.from(parts.v1, 'hex');
  return got.length === want.length && timingSafeEqual(got, want);
}

/**
 * The connector's WebSocket to Tessera, an ordinary switch of docs/protocol.md:
 * JSON text frames, everything said in one event-loop turn sent as one array
 * frame, failover across several gateways, and every request that has no
 * answer yet resent on the next connection (requests are idempotent).
 */
import WebSocket from 'ws';
import type { Logger } from 'pino';

export type Msg = Record<string, unknown>;

/**
 * Reconnection once every gateway failed in a row: soon, then at most every RETRY_MAX_MS. With no
 * gateway a new call's start waits and is refused, so every moment after a gateway is back is
 * refusals: doubling to 2 s came back up to 2 s after a gateway restart. A gateway that answers
 * and refuses (a revoked token, a wrong path) is not restarting: it is asked less often.
 */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 250;
const REFUSED_MAX_MS = 2000;

export interface SwitchLinkOptions {
  urls: string[];
  token: string;
  log: Logger;
  /** Every message Tessera sends that is not the answer to a pending request. */
  onMessage: (m: Msg) => void;
  /** After each (re)connection, once the pending requests were resent: the caller adds its latest ticks. */
  onConnect?: () => void;
}

interface Pending {
  msg: Msg;
  resolve: (reply: Msg) => void;
}

export class SwitchLink {
  private ws: WebSocket | undefined;
  private open_ = false;
  private urlIndex = 0;
  private backoffMs = RETRY_FIRST_MS;
  /** Every gateway failed since the last connection: the loss was said at warn, the tries since at debug. */
  private down = false;
  /** The latest try was answered and refused, not unreachable. */
  private refused = false;
  private retry: NodeJS.Timeout | undefined;
  private closed = false;
  private nextRef = 1;
  private readonly pending = new Map<number, Pending>();
  private outbox: Msg[] = [];
  private flushQueued = false;

  constructor(private readonly o: SwitchLinkOptions) {
    if (o.urls.length === 0) throw new Error('at least one gateway URL is needed');
  }

  get connected(): boolean {
    return this.open_;
  }

  start(): void {
    this.closed = false;
    this.connect();
  }

  /**
   * Sends a request and resolves with its answer (`started`, `stopped`,
   * `ticked`, `pong` or `error`), however many reconnections that takes.
   */
  request(m: Msg): Promise<Msg> {
    const ref = this.nextRef++;
    const msg = { ...m, ref };
    return new Promise((resolve) => {
      this.pending.set(ref, { msg, resolve });
      if (this.open_) this.queue(msg);
    });
  }

  /** Sends a message that wants no answer (a tick); dropped while disconnected, the caller resends on connect. */
  send(m: Msg): void {
    if (this.open_) this.queue(m);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    // What was said in this turn still goes (a closing connector's last stops).
    this.flush();
    this.ws?.terminate();
    this.ws = undefined;
    this.open_ = false;
  }

  private queue(m: Msg): void {
    this.outbox.push(m);
    if (this.flushQueued) return;
    this.flushQueued = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushQueued = false;
    const batch = this.outbox;
    this.outbox = [];
    if (!this.open_ || !this.ws || batch.length === 0) return;
    // The gateway takes at most MAX_BATCH (2000) messages a frame.
    for (let i = 0; i < batch.length; i += 1000) {
      const part = batch.slice(i, i + 1000);
      this.ws.send(JSON.stringify(part.length === 1 ? part[0] : part));
    }
  }

  private connect(): void {
    const url = this.o.urls[this.urlIndex % this.o.urls.length]!;
    const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${this.o.token}` }, perMessageDeflate: false });
    this.ws = ws;
    ws.on('open', () => {
      this.open_ = true;
      this.backoffMs = RETRY_FIRST_MS;
      this.down = false;
      this.refused = false;
      this.o.log.info({ url }, 'tessera: connected');
      for (const p of this.pending.values()) this.queue(p.msg);
      this.o.onConnect?.();
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) return;
      let body: unknown;
      try {
        body = JSON.parse(data.toString('utf8'));
      } catch {
        return;
      }
      for (const m of (Array.isArray(body) ? body : [body]) as Msg[]) this.dispatch(m);
    });
    ws.on('unexpected-response', (_req, res) => {
      this.o.log.error({ url, status: res.statusCode }, 'tessera: connection refused');
      this.refused = true;
      ws.terminate();
    });
    ws.on('error', (err) => this.o.log.debug({ url, err: err.message }, 'tessera: socket error'));
    ws.on('close', () => {
      if (this.ws !== ws) return;
      const was = this.open_;
      this.open_ = false;
      this.ws = undefined;
      this.outbox = [];
      if (this.closed) return;
      // The next gateway in the list; a pause only once every one has failed in a row.
      this.urlIndex++;
      const delay = was ? 0 : this.urlIndex % this.o.urls.length === 0 ? this.backoffMs : 0;
      if (!was) this.backoffMs = Math.min(this.backoffMs * 2, this.refused ? REFUSED_MAX_MS : RETRY_MAX_MS);
      this.refused = false;
      const lost = { url, retryMs: delay };
      if (was || !this.down) this.o.log.warn(lost, 'tessera: connection lost; trying the next gateway');
      else this.o.log.debug(lost, 'tessera: gateway unreachable; trying again');
      this.down = true;
      this.retry = setTimeout(() => this.connect(), delay);
    });
  }

  private dispatch(m: Msg): void {
    const ref = m.ref;
    if (typeof ref === 'number' && m.op !== 'alert' && m.op !== 'cutoff') {
      const p = this.pending.get(ref);
      if (p) {
        this.pending.delete(ref);
        p.resolve(m);
        return;
      }
    }
    this.o.onMessage(m);
  }
}

/**
 * The card company as gateways reach it, with faults planned call by call: a
 * real HTTP proxy in front of the sandbox (or any provider) that applies the
 * next planned fault of a call's kind, so a test decides which of authorize,
 * capture, void or the status query goes wrong, and how.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * `hang`: passed on (the work is done), never answered; `fail`: 503, not passed on; `slow`: answered
 * after a third of the gateways' timeout; `late`: passed on, answered after twice the timeout;
 * `queued`: waits in the card company's queue for `queuedMs`, is passed on then, and never answered;
 * `garble`: passed on, its answer made one Tessera cannot book (a commission of 1.5 micro-units, a
 * payment state outside the five); `overcharge`: passed on, a capture's commission answered larger
 * than any amount.
 */
export type Fault = 'hang' | 'fail' | 'slow' | 'late' | 'queued' | 'garble' | 'overcharge';
export type CallKind = 'authorize' | 'capture' | 'void' | 'payments';

export class FaultyProvider {
  private server?: Server;
  private readonly plan = new Map<string, Fault[]>();
  /** Faults planned since the last take(), as `kind:fault`, for a test's log. */
  private planned: string[] = [];
  /** Requests waiting in the queue, not passed on yet. */
  queued = 0;
  url = '';

  /** `timeoutMs`: the gateways' PROVIDER_TIMEOUT_MS, which `slow` stays under and `late` goes past. */
  constructor(
    private readonly upstream: string,
    private readonly timeoutMs: number,
    private readonly queuedMs = 1500,
  ) {}

  /** Plans a fault for the next call of this kind not yet given one. */
  add(kind: CallKind, f: Fault): void {
    this.planned.push(`${kind}:${f}`);
    this.plan.set(kind, [...(this.plan.get(kind) ?? []), f]);
  }

  /** Drops the faults not used yet. */
  clear(): void {
    this.plan.clear();
  }

  /** The faults planned since the last call, as `kind:fault`. */
  take(): string[] {
    return this.planned.splice(0);
  }

  async listen(): Promise<string> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        void this.pass(req.method ?? 'GET', req.url ?? '/', chunks)
          .then(
            (answer) => answer && res.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.text),
          )
          .catch(() => res.destroy());
      });
    });
    this.server = server;
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this.url;
  }

  /** Applies the call's fault; what to answer, or undefined for no answer. */
  private async pass(
    method: string,
    url: string,
    chunks: Buffer[],
  ): Promise<{ status: number; text: string } | undefined> {
    const kind = /^\/v1\/(authorize|capture|void|payments)/.exec(url)?.[1] ?? 'other';
    const f = this.plan.get(kind)?.shift();
    if (f === 'fail') return { status: 503, text: '{}' };
    if (f === 'slow') await sleep(this.timeoutMs / 3);
    if (f === 'queued') {
      this.queued++;
      await sleep(this.queuedMs);
    }
    try {
      const up = await fetch(`${this.upstream}${url}`, {
        method,
        headers: { 'content-type': 'application/json' },
        body: chunks.length ? Buffer.concat(chunks) : undefined,
      });
      const text = await up.text();
      // Hung and queued calls did their work; their answers never come (closed at close()).
      if (f === 'hang' || f === 'queued') return undefined;
      if (f === 'late') await sleep(this.timeoutMs * 2);
      if (f === 'garble' || f === 'overcharge') return { status: up.status, text: this.rewrite(f, text) };
      return { status: up.status, text };
    } finally {
      if (f === 'queued') this.queued--;
    }
  }

  /** What `garble` and `overcharge` make of an answer. */
  private rewrite(f: 'garble' | 'overcharge', text: string): string {
    const body = JSON.parse(text) as Record<string, unknown>;
    if (f === 'overcharge') {
      if (body.status === 'captured') body.commission = Number.MAX_SAFE_INTEGER;
    } else if (body.status === 'captured' || body.state === 'captured') body.commission = 1.5;
    else if (typeof body.state === 'string') body.state = 'pending_review';
    return JSON.stringify(body);
  }

  close(): Promise<void> {
    return new Promise((r) => {
      if (!this.server) return r();
      this.server.closeAllConnections();
      this.server.close(() => r());
    });
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

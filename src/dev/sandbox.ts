/**
 * The sandbox card company: a member database (name, card number, card PIN,
 * credit limit, used credit) and the provider API Tessera's HttpProvider speaks
 * (authorize, capture, void, status; idempotent by reference), with
 * configurable latency, failure injection and a commission rate. State is kept
 * in memory: it is a sandbox.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { luhnValid } from '../ids/luhn';

export interface Member {
  name: string;
  card: string;
  pin: string;
  /** Credit limit and credit used, in micro-units. */
  limit: number;
  used: number;
}

export interface Faults {
  /** Added to every answer (ms). */
  latencyMs: number;
  /** Share of calls answered 503 without doing anything. */
  failRate: number;
  /** Share of calls that do their work but never answer (the caller times out). */
  hangRate: number;
  /** The next n calls do their work and never answer: deterministic timeouts for tests. */
  hangNext: number;
}

interface Payment {
  reference: string;
  card: string;
  amount: number;
  currency: string;
  state: 'authorized' | 'captured' | 'voided' | 'declined';
  authId?: string;
  commission?: number;
  reason?: string;
}

export interface SandboxOptions {
  members?: Member[];
  /** Commission kept by the provider, in basis points of the amount. */
  commissionBp?: number;
  faults?: Partial<Faults>;
}

export const DEMO_MEMBERS: Member[] = [
  { name: 'Alice Traveller', card: '4000000000000002', pin: '1234', limit: 100_000_000, used: 0 },
  { name: 'Bob Broke', card: '4000000000000010', pin: '1234', limit: 5_000_000, used: 0 },
  { name: 'Carol Frequent', card: '4000000000000028', pin: '4321', limit: 1_000_000_000, used: 0 },
];

export function readMembers(file: string): Member[] {
  return JSON.parse(readFileSync(file, 'utf8')) as Member[];
}

export class Sandbox {
  readonly members = new Map<string, Member>();
  readonly payments = new Map<string, Payment>();
  faults: Faults;
  commissionBp: number;
  private server?: Server;

  constructor(opts: SandboxOptions = {}) {
    for (const m of opts.members ?? DEMO_MEMBERS) this.members.set(m.card, { ...m });
    this.commissionBp = opts.commissionBp ?? 250;
    this.faults = { latencyMs: 0, failRate: 0, hangRate: 0, hangNext: 0, ...opts.faults };
  }

  authorize(b: { reference: string; card: string; cardPin: string; amount: number; currency: string }): Payment {
    const known = this.payments.get(b.reference);
    if (known) return known;
    const decline = (reason: string): Payment => {
      const p: Payment = {
        reference: b.reference,
        card: b.card,
        amount: b.amount,
        currency: b.currency,
        state: 'declined',
        reason,
      };
      this.payments.set(b.reference, p);
      return p;
    };
    if (!/^[0-9]{12,19}$/.test(b.card) || !luhnValid(b.card)) return decline('card_invalid');
    const m = this.members.get(b.card);
    if (!m) return decline('not_member');
    if (m.pin !== b.cardPin) return decline('wrong_card_pin');
    if (m.used + b.amount > m.limit) return decline('insufficient_funds');
    m.used += b.amount;
    const p: Payment = {
      reference: b.reference,
      card: b.card,
      amount: b.amount,
      currency: b.currency,
      state: 'authorized',
      authId: `auth_${randomBytes(6).toString('hex')}`,
    };
    this.payments.set(b.reference, p);
    return p;
  }

  capture(reference: string): Payment | undefined {
    const p = this.payments.get(reference);
    if (p?.state === 'authorized') {
      p.state = 'captured';
      p.commission = Math.floor((p.amount * this.commissionBp) / 10_000);
    }
    return p;
  }

  void(reference: string): Payment | undefined {
    const p = this.payments.get(reference);
    if (p && (p.state === 'authorized' || p.state === 'captured')) {
      p.state = 'voided';
      const m = this.members.get(p.card);
      if (m) m.used -= p.amount;
    }
    return p;
  }

  listen(port = 0, host = '127.0.0.1'): Promise<number> {
    this.server = createServer((req, res) => void this.handle(req, res));
    return new Promise((resolve) => {
      this.server!.listen(port, host, () => {
        const addr = this.server!.address();
        resolve(typeof addr === 'object' && addr ? addr.port : port);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server) return resolve();
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const send = (code: number, body: object): void => {
      res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    let body: Record<string, unknown> = {};
    try {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      if (chunks.length) body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
    } catch {
      return send(400, { error: 'bad_json' });
    }
    const url = new URL(req.url ?? '/', 'http://sandbox');

    // Test controls, outside the provider API.
    if (url.pathname === '/_sandbox/faults' && req.method === 'POST') {
      this.faults = { ...this.faults, ...(body as Partial<Faults>) };
      return send(200, this.faults);
    }
    if (url.pathname === '/_sandbox/members' && req.method === 'POST') {
      const m = body as unknown as Member;
      this.members.set(m.card, { ...m, used: m.used ?? 0 });
      return send(200, { ok: true });
    }
    if (url.pathname === '/_sandbox/members' && req.method === 'GET') return send(200, [...this.members.values()]);

    if (this.faults.latencyMs) await new Promise((r) => setTimeout(r, this.faults.latencyMs));
    if (Math.random() < this.faults.failRate) return send(503, { error: 'unavailable' });
    let hang = false;
    if (this.faults.hangNext > 0) {
      this.faults.hangNext--;
      hang = true;
    } else if (Math.random() < this.faults.hangRate) hang = true;
    // A hung call still does its work: exactly the unknown outcome a timeout leaves.
    const answer = (code: number, out: object): void => {
      if (!hang) send(code, out);
    };

    const ref = typeof body.reference === 'string' ? body.reference : '';
    if (url.pathname === '/v1/authorize' && req.method === 'POST') {
      if (!ref || typeof body.amount !== 'number' || typeof body.card !== 'string')
        return answer(400, { error: 'bad_request' });
      const p = this.authorize(body as never);
      return p.state === 'declined'
        ? answer(402, { status: 'declined', reason: p.reason })
        : answer(200, { status: 'approved', authId: p.authId });
    }
    if (url.pathname === '/v1/capture' && req.method === 'POST') {
      const p = this.capture(ref);
      if (!p) return answer(404, { status: 'declined', reason: 'unknown_payment' });
      if (p.state !== 'captured') return answer(409, { status: 'declined', reason: `payment_${p.state}` });
      return answer(200, { status: 'captured', commission: p.commission });
    }
    if (url.pathname === '/v1/void' && req.method === 'POST') {
      const p = this.void(ref);
      if (!p) return answer(404, { status: 'declined', reason: 'unknown_payment' });
      if (p.state !== 'voided') return answer(409, { status: 'declined', reason: `payment_${p.state}` });
      return answer(200, { status: 'voided' });
    }
    const m = /^\/v1\/payments\/(.+)$/.exec(url.pathname);
    if (m && req.method === 'GET') {
      const p = this.payments.get(decodeURIComponent(m[1]!));
      if (!p) return answer(404, { state: 'none' });
      return answer(200, { state: p.state, authId: p.authId, commission: p.commission, reason: p.reason });
    }
    send(404, { error: 'not_found' });
  }
}

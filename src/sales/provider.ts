/**
 * The card company as Tessera sees it. Every call is idempotent by the
 * purchase reference, so after a timeout the outcome is found by asking
 * `status`, and a repeated authorize or capture never charges twice.
 */
export interface PayRequest {
  reference: string;
  card: string;
  cardPin: string;
  amount: number;
  currency: string;
}

/** 'unknown': no answer (timeout, network): ask `status` before doing anything else. */
export type Outcome =
  | { status: 'approved'; authId: string }
  | { status: 'captured'; commission: number }
  | { status: 'voided' }
  | { status: 'declined'; reason: string }
  | { status: 'unknown'; detail: string };

const PAYMENT_STATES = ['none', 'authorized', 'captured', 'voided', 'declined'] as const;
export type PaymentState = (typeof PAYMENT_STATES)[number];

/** A commission in micro-units: absent is none; anything but a whole amount of 0 or more is unreadable. */
function commissionOf(v: unknown): number | undefined {
  if (v === undefined || v === null) return 0;
  return Number.isSafeInteger(v) && (v as number) >= 0 ? (v as number) : undefined;
}

export interface PaymentStatus {
  state: PaymentState;
  authId?: string;
  commission?: number;
  reason?: string;
}

export interface PaymentProvider {
  authorize(req: PayRequest): Promise<Outcome>;
  capture(reference: string): Promise<Outcome>;
  /** Cancels an authorization, or refunds a capture. */
  void(reference: string): Promise<Outcome>;
  status(reference: string): Promise<PaymentStatus | { state: 'unknown'; detail: string }>;
}

/** A provider that speaks JSON over HTTP (the sandbox provider speaks the same). */
export class HttpProvider implements PaymentProvider {
  constructor(
    private readonly baseUrl: string,
    private readonly timeoutMs: number,
    private readonly apiKey = '',
  ) {}

  private async call(
    method: 'GET' | 'POST',
    path: string,
    body?: object,
  ): Promise<{ code: number; json: Record<string, unknown> } | { detail: string }> {
    try {
      const res = await fetch(new URL(path, this.baseUrl), {
        method,
        headers: {
          'content-type': 'application/json',
          ...(this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {}),
        },
        body: body ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      const text = await res.text();
      const parsed: unknown = text ? JSON.parse(text) : {};
      // `null`, an array or a bare value is JSON too, and says no more than HTML from a proxy: no answer.
      const json = typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? parsed : {};
      return { code: res.status, json: json as Record<string, unknown> };
    } catch (err) {
      return { detail: err instanceof Error ? err.message : String(err) };
    }
  }

  private outcome(r: Awaited<ReturnType<HttpProvider['call']>>): Outcome {
    if ('detail' in r) return { status: 'unknown', detail: r.detail };
    const j = r.json;
    switch (j.status) {
      case 'approved':
        return { status: 'approved', authId: String(j.authId) };
      case 'captured': {
        // What the card company keeps goes into the books: an amount that is not one says nothing.
        const commission = commissionOf(j.commission);
        if (commission === undefined)
          return { status: 'unknown', detail: `capture answer with commission ${String(j.commission)}` };
        return { status: 'captured', commission };
      }
      case 'voided':
        return { status: 'voided' };
      case 'declined':
        return { status: 'declined', reason: typeof j.reason === 'string' ? j.reason : 'declined' };
      default:
        // A 5xx or an answer we cannot read says nothing about what happened.
        return { status: 'unknown', detail: `HTTP ${r.code}` };
    }
  }

  async authorize(req: PayRequest): Promise<Outcome> {
    return this.outcome(await this.call('POST', '/v1/authorize', req));
  }

  async capture(reference: string): Promise<Outcome> {
    return this.outcome(await this.call('POST', '/v1/capture', { reference }));
  }

  async void(reference: string): Promise<Outcome> {
    return this.outcome(await this.call('POST', '/v1/void', { reference }));
  }

  async status(reference: string): Promise<PaymentStatus | { state: 'unknown'; detail: string }> {
    const r = await this.call('GET', `/v1/payments/${encodeURIComponent(reference)}`);
    if ('detail' in r) return { state: 'unknown', detail: r.detail };
    if (r.code === 404) return { state: 'none' };
    if (r.code !== 200) return { state: 'unknown', detail: `HTTP ${r.code}` };
    const j = r.json;
    // A state we do not know, or a capture without a readable commission, is no answer.
    const state = PAYMENT_STATES.find((s) => s === j.state);
    const commission = commissionOf(j.commission);
    if (!state || (state === 'captured' && commission === undefined))
      return { state: 'unknown', detail: `payment in state ${String(j.state)}, commission ${String(j.commission)}` };
    return {
      state,
      authId: typeof j.authId === 'string' ? j.authId : undefined,
      commission,
      reason: typeof j.reason === 'string' ? j.reason : undefined,
    };
  }
}

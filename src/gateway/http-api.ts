/**
 * JSON endpoints under /v1/: bearer auth by role, body size limit and schema,
 * and the reasons catalogue (protocol/reasons.ts) for a refusal's HTTP status,
 * so every endpoint answers the same way: 200 with the result, or {error: {reason, message, ...}}.
 */
import type { HttpResponse } from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { Role, TokenInfo } from '../catalog/schema';
import type { Metrics } from '../observability/metrics';
import { schemaReason, type Checked } from '../protocol/validator';
import { failureReason } from '../redis/failure';
import { ANONYMOUS, TOKEN_BUSY, type Load } from './dispatch';
import {
  BodyError,
  REASON_HEADER,
  bearer,
  pathParam,
  readJson,
  reasonHeader,
  replyFor,
  type AuthResult,
  type Reply,
} from './http';
import type { Router } from './router';
import { isReason, messageOf, statusOf } from '../protocol/reasons';

/**
 * A refusal's HTTP status and default message come from the reasons catalogue
 * (protocol/reasons.ts); a route may set `httpStatus` (not sent) for a reason
 * outside it, such as a card company's own decline.
 */
export type ApiResult =
  ({ ok: true } & object) | ({ ok: false; reason: string; message?: string; httpStatus?: number } & object);

export interface ApiArgs<B> {
  body: B;
  params: string[];
  /** The caller's token; a placeholder with role 'public' on endpoints open to all. */
  token: TokenInfo;
  idempotencyKey: string;
}

/** What a route's handler gets from the request line and headers. */
type RequestArgs = Pick<ApiArgs<unknown>, 'params' | 'idempotencyKey'>;

/** Stands in for a token on open endpoints; their handlers must not look at it. */
const PUBLIC: TokenInfo = { name: 'public', role: 'sales', created: 0 };

/**
 * The admin family an endpoint's refusals are counted under: its pattern without
 * `/v1/`, `admin/` and the path parameters (`ids/activate`, `sales/refund`), so
 * the label is one of the routes' own constants, never the path a client sent.
 */
export function adminFamily(pattern: string, roles: Role[]): string | undefined {
  if (!roles.includes('admin')) return undefined;
  return pattern
    .split('/')
    .filter((p) => p && p !== 'v1' && p !== 'admin' && !p.startsWith(':'))
    .join('/');
}

export class HttpApi {
  constructor(
    private readonly app: Router,
    private readonly authorize: (token: string, roles: Role[]) => Promise<AuthResult>,
    private readonly log: Logger,
    /** Shared with the WebSocket endpoints: MAX_INFLIGHT_TOTAL and MAX_INFLIGHT_PER_TOKEN bound HTTP requests too. */
    private readonly load: Load,
    private readonly metrics: Metrics,
    private readonly bodyLimit = 64 * 1024,
  ) {}

  /** roles [] : open to everyone (no token needed). */
  get(pattern: string, roles: Role[], fn: (a: ApiArgs<unknown>) => Promise<ApiResult>): void {
    this.route('get', pattern, roles, undefined, fn);
  }

  post<B>(
    pattern: string,
    roles: Role[],
    schema: Checked<B> | undefined,
    fn: (a: ApiArgs<B>) => Promise<ApiResult>,
  ): void {
    this.route('post', pattern, roles, schema, fn);
  }

  private route<B>(
    method: 'get' | 'post',
    pattern: string,
    roles: Role[],
    schema: Checked<B> | undefined,
    fn: (a: ApiArgs<B>) => Promise<ApiResult>,
  ): void {
    const nParams = pattern.split('/').filter((p) => p.startsWith(':')).length;
    const family = adminFamily(pattern, roles);
    // Only catalogued reasons become label values: a peer's own reason (none reaches an admin route today) reads `other`.
    const refused = (reason: string): void => {
      if (family !== undefined)
        this.metrics.adminRefusals.inc({ route: family, reason: isReason(reason) ? reason : 'other' });
    };
    /** A request whose token passed, once its body is in (or failed). */
    const serve = (
      reply: Reply,
      token: TokenInfo,
      body: Promise<unknown> | undefined,
      args: RequestArgs,
    ): void | Promise<void> => {
      // A token's requests count by its name with its WebSocket messages (MAX_INFLIGHT_PER_TOKEN); an
      // open endpoint's placeholder is no name: its requests are everyone's, counted as ANONYMOUS.
      const open = token === PUBLIC;
      const name = open ? ANONYMOUS : token.name;
      const full = this.load.enterAs(name);
      if (full)
        return (refused('overloaded'), reply.error('overloaded', full === 'token' && !open ? TOKEN_BUSY : undefined));
      // A route open to admin and scanner tokens (an ID's status) counts the admin's refusals only.
      const admin = token.role === 'admin';
      return (async () => {
        try {
          const b = (await body) ?? {};
          if (schema && !schema(b)) {
            const { reason, message } = schemaReason(schema.errors);
            if (admin) refused(reason);
            return reply.error(reason, message);
          }
          const r = await fn({ body: b as B, ...args, token });
          if (r.ok) {
            const { ok: _ok, ...rest } = r;
            return reply.json(200, rest);
          }
          const {
            ok: _ok,
            reason,
            message,
            httpStatus,
            ...details
          } = r as { ok: false; reason: string; message?: string; retryAfter?: number; httpStatus?: number };
          if (admin) refused(reason);
          const status = httpStatus ?? statusOf(reason);
          const headers: Record<string, string> = { [REASON_HEADER]: reasonHeader(reason) };
          if (details.retryAfter) headers['Retry-After'] = String(details.retryAfter);
          reply.send(
            status,
            JSON.stringify({ error: { reason, message: message ?? messageOf(reason), ...details } }),
            'application/json',
            headers,
          );
        } catch (err) {
          const reason = err instanceof BodyError ? err.reason : failureReason(err);
          if (admin) refused(reason);
          if (err instanceof BodyError) return reply.error(err.reason, err.message);
          if (reason === 'internal') this.log.error({ err }, 'http handler failed');
          reply.error(reason);
        } finally {
          this.load.leaveAs(name);
        }
      })();
    };
    this.app[method](pattern, (res: HttpResponse, req) => {
      // uWS: everything from req is read now, and onAborted is set before any await.
      const reply = replyFor(res);
      const tok = bearer(req);
      const idempotencyKey = req.getHeader('idempotency-key');
      const params = nParams === 0 ? [] : Array.from({ length: nParams }, (_, i) => pathParam(req, i));
      const body = method === 'post' ? readJson(res, reply, this.bodyLimit) : undefined;
      body?.catch(() => undefined); // reported in serve, once authorized
      // The token is checked before the body is waited for: a client without a good one is refused at
      // once, not after a body it may never send (uWS reads what it does send as this request's body).
      const checked =
        roles.length === 0 ? Promise.resolve({ ok: true, token: PUBLIC } as const) : this.check(tok, roles);
      return checked.then((auth) => {
        if (!auth.ok) return (refused(auth.reason), reply.error(auth.reason, auth.message));
        // Counted once its body is in, as forms are: a token holder's slow bodies hold no place.
        return this.load.afterBody(body, () => serve(reply, auth.token, body, { params, idempotencyKey }));
      });
    });
  }

  /**
   * A token's verdict, before its request's body is in. A token the cache does not know costs a
   * Redis lookup, counted in flight like any request (past MAX_INFLIGHT_TOTAL: `overloaded` at once).
   */
  private async check(
    tok: string,
    roles: Role[],
  ): Promise<AuthResult | { ok: false; reason: 'overloaded'; message: string }> {
    // Anyone may send a made-up token: its lookup counts as ANONYMOUS, not as the name it claims.
    if (this.load.enterAs(ANONYMOUS)) return { ok: false, reason: 'overloaded', message: messageOf('overloaded') };
    try {
      return await this.authorize(tok, roles);
    } finally {
      this.load.leaveAs(ANONYMOUS);
    }
  }
}

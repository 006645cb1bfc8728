/**
 * The gateway's HTTP routes by path: each GET and POST route is registered
 * through here and its method recorded, so that once all are in, a known path
 * asked with another method answers 405 with Allow, and any other path 404:
 * both with the buyer pages' security headers, since a browser may see them.
 * Every GET route answers HEAD too (RFC 9110 §9.3.2: monitors and link
 * checkers use it), with the GET's status and headers and no body.
 * A request with more than one Content-Length or Host is not served (framed).
 * A handler that throws, or whose promise fails, is answered 500 `internal`
 * here, once (answerFailure).
 */
import type { Logger } from 'pino';
import type { HttpRequest, HttpResponse, RecognizedString, TemplatedApp } from 'uWebSockets.js';
import { messageOf, type Reason } from '../protocol/reasons';
import { budgetOf, headerLines, replyFor, withBudget, type Reply } from './http';
import type { OutputBudget } from './output-budget';
import { PAGE_HEADERS } from './routes/pages/kit';

type Handler = Parameters<TemplatedApp['get']>[1];

/** What a route answers when its handler failed: by default the JSON API's 500 `internal`. */
export type FailedAnswer = (reply: Reply) => void;

const failedJson: FailedAnswer = (reply) => reply.error('internal');

/**
 * What route modules register with: GET and POST handlers by uWS pattern. A
 * handler that does its work after it returns returns that work's promise, so
 * that a failure in it is answered too; `failed` says how (buyer pages: a page).
 */
export interface Router {
  get(pattern: string, handler: Handler, failed?: FailedAnswer): void;
  post(pattern: string, handler: Handler, failed?: FailedAnswer): void;
}

export function methodRouter(
  app: TemplatedApp,
  output: OutputBudget,
  log: Logger,
): Router & { webSockets(patterns: readonly string[]): void; fallbacks(): void } {
  const allowed = new Map<string, string[]>();
  const upgrades: string[] = [];
  // Every answer through replyFor counts what the client has not read against the gateway's total.
  const bounded =
    (handler: Handler): Handler =>
    (res, req) =>
      handler(withBudget(res, output), req);
  const add = (method: 'GET' | 'POST', pattern: string, given: Handler, failed = failedJson): void => {
    allowed.set(pattern, [...(allowed.get(pattern) ?? []), ...(method === 'GET' ? ['GET', 'HEAD'] : [method])]);
    const handler = framed(answerFailure(given, failed, log));
    if (method === 'POST') return void app.post(pattern, bounded(handler));
    app.get(pattern, bounded(handler));
    app.head(pattern, (res, req) => handler(withBudget(headOnly(res), output), req));
  };
  return {
    get: (pattern, handler, failed) => add('GET', pattern, handler, failed),
    post: (pattern, handler, failed) => add('POST', pattern, handler, failed),
    /**
     * WebSocket endpoints: uWS passes on a request to them that is no upgrade (no `Upgrade` or no
     * valid `Sec-WebSocket-Key`), which `/*` would answer "no such endpoint" about a path that exists.
     */
    webSockets(patterns) {
      upgrades.push(...patterns);
    },
    /** Registered last: uWS tries a pattern's own methods before its `any`, and `/*` after every pattern. */
    fallbacks() {
      // RFC 9110 §15.5.22: a 426 says which protocol to switch to.
      const upgrade = { Upgrade: 'websocket', 'Sec-WebSocket-Version': '13' };
      const any = (pattern: string, handler: Handler): void =>
        void app.any(pattern, bounded(framed(answerFailure(handler, failedJson, log))));
      for (const pattern of upgrades) any(pattern, (res, req) => refuse(res, req, 'upgrade_required', upgrade));
      for (const [pattern, methods] of allowed)
        any(pattern, (res, req) => refuse(res, req, 'method_not_allowed', { Allow: methods.join(', ') }));
      any('/*', (res, req) => refuse(res, req, 'not_found'));
    },
  };
}

/**
 * A handler's failure, thrown or its promise's, is a bug: logged at error once
 * and answered `failed` (500 `internal`) unless the request was answered or
 * has gone. Left to uWS, a throw would end the process (uncaught) and a failed
 * promise leave the request unanswered. Places in flight (MAX_INFLIGHT_TOTAL)
 * are the handler's own to give back, in a finally.
 */
function answerFailure(handler: Handler, failed: FailedAnswer, log: Logger): Handler {
  return (res, req) => {
    const fail = (err: unknown): void => {
      log.error({ err }, 'http handler failed');
      try {
        const reply = replyFor(res);
        if (!reply.answered && !reply.aborted) failed(reply);
      } catch (again) {
        log.error({ err: again }, 'http handler failed: no answer could be sent');
      }
    };
    try {
      const work = handler(res, req);
      if (work) work.catch(fail);
    } catch (err) {
      fail(err);
    }
  };
}

/**
 * Two Content-Length headers make the body's end a matter of opinion: uWS
 * takes the first, a proxy in front may take the last, and the bytes between
 * would be read by one of them as a request of its own (request smuggling).
 * RFC 9112 §6.3 calls it an unrecoverable error, to answer 400 and close. This
 * uWS build reads on after a response that asks to close, so the connection is
 * closed at once, unanswered: nothing after the first length is read.
 * Two Host headers make the site asked for one (RFC 9112 §3.2: answered 400,
 * `bad_host`); the body's end is not in doubt, so the connection goes on. (A
 * request of HTTP/1.1 with none uWS closes itself.)
 */
function framed(handler: Handler): Handler {
  return (res, req) => {
    const lines = headerLines(req);
    if (lines.lengths > 1) return void res.close();
    if (lines.hosts > 1) return refuse(res, req, 'bad_host');
    return handler(res, req);
  };
}

/**
 * The response a GET handler writes, answering HEAD: what it ends with gives
 * the Content-Length and is not sent (a body would be read as the start of the
 * next answer on the connection). Only HEAD requests pay for the proxy.
 */
function headOnly(res: HttpResponse): HttpResponse {
  const proxy: HttpResponse = new Proxy(res, {
    get(target, key) {
      // The length goes in as a header: this uWS build aborts on endWithoutBody with arguments.
      if (key === 'end')
        return (body?: RecognizedString) =>
          target.writeHeader('Content-Length', String(byteLength(body))).endWithoutBody() && proxy;
      if (key === 'tryEnd')
        return (_body: RecognizedString, total: number) => {
          target.writeHeader('Content-Length', String(total)).endWithoutBody();
          return [true, true];
        };
      const value: unknown = Reflect.get(target, key);
      if (typeof value !== 'function') return value;
      // Chained calls (writeStatus(...).end(...)) must come back to the proxy, not the socket.
      return (...args: unknown[]) => {
        const out: unknown = Reflect.apply(value, target, args);
        return out === target ? proxy : out;
      };
    },
  });
  return proxy;
}

function byteLength(body: RecognizedString | undefined): number {
  if (body === undefined) return 0;
  if (typeof body === 'string') return Buffer.byteLength(body);
  return body.byteLength;
}

function refuse(res: HttpResponse, req: HttpRequest, reason: Reason, headers: Record<string, string> = {}): void {
  // An answer to HEAD has no body (one would be read as the start of the next answer).
  const head = req.getMethod() === 'head';
  const reply = replyFor(head ? withBudget(headOnly(res), budgetOf(res)) : res);
  reply.error(reason, messageOf(reason), { ...PAGE_HEADERS, ...headers });
}

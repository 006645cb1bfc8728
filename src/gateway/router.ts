/**
 * The gateway's HTTP routes by path: each GET and POST route is registered
 * through here and its method recorded, so that once all are in, a known path
 * asked with another method answers 405 with Allow, and any other path 404:
 * both with the buyer pages' security headers, since a browser may see them.
 */
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import { messageOf, statusOf, type Reason } from '../protocol/reasons';
import { statusLine } from './http';
import { PAGE_HEADERS } from './routes/pages/kit';

type Handler = Parameters<TemplatedApp['get']>[1];

/** What route modules register with: GET and POST handlers by uWS pattern. */
export interface Router {
  get(pattern: string, handler: Handler): void;
  post(pattern: string, handler: Handler): void;
}

export function methodRouter(app: TemplatedApp): Router & { fallbacks(): void } {
  const allowed = new Map<string, string[]>();
  const add = (method: 'GET' | 'POST', pattern: string, handler: Handler): void => {
    allowed.set(pattern, [...(allowed.get(pattern) ?? []), method]);
    app[method === 'GET' ? 'get' : 'post'](pattern, handler);
  };
  return {
    get: (pattern, handler) => add('GET', pattern, handler),
    post: (pattern, handler) => add('POST', pattern, handler),
    /** Registered last: uWS tries a pattern's own methods before its `any`, and `/*` after every pattern. */
    fallbacks() {
      for (const [pattern, methods] of allowed)
        app.any(pattern, (res, req) => refuse(res, req, 'method_not_allowed', { Allow: methods.join(', ') }));
      app.any('/*', (res, req) => refuse(res, req, 'not_found'));
    },
  };
}

function refuse(res: HttpResponse, req: HttpRequest, reason: Reason, headers: Record<string, string> = {}): void {
  // An answer to HEAD has no body (one would be read as the start of the next answer).
  const head = req.getMethod() === 'head';
  res.cork(() => {
    res.writeStatus(statusLine(statusOf(reason))).writeHeader('Content-Type', 'application/json');
    for (const [k, v] of Object.entries({ ...PAGE_HEADERS, ...headers })) res.writeHeader(k, v);
    if (head) res.endWithoutBody();
    else res.end(JSON.stringify({ error: { reason, message: messageOf(reason) } }));
  });
}

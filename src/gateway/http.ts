/** Small helpers over uWS' HTTP API: JSON in and out, bearer auth, abort-safe async replies. */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import type { CatalogCache } from '../catalog/cache';
import type { Role, TokenInfo } from '../catalog/schema';
import { messageOf, statusOf, type Reason } from '../protocol/reasons';
import { addressOnly, type ProxyTrust } from '../protocol/client-address';
import type { OutputBudget } from './output-budget';

export const STATUS: Record<number, string> = {
  200: '200 OK',
  201: '201 Created',
  302: '302 Found',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  402: '402 Payment Required',
  403: '403 Forbidden',
  404: '404 Not Found',
  405: '405 Method Not Allowed',
  409: '409 Conflict',
  410: '410 Gone',
  413: '413 Payload Too Large',
  415: '415 Unsupported Media Type',
  422: '422 Unprocessable Entity',
  426: '426 Upgrade Required',
  429: '429 Too Many Requests',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
};

/**
 * The header that carries a refusal's reason, a page's or the JSON API's, for clients that read more
 * than the status, and for HEAD, whose answer has no body.
 */
export const REASON_HEADER = 'Tessera-Reason';

/**
 * A reason as a header value. The catalogue's are plain words, but a card company's own decline
 * reason is whatever it answered: a line break in it would end the header and begin another (a
 * cookie set in the buyer's browser), so every byte outside printable ASCII, and `%`, is
 * percent-encoded (its UTF-8 bytes), and the value is cut at 200 characters.
 */
export function reasonHeader(reason: string): string {
  return reason
    .slice(0, 200)
    .replace(/[^\x20-\x24\x26-\x7e]+/g, (run) =>
      Array.from(Buffer.from(run, 'utf8'), (b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
    );
}

export interface Reply {
  aborted: boolean;
  /** An answer has been written (or begun): any later send is dropped, as one to an aborted request is. */
  answered: boolean;
  /** Runs `fn` when the client goes away before it is answered (at once if it has). */
  onAbort(fn: () => void): void;
  send(status: number, body: string, contentType?: string, headers?: Record<string, string>): void;
  json(status: number, body: unknown): void;
  /** `{error: {reason, message}}` with the reason's status from the catalogue, its reason in REASON_HEADER, and `headers`. */
  error(reason: Reason, message?: string, headers?: Record<string, string>): void;
}

const JSON_TYPE = 'application/json';

/**
 * An answer's status and headers. Every JSON answer is of this moment and may name an ID, a balance
 * or a purchase: no cache (a proxy's, a client library's) may keep it. Pages and assets say their own.
 */
function writeHead(res: HttpResponse, status: number, contentType: string, headers?: Record<string, string>): void {
  res.writeStatus(statusLine(status)).writeHeader('Content-Type', contentType);
  if (contentType === JSON_TYPE && !headers?.['Cache-Control']) res.writeHeader('Cache-Control', 'no-store');
  for (const k in headers) res.writeHeader(k, headers[k]!);
}

/** The gateway's bound on unsent output, for the answers to a request (the router sets it). */
const budgets = new WeakMap<HttpResponse, OutputBudget>();

export function withBudget(res: HttpResponse, output: OutputBudget | undefined): HttpResponse {
  if (output) budgets.set(res, output);
  return res;
}

export const budgetOf = (res: HttpResponse): OutputBudget | undefined => budgets.get(res);

/** Each request's one Reply: the router answers a failed handler through the handler's own. */
const replies = new WeakMap<HttpResponse, Reply>();

/**
 * Must be called synchronously in the route handler: uWS requires onAborted before any await.
 * Called again for the same response, it gives the same Reply (uWS keeps one abort handler).
 */
export function replyFor(res: HttpResponse): Reply {
  return replies.get(res) ?? newReply(res);
}

function newReply(res: HttpResponse): Reply {
  // Only a request with a body listens: no array for the others.
  let onAbort: (() => void)[] | undefined;
  const r: Reply = {
    aborted: false,
    answered: false,
    onAbort(fn) {
      if (r.aborted) fn();
      else (onAbort ??= []).push(fn);
    },
    send(status, body, contentType = JSON_TYPE, headers) {
      // uWS throws at a write to a response that has ended or gone.
      if (r.aborted || r.answered) return;
      r.answered = true;
      const output = budgetOf(res);
      if (!output)
        return void res.cork(() => {
          writeHead(res, status, contentType, headers);
          res.end(body);
        });
      // What the kernel does not take now is not handed to uWS, which would keep it for a client
      // that reads nothing while it answers the requests that client pipelines: the answer stays
      // unfinished (uWS reads no further request of the connection meanwhile) and is written on as
      // the client reads, counted against MAX_BACKPRESSURE_TOTAL_BYTES.
      const size = Buffer.byteLength(body);
      let done = false;
      res.cork(() => {
        writeHead(res, status, contentType, headers);
        done = res.tryEnd(body, size)[1];
      });
      // Almost every answer is taken whole: only one that is not is copied, to be written on from its offset.
      if (done) return;
      const bytes = Buffer.from(body);
      const close = (): void => void res.close();
      r.onAbort(() => output.set(res, 0, close, 'http'));
      res.onWritable((offset) => {
        const [ok, finished] = res.tryEnd(bytes.subarray(offset), bytes.byteLength);
        // Last: past the total this may close the connection, after which res is gone.
        output.set(res, finished ? 0 : bytes.byteLength - res.getWriteOffset(), close, 'http');
        return ok;
      });
      output.set(res, bytes.byteLength - res.getWriteOffset(), close, 'http');
    },
    json(status, body) {
      r.send(status, JSON.stringify(body));
    },
    error(reason, message = messageOf(reason), headers) {
      r.send(statusOf(reason), JSON.stringify({ error: { reason, message } }), JSON_TYPE, {
        [REASON_HEADER]: reason,
        ...headers,
      });
    },
  };
  res.onAborted(() => {
    r.aborted = true;
    for (const fn of onAbort ?? []) fn();
  });
  replies.set(res, r);
  return r;
}

export class BodyError extends Error {
  constructor(
    readonly reason: Reason,
    message: string,
  ) {
    super(message);
  }
}

/** The status line uWS writes for a status code. */
export const statusLine = (status: number): string => STATUS[status] ?? `${status} Status`;

/**
 * Reads the whole body, refusing more than `limit` bytes. A client that goes
 * away mid-body fails it too: its handler must end, and free what it holds.
 */
export function readBody(res: HttpResponse, reply: Reply, limit: number): Promise<string> {
  const body = new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    reply.onAbort(() => {
      failed = true;
      reject(new BodyError('body_incomplete', 'the connection closed before the body was complete'));
    });
    res.onData((chunk, isLast) => {
      if (failed) return;
      size += chunk.byteLength;
      if (size > limit) {
        failed = true;
        return reject(new BodyError('body_too_large', `body exceeds ${limit} bytes`));
      }
      // A body in one chunk (almost all are) is decoded at once, in place.
      if (isLast && chunks.length === 0) return resolve(Buffer.from(chunk).toString('utf8'));
      // uWS frees the chunk after this callback: copy it.
      chunks.push(Buffer.from(new Uint8Array(chunk)));
      if (isLast) resolve(Buffer.concat(chunks).toString('utf8'));
    });
  });
  // A request refused before it reads its body (a token refused) never awaits it:
  // its failure must not be an unhandled rejection, which would end the process.
  body.catch(() => undefined);
  return body;
}

/** The body as JSON (an empty body is {}). */
export function readJson(res: HttpResponse, reply: Reply, limit: number): Promise<unknown> {
  return readBody(res, reply, limit).then(parseJson);
}

function parseJson(text: string): unknown {
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new BodyError('bad_json', 'body is not valid JSON');
  }
}

/** An HTML form post (application/x-www-form-urlencoded). */
export async function readForm(res: HttpResponse, reply: Reply, limit: number): Promise<URLSearchParams> {
  return new URLSearchParams(await readBody(res, reply, limit));
}

/**
 * A path parameter, percent-decoded (uWS hands it over as sent): `%2D` is `-`
 * (RFC 3986 §6.2.2.2). A malformed escape is the client's problem: it becomes
 * a value no lookup accepts.
 */
export function pathParam(req: HttpRequest, i: number): string {
  return decodedSegment(req.getParameter(i) ?? '');
}

/** A path segment percent-decoded as pathParam decodes it: a malformed escape becomes a name no lookup takes. */
export function decodedSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return '\u0000';
  }
}

/**
 * The client's address (per-client limits: PIN tries, connections). From a
 * trusted proxy (TRUST_PROXY) it is the last address of X-Forwarded-For, else
 * the socket's.
 */
export function clientAddress(res: HttpResponse, req: HttpRequest, trust: ProxyTrust): string {
  const peer = Buffer.from(res.getRemoteAddressAsText()).toString('utf8');
  // The last entry is the one our own proxy added; earlier ones are whatever the client sent.
  // Some proxies add the client's port: no part of the client, or each connection would be one.
  const forwarded = trust(peer) ? addressOnly(lastForwarded(req)) : '';
  return forwarded || peer;
}

/**
 * The last X-Forwarded-For entry over all the header's lines: a proxy may add a
 * line of its own below the client's, and lines of one name are one list
 * (RFC 9110 §5.3). uWS' getHeader would give the first line, the client's.
 */
function lastForwarded(req: HttpRequest): string {
  let last = '';
  req.forEach((name, value) => {
    if (name === 'x-forwarded-for') last = value;
  });
  return last.split(',').pop() ?? '';
}

/** The request's Host and Content-Length lines, counted by headerLines. */
let hosts = 0;
let lengths = 0;
const countLine = (name: string): void => {
  if (name === 'host') hosts++;
  else if (name === 'content-length') lengths++;
};

/**
 * How many Host and Content-Length lines a request has, in one pass over its
 * headers: uWS' getHeader gives the first line of a name, and a proxy in
 * front may read the last (request smuggling, a request for another site).
 */
export function headerLines(req: HttpRequest): { hosts: number; lengths: number } {
  hosts = 0;
  lengths = 0;
  req.forEach(countLine);
  return { hosts, lengths };
}

/** The token of an `Authorization: Bearer` header; the scheme is case-insensitive (RFC 9110 §11.1). */
export function bearer(req: HttpRequest): string {
  const m = /^bearer[ \t]+(\S+)[ \t]*$/i.exec(req.getHeader('authorization'));
  return m ? m[1]! : '';
}

export type AuthResult =
  { ok: true; token: TokenInfo } | { ok: false; reason: 'unauthorized' | 'forbidden'; message: string };

export function authorize(catalog: CatalogCache, token: string, roles: readonly Role[]): AuthResult {
  return authorizeAs(token && catalog.token(token), roles);
}

/** The verdict on a token already looked up (its info, undefined if unknown, '' if none was sent). */
function authorizeAs(info: TokenInfo | undefined | '', roles: readonly Role[]): AuthResult {
  if (info === '') return { ok: false, reason: 'unauthorized', message: 'bearer token required' };
  if (!info) return { ok: false, reason: 'unauthorized', message: 'unknown token' };
  if (!roles.includes(info.role))
    return { ok: false, reason: 'forbidden', message: `role ${info.role} may not use this endpoint` };
  return { ok: true, token: info };
}

/**
 * Authorizes from the cached catalog; a token the cache does not know yet (created
 * a moment ago, announcement still in flight) is looked up in Redis once.
 */
export async function authorizeFresh(
  catalog: CatalogCache,
  token: string,
  roles: readonly Role[],
): Promise<AuthResult> {
  // One lookup (a SHA-256 of the token) when the cache knows it, as it does for every request but the first.
  const info = token && catalog.token(token);
  if (info !== undefined) return authorizeAs(info, roles);
  await catalog.refreshIfTokenKnown(token).catch(() => undefined);
  return authorize(catalog, token, roles);
}

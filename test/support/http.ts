/** HTTP calls to a gateway (or any server on 127.0.0.1), with what tests look at in the reply. */
import { connect } from 'node:net';

export interface Res {
  status: number;
  /** The body parsed, when the reply says it is JSON. */
  json: any;
  text: string;
  type: string | null;
  headers: Headers;
}

export interface HttpOptions {
  /** Bearer token. */
  token?: string;
  /** Sent as JSON. */
  body?: unknown;
  /** Sent as it is, labelled JSON: for malformed bodies. */
  raw?: string;
  /** Sent as an HTML form. */
  form?: Record<string, string>;
  /** Idempotency-Key header. */
  idem?: string;
  headers?: Record<string, string>;
}

export const baseOf = (at: { port: number }): string => `http://127.0.0.1:${at.port}`;

export async function http(
  at: { port: number },
  method: 'GET' | 'POST',
  path: string,
  opts: HttpOptions = {},
): Promise<Res> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  if (opts.idem !== undefined) headers['Idempotency-Key'] = opts.idem;
  let body: string | undefined;
  if (opts.form) {
    headers['Content-Type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(opts.form).toString();
  } else if (opts.raw !== undefined || opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = opts.raw ?? JSON.stringify(opts.body);
  }
  const res = await fetch(`${baseOf(at)}${path}`, { method, headers, body });
  const text = await res.text();
  const type = res.headers.get('content-type');
  let json: any;
  if (type?.startsWith('application/json') && text) json = JSON.parse(text);
  return { status: res.status, json, text, type, headers: res.headers };
}

/** A JSON API's answer: status and parsed body alone, what tests of those routes compare whole. */
export interface JsonAnswer {
  status: number;
  json: any;
}

export async function jsonCall(
  at: { port: number },
  method: 'GET' | 'POST',
  path: string,
  opts: HttpOptions = {},
): Promise<JsonAnswer> {
  const { status, json } = await http(at, method, path, opts);
  return { status, json };
}

/** What a browser keeps from a buyer page to post its forms: the form cookie and the token the forms carry. */
export interface FormSession {
  /** `tessera_form=<value>`, as the Cookie header sends it. */
  cookie: string;
  token: string;
}

/** Opens a buyer page (`/buy`, a check link) as a browser would, for its form cookie and token. */
export async function formSession(at: { port: number }, path = '/buy'): Promise<FormSession> {
  const res = await fetch(`${baseOf(at)}${path}`);
  const cookie = res.headers.get('set-cookie')?.split(';')[0] ?? '';
  const token = /name="form" value="([0-9a-f]+)"/.exec(await res.text())?.[1] ?? '';
  if (!cookie || !token) throw new Error(`${path}: no form cookie or token`);
  return { cookie, token };
}

/**
 * Posts a buyer page's form (`/buy`, a check link) as the browser holding `session` would, saying
 * it comes from the site's own page (`Sec-Fetch-Site: same-origin`, unless `headers` say otherwise).
 */
export async function postPageForm(
  at: { port: number },
  path: string,
  form: Record<string, string>,
  session?: FormSession,
  headers: Record<string, string> = {},
): Promise<Res> {
  const s = session ?? (await formSession(at, path));
  return http(at, 'POST', path, {
    form: { form: s.token, ...form },
    headers: { 'Sec-Fetch-Site': 'same-origin', ...headers, Cookie: s.cookie },
  });
}

/** Writes `request` on a new TCP connection; what came back until the server closed it (or 2 s passed). */
export function rawExchange(port: number, request: string): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = '';
    const s = connect(port, '127.0.0.1', () => s.write(request));
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ text, closed: false });
    }, 2000);
    s.on('data', (d) => (text += d.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ text, closed: true });
    });
  });
}

/** A TCP connection to speak HTTP on by hand, a piece at a time: what came back, and whether it closed. */
export interface RawConnection {
  write(data: string): void;
  /** Everything received so far. */
  readonly text: string;
  /** Resolves with everything received once it matches `pattern`; rejects if the server closes first. */
  waitFor(pattern: RegExp): Promise<string>;
  /** Resolves when the server has closed the connection. */
  readonly closed: Promise<void>;
  destroy(): void;
}

export function rawConnection(port: number): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    let text = '';
    let ended = false;
    const waiters = new Set<() => void>();
    const s = connect(port, '127.0.0.1');
    const closed = new Promise<void>((done) =>
      s.on('close', () => {
        ended = true;
        for (const w of waiters) w();
        done();
      }),
    );
    s.on('data', (d) => {
      text += d.toString('latin1');
      for (const w of waiters) w();
    });
    s.on('error', reject);
    s.on('connect', () =>
      resolve({
        write: (data) => void s.write(data),
        get text() {
          return text;
        },
        waitFor: (pattern) =>
          new Promise((found, failed) => {
            const check = (): void => {
              if (pattern.test(text)) found(text);
              else if (ended) failed(new Error(`closed before ${String(pattern)}; received: ${JSON.stringify(text)}`));
              else return;
              waiters.delete(check);
            };
            waiters.add(check);
            check();
          }),
        closed,
        destroy: () => s.destroy(),
      }),
    );
  });
}

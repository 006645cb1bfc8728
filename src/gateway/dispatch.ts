import type { Logger } from 'pino';
import type { Config } from '../config/config';
import type { Metrics } from '../observability/metrics';
import { decodeFrame, type Encoding } from '../protocol/codec';
import { schemaReason, type Checked } from '../protocol/validator';
import { failureReason, type FailureReason } from '../redis/failure';
import type { Conn } from './connection';

/** A request handler: gets a schema-checked message, sends what it has to say through `reply`. */
export type Handler<T> = (msg: T, conn: Conn, reply: (m: object) => void) => Promise<void>;

/** Callback style, for the hottest op (ticks): no promise per message. Call `done` exactly once. */
export type CallbackHandler<T> = (
  msg: T,
  conn: Conn,
  reply: (m: object) => void,
  done: (err?: unknown) => void,
) => void;

export type Route<T = unknown> =
  { check: Checked<T>; handle: Handler<T> } | { check: Checked<T>; handleCb: CallbackHandler<T> };

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- each op's route checks its own message type
export type Routes = Record<string, Route<any>>;

/**
 * A map as the decoders give one: a plain object. A MessagePack `bin` (a Uint8Array) or timestamp
 * (a Date) is an object too, but no map: it is `bad_message`, not a map without `op`.
 */
const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype;

const FAILURE_MESSAGES: Record<FailureReason, string> = {
  unavailable: 'storage unavailable, try again',
  overloaded: 'too many requests of this token waiting their turn, slow down',
  internal: 'internal error',
};

/** Why a request of a token name past MAX_INFLIGHT_PER_TOKEN is refused `overloaded`, on either transport. */
export const TOKEN_BUSY = 'too many requests in flight for this token';

/**
 * The name the requests of no token count under (MAX_INFLIGHT_PER_TOKEN), all together: pages, open
 * endpoints, and the Redis lookups of tokens the cache does not know. No token has it (names are
 * letters, digits, `._-`): what anyone may send cannot take the places switches and scanners need.
 */
export const ANONYMOUS = '(anonymous)';

/** Copies of one request that share one in-flight place (Load.enterShared). */
export const SHARED_COPIES = 4;

/**
 * Requests in progress in this gateway, of every kind (frames' messages, API
 * requests, pages, upgrades that wait on Redis), against MAX_INFLIGHT_TOTAL:
 * past it a request is refused at once, since a queue that only grows ends in
 * timeouts for everyone.
 */
export class Load {
  inflight = 0;
  /** Places held by copies of one request (a form sent twice), and how many copies share each. */
  private readonly shared = new Map<string, { copies: number }>();
  /**
   * Requests in flight by token name, WebSocket messages and HTTP API requests together, over all
   * its connections (MAX_INFLIGHT_PER_TOKEN): one token name may not take every place.
   */
  private readonly perToken = new Map<string, number>();

  constructor(
    readonly max: number,
    readonly maxPerToken = max,
  ) {}

  /**
   * Takes a place for a request of token name `name`; when none is left, says whose places are all
   * taken: the name's (`token`) or the gateway's (`gateway`). Give it back with leaveAs(name).
   */
  enterAs(name: string): 'token' | 'gateway' | undefined {
    const ofName = this.perToken.get(name) ?? 0;
    if (ofName >= this.maxPerToken) return 'token';
    if (!this.enter()) return 'gateway';
    this.perToken.set(name, ofName + 1);
    return undefined;
  }

  /** Gives back what enterAs(name) took. */
  leaveAs(name: string): void {
    const left = (this.perToken.get(name) ?? 1) - 1;
    if (left > 0) this.perToken.set(name, left);
    else this.perToken.delete(name);
    this.leave();
  }

  /**
   * Like enter(), for a request that may be one of several copies (`key`: the form's payment): a
   * copy sent while another is at work waits for that one's answer, and shares its place, so a
   * double tap cannot eat the limit. Up to SHARED_COPIES copies share one place; a flood of copies
   * takes places of its own. Give it back with leaveShared(key).
   */
  enterShared(key: string): boolean {
    const place = this.shared.get(key);
    if (place && place.copies < SHARED_COPIES) {
      place.copies++;
      return true;
    }
    if (this.enterAs(ANONYMOUS)) return false;
    if (place) place.copies++;
    else this.shared.set(key, { copies: 1 });
    return true;
  }

  /** Gives back what enterShared(key) took: the place goes once its last copy has ended. */
  leaveShared(key: string): void {
    const place = this.shared.get(key);
    if (!place) return;
    if (place.copies > SHARED_COPIES) {
      // A copy past the sharing holds a place of its own.
      place.copies--;
      this.leaveAs(ANONYMOUS);
      return;
    }
    if (--place.copies > 0) return;
    this.shared.delete(key);
    this.leaveAs(ANONYMOUS);
  }

  /** Takes a place for a request; false when none is left (answer `overloaded`). */
  enter(): boolean {
    if (this.inflight >= this.max) return false;
    this.inflight++;
    return true;
  }

  /** Gives back what enter() took. */
  leave(): void {
    this.inflight--;
  }

  /**
   * Runs `run` (which takes its place with enter()) once `body`, a request's body on its way, is in
   * or has failed. A body waits on nothing of ours, and anyone may send one a byte at a time:
   * counted from its first byte, a few hundred slow clients would hold every place and refuse all
   * traffic. Failed (over the limit, cut off), the request still runs and answers why. The promise
   * is `run`'s (without a body `run` runs at once, and a throw is thrown), for the router to answer
   * its failure.
   */
  afterBody(body: Promise<unknown> | undefined, run: () => void | Promise<void>): Promise<void> {
    if (!body) return Promise.resolve(run());
    return body.then(run, run);
  }
}

/**
 * Decodes a frame (one message or an array), validates each message against its
 * op's schema and runs the op's handler. Every failure becomes an `error`
 * message with a stable reason; nothing a client sends closes the connection
 * except frames past the hard size limit, which uWS enforces.
 */
export class Dispatcher {
  constructor(
    private readonly routes: Routes,
    private readonly cfg: Config,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly load: Load,
  ) {}

  onFrame(conn: Conn, data: ArrayBuffer, isBinary: boolean): void {
    const enc: Encoding = isBinary ? 'msgpack' : 'json';
    const fail = (reason: string, message: string, extra: object = {}): void => {
      this.metrics.event('frame', reason);
      conn.send({ op: 'error', ...extra, reason, message }, enc);
    };
    if (data.byteLength > this.cfg.maxFrameBytes)
      return fail('frame_too_large', `frame of ${data.byteLength} bytes exceeds ${this.cfg.maxFrameBytes}`);
    let body: unknown;
    try {
      body = decodeFrame(data, isBinary);
    } catch {
      return fail('bad_frame', isBinary ? 'frame is not valid MessagePack' : 'frame is not valid JSON');
    }
    if (Array.isArray(body)) {
      if (body.length > this.cfg.maxBatch)
        return fail('batch_too_large', `${body.length} messages in one frame, at most ${this.cfg.maxBatch}`);
      // Else nothing would answer it, and a client waiting for a reply to its frame would wait for ever.
      if (body.length === 0) return fail('empty_batch', 'an array frame must hold at least one message');
      for (const m of body) this.onMessage(conn, m, enc);
    } else {
      this.onMessage(conn, body, enc);
    }
  }

  private onMessage(conn: Conn, m: unknown, enc: Encoding): void {
    const reply = conn.reply[enc];
    if (!isObject(m)) return this.reject(reply, 'message', 'bad_message', 'a message is a map with an op');
    const op = m.op;
    if (op === undefined) return this.reject(reply, 'message', 'missing_field', 'op is required', m);
    // A MessagePack `bin` (a Uint8Array here) is no string either.
    if (typeof op !== 'string') return this.reject(reply, 'message', 'bad_type', 'op must be string', m);
    const route = Object.hasOwn(this.routes, op) ? this.routes[op] : undefined;
    if (!route) return this.reject(reply, 'message', 'unknown_op', `unknown op ${JSON.stringify(op).slice(0, 40)}`, m);
    if (!route.check(m)) {
      const { reason, message } = schemaReason(route.check.errors);
      return this.reject(reply, op, reason, message, m);
    }
    if (conn.inflight >= this.cfg.maxInflight)
      return this.reject(reply, op, 'overloaded', 'too many requests in flight on this connection', m);
    // A token's hundred connections at MAX_INFLIGHT each would hold every place of the gateway.
    const full = this.load.enterAs(conn.token.name);
    if (full === 'token') return this.reject(reply, op, 'overloaded', TOKEN_BUSY, m);
    if (full) return this.reject(reply, op, 'overloaded', 'the gateway is at capacity, retry shortly', m);
    conn.inflight++;
    if ('handleCb' in route) {
      let finished = false;
      const done = (err?: unknown): void => {
        if (finished) return;
        finished = true;
        this.finish(conn, reply, op, m, err);
      };
      // A handler that throws before it calls back fails its message, not the frame and the messages after it.
      try {
        route.handleCb(m, conn, reply, done);
      } catch (err) {
        done(err ?? new Error('handler failed'));
      }
      return;
    }
    route.handle(m, conn, reply).then(
      () => this.finish(conn, reply, op, m, undefined),
      (err: unknown) => this.finish(conn, reply, op, m, err ?? new Error('handler failed')),
    );
  }

  /**
   * A failure here, past the handler (its error answer, its metrics), would be an unhandled
   * rejection that ends the process, or be lost in a callback handler's `done`: it is logged at
   * error and the connection closed 1011 `internal`, as a throw in the frame handler is
   * (ws-endpoint.ts). The counts below are given back first, before anything that can throw.
   */
  private finish(conn: Conn, reply: (m: object) => void, op: string, m: Record<string, unknown>, err: unknown): void {
    try {
      this.settle(conn, reply, op, m, err);
    } catch (again) {
      this.log.error({ err: again, op }, 'websocket message failed');
      conn.end(1011, 'internal');
    }
  }

  private settle(conn: Conn, reply: (m: object) => void, op: string, m: Record<string, unknown>, err: unknown): void {
    conn.inflight--;
    this.load.leaveAs(conn.token.name);
    if (err === undefined || err === null) return;
    const reason = failureReason(err);
    if (reason === 'internal') this.log.error({ err, op }, 'handler failed');
    this.reject(reply, op, reason, FAILURE_MESSAGES[reason], m);
  }

  /** `m` is the offending message: its ref and call are echoed when they are of a sane type. */
  private reject(
    reply: (m: object) => void,
    op: string,
    reason: string,
    message: string,
    m?: Record<string, unknown>,
  ): void {
    this.metrics.event(op, reason);
    reply({ op: 'error', ...(m && refAndCall(m)), reason, message });
  }
}

function refAndCall(m: Record<string, unknown>): { ref?: unknown; call?: unknown } {
  const out: { ref?: unknown; call?: unknown } = {};
  if ((typeof m.ref === 'string' && m.ref.length <= 64) || Number.isSafeInteger(m.ref)) out.ref = m.ref;
  if (typeof m.call === 'string' && m.call.length <= 64) out.call = m.call;
  return out;
}

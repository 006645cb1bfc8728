/**
 * The WebSocket endpoints: who may upgrade (connection limits first, then the
 * token), the frame and backpressure limits, and the open connections, which
 * the gateway ends when their token is revoked or changed, and when it shuts
 * down.
 */
import uWS, {
  type HttpRequest,
  type HttpResponse,
  type TemplatedApp,
  type us_socket_context_t,
  type WebSocket,
} from 'uWebSockets.js';
import type { Logger } from 'pino';
import { sameGrant, type CatalogCache, type TokenChange } from '../catalog/cache';
import { tokenHash } from '../catalog/store';
import type { Role } from '../catalog/schema';
import type { Config } from '../config/config';
import type { Metrics } from '../observability/metrics';
import { Conn, type ConnData } from './connection';
import type { OutputBudget } from './output-budget';
import { ANONYMOUS, Dispatcher, type Load, type Routes } from './dispatch';
import {
  authorize,
  authorizeFresh,
  bearer,
  clientAddress,
  headerLines,
  replyFor,
  withBudget,
  type AuthResult,
} from './http';
import type { Reason } from '../protocol/reasons';
import { clientGroup, type ProxyTrust } from '../protocol/client-address';

/**
 * Close codes of a connection whose token no longer grants it (docs/protocol.md,
 * docs/scanners.md). The close reason is the name.
 */
export const CLOSE_TOKEN = {
  token_revoked: 4001,
  token_changed: 4003,
} as const;

/** Frames a little over MAX_FRAME_BYTES are still answered (frame_too_large); past this uWS closes the connection. */
export const hardFrameLimit = (maxFrameBytes: number): number => maxFrameBytes + 64 * 1024;

export interface WsDeps {
  cfg: Config;
  catalog: CatalogCache;
  metrics: Metrics;
  log: Logger;
  /** Shared with the HTTP API: MAX_INFLIGHT_TOTAL bounds both. */
  load: Load;
  /** Whose X-Forwarded-For names the client (MAX_CONNECTIONS_PER_CLIENT). */
  trust: ProxyTrust;
  /** Shared with the HTTP answers: MAX_BACKPRESSURE_TOTAL_BYTES bounds both. */
  output: OutputBudget;
}

export class WsEndpoints {
  /** Open connections on every endpoint (MAX_CONNECTIONS). */
  private readonly conns = new Set<Conn>();
  /** Open connections by client group, an IPv6 client by its /64 (MAX_CONNECTIONS_PER_CLIENT). */
  private readonly perClient = new Map<string, number>();
  /**
   * Open connections by token name (MAX_CONNECTIONS_PER_TOKEN): one stolen token, from
   * however many addresses, may not take every place nor hold every connection's frame buffer.
   */
  private readonly perToken = new Map<string, number>();
  /** Open connections by the sha256 of their token. */
  private readonly byToken = new Map<string, Set<Conn>>();

  constructor(
    private readonly app: TemplatedApp,
    private readonly d: WsDeps,
  ) {
    d.catalog.onTokenChange((changes) => this.tokensChanged(changes));
  }

  /** The paths served, for the HTTP fallback that answers requests to them that are no upgrade. */
  readonly paths: string[] = [];

  /** Serves `routes` at `path` to tokens of `role`. */
  serve(path: string, role: Role, routes: Routes): void {
    this.paths.push(path);
    const { cfg } = this.d;
    const dispatcher = new Dispatcher(routes, cfg, this.d.metrics, this.d.log, this.d.load);
    this.app.ws<ConnData>(path, {
      compression: uWS.DISABLED,
      // The hard limit: past it uWS closes the connection. Frames between the soft
      // limit (MAX_FRAME_BYTES) and this get an error and the connection stays up.
      // Every connection may hold an unfinished frame up to it in uWS' buffer (reserved
      // in full at the frame's first bytes), so it is what MAX_CONNECTIONS multiplies.
      maxPayloadLength: hardFrameLimit(cfg.maxFrameBytes),
      maxBackpressure: cfg.maxBackpressureBytes,
      closeOnBackpressureLimit: 1,
      idleTimeout: cfg.wsIdleTimeoutSec,
      sendPingsAutomatically: true,
      drain: this.guarded('drain', (ws) => this.wrote(ws.getUserData().conn!)),
      upgrade: (res, req, context) => {
        // Left to uWS, a throw here would end the process: answered 500 `internal` instead.
        try {
          this.upgrade(res, req, context, path, role);
        } catch (err) {
          this.failed(res, err);
        }
      },
      open: this.guarded('open', (ws) => this.opened(ws, path)),
      // Not through guarded(): no array of arguments made per frame on the hot path.
      message: (ws, message, isBinary) => {
        try {
          dispatcher.onFrame(ws.getUserData().conn!, message, isBinary);
        } catch (err) {
          this.handlerFailed(ws, 'message', err);
        }
      },
      close: this.guarded('close', (ws) => this.closed(ws, path)),
    });
  }

  /**
   * A uWS handler that cannot end the process: left to uWS, a throw would (as at the upgrade).
   * One is a bug, logged at error once; the connection, whose state it may have left half
   * done, is closed 1011 `internal`, and the client reconnects as after any failure.
   */
  private guarded(
    what: 'open' | 'drain' | 'close',
    handler: (ws: WebSocket<ConnData>) => void,
  ): (ws: WebSocket<ConnData>) => void {
    return (ws) => {
      try {
        handler(ws);
      } catch (err) {
        this.handlerFailed(ws, what, err);
      }
    };
  }

  private handlerFailed(ws: WebSocket<ConnData>, what: string, err: unknown): void {
    this.d.log.error({ err }, `websocket ${what} failed`);
    if (what === 'close') return; // uWS has closed it already
    const conn = ws.getUserData().conn;
    if (conn) conn.end(1011, 'internal');
    else ws.end(1011, 'internal');
  }

  /** Ends every open connection: the gateway is going away (1001). */
  closeAll(): void {
    for (const c of [...this.conns]) c.end(1001, 'gateway shutting down');
  }

  /**
   * A revoked or changed token loses its open connections at once (in-flight
   * requests finish; their answers are dropped). A changed one may reconnect
   * under its new grant.
   */
  private tokensChanged(changes: TokenChange[]): void {
    for (const { hash, change } of changes) {
      const conns = this.byToken.get(hash);
      if (!conns) continue;
      const reason = change === 'revoked' ? 'token_revoked' : 'token_changed';
      for (const c of [...conns]) {
        this.d.metrics.event('connection', reason);
        c.end(CLOSE_TOKEN[reason], reason);
      }
    }
  }

  private upgrade(res: HttpResponse, req: HttpRequest, context: us_socket_context_t, path: string, role: Role): void {
    const { cfg, catalog } = this.d;
    // As for any request (router.ts, framed): which site it is for is in doubt.
    if (headerLines(req).hosts > 1) return this.refuse(res, 'bad_host');
    // Headers must be read before any await: uWS reuses req afterwards.
    const tok = bearer(req) || new URLSearchParams(req.getQuery() ?? '').get('token') || '';
    // By its group, as the buy and PIN limits count it: one subscriber's /64 holds more addresses than any limit.
    const client = clientGroup(clientAddress(res, req, this.d.trust));
    // Refused before the token is even looked at: a flood must cost us as little as possible.
    const full =
      this.conns.size >= cfg.maxConnections
        ? 'the gateway'
        : (this.perClient.get(client) ?? 0) >= cfg.maxConnectionsPerClient
          ? 'this client'
          : '';
    if (full) return this.tooMany(res, full);
    const key = req.getHeader('sec-websocket-key');
    const protocol = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    const finish = (auth: AuthResult): void => {
      if (!auth.ok) return this.refuse(res, auth.reason, auth.message);
      // Counted by name: a rotated token that kept its name is the same client. open() runs
      // within res.upgrade(), so the count is current for the next upgrade.
      if (this.tokenFull(auth.token.name)) return this.tooMany(res, 'this token');
      res.upgrade<ConnData>(
        { token: auth.token, tokenHash: tokenHash(tok), path, client },
        key,
        protocol,
        extensions,
        context,
      );
    };
    // A token the cache knows is upgraded here and now. The async path is only for a token
    // created a moment ago, and it upgrades uncorked: uWS' cork() after an async upgrade can
    // misread the reallocated socket and close the new WebSocket right after open
    // (uNetworking/uWebSockets#1928, fixed upstream in #1929, not in the build we pin).
    if (!tok || catalog.token(tok)) return finish(authorize(catalog, tok, [role]));
    // A token the cache does not know costs a Redis lookup: counted in flight like any
    // request, so a flood of made-up tokens is refused rather than queued.
    const { load } = this.d;
    if (load.enterAs(ANONYMOUS)) return this.refuse(res, 'overloaded');
    let aborted = false;
    res.onAborted(() => (aborted = true));
    // The place is given back however the lookup ends; a failure of it or of the upgrade after
    // it is answered (failed), not left an unhandled rejection with the client waiting for ever.
    void authorizeFresh(catalog, tok, [role])
      .finally(() => load.leaveAs(ANONYMOUS))
      .then((auth) => {
        if (aborted) return;
        if (auth.ok && !this.tokenFull(auth.token.name)) finish(auth);
        else res.cork(() => finish(auth));
      })
      .catch((err: unknown) => this.failed(res, err, aborted));
  }

  /**
   * An upgrade that failed is a bug: logged at error once and answered 500 `internal`, unless the
   * client has gone (`gone`) or the response was already answered or upgraded, when nothing can be sent.
   */
  private failed(res: HttpResponse, err: unknown, gone = false): void {
    let answered = false;
    if (!gone)
      try {
        const reply = replyFor(res);
        if (!reply.answered && !reply.aborted) {
          this.refuse(res, 'internal');
          answered = true;
        }
      } catch {
        // The response is gone (upgraded, or closed): uWS throws at any use of it.
      }
    this.d.log.error({ err, answered }, 'websocket upgrade failed');
  }

  /**
   * After a connection wrote or drained: its unsent output, as uWS holds it, counted with every
   * other connection's (OutputBudget), which closes the largest holders past the total.
   */
  private readonly wrote = (conn: Conn): void => {
    if (!conn.closed) this.d.output.set(conn, conn.ws.getBufferedAmount(), conn.drop, 'connection');
  };

  private tokenFull(name: string): boolean {
    return (this.perToken.get(name) ?? 0) >= this.d.cfg.maxConnectionsPerToken;
  }

  private tooMany(res: HttpResponse, who: string): void {
    this.refuse(res, 'too_many_connections', `${who} has as many connections as it may`);
  }

  /**
   * A refused upgrade is answered as any HTTP request is (replyFor): a client that pipelines
   * upgrades and reads none of the refusals gets no more read from it, and what it leaves unread
   * counts against MAX_BACKPRESSURE_TOTAL_BYTES.
   */
  private refuse(res: HttpResponse, reason: Reason, message?: string): void {
    this.d.metrics.event('upgrade', reason);
    replyFor(withBudget(res, this.d.output)).error(reason, message);
  }

  private opened(ws: WebSocket<ConnData>, path: string): void {
    const data = ws.getUserData();
    const conn = new Conn(ws, data.token, data.tokenHash, this.wrote);
    data.conn = conn;
    this.conns.add(conn);
    this.perClient.set(data.client, (this.perClient.get(data.client) ?? 0) + 1);
    this.perToken.set(conn.token.name, (this.perToken.get(conn.token.name) ?? 0) + 1);
    let same = this.byToken.get(conn.tokenHash);
    if (!same) this.byToken.set(conn.tokenHash, (same = new Set()));
    same.add(conn);
    this.d.metrics.connections.inc({ path });
    // Revoked or changed while the upgrade was on its way: the change was announced before this connection existed.
    const now = this.d.catalog.tokenByHash(conn.tokenHash);
    if (!now || !sameGrant(now, conn.token))
      this.tokensChanged([{ hash: conn.tokenHash, change: now ? 'changed' : 'revoked' }]);
  }

  private closed(ws: WebSocket<ConnData>, path: string): void {
    const conn = ws.getUserData().conn;
    if (!conn) return; // its open failed before it counted anything
    conn.closed = true;
    this.conns.delete(conn);
    const same = this.byToken.get(conn.tokenHash);
    same?.delete(conn);
    if (same?.size === 0) this.byToken.delete(conn.tokenHash);
    const client = ws.getUserData().client;
    const left = (this.perClient.get(client) ?? 1) - 1;
    if (left > 0) this.perClient.set(client, left);
    else this.perClient.delete(client);
    const ofName = (this.perToken.get(conn.token.name) ?? 1) - 1;
    if (ofName > 0) this.perToken.set(conn.token.name, ofName);
    else this.perToken.delete(conn.token.name);
    // Last: the counts that limit connections are given back even if these fail.
    this.d.output.set(conn, 0, conn.drop, 'connection');
    this.d.metrics.connections.dec({ path });
  }
}

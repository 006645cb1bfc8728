/**
 * A bug in an HTTP handler, thrown at once or failing its promise, on every
 * kind of route: one answer, 500 `internal` (a page on the buyer pages, JSON
 * elsewhere), one line at error level, and the request's place in flight
 * (MAX_INFLIGHT_TOTAL, here 1) given back, so the next request is served.
 * The same of a WebSocket upgrade, which the HTTP router does not handle.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { gateway, seedCatalog, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { formSession, http, jsonCall, postPageForm } from '../support/http';
import { captureLog, type LogCapture } from '../support/log';
import { until } from '../support/wait';
import { Client, upgrade } from '../support/ws-client';

let h: Harness;
let gw: Gateway;
let logs: LogCapture;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [talkProduct()]);
  logs = captureLog();
  gw = await gateway(h, { maxInflightTotal: 1 }, logs.log);
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

const PLANTED = 'planted failure';

/**
 * The next read of `target[key]` throws (`how` 'throw'), or a call of it gives a failed promise
 * ('reject'); after that one time the property is as it was.
 */
function failOnce(target: object, key: string, how: 'throw' | 'reject' = 'throw'): void {
  const own = Object.getOwnPropertyDescriptor(target, key);
  const restore = (): void => {
    if (own) Object.defineProperty(target, key, own);
    else delete (target as Record<string, unknown>)[key];
  };
  Object.defineProperty(target, key, {
    configurable: true,
    get() {
      restore();
      if (how === 'throw') throw new Error(PLANTED);
      return () => Promise.reject(new Error(PLANTED));
    },
  });
}

/** Lines logged at error level since `from`. */
const errorsSince = (from: number): string[] =>
  logs.lines
    .slice(from)
    .filter((l) => l.level >= 50)
    .map((l) => l.msg ?? '');

/** `request` answers 500 internal, logs the failure once, and gives its place back. */
async function failsOnce(
  request: () => Promise<{ status: number; type: string | null; text: string; json?: unknown }>,
  kind: 'page' | 'json' | 'head',
): Promise<void> {
  const from = logs.lines.length;
  const r = await request();
  expect(r.status).toBe(500);
  if (kind === 'page') {
    expect(r.type).toBe('text/html; charset=utf-8');
    expect(r.text).toContain('Something went wrong');
  }
  if (kind === 'json') expect(r.json).toEqual({ error: { reason: 'internal', message: 'internal error' } });
  if (kind === 'head') expect(r.text).toBe('');
  expect(errorsSince(from)).toEqual(['http handler failed']);
  // MAX_INFLIGHT_TOTAL is 1: a place not given back would make this 503 overloaded.
  expect(await jsonCall(gw, 'GET', '/readyz')).toMatchObject({ status: 200, json: { ok: true } });
}

describe('a handler that throws at once', () => {
  it('the access page answers a page, the same failure in the API answers JSON, HEAD no body', async () => {
    failOnce(gw.catalog, 'areas');
    await failsOnce(() => http(gw, 'GET', '/access'), 'page');
    failOnce(gw.catalog, 'areas');
    await failsOnce(() => http(gw, 'GET', '/v1/access-numbers'), 'json');
    failOnce(gw.catalog, 'areas');
    await failsOnce(async () => {
      const res = await fetch(`http://127.0.0.1:${gw.port}/access`, { method: 'HEAD' });
      return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
    }, 'head');
    expect((await http(gw, 'GET', '/access')).status).toBe(200);
  });

  it('/metrics and /readyz answer JSON and give their place back', async () => {
    failOnce(gw.metrics.registry, 'metrics');
    await failsOnce(() => http(gw, 'GET', '/metrics'), 'json');
    failOnce(gw.catalog, 'version');
    await failsOnce(() => http(gw, 'GET', '/readyz'), 'json');
  });
});

describe('a handler whose promise fails', () => {
  it('/metrics answers JSON with the catalogue message, not the error', async () => {
    failOnce(gw.metrics.registry, 'metrics', 'reject');
    await failsOnce(() => http(gw, 'GET', '/metrics'), 'json');
  });

  it('the buy page and a posted buy form answer a page', async () => {
    failOnce(gw.catalog, 'tariffFor');
    await failsOnce(() => http(gw, 'GET', '/buy'), 'page');
    const session = await formSession(gw);
    failOnce(gw.purchases, 'purchase', 'reject');
    const form = { product: 'talk', pin: '1234', card: '4000000000000002', cardPin: '1234', nonce: 'c'.repeat(32) };
    await failsOnce(() => postPageForm(gw, '/buy', form, session), 'page');
  });

  it('an API endpoint answers JSON', async () => {
    const scanner = await token(h, 'scanner');
    failOnce(gw.redemption, 'status', 'reject');
    await failsOnce(() => http(gw, 'GET', '/v1/ids/4111111111111111/status', { token: scanner }), 'json');
  });
});

describe('a WebSocket upgrade that fails', () => {
  /** Upgrading with `tok` answers 500 internal, logs once and gives its place back; `good` then opens a connection. */
  async function upgradeFailsOnce(tok: string, good: string): Promise<void> {
    const from = logs.lines.length;
    const r = await upgrade(gw.port, { Authorization: `Bearer ${tok}` });
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body)).toEqual({ error: { reason: 'internal', message: 'internal error' } });
    expect(errorsSince(from)).toEqual(['websocket upgrade failed']);
    // MAX_INFLIGHT_TOTAL is 1: a place not given back would make this 503 overloaded.
    expect(await jsonCall(gw, 'GET', '/readyz')).toMatchObject({ status: 200, json: { ok: true } });
    const c = await Client.connect(gw.port, good);
    try {
      expect(await c.request({ op: 'ping', ref: 1 })).toMatchObject({ op: 'pong', ref: 1 });
    } finally {
      c.ws.close();
    }
  }

  it('thrown at once (the token lookup) is answered, and the gateway serves on', async () => {
    const tok = await token(h, 'switch');
    // Known to the cache (it served this connection): its upgrade is decided at once.
    const known = await Client.connect(gw.port, tok);
    known.ws.close();
    failOnce(gw.catalog, 'token');
    await upgradeFailsOnce(tok, tok);
  });

  it('failing its promise (the Redis lookup of a token the cache does not know) is answered', async () => {
    const good = await token(h, 'switch');
    failOnce(gw.catalog, 'refreshIfTokenKnown');
    await upgradeFailsOnce(`made-up-${PLANTED.length}`, good);
  });
});

describe('a WebSocket handler that throws', () => {
  /** Connections the gateway counts as open (MAX_CONNECTIONS), read from /metrics. */
  async function openConnections(): Promise<number> {
    const text = (await http(gw, 'GET', '/metrics')).text;
    return text
      .split('\n')
      .filter((l) => l.startsWith('tessera_ws_connections{'))
      .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
  }

  it('on open: the connection is closed 1011 internal, logged once, and no count is left behind', async () => {
    const tok = await token(h, 'switch');
    const before = await openConnections();
    const from = logs.lines.length;
    failOnce(gw.catalog, 'tokenByHash');
    const c = await Client.connect(gw.port, tok);
    expect(await c.closed).toEqual({ code: 1011, reason: 'internal' });
    expect(errorsSince(from)).toEqual(['websocket open failed']);
    expect(await openConnections()).toBe(before);
    const again = await Client.connect(gw.port, tok);
    expect(await again.request({ op: 'ping', ref: 1 })).toMatchObject({ op: 'pong', ref: 1 });
    again.ws.close();
  });

  it('on a message: the connection is closed 1011 internal, logged once, and the gateway serves on', async () => {
    const tok = await token(h, 'switch');
    const c = await Client.connect(gw.port, tok);
    const from = logs.lines.length;
    failOnce(gw.metrics, 'event');
    c.ws.send('not json');
    expect(await c.closed).toEqual({ code: 1011, reason: 'internal' });
    expect(errorsSince(from)).toEqual(['websocket message failed']);
    const again = await Client.connect(gw.port, tok);
    expect(await again.request({ op: 'ping', ref: 1 })).toMatchObject({ op: 'pong', ref: 1 });
    again.ws.close();
  });

  it('answering a request whose handler failed: the connection is closed 1011 internal, its place given back', async () => {
    const tok = await token(h, 'switch');
    const c = await Client.connect(gw.port, tok);
    const from = logs.lines.length;
    // The quote handler fails at its metrics, and so does the error answer the dispatcher gives it.
    const planted = vi.spyOn(gw.metrics, 'event').mockImplementation(() => {
      throw new Error(PLANTED);
    });
    try {
      c.send({ op: 'quote', ref: 1, id: '4111111111111111', dest: '4420' });
      expect(await c.closed).toEqual({ code: 1011, reason: 'internal' });
    } finally {
      planted.mockRestore();
    }
    expect(errorsSince(from)).toEqual(['handler failed', 'websocket message failed']);
    // MAX_INFLIGHT_TOTAL is 1: a place not given back would make this 503 overloaded.
    expect(await jsonCall(gw, 'GET', '/readyz')).toMatchObject({ status: 200, json: { ok: true } });
    const again = await Client.connect(gw.port, tok);
    expect(await again.request({ op: 'ping', ref: 1 })).toMatchObject({ op: 'pong', ref: 1 });
    again.ws.close();
  });

  it('on close: logged once, and the gateway serves on', async () => {
    const tok = await token(h, 'switch');
    const before = await openConnections();
    const c = await Client.connect(gw.port, tok);
    expect(await openConnections()).toBe(before + 1);
    const from = logs.lines.length;
    failOnce(gw.metrics.connections, 'dec');
    c.ws.close();
    await c.closed;
    await until(() => errorsSince(from).length > 0);
    expect(errorsSince(from)).toEqual(['websocket close failed']);
    const again = await Client.connect(gw.port, tok);
    expect(await again.request({ op: 'ping', ref: 1 })).toMatchObject({ op: 'pong', ref: 1 });
    again.ws.close();
  });
});

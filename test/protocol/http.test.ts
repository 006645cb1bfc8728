/** The gateway's HTTP side: health, readiness, Prometheus metrics and the admin ID endpoints. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  gateway,
  mint,
  seedCatalog,
  soldIds,
  startHarness,
  talkProduct,
  token,
  withGateway,
  type Harness,
} from '../support/harness';
import { http, rawExchange, type Res } from '../support/http';
import { metricsText, sample } from '../support/metrics';
import { sleep } from '../support/wait';
import { Client } from '../support/ws-client';
import type { Gateway } from '../../src/gateway/server';
import { generateId } from '../../src/ids/idnum';
import { keys } from '../../src/redis/keys';
import { PAGE_HEADERS } from '../../src/gateway/routes/pages';
import { messageOf } from '../../src/protocol/reasons';

let h: Harness;
let gw: Gateway;
let base: string;
let admin: string;
let sw: string;
beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  gw = await gateway(h);
  base = `http://127.0.0.1:${gw.port}`;
  admin = await token(h, 'admin');
  sw = await token(h, 'switch');
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

const FACE = 1_000_000;

/** A call on this file's gateway; `body` goes as it is (labelled JSON), so it may be malformed. */
const call = (method: 'GET' | 'POST', path: string, tok?: string, body?: string): Promise<Res> =>
  http(gw, method, path, { token: tok, raw: body });

/** A well-formed ID (right length, good check digit) that was never minted. */
const unminted = (): string => generateId(16);
/** The same ID with its check digit off by one: caught before Redis. */
const badCheck = (id: string): string => id.slice(0, -1) + String((Number(id.slice(-1)) + 1) % 10);

describe('health', () => {
  it('GET /healthz → 200', async () => {
    const r = await call('GET', '/healthz');
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ ok: true });
  });

  it('GET /readyz → 200 with Redis up and scripts loaded', async () => {
    const r = await call('GET', '/readyz');
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ ok: true, catalogVersion: Number(await h.r.get(keys.catalogVersion)) });
  });

  it('an unknown path → 404 not_found, for GET and POST', async () => {
    for (const [method, path] of [
      ['GET', '/nope'],
      ['POST', '/v1/admin/ids'],
      ['GET', '/v1/ids/123/whatever'],
    ] as const) {
      const r = await call(method, path, admin);
      expect(r.status).toBe(404);
      expect(r.json).toEqual({ error: { reason: 'not_found', message: expect.any(String) } });
    }
  });

  it('a request to a WebSocket endpoint that is no upgrade → 426 upgrade_required, naming the protocol', async () => {
    for (const [method, path, tok] of [
      ['GET', '/v1/switch', sw],
      ['POST', '/v1/switch', undefined],
      ['GET', '/v1/scanner?token=x', undefined],
    ] as const) {
      const r = await call(method, path, tok);
      expect(r.status, `${method} ${path}`).toBe(426);
      expect(r.json).toEqual({ error: { reason: 'upgrade_required', message: messageOf('upgrade_required') } });
      expect(r.headers.get('upgrade')).toBe('websocket');
    }
    // An upgrade without a Sec-WebSocket-Key is none either.
    const { text } = await rawExchange(
      gw.port,
      'GET /v1/scanner HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    expect(text).toMatch(/^HTTP\/1\.1 426 Upgrade Required\r\n/);
    expect(text).toContain('"reason":"upgrade_required"');
  });

  it('HEAD answers every GET route with its status, headers and length, and no body', async () => {
    // Same length as GET's body: pages whose bytes do not change between two requests.
    for (const path of ['/healthz', '/access', '/access/nowhere', '/pages.css', '/v1/products', '/v1/access-numbers']) {
      const get = await fetch(`${base}${path}`);
      const body = Buffer.from(await get.arrayBuffer());
      const head = await fetch(`${base}${path}`, { method: 'HEAD' });
      expect(head.status, path).toBe(get.status);
      expect(head.headers.get('content-type'), path).toBe(get.headers.get('content-type'));
      expect(head.headers.get('content-length'), path).toBe(String(body.length));
      expect((await head.arrayBuffer()).byteLength, path).toBe(0);
    }
    // An authenticated GET answers HEAD as it would GET: refused without a token, found with one.
    const status = `/v1/ids/${unminted()}/status`;
    expect((await fetch(`${base}${status}`, { method: 'HEAD' })).status).toBe(401);
    expect(
      (await fetch(`${base}${status}`, { method: 'HEAD', headers: { authorization: `Bearer ${admin}` } })).status,
    ).toBe(404);
    // The connection is still in step: a GET after a HEAD on it reads its own answer.
    const ready = await fetch(`${base}/readyz`);
    expect(await ready.json()).toMatchObject({ ok: true });
  });

  it('every JSON refusal carries its reason in Tessera-Reason: a HEAD, which has no body, still says why', async () => {
    const status = `/v1/ids/${unminted()}/status`;
    const cases: [string, string, Record<string, string>, number, string][] = [
      ['HEAD', '/v1/purchases', {}, 405, 'method_not_allowed'],
      ['HEAD', '/nope', {}, 404, 'not_found'],
      ['HEAD', '/v1/switch', {}, 426, 'upgrade_required'],
      ['HEAD', status, {}, 401, 'unauthorized'],
      ['HEAD', status, { authorization: `Bearer ${sw}` }, 403, 'forbidden'],
      ['HEAD', status, { authorization: `Bearer ${admin}` }, 404, 'unknown_id'],
      ['GET', status, { authorization: `Bearer ${admin}` }, 404, 'unknown_id'],
      ['POST', '/v1/purchases', { 'content-type': 'application/json' }, 401, 'unauthorized'],
    ];
    for (const [method, path, headers, code, reason] of cases) {
      const r = await fetch(`${base}${path}`, { method, headers });
      const what = `${method} ${path}`;
      expect(r.status, what).toBe(code);
      expect(r.headers.get('tessera-reason'), what).toBe(reason);
      if (method !== 'HEAD')
        expect(((await r.json()) as { error: { reason: string } }).error.reason, what).toBe(reason);
    }
    // An answer that refuses nothing has no such header.
    expect((await fetch(`${base}/v1/products`, { method: 'HEAD' })).headers.get('tessera-reason')).toBeNull();
  });

  it('no JSON answer may be stored by a cache; the stylesheet may', async () => {
    // A purchase's answer holds its ID number, a status its balance: until 2026-12-08 the JSON
    // answers said nothing of caching, and a proxy or client library on the way could keep them.
    const status = `/v1/ids/${unminted()}/status`;
    const answers: [string, RequestInit, number][] = [
      ['/v1/products', {}, 200],
      ['/readyz', {}, 200],
      [status, { headers: { authorization: `Bearer ${admin}` } }, 404],
      ['/v1/purchases', { method: 'POST', headers: { 'content-type': 'application/json' } }, 401],
      ['/nope', {}, 404],
    ];
    for (const [path, init, code] of answers) {
      const r = await fetch(`${base}${path}`, init);
      expect(r.status, path).toBe(code);
      expect(r.headers.get('cache-control'), path).toBe('no-store');
    }
    expect((await fetch(`${base}/pages.css`)).headers.get('cache-control')).toBe('public, max-age=3600');
  });

  it('a known path asked with another method → 405 method_not_allowed with Allow; both refusals carry the page headers', async () => {
    const cases: [string, string, string][] = [
      ['PUT', '/v1/purchases', 'POST'],
      ['DELETE', '/v1/purchases', 'POST'],
      ['GET', '/v1/purchases', 'POST'],
      ['PATCH', '/buy', 'GET, HEAD, POST'],
      ['OPTIONS', '/buy', 'GET, HEAD, POST'],
      ['DELETE', `/check/0/${'0'.repeat(64)}`, 'GET, HEAD, POST'],
      ['PUT', `/check/0/${'0'.repeat(64)}/voucher`, 'GET, HEAD, POST'],
      ['POST', '/access', 'GET, HEAD'],
      ['HEAD', '/v1/purchases', 'POST'],
    ];
    for (const [method, path, allow] of cases) {
      const r = await fetch(`${base}${path}`, { method });
      const what = `${method} ${path}`;
      expect(r.status, what).toBe(405);
      expect(r.headers.get('allow'), what).toBe(allow);
      if (method !== 'HEAD')
        expect(await r.json(), what).toEqual({
          error: { reason: 'method_not_allowed', message: messageOf('method_not_allowed') },
        });
      else expect(await r.text(), what).toBe('');
    }
    for (const [method, path] of [
      ['PUT', '/buy'],
      ['GET', '/check/0'],
      ['GET', '/nope'],
    ]) {
      const r = await fetch(`${base}${path}`, { method });
      for (const [k, v] of Object.entries(PAGE_HEADERS)) expect(r.headers.get(k), `${method} ${path} ${k}`).toBe(v);
    }
  });
});

describe('metrics', () => {
  it('GET /metrics answers this machine only, or with METRICS_TOKEN whoever holds it', async () => {
    // Behind a proxy (TRUST_PROXY=1) the client is the address the proxy forwards.
    await withGateway(h, { trustProxy: true }, async (g) => {
      expect((await http(g, 'GET', '/metrics')).status).toBe(200);
      const far = await http(g, 'GET', '/metrics', { headers: { 'X-Forwarded-For': '203.0.113.9' } });
      expect([far.status, far.json]).toEqual([403, { error: { reason: 'forbidden', message: expect.any(String) } }]);
      const near = await http(g, 'GET', '/metrics', { headers: { 'X-Forwarded-For': '203.0.113.9, 127.0.0.1' } });
      expect(near.status).toBe(200);
      // A proxy may add its own line below the client's: the lines are one list, its entry the last.
      const lines = (first: string, second: string): string =>
        `GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: ${first}\r\nX-Forwarded-For: ${second}\r\nConnection: close\r\n\r\n`;
      expect((await rawExchange(g.port, lines('127.0.0.1', '203.0.113.9'))).text).toMatch(/^HTTP\/1\.1 403 /);
      expect((await rawExchange(g.port, lines('203.0.113.9', '127.0.0.1'))).text).toMatch(/^HTTP\/1\.1 200 /);
    });
    const metricsToken = 'm'.repeat(24);
    await withGateway(h, { metricsToken }, async (g) => {
      for (const tok of [undefined, 'n'.repeat(24), metricsToken.slice(1)]) {
        const r = await http(g, 'GET', '/metrics', { token: tok });
        expect([r.status, r.json], String(tok)).toEqual([
          401,
          { error: { reason: 'unauthorized', message: expect.any(String) } },
        ]);
      }
      const ok = await http(g, 'GET', '/metrics', { token: metricsToken });
      expect(ok.status).toBe(200);
      expect(ok.text).toContain('# TYPE tessera_events_total counter');
    });
  });

  it('takes X-Forwarded-For only from the proxies TRUST_PROXY lists', async () => {
    // A client that reaches the gateway around its proxy must not name its own address (here: loopback).
    const forged = { headers: { 'X-Forwarded-For': '127.0.0.1' } };
    const far = { headers: { 'X-Forwarded-For': '203.0.113.9' } };
    await withGateway(h, { trustProxy: ['192.0.2.0/24', '2001:db8::1'] }, async (g) => {
      // This test's peer (127.0.0.1) is no listed proxy: its header is ignored, its own address counts.
      expect((await http(g, 'GET', '/metrics', far)).status).toBe(200);
    });
    await withGateway(h, { trustProxy: ['127.0.0.0/8'] }, async (g) => {
      expect((await http(g, 'GET', '/metrics', far)).status).toBe(403);
      expect((await http(g, 'GET', '/metrics', forged)).status).toBe(200);
    });
  });

  it('GET /metrics exposes events by op and outcome, active calls, script latency', async () => {
    // A gateway of its own, so its counters hold exactly this test's traffic.
    const g = await gateway(h);
    try {
      const [id1, id2] = (await soldIds(h, talkProduct(), 2)) as [string, string];
      const c = await Client.connect(g.port, sw);
      await expect(Client.connect(g.port, '')).rejects.toMatchObject({ status: 401 });
      expect(await c.request({ op: 'start', ref: 1, call: 'm1', id: id1, dest: '4912345' })).toMatchObject({
        op: 'started',
      });
      expect(await c.request({ op: 'tick', ref: 2, call: 'm1', sec: 3 })).toMatchObject({ op: 'ticked' });
      expect(await c.request({ op: 'stop', ref: 3, call: 'm1', sec: 4 })).toMatchObject({ op: 'stopped' });
      expect(await c.request({ op: 'start', ref: 4, call: 'm2', id: id2, dest: '4912345' })).toMatchObject({
        op: 'started',
      });
      expect(await c.request({ op: 'start', ref: 5, call: 'm3', id: unminted(), dest: '4912345' })).toMatchObject({
        reason: 'unknown_id',
      });
      expect(await c.request({ op: 'dance', ref: 6 })).toMatchObject({ reason: 'unknown_op' });
      c.sendRaw('not json', false);
      await c.waitFor((m) => m.reason === 'bad_frame');

      const res = await http(g, 'GET', '/metrics');
      expect(res.status).toBe(200);
      expect(res.type).toMatch(/^text\/plain; version=0\.0\.4/);
      const text = res.text;
      expect(text).toContain('# TYPE tessera_events_total counter');
      expect(text).toContain('# TYPE tessera_script_duration_seconds histogram');
      expect(sample(text, 'tessera_events_total', { op: 'start', outcome: 'ok' })).toBe(2);
      expect(sample(text, 'tessera_events_total', { op: 'start', outcome: 'unknown_id' })).toBe(1);
      expect(sample(text, 'tessera_events_total', { op: 'tick', outcome: 'ok' })).toBe(1);
      expect(sample(text, 'tessera_events_total', { op: 'stop', outcome: 'ok' })).toBe(1);
      expect(sample(text, 'tessera_events_total', { op: 'message', outcome: 'unknown_op' })).toBe(1);
      expect(sample(text, 'tessera_events_total', { op: 'frame', outcome: 'bad_frame' })).toBe(1);
      expect(sample(text, 'tessera_events_total', { op: 'upgrade', outcome: 'unauthorized' })).toBe(1);
      // m2 is still live; m1 is closed. The gauge counts sessions in Redis.
      expect(sample(text, 'tessera_active_calls')).toBe(1);
      expect(sample(text, 'tessera_ws_connections', { path: '/v1/switch' })).toBe(1);
      expect(sample(text, 'tessera_script_duration_seconds_count', { script: 'call_start' })).toBe(3);
      expect(sample(text, 'tessera_script_duration_seconds_count', { script: 'call_tick' })).toBe(1);
      expect(sample(text, 'tessera_script_duration_seconds_count', { script: 'call_stop' })).toBe(1);
      expect(sample(text, 'tessera_script_duration_seconds_bucket', { script: 'call_start', le: '+Inf' })).toBe(3);
      expect(sample(text, 'tessera_script_duration_seconds_sum', { script: 'call_start' })).toBeGreaterThan(0);

      expect(await c.request({ op: 'stop', ref: 7, call: 'm2', sec: 1 })).toMatchObject({ op: 'stopped' });
      const after = await metricsText(g.port);
      expect(sample(after, 'tessera_active_calls')).toBe(0);
      expect(sample(after, 'tessera_events_total', { op: 'stop', outcome: 'ok' })).toBe(2);
      await c.close();
    } finally {
      await g.close();
    }
  });
});

describe('admin ID endpoints', () => {
  it('GET /v1/ids/:id/status with an admin token', async () => {
    const [id] = (await soldIds(h, talkProduct())) as [string];
    const r = await call('GET', `/v1/ids/${id}/status`, admin);
    expect(r.status).toBe(200);
    expect(r.type).toBe('application/json');
    expect(r.json).toMatchObject({
      state: 'sold',
      product: 'talk',
      kind: 'talk',
      currency: 'EUR',
      face: FACE,
      balance: FACE,
      activeCalls: 0,
    });
    expect(r.json.ok).toBeUndefined();
    // Spaces and dashes as a person types them are fine.
    const dashed = id.replace(/(\d{4})(?=\d)/g, '$1-');
    const d = await call('GET', `/v1/ids/${dashed}/status`, admin);
    expect(d.status).toBe(200);
    expect(d.json.balance).toBe(FACE);
  });

  it('activate a minted ID → 200 with balance and sale record; twice → 409 already_active', async () => {
    const [id] = (await mint(h, talkProduct())) as [string];
    expect((await call('GET', `/v1/ids/${id}/status`, admin)).json.state).toBe('minted');

    const r = await call(
      'POST',
      `/v1/admin/ids/${id}/activate`,
      admin,
      JSON.stringify({ price: 900_000, ref: 'till-7' }),
    );
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ balance: FACE, record: expect.stringMatching(/^\d+-\d+$/) });
    const { hash, bucket } = h.ctx.ids.hash(id);
    const sale = await h.r.xrange(keys.sales(bucket), r.json.record, r.json.record);
    expect(sale).toHaveLength(1);
    const fields = Object.fromEntries(
      sale[0]![1].reduce<[string, string][]>((acc, v, i, a) => (i % 2 ? acc : [...acc, [v, a[i + 1]!]]), []),
    );
    expect(fields).toMatchObject({
      id: hash,
      product: 'talk',
      face: String(FACE),
      price: '900000',
      channel: 'admin',
      ref: 'till-7',
    });
    expect(await h.r.sismember(keys.inventory(bucket, 'talk'), hash)).toBe(0);
    expect((await call('GET', `/v1/ids/${id}/status`, admin)).json).toMatchObject({ state: 'sold', balance: FACE });

    const again = await call('POST', `/v1/admin/ids/${id}/activate`, admin, '{}');
    expect(again.status).toBe(409);
    expect(again.json).toEqual({ error: { reason: 'already_active', message: expect.any(String) } });
  });

  it('activate with a bad price or a body that is not JSON is refused', async () => {
    const [id] = (await mint(h, talkProduct())) as [string];
    const neg = await call('POST', `/v1/admin/ids/${id}/activate`, admin, JSON.stringify({ price: -1 }));
    expect(neg.status).toBe(400);
    expect(neg.json).toEqual({ error: { reason: 'bad_value', message: 'price must be >= 0' } });
    const junk = await call('POST', `/v1/admin/ids/${id}/activate`, admin, '{price:');
    expect(junk.status).toBe(400);
    expect(junk.json).toEqual({ error: { reason: 'bad_json', message: expect.any(String) } });
    // Neither sold it.
    expect((await call('GET', `/v1/ids/${id}/status`, admin)).json.state).toBe('minted');
  });

  it('block and unblock', async () => {
    const [id] = (await soldIds(h, talkProduct())) as [string];
    const b = await call(
      'POST',
      `/v1/admin/ids/${id}/block`,
      admin,
      JSON.stringify({ reason: 'card reported stolen' }),
    );
    expect(b.status).toBe(200);
    expect(b.json).toEqual({ state: 'blocked' });
    expect((await call('GET', `/v1/ids/${id}/status`, admin)).json).toMatchObject({
      state: 'blocked',
      blockedWhy: 'card reported stolen',
      balance: FACE,
    });

    // A blocked ID cannot start a call.
    const c = await Client.connect(gw.port, sw);
    expect(await c.request({ op: 'start', ref: 1, call: 'blk-1', id, dest: '4912345' })).toMatchObject({
      op: 'error',
      reason: 'blocked',
    });

    const u = await call('POST', `/v1/admin/ids/${id}/unblock`, admin);
    expect(u.status).toBe(200);
    expect(u.json).toEqual({ state: 'sold' });
    const st = (await call('GET', `/v1/ids/${id}/status`, admin)).json;
    expect(st.state).toBe('sold');
    expect(st.blockedWhy).toBeUndefined();
    expect(await c.request({ op: 'start', ref: 2, call: 'blk-2', id, dest: '4912345' })).toMatchObject({
      op: 'started',
      balance: FACE,
    });
    await c.request({ op: 'stop', ref: 3, call: 'blk-2', sec: 0 });
    await c.close();

    const again = await call('POST', `/v1/admin/ids/${id}/unblock`, admin);
    expect(again.status).toBe(409);
    expect(again.json).toEqual({ error: { reason: 'not_blocked', message: expect.any(String) } });
  });

  it('a minted (unsold) ID blocked and unblocked goes back to minted', async () => {
    const [id] = (await mint(h, talkProduct())) as [string];
    expect((await call('POST', `/v1/admin/ids/${id}/block`, admin)).json).toEqual({ state: 'blocked' });
    expect((await call('POST', `/v1/admin/ids/${id}/unblock`, admin)).json).toEqual({ state: 'minted' });
  });

  const ENDPOINTS = [
    ['GET', 'status'],
    ['POST', 'activate'],
    ['POST', 'block'],
    ['POST', 'unblock'],
  ] as const;
  const pathOf = (what: string, id: string): string =>
    what === 'status' ? `/v1/ids/${id}/status` : `/v1/admin/ids/${id}/${what}`;

  it.each(ENDPOINTS)('%s %s: no token → 401, unknown token → 401, switch token → 403', async (method, what) => {
    const [id] = (await soldIds(h, talkProduct())) as [string];
    const none = await call(method, pathOf(what, id));
    expect(none.status).toBe(401);
    expect(none.json).toEqual({ error: { reason: 'unauthorized', message: expect.any(String) } });
    const bogus = await call(method, pathOf(what, id), 'tsk_bogus');
    expect(bogus.status).toBe(401);
    expect(bogus.json.error.reason).toBe('unauthorized');
    const wrong = await call(method, pathOf(what, id), sw);
    expect(wrong.status).toBe(403);
    expect(wrong.json).toEqual({ error: { reason: 'forbidden', message: expect.any(String) } });
    // Refused requests changed nothing.
    expect((await call('GET', `/v1/ids/${id}/status`, admin)).json).toMatchObject({ state: 'sold', balance: FACE });
  });

  it.each(ENDPOINTS)(
    '%s %s: unknown ID → 404 unknown_id, bad checksum → 400, bad format → 400',
    async (method, what) => {
      const body = method === 'POST' ? '{}' : undefined;
      const unknown = await call(method, pathOf(what, unminted()), admin, body);
      expect(unknown.status).toBe(404);
      expect(unknown.json).toEqual({ error: { reason: 'unknown_id', message: expect.any(String) } });
      const check = await call(method, pathOf(what, badCheck(unminted())), admin, body);
      expect(check.status).toBe(400);
      expect(check.json).toEqual({ error: { reason: 'bad_checksum', message: expect.any(String) } });
      const format = await call(method, pathOf(what, '12345abc'), admin, body);
      expect(format.status).toBe(400);
      expect(format.json).toEqual({ error: { reason: 'bad_format', message: expect.any(String) } });
    },
  );

  it('refusals are counted in /metrics by route family and reason, never by the path sent', async () => {
    // A gateway of its own, so its counters hold exactly this test's traffic.
    const g = await gateway(h);
    try {
      const scanner = await token(h, 'scanner');
      const [minted] = (await mint(h, talkProduct())) as [string];
      const [sold] = (await soldIds(h, talkProduct())) as [string];
      const ask = (method: 'GET' | 'POST', path: string, tok?: string, body?: string): Promise<Res> =>
        http(g, method, path, { token: tok, raw: body });
      expect((await ask('POST', `/v1/admin/ids/${sold}/activate`, admin, '{}')).status).toBe(409);
      expect((await ask('POST', `/v1/admin/ids/${unminted()}/activate`, admin, '{}')).status).toBe(404);
      expect((await ask('POST', `/v1/admin/ids/${minted}/activate`, admin, '{"price":-1}')).status).toBe(400);
      expect((await ask('POST', `/v1/admin/ids/${minted}/block`, undefined, '{}')).status).toBe(401);
      expect((await ask('POST', `/v1/admin/ids/${minted}/unblock`, sw)).status).toBe(403);
      expect((await ask('POST', `/v1/admin/ids/${sold}/unblock`, admin)).status).toBe(409);
      expect((await ask('GET', `/v1/admin/sales/${badCheck(sold)}`, admin)).status).toBe(400);
      expect((await ask('GET', `/v1/ids/${unminted()}/status`, admin)).status).toBe(404);
      // A scanner's own refusal on the shared status route is the scanner's, not the admin API's.
      expect((await ask('GET', `/v1/ids/${unminted()}/status`, scanner)).status).toBe(404);
      // Nor does a success count.
      expect((await ask('GET', `/v1/ids/${sold}/status`, admin)).status).toBe(200);

      const text = await metricsText(g.port);
      const refused = (route: string, reason: string): number | undefined =>
        sample(text, 'tessera_admin_refusals_total', { route, reason });
      expect(refused('ids/activate', 'already_active')).toBe(1);
      expect(refused('ids/activate', 'unknown_id')).toBe(1);
      expect(refused('ids/activate', 'bad_value')).toBe(1);
      expect(refused('ids/block', 'unauthorized')).toBe(1);
      expect(refused('ids/unblock', 'forbidden')).toBe(1);
      expect(refused('ids/unblock', 'not_blocked')).toBe(1);
      expect(refused('sales', 'bad_checksum')).toBe(1);
      expect(refused('ids/status', 'unknown_id')).toBe(1);
      const routes = new Set(
        text
          .split('\n')
          .filter((l) => l.startsWith('tessera_admin_refusals_total{'))
          .map((l) => /route="([^"]*)"/.exec(l)?.[1]),
      );
      expect([...routes].sort()).toEqual(['ids/activate', 'ids/block', 'ids/status', 'ids/unblock', 'sales']);
    } finally {
      await g.close();
    }
  });
});

describe('malformed requests', () => {
  it('a body over 64 KiB → 413 body_too_large', async () => {
    const [id] = (await mint(h, talkProduct())) as [string];
    const r = await call('POST', `/v1/admin/ids/${id}/activate`, admin, JSON.stringify({ pad: 'x'.repeat(70_000) }));
    expect(r.status).toBe(413);
    expect(r.json).toEqual({ error: { reason: 'body_too_large', message: expect.any(String) } });
    expect((await call('GET', `/v1/ids/${id}/status`, admin)).json.state).toBe('minted');
  });

  it('a malformed percent-escape in the ID is a client error, and the gateway keeps serving', async () => {
    // decodeURIComponent('%E0%A4%A') throws: it must become a 4xx, not an exception in the request handler.
    const timeout = (): AbortSignal => AbortSignal.timeout(1000);
    const noTok = await fetch(`${base}/v1/ids/%E0%A4%A/status`, { signal: timeout() }).then(
      async (res) => ({ status: res.status, json: JSON.parse(await res.text()) as unknown }),
      (err: unknown) => ({ status: 0, json: String(err) }),
    );
    expect(noTok).toEqual({ status: 401, json: { error: { reason: 'unauthorized', message: expect.any(String) } } });
    const withTok = await fetch(`${base}/v1/ids/%E0%A4%A/status`, {
      headers: { Authorization: `Bearer ${admin}` },
      signal: timeout(),
    }).then(
      async (res) => ({ status: res.status, json: JSON.parse(await res.text()) as unknown }),
      (err: unknown) => ({ status: 0, json: String(err) }),
    );
    expect(withTok).toEqual({ status: 400, json: { error: { reason: 'bad_format', message: expect.any(String) } } });
    expect((await call('GET', '/healthz')).status).toBe(200);
  });
});

describe('readiness without Redis', () => {
  // Last in this file: it stops this file's Redis.
  it('GET /readyz → 503 redis_unreachable once Redis is gone; /healthz stays 200', async () => {
    await h.redis.stop();
    const deadline = Date.now() + 5000;
    let r = await call('GET', '/readyz');
    while (r.status !== 503 && Date.now() < deadline) {
      await sleep(50);
      r = await call('GET', '/readyz');
    }
    expect(r.status).toBe(503);
    expect(r.json).toEqual({ ok: false, reason: 'redis_unreachable' });
    expect((await call('GET', '/healthz')).status).toBe(200);
  });
});

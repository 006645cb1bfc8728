/**
 * What an anonymous or careless client can send at the gateway's edges: forms
 * and JSON bodies over the limit (413, never 500), invalid UTF-8 in a text frame,
 * the `Authorization` scheme in any case, and a batch of hostile requests none of
 * which may make the gateway log at error level.
 */
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type Gateway } from '../../src/gateway/server';
import { gateway, seedCatalog, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { baseOf, http, jsonCall, rawConnection, rawExchange } from '../support/http';
import { upgrade, Wire } from '../support/ws-client';
import { until } from '../support/wait';

let h: Harness;
let gw: Gateway;
/** Every line the gateway logged, parsed. */
const logged: { level: number; msg?: string }[] = [];

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [talkProduct()]);
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logged.push(JSON.parse(line));
      done();
    },
  });
  gw = await startGateway(h.cfg, pino({ level: 'trace' }, sink), h.redis.url);
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

const errorLines = (): unknown[] => logged.filter((l) => l.level >= 50);

describe('bodies over the limit', () => {
  it('the buy and check forms answer 413 with a page, the JSON API 413 body_too_large; nothing at error level', async () => {
    const big = { pin: '1234', card: '4111', nonce: 'a'.repeat(32), pad: 'x'.repeat(20_000) };
    for (const path of ['/buy', '/check/b1/sometoken']) {
      const r = await http(gw, 'POST', path, { form: big });
      expect(r.status, path).toBe(413);
      expect(r.type).toBe('text/html; charset=utf-8');
      expect(r.headers.get('tessera-reason')).toBe('body_too_large');
    }
    const sales = await token(h, 'sales');
    expect(
      await jsonCall(gw, 'POST', '/v1/purchases', {
        token: sales,
        idem: 'k1',
        raw: JSON.stringify({ pad: 'x'.repeat(70_000) }),
      }),
    ).toEqual({ status: 413, json: { error: { reason: 'body_too_large', message: expect.any(String) } } });
    expect(errorLines()).toEqual([]);
    expect((await http(gw, 'GET', '/buy')).status).toBe(200);
  });
});

describe('two Content-Length headers', () => {
  it('close the connection unanswered: the bytes after the first length are never read as a request', async () => {
    // uWS takes the first length; a proxy taking the last would see one request where uWS sees two.
    const smuggled = (a: number, b: number): string =>
      `POST /v1/validate HTTP/1.1\r\nHost: x\r\nContent-Length: ${a}\r\nContent-Length: ${b}\r\n\r\n{}` +
      'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
    for (const [a, b] of [
      [2, 40],
      [2, 2],
    ])
      expect(await rawExchange(gw.port, smuggled(a!, b!))).toEqual({ text: '', closed: true });
    // One length is served as ever, on the same kind of connection.
    const one = await rawExchange(gw.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(one.text).toMatch(/^HTTP\/1\.1 200 OK/);
  });
});

describe('two Host headers', () => {
  it('are answered 400 bad_host (RFC 9112 §3.2), over HTTP and at a WebSocket upgrade; one is served', async () => {
    const hosts = 'Host: a.example\r\nHost: b.example\r\n';
    const refused = async (request: string): Promise<void> => {
      const r = await rawExchange(gw.port, request);
      expect(r.text, request).toMatch(/^HTTP\/1\.1 400 /);
      expect(r.text).toMatch(/\r\nTessera-Reason: bad_host\r\n/i);
    };
    await refused(`GET /healthz HTTP/1.1\r\n${hosts}Connection: close\r\n\r\n`);
    await refused(`GET /buy HTTP/1.1\r\n${hosts}Connection: close\r\n\r\n`);
    await refused(
      `POST /v1/validate HTTP/1.1\r\n${hosts}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
    );
    await refused(
      `GET /v1/switch HTTP/1.1\r\n${hosts}Upgrade: websocket\r\nConnection: Upgrade\r\n` +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    const one = await rawExchange(gw.port, 'GET /healthz HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n');
    expect(one.text).toMatch(/^HTTP\/1\.1 200 OK/);
  });
});

describe('a JSON request without a good token, its body not sent', () => {
  it('is refused at once with its reason; a body sent after that is read as its body, never as a request', async () => {
    const scanner = await token(h, 'scanner');
    const cases = [
      ['', 401, 'unauthorized'],
      ['Authorization: Bearer not-a-token\r\n', 401, 'unauthorized'],
      [`Authorization: Bearer ${scanner}\r\n`, 403, 'forbidden'],
    ] as const;
    for (const [auth, status, reason] of cases) {
      const c = await rawConnection(gw.port);
      c.write(
        `POST /v1/purchases HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n`,
      );
      // Before the body: a server that waits for it answers nothing until its idle timeout closes the connection.
      const answer = await c.waitFor(/\r\n\r\n\{.*\}\}/);
      expect(answer, reason).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toEqual({
        error: { reason, message: expect.any(String) },
      });
      // The body, a request in its bytes, then a request of its own.
      const inside = 'GET /inside-the-body HTTP/1.1\r\nHost: x\r\n\r\n';
      c.write(inside + ' '.repeat(100_000 - inside.length));
      c.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      await c.closed;
      const answers = c.text.match(/HTTP\/1\.1 \d+/g);
      expect(answers, reason).toEqual([`HTTP/1.1 ${status}`, 'HTTP/1.1 200']);
    }
    expect(errorLines()).toEqual([]);
  });
});

describe('Authorization scheme', () => {
  it('bearer, BEARER and Bearer all carry the token, over HTTP and at a WebSocket upgrade', async () => {
    const admin = await token(h, 'admin');
    const sw = await token(h, 'switch');
    for (const scheme of ['bearer', 'BEARER', 'Bearer', 'bEaReR']) {
      const r = await http(gw, 'GET', '/v1/ids/4111111111111111/status', {
        headers: { Authorization: `${scheme} ${admin}` },
      });
      expect(r.status, scheme).not.toBe(401);
      expect((await upgrade(gw.port, { Authorization: `${scheme} ${sw}` })).status, scheme).toBe(101);
    }
    expect((await upgrade(gw.port, { Authorization: `Basic ${sw}` })).status).toBe(401);
    expect((await upgrade(gw.port, { Authorization: `Bearer${sw}` })).status).toBe(401);
  });
});

describe('text frames', () => {
  it('invalid UTF-8 fails the connection (RFC 6455 §8.1) before any handler; valid UTF-8 that is not JSON gets bad_frame and the connection stays up', async () => {
    const tok = await token(h, 'switch');
    const w = await Wire.connect(gw.port, tok);
    w.raw(Buffer.from('{"op":"ping","ref":"a"}', 'utf8'), false);
    await w.waitFor((m) => m.op === 'pong' && m.ref === 'a');
    w.raw('{"op": ping}', false);
    expect((await w.waitFor((m) => m.op === 'error')).msg).toMatchObject({ reason: 'bad_frame' });
    w.raw(Buffer.from('{"op":"ping","ref":"b"}', 'utf8'), false);
    await w.waitFor((m) => m.op === 'pong' && m.ref === 'b');

    const answered = w.received.length;
    w.raw(Buffer.from([0x7b, 0x22, 0x6f, 0x70, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), false);
    // uWS drops the connection without a close frame: the client sees 1006.
    expect((await w.closed).code).toBe(1006);
    expect(w.received.length).toBe(answered);
    // The gateway goes on serving, the same token included.
    const again = await Wire.connect(gw.port, tok);
    expect((await again.request({ op: 'ping', ref: 'c' }, false)).msg.op).toBe('pong');
    await again.close();
  });
});

describe('hostile anonymous requests', () => {
  it('none of them makes the gateway log at error level, and it keeps serving', async () => {
    const base = baseOf(gw);
    const send = async (path: string, init: RequestInit = {}): Promise<number> => {
      const r = await fetch(`${base}${path}`, { ...init, signal: AbortSignal.timeout(15_000) });
      await r.arrayBuffer();
      return r.status;
    };
    const invalidUtf8 = Buffer.from([0xff, 0xfe, 0xc0, 0xaf, 0x3d, 0x26]);
    const cases: [string, RequestInit][] = [
      ['/buy', { method: 'POST', body: 'pin=' + 'x'.repeat(100_000) }],
      ['/buy', { method: 'POST', body: invalidUtf8 }],
      [
        '/buy',
        { method: 'POST', body: '%%%&&&==%E0%A4%A', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } },
      ],
      ['/buy', { method: 'POST', body: 'product=talk&pin=1234&card=4111111111111111&nonce=' + 'z'.repeat(32) }],
      ['/buy', { method: 'POST', body: 'product=__proto__&pin=1234&card=4111111111111111&nonce=' + 'a1'.repeat(16) }],
      ['/check/%E0%A4%A/%ff', { method: 'POST', body: 'pin=1234' }],
      ['/check/99999999/' + 'A'.repeat(500), { method: 'POST', body: invalidUtf8 }],
      ['/check/b1/t', { method: 'POST', body: 'pin=' + '9'.repeat(40_000) }],
      ['/access/%00', {}],
      ['/access/' + 'a'.repeat(5000), {}],
      ['/v1/products', { headers: { 'X-Forwarded-For': 'not-an-address, ' + ','.repeat(1000) } }],
      [
        '/v1/purchases',
        { method: 'POST', body: invalidUtf8, headers: { Authorization: 'Bearer ' + 'x'.repeat(4000) } },
      ],
      ['/v1/purchases', { method: 'POST', body: 'x'.repeat(200_000), headers: { Authorization: 'bearer' } }],
      ['/v1/redeem', { method: 'POST', body: '{"scan":1}', headers: { Authorization: 'BEARER  \t' } }],
      ['/v1/ids/%ff%fe/status', { headers: { Authorization: 'Bearer tsk_nope' } }],
      ['/v1/switch', { headers: { Upgrade: 'websocket', Connection: 'Upgrade' } }],
      ['/metrics', { method: 'POST', body: 'x' }],
      ['/nowhere/' + '%'.repeat(100), { method: 'PUT', body: 'x'.repeat(70_000) }],
    ];
    for (const [path, init] of cases) {
      const status = await send(path, init).catch((err: unknown) => String(err));
      expect(typeof status === 'number' ? status < 500 || status === 503 : true, `${path}: ${String(status)}`).toBe(
        true,
      );
    }
    expect(errorLines()).toEqual([]);
    expect(await send('/healthz')).toBe(200);
  });
});

describe('upgrades with made-up tokens', () => {
  it('their Redis lookups count against MAX_INFLIGHT_TOTAL: past it an upgrade is refused 503 overloaded at once', async () => {
    const small = await gateway(h, { maxInflightTotal: 2 });
    try {
      // Redis holds every lookup while paused: the first two upgrades wait, the others must not queue.
      await h.r.call('CLIENT', 'PAUSE', '3000', 'ALL');
      const answers = await Promise.all(
        Array.from({ length: 5 }, (_, i) => upgrade(small.port, { Authorization: `Bearer tsk_madeup${i}` })),
      );
      const statuses = answers.map((a) => a.status).sort();
      expect(statuses).toEqual([401, 401, 503, 503, 503]);
      expect(answers.filter((a) => a.status === 503).map((a) => JSON.parse(a.body).error.reason)).toEqual([
        'overloaded',
        'overloaded',
        'overloaded',
      ]);
    } finally {
      await small.close();
    }
  });
});

describe('a client that leaves mid-body', () => {
  it('frees its MAX_INFLIGHT_TOTAL slot: requests after it are served, not refused overloaded', async () => {
    const small = await gateway(h, { maxInflightTotal: 2 });
    try {
      const admin = await token(h, 'admin');
      const head = `POST /v1/admin/ids/4111111111111111/topup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${admin}\r\n`;
      // Each promises 100 bytes, sends 10 and closes: more of them than there are slots.
      for (let i = 0; i < 3; i++) {
        const s = connect(small.port, '127.0.0.1');
        s.on('error', () => {});
        s.write(`${head}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"amount":`);
        await new Promise((resolve) => setTimeout(resolve, 50));
        await new Promise<void>((resolve) => s.end(() => resolve()));
      }
      let last = 0;
      for (const until = Date.now() + 3000; Date.now() < until && last !== 200;) {
        last = (await http(small, 'GET', '/v1/products')).status;
        if (last !== 200) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(last).toBe(200);
    } finally {
      await small.close();
    }
  });
});

describe('forms sent slowly', () => {
  it('hold no MAX_INFLIGHT_TOTAL slot while their bodies dribble in: the API and pages are served', async () => {
    const small = await gateway(h, { maxInflightTotal: 2 });
    const slow = ['/buy', '/check/0/x', '/check/0/x/recharge'].map((path) => {
      const s = connect(small.port, '127.0.0.1');
      s.on('error', () => {});
      s.write(
        `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\npin=`,
      );
      return s;
    });
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect((await http(small, 'GET', '/v1/products')).status).toBe(200);
      expect((await http(small, 'GET', '/buy')).status).toBe(200);
    } finally {
      for (const s of slow) s.destroy();
      await small.close();
    }
  });
});

describe('API bodies sent slowly', () => {
  it("hold no MAX_INFLIGHT_TOTAL slot while a token holder's bodies dribble in: other requests are served", async () => {
    const small = await gateway(h, { maxInflightTotal: 2 });
    const admin = await token(h, 'admin');
    const slow = Array.from({ length: 3 }, () => {
      const s = connect(small.port, '127.0.0.1');
      s.on('error', () => {});
      s.write(
        `POST /v1/admin/ids/4111111111111111/topup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${admin}\r\n` +
          `Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"amount":`,
      );
      return s;
    });
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      for (let i = 0; i < 3; i++) expect((await http(small, 'GET', '/v1/products')).status).toBe(200);
      expect((await http(small, 'GET', '/buy')).status).toBe(200);
      // One whose body comes in after all is counted and answered then, as any other.
      const answer = new Promise<string>((resolve) => {
        let got = '';
        slow[0]!.on('data', (d: Buffer) => (got += d.toString('utf8')) && got.includes('\r\n\r\n') && resolve(got));
      });
      slow[0]!.write(`1${' '.repeat(1000 - '{"amount":1}'.length)}}`);
      expect(await answer).not.toMatch(/overloaded|^HTTP\/1\.1 503/);
    } finally {
      for (const s of slow) s.destroy();
      await small.close();
    }
  });
});

describe('buy pages while Redis is slow', () => {
  /** SCARD calls Redis has answered since its last CONFIG RESETSTAT. */
  async function scards(): Promise<number> {
    const stats = String(await h.r.call('INFO', 'commandstats'));
    return Number(/cmdstat_scard:calls=(\d+)/.exec(stats)?.[1] ?? 0);
  }

  it('pages arriving while the stock is being counted wait for that count: one SCARD per bucket, not per page', async () => {
    const fresh = await gateway(h, {});
    try {
      await h.r.call('CONFIG', 'RESETSTAT');
      // Paused, the first page's count waits in Redis while the others arrive.
      await h.r.call('CLIENT', 'PAUSE', '500', 'ALL');
      const pages = await Promise.all(Array.from({ length: 20 }, () => http(fresh, 'GET', '/buy')));
      expect(pages.map((p) => p.status)).toEqual(Array(20).fill(200));
      expect(await scards()).toBe(h.cfg.buckets);
    } finally {
      await fresh.close();
    }
  });

  it('count against MAX_INFLIGHT_TOTAL: past it a page is refused 503 at once, not queued on Redis', async () => {
    const small = await gateway(h, { maxInflightTotal: 2 });
    try {
      await h.r.call('CLIENT', 'PAUSE', '1000', 'ALL');
      const t0 = Date.now();
      let turnedAway = 0;
      const pages = Array.from({ length: 6 }, () =>
        http(small, 'GET', '/buy').then((r) => {
          if (r.status === 503) turnedAway++;
          return { ...r, ms: Date.now() - t0 };
        }),
      );
      // Two pages hold the slots once the other four are turned away.
      await until(() => turnedAway === 4, 900, 5, 'four pages turned away');
      // A form refused before its body is read, whose client then leaves mid-body: nothing may fail unhandled.
      const s = connect(small.port, '127.0.0.1');
      s.on('error', () => {});
      s.write(
        'POST /buy HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\npin=',
      );
      await new Promise((resolve) => setTimeout(resolve, 100));
      s.destroy();
      const answers = await Promise.all(pages);
      const refused = answers.filter((a) => a.status === 503);
      expect(refused).toHaveLength(4);
      for (const r of refused) {
        expect(r.ms).toBeLessThan(1000);
        expect(r.headers.get('retry-after')).toBe('1');
      }
      expect(answers.filter((a) => a.status === 200)).toHaveLength(2);
      // The slots are given back: once Redis is back, pages are served again.
      expect((await http(small, 'GET', '/buy')).status).toBe(200);
      expect(errorLines()).toEqual([]);
    } finally {
      await small.close();
    }
  });
});

/**
 * Limits against floods and slow clients: WebSocket connections per gateway,
 * per client address (an IPv6 client by its /64) and per token name, HTTP requests in flight (MAX_INFLIGHT_TOTAL, shared
 * with the WebSocket endpoints), and uWS's own 10 s deadline on a request whose
 * headers or body trickle in (slow-loris).
 */
import { connect, type Socket } from 'node:net';
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import WebSocket from 'ws';
import { gateway, seedCatalog, startHarness, token, withGateway, type Harness } from '../support/harness';
import { metricsText, sample } from '../support/metrics';
import { sleep, until } from '../support/wait';
import { Client, Scanner, WsClient, type Msg, type UpgradeRefused } from '../support/ws-client';
import { HoldProxy } from '../support/hold-proxy';
import { startGateway } from '../../src/gateway/server';
import { createLogger } from '../../src/observability/log';

let h: Harness;
let tok: string;
beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  tok = await token(h, 'switch');
});
afterAll(async () => h?.stop());

/** Opens a switch connection; resolves with the client, or with the HTTP refusal of the upgrade. */
function open(
  gw: Gateway,
  headers: Record<string, string> = {},
  as = tok,
): Promise<{ ws?: WsClient; status?: number; body?: unknown }> {
  return WsClient.connect(gw.port, as, { headers }).then(
    (ws) => ({ ws }),
    (e: UpgradeRefused) => {
      if (e.status === undefined) throw e;
      return { status: e.status, body: JSON.parse(e.body) };
    },
  );
}

const closeAll = (list: { ws?: WsClient }[]): Promise<unknown> =>
  Promise.all(list.map((c) => c.ws?.close() ?? Promise.resolve()));

describe('WebSocket connection limits', () => {
  it('past MAX_CONNECTIONS an upgrade is refused 503 too_many_connections, before the token is looked at; a freed place is taken again', async () => {
    const gw = await gateway(h, { maxConnections: 3 });
    const opened = [await open(gw), await open(gw), await open(gw)];
    try {
      expect(opened.every((c) => c.ws)).toBe(true);
      expect(await open(gw)).toEqual({
        status: 503,
        body: { error: { reason: 'too_many_connections', message: 'the gateway has as many connections as it may' } },
      });
      await closeAll([opened.pop()!]);
      await sleep(50);
      const again = await open(gw);
      expect(again.ws).toBeDefined();
      opened.push(again);
    } finally {
      await closeAll(opened);
      await gw.close();
    }
  });

  it('past MAX_CONNECTIONS_PER_CLIENT one address is refused while others still connect (behind a proxy: by X-Forwarded-For)', async () => {
    const gw = await gateway(h, { maxConnectionsPerClient: 2, trustProxy: true });
    const a = { 'X-Forwarded-For': '198.51.100.7' };
    // A proxy that writes the client's port too: still the same client.
    const opened = [await open(gw, a), await open(gw, { 'X-Forwarded-For': '198.51.100.7:40001' })];
    try {
      expect(await open(gw, { 'X-Forwarded-For': '198.51.100.7:40002' })).toMatchObject({
        status: 503,
      });
      expect(await open(gw, a)).toMatchObject({
        status: 503,
        body: { error: { reason: 'too_many_connections', message: 'this client has as many connections as it may' } },
      });
      const other = await open(gw, { 'X-Forwarded-For': '198.51.100.8' });
      expect(other.ws).toBeDefined();
      opened.push(other);
    } finally {
      await closeAll(opened);
      await gw.close();
    }
  });
  it('an IPv6 client is counted by its /64, as the buy and PIN limits count it', async () => {
    const gw = await gateway(h, { maxConnectionsPerClient: 2, trustProxy: true });
    const xff = (a: string) => ({ 'X-Forwarded-For': a });
    const opened = [await open(gw, xff('2001:db8:1:2::a')), await open(gw, xff('[2001:db8:1:2::b]:443'))];
    try {
      expect(opened.every((c) => c.ws)).toBe(true);
      // Another address of the same /64: one subscriber, already at its limit.
      expect(await open(gw, xff('2001:db8:1:2:ffff:ffff:ffff:1'))).toMatchObject({
        status: 503,
        body: { error: { reason: 'too_many_connections', message: 'this client has as many connections as it may' } },
      });
      const neighbour = await open(gw, xff('2001:db8:1:3::a'));
      expect(neighbour.ws).toBeDefined();
      opened.push(neighbour);
    } finally {
      await closeAll(opened);
      await gw.close();
    }
  });

  it('past MAX_CONNECTIONS_PER_TOKEN a token name is refused from any address; other names still connect; a freed place is taken again', async () => {
    const gw = await gateway(h, { maxConnectionsPerToken: 2, trustProxy: true });
    const name = `sw-cap-${Math.random().toString(36).slice(2, 8)}`;
    const first = await token(h, 'switch', name);
    // A rotated token that kept the name is the same switch: it shares the count.
    const rotated = await token(h, 'switch', name);
    const opened = [
      await open(gw, { 'X-Forwarded-For': '198.51.100.1' }, first),
      await open(gw, { 'X-Forwarded-For': '198.51.100.2' }, rotated),
    ];
    try {
      expect(opened.every((c) => c.ws)).toBe(true);
      for (const as of [first, rotated])
        expect(await open(gw, { 'X-Forwarded-For': '198.51.100.3' }, as)).toEqual({
          status: 503,
          body: { error: { reason: 'too_many_connections', message: 'this token has as many connections as it may' } },
        });
      const other = await open(gw, { 'X-Forwarded-For': '198.51.100.3' });
      expect(other.ws).toBeDefined();
      opened.push(other);
      await closeAll([opened.shift()!]);
      await sleep(50);
      const again = await open(gw, { 'X-Forwarded-For': '198.51.100.4' }, first);
      expect(again.ws).toBeDefined();
      opened.push(again);
    } finally {
      await closeAll(opened);
      await gw.close();
    }
  });
});

describe('WebSocket requests in flight', () => {
  it('past MAX_INFLIGHT_PER_TOKEN a token name is answered overloaded on any of its connections; other names are still served', async () => {
    // Redis answers held back: whatever reaches it stays in flight until released.
    const proxy = new HoldProxy(Number(new URL(h.redis.url).port));
    const gw = await startGateway(
      { ...h.cfg, maxInflight: 100, maxInflightPerToken: 100, redis: { ...h.cfg.redis, timeoutMs: 10_000 } },
      createLogger('silent'),
      await proxy.listen(),
    );
    const name = `sw-busy-${Math.random().toString(36).slice(2, 8)}`;
    const busy = await token(h, 'switch', name);
    const [a, b] = [await Client.connect(gw.port, busy), await Client.connect(gw.port, busy)];
    const other = await Client.connect(gw.port, tok);
    try {
      const ticks = (tag: string): Msg[] =>
        Array.from({ length: 60 }, (_, i) => ({ op: 'tick', ref: `${tag}${i}`, call: `${tag}-${i}`, sec: 1 }));
      proxy.holdAfter(name);
      a.send(ticks('a'));
      b.send(ticks('b'));
      // 100 of the name's 120 wait on Redis; the 20 past the bound are refused at once, whichever connection sent them.
      const refused = (): Msg[] => [...a.received, ...b.received].filter((m) => m.reason === 'overloaded');
      await until(() => refused().length >= 20, 5000, 20, '20 refused overloaded');
      expect(refused()[0]).toMatchObject({
        op: 'error',
        reason: 'overloaded',
        message: 'too many requests in flight for this token',
      });
      // Another token name is not held back by this one's load.
      expect(await other.request({ op: 'ping', ref: 'p' })).toMatchObject({ op: 'pong' });
      proxy.release();
      await until(() => a.received.length + b.received.length >= 120, 5000, 20, 'all 120 answered');
      expect(refused()).toHaveLength(20);
      // Their places are given back: the name is served again.
      expect(await a.request({ op: 'tick', ref: 'again', call: 'again', sec: 1 })).toMatchObject({
        reason: 'unknown_call',
      });
    } finally {
      proxy.release();
      await Promise.all([a.close(), b.close(), other.close()]);
      await gw.close();
      await proxy.close();
    }
  });
});

describe('HTTP requests in flight', () => {
  it('past MAX_INFLIGHT_TOTAL a request is answered 503 overloaded at once instead of queueing', async () => {
    const gw = await gateway(h, { maxInflightTotal: 1, redis: { ...h.cfg.redis, timeoutMs: 5000 } });
    const scanner = await token(h, 'scanner');
    const r = new Redis(h.redis.url);
    const pid = Number(/process_id:(\d+)/.exec(await r.info('server'))![1]);
    r.disconnect();
    const post = () =>
      fetch(`http://127.0.0.1:${gw.port}/v1/redeem`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${scanner}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ scan: 's1', id: '4000000000000002' }),
      });
    process.kill(pid, 'SIGSTOP');
    try {
      const first = post(); // held: Redis does not answer
      await sleep(100);
      const t0 = Date.now();
      const second = await post();
      expect(second.status).toBe(503);
      expect(await second.json()).toEqual({
        error: { reason: 'overloaded', message: 'the gateway is at capacity, retry shortly' },
      });
      expect(Date.now() - t0).toBeLessThan(1000);
      process.kill(pid, 'SIGCONT');
      expect((await first).status).toBeLessThan(500);
    } finally {
      process.kill(pid, 'SIGCONT');
      await gw.close();
    }
  });
  it('past MAX_INFLIGHT_PER_TOKEN the HTTP requests of a token name are answered 503 overloaded at once; other names still wait their turn', async () => {
    // Redis answers held back: whatever reaches it stays in flight until released.
    const proxy = new HoldProxy(Number(new URL(h.redis.url).port));
    const gw = await startGateway(
      { ...h.cfg, maxInflightPerToken: 4, redis: { ...h.cfg.redis, timeoutMs: 10_000 } },
      createLogger('silent'),
      await proxy.listen(),
    );
    const busy = await token(h, 'scanner', `sc-busy-${Math.random().toString(36).slice(2, 8)}`);
    const other = await token(h, 'scanner');
    const validate = (as: string, scan: string): Promise<{ status: number; body: unknown }> =>
      fetch(`http://127.0.0.1:${gw.port}/v1/validate`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${as}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ scan, id: '4000000000000002' }),
      }).then(async (r) => ({ status: r.status, body: await r.json() }));
    try {
      // Both tokens known to the gateway's cache first: a token it does not know is looked up in Redis.
      await validate(busy, 'warm');
      await validate(other, 'warm');
      proxy.holdAfter('');
      // 4 of the name's 6 wait on Redis; the 2 past the bound are refused at once.
      const answers: { status: number; body: unknown }[] = [];
      const six = Array.from({ length: 6 }, (_, i) => validate(busy, `s${i}`).then((a) => (answers.push(a), a)));
      await until(() => answers.length >= 2, 5000, 20, '2 refused overloaded');
      await sleep(200);
      expect(answers).toEqual([
        {
          status: 503,
          body: { error: { reason: 'overloaded', message: 'too many requests in flight for this token' } },
        },
        {
          status: 503,
          body: { error: { reason: 'overloaded', message: 'too many requests in flight for this token' } },
        },
      ]);
      // Another token name is not held back by this one's load: its request waits on Redis with the others.
      const others = validate(other, 'o1');
      await sleep(200);
      proxy.release();
      const all = await Promise.all(six);
      expect(all.filter((a) => a.status === 503)).toHaveLength(2);
      expect((await others).status).not.toBe(503);
      // Their places are given back: the name is served again.
      expect((await validate(busy, 'again')).status).not.toBe(503);
    } finally {
      proxy.release();
      await gw.close();
      await proxy.close();
    }
  });

  it('the WebSocket messages and HTTP requests of a token name count together against MAX_INFLIGHT_PER_TOKEN', async () => {
    const proxy = new HoldProxy(Number(new URL(h.redis.url).port));
    const gw = await startGateway(
      { ...h.cfg, maxInflightPerToken: 4, redis: { ...h.cfg.redis, timeoutMs: 10_000 } },
      createLogger('silent'),
      await proxy.listen(),
    );
    const both = await token(h, 'scanner', `sc-both-${Math.random().toString(36).slice(2, 8)}`);
    const validate = (scan: string): Promise<{ status: number; body: unknown }> =>
      fetch(`http://127.0.0.1:${gw.port}/v1/validate`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${both}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ scan, id: '4000000000000002' }),
      }).then(async (r) => ({ status: r.status, body: await r.json() }));
    const ws = await Scanner.connect(gw.port, both);
    try {
      await validate('warm'); // the token in the gateway's cache: no lookup to wait on Redis below
      proxy.holdAfter('');
      // The name's 4 places taken by WebSocket messages waiting on Redis...
      ws.send(Array.from({ length: 4 }, (_, i) => ({ op: 'validate', ref: i, id: '4000000000000002' })));
      // (one frame: all four take their places before the first of them reaches Redis)
      await until(() => proxy.holds, 5000, 10, 'a reply held');
      // ...leave none for its HTTP requests, refused at once.
      expect(await validate('h1')).toEqual({
        status: 503,
        body: { error: { reason: 'overloaded', message: 'too many requests in flight for this token' } },
      });
      proxy.release();
      await until(() => ws.received.length >= 4, 5000, 20, 'the 4 WebSocket validates answered');
      expect(ws.received.filter((m) => m.reason === 'overloaded')).toHaveLength(0);
      expect((await validate('h2')).status).not.toBe(503);
    } finally {
      proxy.release();
      await ws.close();
      await gw.close();
      await proxy.close();
    }
  });
});

describe('slow clients (slow-loris)', () => {
  it('a request whose body trickles in is cut off after about 10 s, whatever it still sends', async () => {
    const gw = await gateway(h);
    const scanner = await token(h, 'scanner');
    try {
      const closedAfter = await new Promise<number>((resolve) => {
        const s = connect(gw.port, '127.0.0.1', () => {
          s.write(
            `POST /v1/redeem HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${scanner}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n`,
          );
          const t0 = Date.now();
          const drip = setInterval(() => !s.destroyed && s.write(' '), 1000);
          s.on('close', () => {
            clearInterval(drip);
            resolve(Date.now() - t0);
          });
          s.on('error', () => undefined);
        });
      });
      expect(closedAfter).toBeGreaterThan(5_000);
      expect(closedAfter).toBeLessThan(16_000);
    } finally {
      await gw.close();
    }
  }, 25_000);
});

describe('unsent output of all connections together', () => {
  /** A switch connection that sends frames of unknown ops (each answered with an error) and reads nothing. */
  async function slowReader(port: number): Promise<{ ws: WebSocket; closed: () => boolean }> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/switch`, { headers: { authorization: `Bearer ${tok}` } });
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    let closed = false;
    ws.on('close', () => (closed = true)).on('error', () => undefined);
    // The socket stops reading: the answers pile up in the kernel's buffers, then in uWS'.
    (ws as unknown as { _socket: { pause(): void } })._socket.pause();
    return { ws, closed: () => closed };
  }
  const frame = JSON.stringify(Array.from({ length: 2000 }, (_, i) => ({ op: 'no_such_op', ref: i })));

  /** A connection that pipelines `n` GETs of `path` and reads nothing until asked. */
  function pipeliner(port: number, path: string, n: number): { sock: Socket; closed: () => boolean } {
    const sock = connect(port, '127.0.0.1');
    let closed = false;
    sock.on('close', () => (closed = true)).on('error', () => undefined);
    sock.pause();
    sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`.repeat(n));
    return { sock, closed: () => closed };
  }

  it('HTTP answers a client pipelines, read a second later, all arrive whole and in order', async () => {
    const gw = await gateway(h);
    try {
      const n = 3000;
      const p = pipeliner(gw.port, '/pages.css', n);
      await sleep(1000);
      const chunks: Buffer[] = [];
      p.sock.on('data', (c: Buffer) => chunks.push(c));
      p.sock.resume();
      await until(() => Buffer.concat(chunks).toString('latin1').split('HTTP/1.1 200 OK').length - 1 === n, 8000);
      const text = Buffer.concat(chunks).toString('latin1');
      // Every answer whole: its length as announced, then the next status line.
      const length = Number(/Content-Length: (\d+)/.exec(text)![1]);
      const bodies = text
        .split('HTTP/1.1 200 OK')
        .slice(1)
        .map((a) => a.slice(a.indexOf('\r\n\r\n') + 4));
      expect(bodies.every((b) => b.length === length)).toBe(true);
      p.sock.destroy();
    } finally {
      await gw.close();
    }
  }, 20_000);

  it('HTTP answers nobody reads count against MAX_BACKPRESSURE_TOTAL_BYTES: past it the largest are closed', async () => {
    await withGateway(h, { maxBackpressureTotalBytes: 1000 }, async (gw) => {
      const clients = [1, 2, 3, 4, 5].map(() => pipeliner(gw.port, '/pages.css', 20_000));
      await until(async () => {
        const m = sample(await metricsText(gw.port), 'tessera_events_total', {
          op: 'http',
          outcome: 'backpressure_total',
        });
        return (m ?? 0) > 0;
      }, 8000);
      for (const c of clients) c.sock.destroy();
    });
  }, 20_000);

  it('refused WebSocket upgrades a client pipelines and does not read are not all answered into memory', async () => {
    await withGateway(h, {}, async (gw) => {
      // No token: each upgrade is refused 401 at once. 17 MB of them a connection, none read: more
      // answers than the kernel's buffers take, which uWS used to keep for the client.
      const upgrade =
        'GET /v1/switch HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
      const n = 100_000;
      const socks = [0, 1].map(() => {
        const sock = connect(gw.port, '127.0.0.1');
        sock.on('error', () => undefined);
        sock.pause();
        sock.write(upgrade.repeat(n));
        return sock;
      });
      const refused = async (): Promise<number> =>
        sample(await metricsText(gw.port), 'tessera_events_total', { op: 'upgrade', outcome: 'unauthorized' }) ?? 0;
      // An answer that waits for its client holds back the connection (uWS closes it when the
      // client sends on): the count settles short of every request sent. Refusing that many takes
      // 3 to 6 s beside a CPU hog and over 10 s on a starved machine: all but the test's own time.
      let last = -1;
      await until(
        async () => {
          const now = await refused();
          const settled = now === last && now > 0;
          last = now;
          return settled;
        },
        50_000,
        500,
        'the refused upgrades counted to settle',
      );
      expect(last).toBeLessThan(2 * n);
      expect(sample(await metricsText(gw.port), 'tessera_unsent_output_bytes', {})).toBeLessThan(64 * 1024);
      for (const s of socks) s.destroy();
    });
  }, 60_000);

  it('past MAX_BACKPRESSURE_TOTAL_BYTES the connections holding the most are closed, counted in /metrics', async () => {
    // Each connection stays far under its own limit: only the total can stop them.
    await withGateway(h, { maxBackpressureBytes: 256 << 20, maxBackpressureTotalBytes: 8 << 20 }, async (gw) => {
      const readers = await Promise.all([1, 2, 3, 4].map(() => slowReader(gw.port)));
      // About 230 KB of answers per frame: 120 frames is some 27 MB a connection, past any kernel buffer.
      for (let i = 0; i < 120; i++) {
        for (const r of readers) if (!r.closed()) r.ws.send(frame);
        await sleep(5);
      }
      await until(() => readers.some((r) => r.closed()), 5000);
      expect(readers.filter((r) => r.closed()).length).toBeGreaterThan(0);
      expect(
        sample(await metricsText(gw.port), 'tessera_events_total', { op: 'connection', outcome: 'backpressure_total' }),
      ).toBeGreaterThan(0);
      for (const r of readers) r.ws.terminate();
    });
  }, 30_000);
});

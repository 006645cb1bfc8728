/**
 * Hostile input, for a bounded time per endpoint: random bytes, random
 * MessagePack and JSON values, message-shaped maps with wrong types, negative,
 * huge and fractional numbers, unicode, deep nesting and oversize frames, at
 * both WebSocket endpoints and every HTTP route. The gateway never crashes,
 * keeps answering, says every refusal with a reason the docs list, and its
 * heap does not grow past a bound.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { pack } from 'msgpackr';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { sleep } from '../support/wait';
import { WsClient } from '../support/ws-client';
import { loadRedemptionCatalog } from '../redemption/fixtures';

let h: Harness;
let gw: Gateway;
const tokens: Record<string, string> = {};
let ids: string[] = [];

// The reasons the docs give integrators: any reason outside them is a bug.
const DOCS = readdirSync(join(__dirname, '../../docs'))
  .map((f) => readFileSync(join(__dirname, '../../docs', f), 'utf8'))
  .join('\n');
const documented = (reason: unknown): boolean =>
  typeof reason === 'string' && /^[a-z][a-z_]*$/.test(reason) && DOCS.includes('`' + reason + '`');

setFlagsFromString('--expose_gc');
const gc = runInNewContext('gc') as () => void;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [talkProduct()]);
  await loadRedemptionCatalog(h);
  gw = await gateway(h);
  for (const role of ['switch', 'scanner', 'sales', 'admin'] as const) tokens[role] = await token(h, role);
  ids = await soldIds(h, talkProduct(), 3);
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

// ---------------------------------------------------------------- generators

const scalar = fc.oneof(
  fc.integer(),
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 }).map((n) => n * 1e9),
  fc.double(),
  fc.constantFrom(0, -1, 2 ** 53, -(2 ** 53), Number.MAX_SAFE_INTEGER + 2, 1e308, NaN, Infinity),
  fc.string(),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.constantFrom(
    '',
    ' ',
    '\u0000',
    '💥'.repeat(50),
    '4'.repeat(16),
    '4000000000000002',
    '../../etc/passwd',
    '<script>',
  ),
  fc.boolean(),
  fc.constant(null),
);
const anyValue = fc.oneof(
  { depthSize: 'small' },
  scalar,
  fc.array(scalar, { maxLength: 5 }),
  fc.dictionary(fc.string({ maxLength: 8 }), scalar, { maxKeys: 5 }),
);
const OPS = ['start', 'tick', 'stop', 'ping', 'redeem', 'validate', 'reverse', 'status', 'unknown', '', 'START'];
/** Maps shaped like messages, every field possibly missing or of a wrong type; a real ID now and then. */
const messageLike = fc
  .record(
    {
      op: fc.oneof(fc.constantFrom(...OPS), scalar),
      ref: fc.oneof(scalar, fc.string({ maxLength: 100 })),
      call: anyValue,
      id: fc.oneof(anyValue, fc.constantFrom(...[0, 1, 2].map((i) => `@${i}`))),
      dest: anyValue,
      sec: anyValue,
      scan: anyValue,
      item: anyValue,
      qty: anyValue,
      dir: fc.oneof(fc.constantFrom('in', 'out'), scalar),
      cause: anyValue,
    },
    { requiredKeys: [] },
  )
  .map((m) =>
    m.id && typeof m.id === 'string' && m.id.startsWith('@') ? { ...m, id: ids[Number(m.id.slice(1))] } : m,
  );

/** Text that JSON.parse mostly refuses, and some that it accepts. */
const deep = (n: number): string => '['.repeat(n) + ']'.repeat(n);
type Frame = { data: Uint8Array | string; binary: boolean };
const frame: fc.Arbitrary<Frame> = fc.oneof(
  fc.uint8Array({ maxLength: 512 }).map((data) => ({ data, binary: true })),
  fc.string({ maxLength: 512 }).map((data) => ({ data, binary: false })),
  anyValue.map((v) => ({ data: pack(v), binary: true })),
  messageLike.map((m) => ({ data: pack(m), binary: true })),
  messageLike.map((m) => ({ data: JSON.stringify(m) ?? 'null', binary: false })),
  fc.array(messageLike, { minLength: 1, maxLength: 20 }).map((a) => ({ data: pack(a), binary: true })),
  fc.array(messageLike, { minLength: 1, maxLength: 20 }).map((a) => ({ data: JSON.stringify(a), binary: false })),
  fc.integer({ min: 10, max: 5000 }).map((n) => ({ data: deep(n), binary: false })),
  fc.integer({ min: 10, max: 100 }).map((n) => ({ data: pack(JSON.parse(deep(n))), binary: true })),
  fc.constantFrom(300 * 1024, 600 * 1024).map((n) => ({ data: 'x'.repeat(n), binary: false })),
  fc.constant({ data: new Uint8Array([0xc1]), binary: true }),
  fc.constant({ data: new Uint8Array([0xdd, 0xff, 0xff, 0xff, 0xff]), binary: true }),
);

// ---------------------------------------------------------------- helpers

const isClosed = (s: WsClient): boolean => s.ws.readyState === WebSocket.CLOSED;

/** Sends a ping behind whatever came before and waits for its pong: everything before it has been answered. */
async function settle(s: WsClient): Promise<boolean> {
  const ref = `settle-${Math.random()}`;
  s.send({ op: 'ping', ref }, false);
  for (let i = 0; i < 500 && !isClosed(s); i++) {
    if (s.received.some((m) => m.ref === ref)) return true;
    await sleep(10);
  }
  return false;
}

async function fuzzSocket(path: string, tok: string): Promise<void> {
  const open = (): Promise<WsClient> => WsClient.connect(gw.port, tok, { path });
  let s = await open();
  const reasons = new Set<string>();
  await fc.assert(
    fc.asyncProperty(frame, async (f) => {
      if (isClosed(s)) s = await open();
      const from = s.received.length;
      s.sendRaw(f.data, f.binary);
      const answered = await settle(s);
      // Only a frame past the hard size limit may end the connection; anything else is answered.
      if (!answered) {
        expect(isClosed(s)).toBe(true);
        expect(f.data.length).toBeGreaterThan(256 * 1024);
        return;
      }
      for (const m of s.received.slice(from)) {
        // A scanner's refusal ('refused') is a reason too.
        if (m.op !== 'error' && m.op !== 'refused') continue;
        reasons.add(String(m.reason));
        expect(documented(m.reason), `undocumented reason ${JSON.stringify(m.reason)}`).toBe(true);
        expect(typeof m.message).toBe('string');
      }
    }),
    { numRuns: 400, interruptAfterTimeLimit: 6000 },
  );
  s.ws.close();
  // It did refuse things, for more than one reason.
  expect(reasons.size).toBeGreaterThan(3);
}

const ROUTES: [string, string][] = [
  ['POST', '/v1/redeem'],
  ['POST', '/v1/validate'],
  ['POST', '/v1/reverse'],
  ['GET', '/v1/ids/@/status'],
  ['POST', '/v1/purchases'],
  ['GET', '/v1/products'],
  ['GET', '/v1/access-numbers'],
  ['POST', '/v1/admin/ids/@/activate'],
  ['POST', '/v1/admin/ids/@/block'],
  ['GET', '/v1/admin/sales/@'],
  ['POST', '/v1/admin/sales/@/refund'],
  ['GET', '/check/@/@'],
  ['POST', '/check/@/@'],
  ['POST', '/buy'],
  ['GET', '/access/@'],
];

// ---------------------------------------------------------------- tests

describe('hostile input never crashes the gateway, and every refusal has a documented reason', () => {
  let heapBefore = 0;
  beforeAll(() => {
    gc();
    heapBefore = process.memoryUsage().heapUsed;
  });

  it('/v1/switch: random frames in both encodings', async () => {
    await fuzzSocket('/v1/switch', tokens.switch!);
  }, 30_000);

  it('/v1/scanner: random frames in both encodings', async () => {
    await fuzzSocket('/v1/scanner', tokens.scanner!);
  }, 30_000);

  it('every HTTP route: random bodies, path parts, content types and tokens', async () => {
    const statuses = new Set<number>();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...ROUTES),
        fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('', '%00', '..', '4'.repeat(200), '💥', ids[0]!)),
        fc.oneof(
          fc.string({ maxLength: 400 }),
          messageLike.map((m) => JSON.stringify(m)),
          anyValue.map((v) => JSON.stringify(v) ?? ''),
          fc.integer({ min: 10, max: 3000 }).map(deep),
        ),
        fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded', ''),
        fc.constantFrom(...Object.keys(tokens), 'none', 'bogus'),
        fc.option(fc.string({ maxLength: 80 })),
        async ([method, pattern], part, body, type, role, idem) => {
          const path = pattern.replaceAll('@', encodeURIComponent(part) || 'x');
          const headers: Record<string, string> = {};
          if (type) headers['Content-Type'] = type;
          if (role === 'bogus') headers.Authorization = 'Bearer ' + 'b'.repeat(40);
          else if (role !== 'none') headers.Authorization = `Bearer ${tokens[role]}`;
          if (idem !== null) headers['Idempotency-Key'] = idem.replace(/[^\x20-\x7e]/g, '');
          const res = await fetch(`http://127.0.0.1:${gw.port}${path}`, {
            method,
            headers,
            body: method === 'POST' ? body : undefined,
          });
          statuses.add(res.status);
          const text = await res.text();
          expect(res.status, `${method} ${path}: ${text.slice(0, 200)}`).toBeLessThan(500);
          if (res.status >= 400 && (res.headers.get('content-type') ?? '').includes('json')) {
            const reason = (JSON.parse(text) as { error?: { reason?: unknown } }).error?.reason;
            expect(documented(reason), `${method} ${path}: undocumented reason ${JSON.stringify(reason)}`).toBe(true);
          }
        },
      ),
      { numRuns: 600, interruptAfterTimeLimit: 8000 },
    );
    expect([...statuses].some((s) => s >= 400)).toBe(true);
  }, 30_000);

  it('still healthy afterwards, with its heap back within a bound', async () => {
    const health = await fetch(`http://127.0.0.1:${gw.port}/healthz`);
    expect(health.status).toBe(200);
    gc();
    const grown = process.memoryUsage().heapUsed - heapBefore;
    expect(grown).toBeLessThan(64 * 1024 * 1024);
  });
});

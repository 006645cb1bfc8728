/**
 * The scanner protocol on the wire: MessagePack and JSON over /v1/scanner with
 * the reply in the request's encoding, the same operations over HTTP with the
 * status code of each answer, bearer auth by role, the ID status lookup, a
 * ticket on the switch socket, and the throttle on guessed IDs, bursts of
 * lookups in flight at once included.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setIdState } from '../../src/ledger/ids';
import { createToken, tokenHash } from '../../src/catalog/store';
import type { Gateway } from '../../src/gateway/server';
import { generateId } from '../../src/ids/idnum';
import { keys } from '../../src/redis/keys';
import {
  gateway,
  mint,
  seedCatalog,
  soldIds,
  startHarness,
  talkProduct,
  token,
  uniq,
  withGateway,
  type Harness,
} from '../support/harness';
import { jsonCall } from '../support/http';
import { metricsText, sample } from '../support/metrics';
import { balanceOf, guessCount, idFields } from '../support/redis';
import { sleep, until } from '../support/wait';
import { Client, Scanner, type Msg } from '../support/ws-client';
import {
  loadRedemptionCatalog,
  OTHER_VENUE,
  PRICE,
  recordsOf,
  scannerToken,
  VENUE,
  WALLET_FACE,
  type Catalog,
} from './fixtures';

let h: Harness;
let gw: Gateway;
let cat: Catalog;
let scan: { tok: string; name: string };
let switchTok: string;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  cat = await loadRedemptionCatalog(h);
  gw = await gateway(h);
  scan = await scannerToken(h);
  switchTok = await token(h, 'switch');
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

const sold = async (p: Parameters<typeof soldIds>[1]): Promise<string> => (await soldIds(h, p, 1))[0]!;
const badCheck = (id: string): string => id.slice(0, -1) + String((Number(id.slice(-1)) + 1) % 10);
const post = (path: string, body: unknown, tok = scan.tok) => jsonCall(gw, 'POST', path, { token: tok, body });

describe.each([
  { enc: 'JSON text frames', binary: false },
  { enc: 'MessagePack binary frames', binary: true },
])('/v1/scanner in $enc', ({ binary }) => {
  it('redeem, validate, reverse, status, ping: every reply in the request encoding', async () => {
    const id = await sold(cat.wallet);
    const s = await Scanner.connect(gw.port, scan.tok, { binary });
    const sc = uniq();

    const v = await s.requestGot({ op: 'validate', ref: 'v', id, item: 'beer' });
    expect(v).toEqual({
      binary,
      msg: {
        op: 'valid',
        ref: 'v',
        kind: 'goods',
        action: 'spend',
        amount: PRICE.beer,
        valueLeft: WALLET_FACE - PRICE.beer,
        item: 'beer',
      },
    });
    const r = await s.requestGot({ op: 'redeem', ref: 7, scan: sc, id, item: 'beer' });
    expect(r).toEqual({
      binary,
      msg: {
        op: 'redeemed',
        ref: 7,
        scan: sc,
        kind: 'goods',
        action: 'spend',
        amount: PRICE.beer,
        valueLeft: WALLET_FACE - PRICE.beer,
        item: 'beer',
      },
    });
    const d = await s.requestGot({ op: 'redeem', ref: 8, scan: sc, id, item: 'beer' });
    expect(d).toEqual({ binary, msg: { ...r.msg, ref: 8, duplicate: true } });
    const no = await s.requestGot({ op: 'redeem', ref: 9, scan: uniq(), id, item: 'beer', qty: 3 });
    expect(no).toEqual({
      binary,
      msg: {
        op: 'refused',
        ref: 9,
        scan: no.msg.scan,
        reason: 'insufficient_value',
        message: 'not enough value left',
        valueLeft: WALLET_FACE - PRICE.beer,
      },
    });
    const rv = await s.requestGot({ op: 'reverse', ref: 'rv', scan: sc, reason: 'till error' });
    expect(rv).toEqual({
      binary,
      msg: {
        op: 'reversed',
        ref: 'rv',
        scan: sc,
        kind: 'goods',
        action: 'reverse',
        amount: PRICE.beer,
        valueLeft: WALLET_FACE,
      },
    });

    const f = await idFields(h, id);
    const st = await s.requestGot({ op: 'status', ref: 'st', id });
    expect(st.binary).toBe(binary);
    expect(st.msg).toEqual({
      op: 'status',
      ref: 'st',
      state: 'sold',
      product: 'wallet',
      kind: 'goods',
      currency: 'EUR',
      face: WALLET_FACE,
      balance: WALLET_FACE,
      activeCalls: 0,
      minted: Number(f.mint),
      sold: Number(f.sold),
      firstUse: Number(f.first),
      expires: Number(f.exp),
    });
    expect(await s.requestGot({ op: 'status', ref: 'st2', id: generateId(16) })).toEqual({
      binary,
      msg: { op: 'refused', ref: 'st2', reason: 'unknown_id', message: 'no such ID' },
    });

    const p = await s.requestGot({ op: 'ping', ref: 'p' });
    expect(p).toEqual({ binary, msg: { op: 'pong', ref: 'p', time: expect.any(Number) } });
    expect(s.got.every((g) => g.binary === binary)).toBe(true);
    await s.close();
  });

  it('one frame may carry an array of requests; each is answered', async () => {
    const [a, b] = (await soldIds(h, cat.ticket, 2)) as [string, string];
    const s = await Scanner.connect(gw.port, scan.tok, { binary });
    const sa = uniq();
    s.send([
      { op: 'redeem', ref: 'a', scan: sa, id: a },
      { op: 'validate', ref: 'b', id: b },
      { op: 'ping', ref: 'c' },
      { op: 'redeem', ref: 'd', id: b },
    ]);
    const [ra, rb, rc, rd] = await Promise.all(['a', 'b', 'c', 'd'].map((ref) => s.waitFor((m) => m.ref === ref)));
    expect(ra).toEqual({
      binary,
      msg: { op: 'redeemed', ref: 'a', scan: sa, kind: 'entry', action: 'entry', amount: 1, entriesLeft: 0 },
    });
    expect(rb).toEqual({
      binary,
      msg: { op: 'valid', ref: 'b', kind: 'entry', action: 'entry', amount: 1, entriesLeft: 0 },
    });
    expect(rc!.msg.op).toBe('pong');
    // A redeem without a scan id is refused by the schema: nothing is used.
    expect(rd).toEqual({
      binary,
      msg: { op: 'error', ref: 'd', reason: 'missing_field', message: expect.stringContaining('scan') },
    });
    expect(await balanceOf(h, b)).toBe(1);
    await s.close();
  });
});

describe.each([
  { enc: 'JSON', binary: false },
  { enc: 'MessagePack', binary: true },
])('an empty array frame in $enc', ({ binary }) => {
  it('is answered empty_batch, as other malformed frames are, and the socket goes on', async () => {
    const s = await Scanner.connect(gw.port, scan.tok, { binary });
    s.send([]);
    const e = await s.waitFor((m) => m.op === 'error');
    expect(e).toEqual({
      binary,
      msg: { op: 'error', reason: 'empty_batch', message: 'an array frame must hold at least one message' },
    });
    expect((await s.requestGot({ op: 'ping', ref: 'after' })).msg.op).toBe('pong');
    await s.close();
  });
});

describe('encodings on one socket', () => {
  it('a scanner may mix JSON and MessagePack frames; each reply follows its own request', async () => {
    const id = await sold(cat.ticket3);
    const s = await Scanner.connect(gw.port, scan.tok);
    const a = await s.requestGot({ op: 'redeem', scan: uniq(), id }, false);
    const b = await s.requestGot({ op: 'redeem', scan: uniq(), id }, true);
    const c = await s.requestGot({ op: 'validate', id }, false);
    expect([a, b, c].map((g) => [g.binary, g.msg.op, g.msg.entriesLeft])).toEqual([
      [false, 'redeemed', 2],
      [true, 'redeemed', 1],
      [false, 'valid', 0],
    ]);
    await s.close();
  });
});

describe('HTTP: POST /v1/redeem, /v1/validate, /v1/reverse', () => {
  const err = (reason: string, message: string, extra: object = {}) => ({ error: { reason, message, ...extra } });

  it('ok answers are 200 with what was granted', async () => {
    const t = await sold(cat.ticket);
    const w = await sold(cat.wallet);
    const sv = await sold(cat.spa);
    expect(await post('/v1/validate', { id: t, gate: 'east' })).toEqual({
      status: 200,
      json: { kind: 'entry', action: 'entry', amount: 1, entriesLeft: 0 },
    });
    expect(await post('/v1/redeem', { scan: 'h1', id: t, gate: 'east' })).toEqual({
      status: 200,
      json: { kind: 'entry', action: 'entry', amount: 1, entriesLeft: 0 },
    });
    expect(await post('/v1/redeem', { scan: 'h1', id: t, gate: 'east' })).toEqual({
      status: 200,
      json: { kind: 'entry', action: 'entry', amount: 1, entriesLeft: 0, duplicate: true },
    });
    expect(await post('/v1/redeem', { scan: 'h2', id: w, item: 'water', qty: 4 })).toEqual({
      status: 200,
      json: {
        kind: 'goods',
        action: 'spend',
        amount: 4 * PRICE.water,
        valueLeft: WALLET_FACE - 4 * PRICE.water,
        item: 'water',
      },
    });
    expect(await post('/v1/redeem', { scan: 'h3', id: sv, item: 'massage' })).toEqual({
      status: 200,
      json: { kind: 'service', action: 'use', amount: 1, usesLeft: 1, item: 'massage' },
    });
    expect(await post('/v1/reverse', { scan: 'h2', reason: 'refund' })).toEqual({
      status: 200,
      json: { kind: 'goods', action: 'reverse', amount: 4 * PRICE.water, valueLeft: WALLET_FACE },
    });
    expect(await post('/v1/reverse', { scan: 'h2', reason: 'refund' })).toEqual({
      status: 200,
      json: { kind: 'goods', action: 'reverse', amount: 4 * PRICE.water, valueLeft: WALLET_FACE, duplicate: true },
    });
    expect(await balanceOf(h, w)).toBe(WALLET_FACE);
    expect((await recordsOf(h, t)).map((r) => [r.scan, r.scanner, r.gate])).toEqual([['h1', scan.name, 'east']]);
  });

  it('every refusal with its status code and {error: {reason, message, ...details}}', async () => {
    const used = await sold(cat.ticket);
    expect((await post('/v1/redeem', { scan: uniq(), id: used, gate: 'g1' })).status).toBe(200);
    const f = await idFields(h, used);
    const poor = await sold(cat.wallet);
    expect((await post('/v1/redeem', { scan: uniq(), id: poor, item: 'beer', qty: 2 })).status).toBe(200);
    const [unsold] = await mint(h, cat.ticket);
    const blocked = await sold(cat.ticket);
    await setIdState(h.ctx, blocked, 'block');
    const [talk] = await soldIds(h, talkProduct());
    const conflictScan = uniq();
    const w2 = await sold(cat.wallet);
    expect((await post('/v1/redeem', { scan: conflictScan, id: w2, item: 'water' })).status).toBe(200);
    const southTok = (await scannerToken(h, { venue: VENUE, gate: 'south' })).tok;
    const clubTok = (await scannerToken(h, { venue: OTHER_VENUE })).tok;

    const cases: [string, unknown, number, object, string?][] = [
      [
        '/v1/redeem',
        { scan: uniq(), id: badCheck(used) },
        400,
        err('bad_checksum', 'the ID is mistyped (check digit)'),
      ],
      ['/v1/redeem', { scan: uniq(), id: '1234' }, 400, err('bad_format', 'not an ID number')],
      ['/v1/redeem', { scan: uniq(), id: generateId(16) }, 404, err('unknown_id', 'no such ID')],
      ['/v1/redeem', { scan: uniq(), id: unsold }, 422, err('not_active', 'the ID has not been sold')],
      ['/v1/redeem', { scan: uniq(), id: blocked }, 403, err('blocked', 'the ID is blocked')],
      ['/v1/redeem', { scan: uniq(), id: await sold(cat.past) }, 410, err('expired', 'the ID has expired')],
      [
        '/v1/redeem',
        { scan: uniq(), id: await sold(cat.future) },
        422,
        err('not_yet_valid', 'not valid yet', { validFrom: cat.future.validFrom }),
      ],
      [
        '/v1/redeem',
        { scan: uniq(), id: await sold(cat.ticket) },
        403,
        err('wrong_venue', 'not valid at this venue'),
        clubTok,
      ],
      [
        '/v1/redeem',
        { scan: uniq(), id: await sold(cat.gated), gate: 'north' },
        403,
        err('wrong_gate', 'not valid at this gate'),
        southTok,
      ],
      [
        '/v1/redeem',
        { scan: uniq(), id: used },
        409,
        err('already_redeemed', 'already used', { firstUsed: { time: Number(f.first), venue: VENUE, gate: 'g1' } }),
      ],
      [
        '/v1/redeem',
        { scan: uniq(), id: poor, item: 'beer' },
        422,
        err('insufficient_value', 'not enough value left', { valueLeft: 1_000_000 }),
      ],
      [
        '/v1/redeem',
        { scan: uniq(), id: poor, item: 'cocktail' },
        404,
        err('unknown_item', 'this item is not sold here'),
      ],
      ['/v1/redeem', { scan: uniq(), id: talk }, 422, err('wrong_kind', 'this ID is not for this use')],
      [
        '/v1/redeem',
        { scan: conflictScan, id: w2, item: 'beer' },
        409,
        err('scan_conflict', 'this scan id was used for another ID or item'),
      ],
      [
        '/v1/validate',
        { id: used },
        409,
        err('already_redeemed', 'already used', { firstUsed: { time: Number(f.first), venue: VENUE, gate: 'g1' } }),
      ],
      ['/v1/validate', { id: blocked }, 403, err('blocked', 'the ID is blocked')],
      ['/v1/reverse', { scan: 'never-redeemed' }, 404, err('unknown_scan', 'no redemption with this scan id')],
    ];
    for (const [path, body, status, json, tok] of cases) {
      expect({ path, body, ...(await post(path, body, tok)) }).toEqual({ path, body, status, json });
    }
    // None of it changed a balance.
    expect(await balanceOf(h, unsold!)).toBe(0);
    expect(await balanceOf(h, blocked)).toBe(1);
    expect(await balanceOf(h, talk!)).toBe(talkProduct().face);
    expect(await balanceOf(h, poor)).toBe(1_000_000);
    expect(await balanceOf(h, w2)).toBe(WALLET_FACE - PRICE.water);
  });

  it('malformed bodies are 400 with the schema reason', async () => {
    expect(await post('/v1/redeem', { id: generateId(16) })).toEqual({
      status: 400,
      json: { error: { reason: 'missing_field', message: expect.stringContaining('scan') } },
    });
    expect((await post('/v1/redeem', { scan: 'x', id: 1234567890123456 })).json.error.reason).toBe('bad_type');
    expect((await post('/v1/redeem', { scan: 'x', id: generateId(16), qty: 0 })).json.error.reason).toBe('bad_value');
    expect((await post('/v1/redeem', { scan: 'x', id: generateId(16), dir: 'up' })).status).toBe(400);
    expect((await post('/v1/redeem', { scan: 'has space', id: generateId(16) })).status).toBe(400);
    expect((await post('/v1/reverse', {})).json).toEqual({
      error: { reason: 'missing_field', message: expect.any(String) },
    });
  });
});

describe('auth', () => {
  it('/v1/scanner: no token → 401, unknown token → 401, a switch token → 403; /v1/switch refuses a scanner token', async () => {
    await expect(Scanner.connect(gw.port, '')).rejects.toMatchObject({ status: 401 });
    await expect(Scanner.connect(gw.port, 'tsk_nope')).rejects.toMatchObject({ status: 401 });
    const e = await Scanner.connect(gw.port, switchTok).catch((x: { status: number; body: string }) => x);
    expect(e).toMatchObject({ status: 403 });
    expect(JSON.parse((e as { body: string }).body)).toEqual({
      error: { reason: 'forbidden', message: 'role switch may not use this endpoint' },
    });
    await expect(Scanner.connect(gw.port, scan.tok, { path: '/v1/switch' })).rejects.toMatchObject({ status: 403 });
    // The token may also come as ?token= (browsers cannot set headers on a WebSocket).
    const q = await Scanner.connect(gw.port, '', { path: `/v1/scanner?token=${encodeURIComponent(scan.tok)}` });
    expect((await q.request({ op: 'ping', ref: 1 })).op).toBe('pong');
    await q.close();
  });

  it('HTTP scanner endpoints: none → 401, a switch or sales token → 403', async () => {
    const sales = await token(h, 'sales');
    const id = await sold(cat.ticket);
    for (const path of ['/v1/redeem', '/v1/validate', '/v1/reverse']) {
      const body = { scan: uniq(), id };
      expect(await jsonCall(gw, 'POST', path, { body })).toEqual({
        status: 401,
        json: { error: { reason: 'unauthorized', message: 'bearer token required' } },
      });
      expect(await jsonCall(gw, 'POST', path, { token: 'tsk_nope', body })).toEqual({
        status: 401,
        json: { error: { reason: 'unauthorized', message: 'unknown token' } },
      });
      expect(await jsonCall(gw, 'POST', path, { token: switchTok, body })).toEqual({
        status: 403,
        json: { error: { reason: 'forbidden', message: 'role switch may not use this endpoint' } },
      });
      expect((await jsonCall(gw, 'POST', path, { token: sales, body })).status).toBe(403);
    }
    expect(await balanceOf(h, id)).toBe(1);
    expect(await recordsOf(h, id)).toEqual([]);
  });

  it('a scanner token needs a venue: the store refuses one without, and a stored one without redeems nothing', async () => {
    await expect(createToken(h.ctx.redis, { name: 'novenue', role: 'scanner' })).rejects.toThrow(
      'a scanner token needs --venue',
    );
    // One written around the store (an older catalog) is refused at every scan.
    const raw = 'tsk_raw-scanner-without-venue';
    await h.r.hset(
      keys.tokens,
      tokenHash(raw),
      JSON.stringify({ name: 'raw-scanner', role: 'scanner', created: Date.now() }),
    );
    const id = await sold(cat.ticket);
    expect(await jsonCall(gw, 'POST', '/v1/redeem', { token: raw, body: { scan: 'nv', id } })).toEqual({
      status: 403,
      json: { error: { reason: 'no_venue', message: 'this scanner token has no venue' } },
    });
    expect(await balanceOf(h, id)).toBe(1);
  });

  it('GET /v1/ids/:id/status: scanner or admin; not switch; not without a token', async () => {
    const id = await sold(cat.ticket);
    await post('/v1/redeem', { scan: uniq(), id });
    const f = await idFields(h, id);
    const want = {
      state: 'sold',
      product: 'ticket',
      kind: 'entry',
      currency: 'EUR',
      face: 1,
      balance: 0,
      activeCalls: 0,
      minted: Number(f.mint),
      sold: Number(f.sold),
      firstUse: Number(f.first),
    };
    expect(await jsonCall(gw, 'GET', `/v1/ids/${id}/status`, { token: scan.tok })).toEqual({ status: 200, json: want });
    expect(await jsonCall(gw, 'GET', `/v1/ids/${id}/status`, { token: await token(h, 'admin') })).toEqual({
      status: 200,
      json: want,
    });
    expect((await jsonCall(gw, 'GET', `/v1/ids/${id}/status`, { token: switchTok })).status).toBe(403);
    expect((await jsonCall(gw, 'GET', `/v1/ids/${id}/status`)).status).toBe(401);
    expect(await jsonCall(gw, 'GET', `/v1/ids/${generateId(16)}/status`, { token: scan.tok })).toEqual({
      status: 404,
      json: { error: { reason: 'unknown_id', message: 'no such ID' } },
    });
    expect((await jsonCall(gw, 'GET', `/v1/ids/${badCheck(id)}/status`, { token: scan.tok })).json.error.reason).toBe(
      'bad_checksum',
    );
  });
});

describe('wrong_kind on the switch socket', () => {
  it('a ticket, a goods or a service ID on a call start is refused wrong_kind and nothing is used', async () => {
    const c = await Client.connect(gw.port, switchTok);
    for (const p of [cat.ticket, cat.wallet, cat.spa]) {
      const id = await sold(p);
      const call = uniq('call');
      expect(await c.request({ op: 'start', ref: call, call, id, dest: '4912345' })).toEqual({
        op: 'error',
        ref: call,
        call,
        reason: 'wrong_kind',
        message: 'call refused: wrong_kind',
      });
      expect(await balanceOf(h, id)).toBe(p.kind === 'goods' ? WALLET_FACE : p.kind === 'service' ? 2 : 1);
    }
    await c.close();
  });
});

describe('a burst of lookups longer than Redis answers within REDIS_TIMEOUT_MS', () => {
  it('those that waited their turn too long, while Redis answered the others, are overloaded, not unavailable', () =>
    // Two lookups at a time (GUESS_LIMIT + 1). Redis pauses 3 × 400 ms while they queue: a lookup in
    // Redis waits 400 ms at most, within the 1 s timeout (never unavailable), and those queued
    // behind wait their turn longer than it. Unpaused, a quiet machine answered all 4,000 within
    // the timeout, and the test failed for want of an overloaded one (2026-12-08).
    withGateway(h, { guessLimit: 1, redis: { ...h.cfg.redis, timeoutMs: 1000 } }, async (g) => {
      const id = await sold(cat.ticket);
      const s = await Scanner.connect(g.port, (await scannerToken(h)).tok);
      try {
        const asks = (from: number): Msg[] =>
          Array.from({ length: 2000 }, (_, i) => ({ op: 'validate', ref: `v${from + i}`, id }));
        s.send(asks(0));
        s.send(asks(2000));
        for (let i = 0; i < 3; i++) {
          await h.r.call('CLIENT', 'PAUSE', '400', 'ALL');
          await sleep(450);
        }
        await until(() => s.received.length >= 4000, 20_000, 50, '4000 answers');
        const reasons = new Map<string, number>();
        for (const m of s.received) reasons.set(`${m.op} ${m.reason}`, (reasons.get(`${m.op} ${m.reason}`) ?? 0) + 1);
        expect(reasons.get('error unavailable')).toBeUndefined();
        expect(reasons.get('error overloaded')).toBeGreaterThan(0);
        expect([...reasons.keys()].sort()).toEqual(['error overloaded', 'valid undefined']);
        expect(s.received.find((m) => m.reason === 'overloaded')).toMatchObject({
          op: 'error',
          reason: 'overloaded',
          message: 'too many requests of this token waiting their turn, slow down',
        });
      } finally {
        await s.close();
      }
    }));
});

describe('throttling guessed IDs', () => {
  const LIMIT = 3;
  const WINDOW = 2;
  /** A gateway's guess limits in these tests: small, to reach them quickly. */
  const LIMITS = { guessLimit: LIMIT, guessWindowSec: WINDOW };

  /** What /metrics says of guessing: unknown_id answers, and scanners throttled. */
  async function expectGuessCounts(port: number, unknown: number, throttled: number): Promise<void> {
    const m = await metricsText(port);
    expect(sample(m, 'tessera_unknown_id_scans_total')).toBe(unknown);
    expect(sample(m, 'tessera_scanner_throttled_total')).toBe(throttled);
  }

  it('guessLimit unknown IDs are answered normally, the one over the limit still unknown_id, then throttled (docs/scanners.md)', () =>
    withGateway(h, LIMITS, async (g) => {
      const s = await Scanner.connect(g.port, (await scannerToken(h)).tok);
      const answers: Msg[] = [];
      for (let i = 0; i < LIMIT + 3; i++) answers.push(await s.redeem({ scan: uniq(), id: generateId(16) }));
      expect(answers.map((a) => a.reason)).toEqual([...Array(LIMIT + 1).fill('unknown_id'), 'throttled', 'throttled']);
      await expectGuessCounts(g.port, LIMIT + 1, 1);
      await s.close();
    }));

  it('unknown IDs asked by validate and status, over both transports, count as guesses like redeems', () =>
    withGateway(h, LIMITS, async (g) => {
      const { tok } = await scannerToken(h);
      const s = await Scanner.connect(g.port, tok);
      // LIMIT + 1 guesses, none of them a redeem: the next ask of any kind is throttled.
      expect(await s.validate({ id: generateId(16) })).toMatchObject({ op: 'refused', reason: 'unknown_id' });
      expect(await s.request({ op: 'status', ref: 'g1', id: generateId(16) })).toMatchObject({
        op: 'refused',
        reason: 'unknown_id',
      });
      expect(
        (await jsonCall(g, 'POST', '/v1/validate', { token: tok, body: { id: generateId(16) } })).json.error.reason,
      ).toBe('unknown_id');
      expect((await jsonCall(g, 'GET', `/v1/ids/${generateId(16)}/status`, { token: tok })).json.error.reason).toBe(
        'unknown_id',
      );
      expect(await s.redeem({ scan: uniq(), id: generateId(16) })).toMatchObject({
        op: 'refused',
        reason: 'throttled',
      });
      expect((await jsonCall(g, 'GET', `/v1/ids/${generateId(16)}/status`, { token: tok })).status).toBe(429);
      await expectGuessCounts(g.port, LIMIT + 1, 1);
      await s.close();
    }));

  it('once throttled: every scan of that scanner waits, others go on, /metrics counts it, and after the window it works again', () =>
    withGateway(h, LIMITS, async (g) => {
      const a = await scannerToken(h);
      const sa = await Scanner.connect(g.port, a.tok);
      const sb = await Scanner.connect(g.port, (await scannerToken(h)).tok, { binary: true });
      const [t1, t2, t3, t4] = (await soldIds(h, cat.ticket, 4)) as [string, string, string, string];

      let unknown = 0;
      let throttled: Msg | undefined;
      for (let i = 0; i < LIMIT + 3 && !throttled; i++) {
        const r = await sa.redeem({ scan: uniq(), id: generateId(16) });
        if (r.reason === 'unknown_id') unknown++;
        else throttled = r;
      }
      expect(throttled).toEqual({
        op: 'refused',
        scan: throttled?.scan,
        reason: 'throttled',
        message: 'too many unknown IDs; wait',
        retryAfter: expect.any(Number),
      });
      expect(unknown).toBe(LIMIT + 1);

      // While throttled, even a real ticket waits (no Redis lookup at all), over every op and transport.
      const r1 = await sa.redeem({ scan: uniq(), id: t1 });
      expect(r1).toMatchObject({ op: 'refused', reason: 'throttled' });
      expect(r1.retryAfter).toBeGreaterThanOrEqual(1);
      expect(r1.retryAfter).toBeLessThanOrEqual(WINDOW);
      expect(await sa.validate({ id: t1 })).toMatchObject({ op: 'refused', reason: 'throttled' });
      const viaHttp = await jsonCall(g, 'POST', '/v1/redeem', { token: a.tok, body: { scan: uniq(), id: t1 } });
      expect(viaHttp).toEqual({
        status: 429,
        json: { error: { reason: 'throttled', message: 'too many unknown IDs; wait', retryAfter: expect.any(Number) } },
      });
      expect(await balanceOf(h, t1)).toBe(1);

      // Another scanner is not affected.
      expect(await sb.redeem({ scan: 'b1', id: t2 })).toEqual({
        op: 'redeemed',
        scan: 'b1',
        kind: 'entry',
        action: 'entry',
        amount: 1,
        entriesLeft: 0,
      });
      expect(await sb.redeem({ scan: 'b2', id: generateId(16) })).toMatchObject({
        op: 'refused',
        reason: 'unknown_id',
      });
      unknown++;

      await expectGuessCounts(g.port, unknown, 1);

      // Wait out the window (the guess counter in Redis goes with it).
      await sleep(r1.retryAfter * 1000);
      await until(async () => (await h.r.keys(`ts:{b*}:guess:${a.name}`)).length === 0, 3000);
      await until(async () => (await sa.validate({ id: t3 })).op === 'valid', 3000);
      expect(await sa.redeem({ scan: uniq(), id: t3 })).toMatchObject({ op: 'redeemed', entriesLeft: 0 });
      expect(await sa.redeem({ scan: uniq(), id: generateId(16) })).toMatchObject({
        op: 'refused',
        reason: 'unknown_id',
      });
      expect(await sa.redeem({ scan: uniq(), id: t4 })).toMatchObject({ op: 'redeemed', entriesLeft: 0 });
      expect(sample(await metricsText(g.port), 'tessera_scanner_throttled_total')).toBe(1);
      await Promise.all([sa.close(), sb.close()]);
    }));

  describe('lookups of one token name in flight at once (docs/scanners.md)', () => {
    const BURST = 200;
    const guesses = (n: number): string[] => Array.from({ length: n }, () => generateId(16));
    const validates = (ids: string[], from = 0): Msg[] => ids.map((id, i) => ({ op: 'validate', ref: from + i, id }));
    /** How many answers gave each reason (each op for an answer that is no refusal). */
    const tally = (answers: Msg[]): Record<string, number> => {
      const out: Record<string, number> = {};
      for (const a of answers) {
        const k = String(a.reason ?? a.op);
        out[k] = (out[k] ?? 0) + 1;
      }
      return out;
    };

    it('a burst of guesses in one frame: GUESS_LIMIT + 1 answered unknown_id, in arrival order, the rest throttled without a lookup', () =>
      withGateway(h, LIMITS, async (g) => {
        const { tok, name } = await scannerToken(h);
        const s = await Scanner.connect(g.port, tok, { binary: true });
        const answers = await s.requestAll(validates(guesses(BURST)));
        expect(answers.slice(0, LIMIT + 1).map((a) => a.reason)).toEqual(Array(LIMIT + 1).fill('unknown_id'));
        expect(tally(answers)).toEqual({ unknown_id: LIMIT + 1, throttled: BURST - LIMIT - 1 });
        expect(answers[BURST - 1]).toMatchObject({
          op: 'refused',
          reason: 'throttled',
          retryAfter: expect.any(Number),
        });
        expect(await guessCount(h, name)).toBe(LIMIT + 1);
        // Throttled once in the window, however many answers it refused.
        await expectGuessCounts(g.port, LIMIT + 1, 1);
        await s.close();
      }));

    it('a burst over HTTP, redeem, validate and status in parallel: GUESS_LIMIT + 1 answered 404, the rest 429', () =>
      withGateway(h, LIMITS, async (g) => {
        const { tok, name } = await scannerToken(h);
        const ask = (id: string, i: number): Promise<{ status: number; json: any }> =>
          i % 3 === 0
            ? jsonCall(g, 'POST', '/v1/redeem', { token: tok, body: { scan: uniq(), id } })
            : i % 3 === 1
              ? jsonCall(g, 'POST', '/v1/validate', { token: tok, body: { id } })
              : jsonCall(g, 'GET', `/v1/ids/${id}/status`, { token: tok });
        const answers = await Promise.all(guesses(BURST / 2).map(ask));
        expect(tally(answers.map((a) => ({ reason: `${a.status} ${a.json.error.reason}` })))).toEqual({
          '404 unknown_id': LIMIT + 1,
          '429 throttled': BURST / 2 - LIMIT - 1,
        });
        expect(await guessCount(h, name)).toBe(LIMIT + 1);
        await expectGuessCounts(g.port, LIMIT + 1, 1);
      }));

    it('a real ID after GUESS_LIMIT + 1 guesses in the burst is throttled, not found, and not redeemed', () =>
      withGateway(h, LIMITS, async (g) => {
        const s = await Scanner.connect(g.port, (await scannerToken(h)).tok);
        const [t1, t2] = (await soldIds(h, cat.ticket, 2)) as [string, string];
        const answers = await s.requestAll([
          ...validates(guesses(LIMIT + 1)),
          { op: 'validate', ref: 'valid', id: t1 },
          { op: 'redeem', ref: 'redeem', scan: uniq(), id: t2 },
          { op: 'status', ref: 'status', id: t1 },
          ...validates(guesses(BURST), LIMIT + 1),
        ]);
        expect(answers.slice(LIMIT + 1, LIMIT + 4)).toEqual([
          {
            op: 'refused',
            ref: 'valid',
            reason: 'throttled',
            message: 'too many unknown IDs; wait',
            retryAfter: expect.any(Number),
          },
          expect.objectContaining({ op: 'refused', ref: 'redeem', reason: 'throttled' }),
          expect.objectContaining({ op: 'refused', ref: 'status', reason: 'throttled' }),
        ]);
        expect(tally(answers)).toEqual({ unknown_id: LIMIT + 1, throttled: BURST + 3 });
        expect(await balanceOf(h, t2)).toBe(1);
        expect(await recordsOf(h, t2)).toEqual([]);
        await s.close();
      }));

    it('the same burst on two gateways at once: GUESS_LIMIT + 1 answered unknown_id between them, each throttles once', () =>
      withGateway(h, LIMITS, (g1) =>
        withGateway(h, LIMITS, async (g2) => {
          const { tok, name } = await scannerToken(h);
          const [s1, s2] = await Promise.all([g1, g2].map((g) => Scanner.connect(g.port, tok, { binary: true })));
          const [a1, a2] = await Promise.all([s1!, s2!].map((s) => s.requestAll(validates(guesses(BURST / 2)))));
          expect(tally([...a1!, ...a2!])).toEqual({ unknown_id: LIMIT + 1, throttled: BURST - LIMIT - 1 });
          // Each gateway let up to GUESS_LIMIT + 1 lookups through; those past the count's limit were answered throttled.
          expect(await guessCount(h, name)).toBeLessThanOrEqual(2 * (LIMIT + 1));
          for (const g of [g1, g2])
            expect(sample(await metricsText(g.port), 'tessera_scanner_throttled_total')).toBe(1);
          await Promise.all([s1!.close(), s2!.close()]);
        }),
      ));

    it('a scanner that does not miss has its lookups answered, however many at once; its state goes with them', () =>
      withGateway(h, LIMITS, async (g) => {
        const s = await Scanner.connect(g.port, (await scannerToken(h)).tok);
        const tickets = await soldIds(h, cat.ticket3, 4);
        const ids = Array.from({ length: BURST }, (_, i) => tickets[i % tickets.length]!);
        const answers = await s.requestAll(validates(ids));
        expect(tally(answers)).toEqual({ valid: BURST });
        expect(g.redemption.throttle.tracked).toBe(0);
        // GUESS_LIMIT misses first: what is left of the limit is one lookup at a time, none refused.
        const mixed = await s.requestAll([...validates(guesses(LIMIT)), ...validates(ids, LIMIT)]);
        expect(tally(mixed)).toEqual({ unknown_id: LIMIT, valid: BURST });
        await s.close();
      }));

    it('a token name’s state is kept while its window lasts and dropped once it is idle and the window is over', () =>
      withGateway(h, { ...LIMITS, guessWindowSec: 1 }, async (g) => {
        const s = await Scanner.connect(g.port, (await scannerToken(h)).tok);
        const answers = await s.requestAll(validates(guesses(LIMIT + 3)));
        expect(tally(answers)).toEqual({ unknown_id: LIMIT + 1, throttled: 2 });
        expect(g.redemption.throttle.tracked).toBe(1);
        await until(() => g.redemption.throttle.tracked === 0, 3000, 20, 'the throttle state dropped');
        await s.close();
      }));
  });
});

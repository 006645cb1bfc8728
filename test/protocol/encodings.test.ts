/**
 * The switch wire format: MessagePack in binary frames, JSON in text frames,
 * one schema, the reply in the request's encoding, one frame carrying one
 * message or an array of them; the bearer token checked at upgrade.
 */
import { pack } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { idFields } from '../support/redis';
import { Client, upgrade, Wire, type Got } from '../support/ws-client';
import type { Gateway } from '../../src/gateway/server';

let h: Harness;
let gw: Gateway;
let tok: string;
/** A balance beyond 32 bits, with no thresholds to announce. */
const BIG_FACE = 10_000_000_000;
const P_BIG = talkProduct({ name: 'talkbig', face: BIG_FACE, price: 1000, thresholds: [] });
beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [
    talkProduct(),
    talkProduct({ name: 'big', face: 10_000_000_000, price: 10_000_000_000 }),
    P_BIG,
  ]);
  gw = await gateway(h);
  tok = await token(h, 'switch');
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

describe.each([
  { enc: 'JSON text frames', binary: false },
  { enc: 'MessagePack binary frames', binary: true },
])('a whole call in $enc', ({ binary }) => {
  it('start, ticks, stop: every reply in the request encoding', async () => {
    const [id] = await soldIds(h, talkProduct());
    const w = await Wire.connect(gw.port, tok);
    const call = binary ? 'enc-bin-1' : 'enc-json-1';

    const started = await w.request({ op: 'start', ref: 1, call, id, dest: '+441234567' }, binary);
    expect(started.binary).toBe(binary);
    expect(started.msg).toMatchObject({
      op: 'started',
      ref: 1,
      call,
      maxSec: 5000,
      balance: 1_000_000,
      rate: 200,
      fee: 0,
    });

    // A tick without ref gets no reply; one with ref gets `ticked`.
    w.send({ op: 'tick', call, sec: 1 }, binary);
    const ticked = await w.request({ op: 'tick', ref: 'r2', call, sec: 3 }, binary);
    expect(ticked.binary).toBe(binary);
    expect(ticked.msg).toMatchObject({
      op: 'ticked',
      ref: 'r2',
      call,
      balance: 1_000_000 - 3 * 200,
      secLeft: (1_000_000 - 600) / 200,
    });

    const stopped = await w.request({ op: 'stop', ref: 'r3', call, sec: 4, cause: 'normal' }, binary);
    expect(stopped.binary).toBe(binary);
    expect(stopped.msg).toEqual({ op: 'stopped', ref: 'r3', call, billedSec: 4, cost: 800, balance: 999_200 });

    // Nothing answered the ref-less tick, and every frame of this connection used the request encoding.
    expect(w.got.map((g) => g.msg.op)).toEqual(['started', 'ticked', 'stopped']);
    expect(w.frames.every((f) => f.binary === binary)).toBe(true);
    await w.close();
  });

  it('errors come back in the request encoding too', async () => {
    const w = await Wire.connect(gw.port, tok);
    const e = await w.request({ op: 'stop', ref: 'e1', call: 'never-started', sec: 1 }, binary);
    expect(e.binary).toBe(binary);
    expect(e.msg).toEqual({
      op: 'error',
      ref: 'e1',
      call: 'never-started',
      reason: 'unknown_call',
      message: expect.any(String),
    });
    await w.close();
  });
});

describe('encodings on one connection', () => {
  it('a JSON request and a MessagePack request on the same socket each get their own encoding', async () => {
    const w = await Wire.connect(gw.port, tok);
    w.json({ op: 'ping', ref: 'as-json' });
    w.pack({ op: 'ping', ref: 'as-msgpack' });
    const j = await w.waitFor((m) => m.ref === 'as-json');
    const m = await w.waitFor((x) => x.ref === 'as-msgpack');
    expect(j.binary).toBe(false);
    expect(m.binary).toBe(true);
    expect(j.msg).toEqual({ op: 'pong', ref: 'as-json', time: expect.any(Number) });
    expect(m.msg).toEqual({ op: 'pong', ref: 'as-msgpack', time: expect.any(Number) });
    await w.close();
  });

  it('the shared Client helper works in both modes', async () => {
    const [id] = await soldIds(h, talkProduct());
    for (const binary of [false, true]) {
      const c = await Client.connect(gw.port, tok, { binary });
      expect(c.binary).toBe(binary);
      const call = `client-${binary}`;
      const s = await c.request({ op: 'start', ref: 'a', call, id, dest: '4912345' });
      expect(s).toMatchObject({ op: 'started', call, maxSec: binary ? 9_990 : 10_000, rate: 100 });
      const st = await c.request({ op: 'stop', ref: 'b', call, sec: 10 });
      expect(st).toMatchObject({ op: 'stopped', call, billedSec: 10, cost: 1000 });
      await c.close();
    }
  });
});

describe('64-bit integers in MessagePack', () => {
  it('a switch that sends every integer as int64 is understood', async () => {
    const [id] = await soldIds(h, talkProduct());
    const w = await Wire.connect(gw.port, tok);
    // msgpackr writes BigInts as int64 (0xd3), as Go or Java encoders commonly do for every integer.
    const ask = (m: Record<string, unknown>): Promise<Got> => {
      const from = w.got.length;
      w.pack(m);
      return w.waitFor((x) => x.ref === Number(m.ref), from);
    };
    const s = await ask({ op: 'start', ref: 9n, call: 'i64', id, dest: '4912345' });
    expect(s.msg).toMatchObject({
      op: 'started',
      ref: 9,
      call: 'i64',
      maxSec: 10_000,
      balance: 1_000_000,
      rate: 100,
      fee: 0,
    });
    const t = await ask({ op: 'tick', ref: 10n, call: 'i64', sec: 3n });
    expect(t.msg).toMatchObject({ op: 'ticked', ref: 10, call: 'i64', balance: 999_700, secLeft: 9_997 });
    const e = await ask({ op: 'stop', ref: 11n, call: 'i64', sec: 4n });
    expect(e.msg).toEqual({ op: 'stopped', ref: 11, call: 'i64', billedSec: 4, cost: 400, balance: 999_600 });
    await w.close();
  });

  it('an amount beyond 32 bits goes out as an int64 and reads back exactly', async () => {
    const [id] = await soldIds(h, talkProduct({ name: 'big', face: 10_000_000_000, price: 10_000_000_000 }));
    const w = await Wire.connect(gw.port, tok);
    const s = await w.request({ op: 'start', ref: 1, call: 'big-1', id, dest: '4912345' }, true);
    expect(s.msg).toMatchObject({
      op: 'started',
      ref: 1,
      call: 'big-1',
      maxSec: 100_000_000,
      balance: 10_000_000_000,
      rate: 100,
      fee: 0,
    });
    const int64 = Buffer.alloc(9);
    int64[0] = 0xd3;
    int64.writeBigInt64BE(10_000_000_000n, 1);
    const uint64 = Buffer.from(int64);
    uint64[0] = 0xcf;
    const raw = w.frames[s.frame]!.raw;
    expect(raw.includes(int64) || raw.includes(uint64)).toBe(true);
    // JSON carries the same number as plain digits.
    const j = await w.request({ op: 'stop', ref: 2, call: 'big-1', sec: 1 }, false);
    expect(j.msg).toEqual({ op: 'stopped', ref: 2, call: 'big-1', billedSec: 1, cost: 100, balance: 9_999_999_900 });
    expect(w.frames[j.frame]!.raw.toString()).toContain('"balance":9999999900');
    await w.close();
  });

  /** The integer stored under `key` in a raw MessagePack frame, with its type byte. */
  function rawInt(raw: Buffer, key: string): { type: number; value: bigint } {
    const k = Buffer.concat([Buffer.from([0xa0 | key.length]), Buffer.from(key, 'utf8')]);
    const at = raw.indexOf(k);
    if (at < 0) throw new Error(`no ${key} in ${raw.toString('hex')}`);
    const p = at + k.length;
    const type = raw[p]!;
    if (type === 0xcf) return { type, value: raw.readBigUInt64BE(p + 1) };
    if (type === 0xd3) return { type, value: raw.readBigInt64BE(p + 1) };
    return { type, value: -1n };
  }

  it('a tick whose sec is an int64 (0xd3) or uint64 (0xcf) is read as a number; a balance beyond 2^32 goes out as int64', async () => {
    let refs = 0;
    const ref = (): string => `w${++refs}`;
    const [id] = await soldIds(h, P_BIG);
    const w = await Wire.connect(gw.port, tok);
    const call = 'i64-wire';
    const sref = ref();
    const started = await w.request({ op: 'start', ref: sref, call, id: id!, dest: '4912345' }, true);
    expect(started.binary).toBe(true);
    expect(started.msg).toMatchObject({
      op: 'started',
      ref: sref,
      call,
      maxSec: BIG_FACE / 100,
      balance: BIG_FACE,
      rate: 100,
      fee: 0,
    });
    const sraw = w.frames[started.frame]!.raw;
    const sb = rawInt(sraw, 'balance');
    expect([0xcf, 0xd3]).toContain(sb.type);
    expect(sb.value).toBe(BigInt(BIG_FACE));

    // sec = 7 as int64: a3 'sec' d3 00 00 00 00 00 00 00 07
    const tref = ref();
    const bytes = Buffer.from(pack({ op: 'tick', ref: tref, call, sec: 7n }));
    const secI64 = Buffer.from('a3736563d30000000000000007', 'hex');
    expect(bytes.includes(secI64)).toBe(true);
    let from = w.got.length;
    w.raw(bytes, true);
    const t1 = await w.waitFor((m) => m.ref === tref, from);
    expect(t1.msg).toMatchObject({
      op: 'ticked',
      ref: tref,
      call,
      balance: BIG_FACE - 700,
      secLeft: (BIG_FACE - 700) / 100,
    });
    const tb = rawInt(w.frames[t1.frame]!.raw, 'balance');
    expect([0xcf, 0xd3]).toContain(tb.type);
    expect(tb.value).toBe(BigInt(BIG_FACE - 700));

    // The same with uint64 (0xcf), as some switches send it.
    const uref = ref();
    const ubytes = Buffer.from(pack({ op: 'tick', ref: uref, call, sec: 9n }));
    const at = ubytes.indexOf(Buffer.from('a3736563d3', 'hex'));
    expect(at).toBeGreaterThanOrEqual(0);
    ubytes[at + 4] = 0xcf;
    expect(ubytes.includes(Buffer.from('a3736563cf0000000000000009', 'hex'))).toBe(true);
    from = w.got.length;
    w.raw(ubytes, true);
    expect((await w.waitFor((m) => m.ref === uref, from)).msg).toMatchObject({
      op: 'ticked',
      ref: uref,
      call,
      balance: BIG_FACE - 900,
      secLeft: (BIG_FACE - 900) / 100,
    });

    // An int64 too large for a double-exact number is refused, and the connection stays up.
    const bref = ref();
    from = w.got.length;
    w.raw(Buffer.from(pack({ op: 'tick', ref: bref, call, sec: 2n ** 60n })), true);
    expect((await w.waitFor((m) => m.ref === bref, from)).msg).toMatchObject({
      op: 'error',
      ref: bref,
      reason: 'bad_type',
    });

    const stop = await w.request({ op: 'stop', ref: ref(), call, sec: 9 }, true);
    expect(stop.msg).toMatchObject({ op: 'stopped', billedSec: 9, cost: 900, balance: BIG_FACE - 900 });
    expect(await idFields(h, id!)).toMatchObject({ bal: String(BIG_FACE - 900), act: '0' });
    await w.close();
  });
});

describe('ping', () => {
  it('ping → pong with the ref and the server time, in both encodings', async () => {
    const w = await Wire.connect(gw.port, tok);
    const before = Date.now();
    for (const binary of [false, true]) {
      const p = await w.request({ op: 'ping', ref: `p-${binary}` }, binary);
      expect(p.binary).toBe(binary);
      expect(p.msg.op).toBe('pong');
      expect(p.msg.ref).toBe(`p-${binary}`);
      expect(p.msg.time).toBeGreaterThanOrEqual(before);
      expect(p.msg.time).toBeLessThanOrEqual(Date.now());
    }
    // Integer refs are echoed as integers.
    const n = await w.request({ op: 'ping', ref: 42 }, true);
    expect(n.msg).toEqual({ op: 'pong', ref: 42, time: expect.any(Number) });
    await w.close();
  });

  it('a ping without ref still gets a pong', async () => {
    const w = await Wire.connect(gw.port, tok);
    w.json({ op: 'ping' });
    const p = await w.waitFor((m) => m.op === 'pong');
    expect(p.msg.ref).toBeUndefined();
    expect(p.binary).toBe(false);
    await w.close();
  });
});

describe('one frame, many messages', () => {
  it('an array of pings is answered by one array frame of pongs, in order', async () => {
    for (const binary of [false, true]) {
      const w = await Wire.connect(gw.port, tok);
      w.send(
        [
          { op: 'ping', ref: 1 },
          { op: 'ping', ref: 2 },
          { op: 'ping', ref: 3 },
        ],
        binary,
      );
      const frames = await w.frameCount(1);
      expect(frames[0]!.binary).toBe(binary);
      const body = frames[0]!.body as { op: string; ref: number }[];
      expect(Array.isArray(body)).toBe(true);
      expect(body.map((m) => [m.op, m.ref])).toEqual([
        ['pong', 1],
        ['pong', 2],
        ['pong', 3],
      ]);
      await w.close();
    }
  });

  it('starts, ticks and stops of several calls batched in array frames (MessagePack)', async () => {
    const ids = await soldIds(h, talkProduct(), 3);
    const w = await Wire.connect(gw.port, tok);
    const calls = ids.map((_, i) => `batch-${i}`);
    w.pack(ids.map((id, i) => ({ op: 'start', ref: `s${i}`, call: calls[i], id, dest: '4912345' })));
    for (let i = 0; i < 3; i++) {
      const s = await w.waitFor((m) => m.ref === `s${i}`);
      expect(s.binary).toBe(true);
      expect(s.msg).toMatchObject({
        op: 'started',
        ref: `s${i}`,
        call: calls[i],
        maxSec: 10_000,
        balance: 1_000_000,
        rate: 100,
        fee: 0,
      });
    }
    w.pack(calls.map((call, i) => ({ op: 'tick', ref: `t${i}`, call, sec: 10 * (i + 1) })));
    for (let i = 0; i < 3; i++) {
      const t = await w.waitFor((m) => m.ref === `t${i}`);
      expect(t.msg).toMatchObject({
        op: 'ticked',
        ref: `t${i}`,
        call: calls[i],
        balance: 1_000_000 - 1000 * (i + 1),
        secLeft: 10_000 - 10 * (i + 1),
      });
    }
    w.pack(calls.map((call, i) => ({ op: 'stop', ref: `e${i}`, call, sec: 10 * (i + 1) + 1 })));
    for (let i = 0; i < 3; i++) {
      const e = await w.waitFor((m) => m.ref === `e${i}`);
      const sec = 10 * (i + 1) + 1;
      expect(e.msg).toEqual({
        op: 'stopped',
        ref: `e${i}`,
        call: calls[i],
        billedSec: sec,
        cost: sec * 100,
        balance: 1_000_000 - sec * 100,
      });
    }
    // Each ref answered exactly once.
    for (const ref of ['s0', 's1', 's2', 't0', 't1', 't2', 'e0', 'e1', 'e2']) expect(w.withRef(ref)).toHaveLength(1);
    expect(w.frames.every((f) => f.binary)).toBe(true);
    await w.close();
  });

  it('an array frame mixing good and bad messages answers each one (JSON)', async () => {
    const w = await Wire.connect(gw.port, tok);
    w.json([{ op: 'ping', ref: 'ok1' }, 7, { op: 'nope', ref: 'bad1' }, { op: 'ping', ref: 'ok2' }]);
    const ok1 = await w.waitFor((m) => m.ref === 'ok1');
    const ok2 = await w.waitFor((m) => m.ref === 'ok2');
    const bad = await w.waitFor((m) => m.ref === 'bad1');
    const notMap = await w.waitFor((m) => m.reason === 'bad_message');
    expect(ok1.msg.op).toBe('pong');
    expect(ok2.msg.op).toBe('pong');
    expect(bad.msg).toEqual({ op: 'error', ref: 'bad1', reason: 'unknown_op', message: expect.any(String) });
    expect(notMap.msg).toEqual({ op: 'error', reason: 'bad_message', message: expect.any(String) });
    expect(w.got).toHaveLength(4);
    expect(w.got.every((g) => !g.binary)).toBe(true);
    await w.close();
  });
});

describe('authentication at upgrade', () => {
  it('no token → 401', async () => {
    await expect(Client.connect(gw.port, '')).rejects.toMatchObject({ status: 401 });
    const r = await upgrade(gw.port, {});
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body)).toEqual({ error: { reason: 'unauthorized', message: expect.any(String) } });
  });

  it('an unknown token → 401', async () => {
    await expect(Client.connect(gw.port, 'tsk_not-a-real-token')).rejects.toMatchObject({ status: 401 });
    const r = await upgrade(gw.port, { Authorization: 'Bearer tsk_not-a-real-token' });
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body)).toEqual({ error: { reason: 'unauthorized', message: expect.any(String) } });
  });

  it('a malformed Authorization header (not Bearer) → 401', async () => {
    const r = await upgrade(gw.port, { Authorization: `Basic ${tok}` });
    expect(r.status).toBe(401);
  });

  it.each(['admin', 'scanner', 'sales'] as const)('a token of role %s → 403', async (role) => {
    const t = await token(h, role);
    await expect(Client.connect(gw.port, t)).rejects.toMatchObject({ status: 403 });
    const r = await upgrade(gw.port, { Authorization: `Bearer ${t}` });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toEqual({ error: { reason: 'forbidden', message: expect.any(String) } });
  });

  it('a switch token is accepted in the header and in ?token=', async () => {
    const a = await Wire.connect(gw.port, tok);
    expect((await a.request({ op: 'ping', ref: 1 }, false)).msg.op).toBe('pong');
    await a.close();
    const b = await Wire.connect(gw.port, undefined, { query: `token=${encodeURIComponent(tok)}` });
    expect((await b.request({ op: 'ping', ref: 1 }, false)).msg.op).toBe('pong');
    await b.close();
  });

  it('a token created after the gateway started works at once', async () => {
    const fresh = await token(h, 'switch');
    const w = await Wire.connect(gw.port, fresh);
    expect((await w.request({ op: 'ping', ref: 'fresh' }, true)).msg.op).toBe('pong');
    await w.close();
  });
});

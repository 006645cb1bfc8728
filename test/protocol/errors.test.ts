/**
 * Bad frames and bad messages: each gets `error` with a stable reason (ref and
 * call echoed when the message had them), in the request's encoding, and the
 * connection stays up: proven by running a call start afterwards.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { Client, Wire, type Got, type Msg } from '../support/ws-client';
import type { Gateway } from '../../src/gateway/server';
import { pack } from 'msgpackr';

let h: Harness;
let gw: Gateway;
let tok: string;
let ID: string;
beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  gw = await gateway(h);
  tok = await token(h, 'switch');
  [ID] = (await soldIds(h, talkProduct())) as [string];
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

let seq = 0;
/** Runs a full start → stop on the connection: it is still up and still metering. */
async function alive(w: Wire, binary: boolean): Promise<void> {
  const call = `alive-${++seq}`;
  const s = await w.request({ op: 'start', ref: `${call}-s`, call, id: ID, dest: '4912345' }, binary);
  expect(s.binary).toBe(binary);
  expect(s.msg).toEqual({
    op: 'started',
    ref: `${call}-s`,
    call,
    maxSec: 10_000,
    grant: 10_000,
    balance: 1_000_000,
    rate: 100,
    fee: 0,
    final: true,
    action: 'terminate',
    onFailure: 'terminate',
    failureSec: 0,
  });
  const e = await w.request({ op: 'stop', ref: `${call}-e`, call, sec: 0 }, binary);
  expect(e.msg).toEqual({ op: 'stopped', ref: `${call}-e`, call, billedSec: 0, cost: 0, balance: 1_000_000 });
  expect(w.ws.readyState).toBe(w.ws.OPEN);
}

/** Sends something, waits for the error it provokes, and checks the connection carries on. */
async function provoke(w: Wire, send: () => void, pred: (m: Msg) => boolean): Promise<Got> {
  const from = w.got.length;
  send();
  return w.waitFor((m) => m.op === 'error' && pred(m), from);
}

const ENCODINGS = [
  { enc: 'JSON', binary: false },
  { enc: 'MessagePack', binary: true },
];

describe('bad_frame', () => {
  it('a text frame that is not JSON', async () => {
    const w = await Wire.connect(gw.port, tok);
    const e = await provoke(
      w,
      () => w.raw('{"op":"start", "ref": 1,', false),
      (m) => m.reason === 'bad_frame',
    );
    expect(e.binary).toBe(false);
    expect(e.msg).toEqual({ op: 'error', reason: 'bad_frame', message: 'frame is not valid JSON' });
    await alive(w, false);
    await w.close();
  });

  it('a binary frame that is truncated MessagePack', async () => {
    const w = await Wire.connect(gw.port, tok);
    // fixmap of one entry whose key string is cut short.
    const e = await provoke(
      w,
      () => w.raw(Buffer.from([0x81, 0xa2, 0x6f]), true),
      (m) => m.reason === 'bad_frame',
    );
    expect(e.binary).toBe(true);
    expect(e.msg).toEqual({ op: 'error', reason: 'bad_frame', message: 'frame is not valid MessagePack' });
    await alive(w, true);
    await w.close();
  });

  it('a binary frame with trailing bytes after the message', async () => {
    const w = await Wire.connect(gw.port, tok);
    const e = await provoke(
      w,
      () => w.raw(Buffer.from([0xc0, 0x00]), true),
      (m) => m.reason === 'bad_frame',
    );
    expect(e.msg).toEqual({ op: 'error', reason: 'bad_frame', message: 'frame is not valid MessagePack' });
    await alive(w, true);
    await w.close();
  });

  it('a MessagePack bin or timestamp where a message belongs is bad_message: neither is a map', async () => {
    const w = await Wire.connect(gw.port, tok);
    // bin 8 of 3 bytes; a timestamp 32 (ext -1); each alone, and in an array.
    for (const raw of [
      [0xc4, 0x03, 1, 2, 3],
      [0xd6, 0xff, 0, 0, 0, 1],
      [0x91, 0xc4, 0x01, 0x07],
      [0x91, 0xd6, 0xff, 0, 0, 0, 1],
    ]) {
      const e = await provoke(
        w,
        () => w.raw(Buffer.from(raw), true),
        () => true,
      );
      expect(e.msg).toEqual({ op: 'error', reason: 'bad_message', message: 'a message is a map with an op' });
    }
    await alive(w, true);
    await w.close();
  });

  it('a binary frame holding 0xC1, the byte MessagePack never uses', async () => {
    const w = await Wire.connect(gw.port, tok);
    const e = await provoke(
      w,
      () => w.raw(Buffer.from([0xc1]), true),
      () => true,
    );
    expect(e.binary).toBe(true);
    expect(e.msg).toEqual({ op: 'error', reason: 'bad_frame', message: 'frame is not valid MessagePack' });
    await alive(w, true);
    await w.close();
  });
});

describe.each(ENCODINGS)('message errors in $enc', ({ binary }) => {
  let w: Wire;
  beforeAll(async () => {
    w = await Wire.connect(gw.port, tok);
  });
  afterAll(async () => {
    await w.close();
  });

  it('bad_message: a number, a string, null instead of a map', async () => {
    for (const body of [42, 'hello', null, true]) {
      const e = await provoke(
        w,
        () => w.send(body, binary),
        (m) => m.reason === 'bad_message',
      );
      expect(e.binary).toBe(binary);
      expect(e.msg).toEqual({ op: 'error', reason: 'bad_message', message: 'a message is a map with an op' });
    }
    await alive(w, binary);
  });

  it('missing_field: no op (ref echoed)', async () => {
    const e = await provoke(
      w,
      () => w.send({ ref: 'noop-1', call: 'c-noop' }, binary),
      (m) => m.ref === 'noop-1',
    );
    expect(e.binary).toBe(binary);
    expect(e.msg).toEqual({
      op: 'error',
      ref: 'noop-1',
      call: 'c-noop',
      reason: 'missing_field',
      message: 'op is required',
    });
    await alive(w, binary);
  });

  it('missing_field: start without call', async () => {
    const e = await provoke(
      w,
      () => w.send({ op: 'start', ref: 'nocall', id: ID, dest: '4912345' }, binary),
      (m) => m.ref === 'nocall',
    );
    expect(e.msg).toEqual({
      op: 'error',
      ref: 'nocall',
      reason: 'missing_field',
      message: expect.stringContaining('call'),
    });
    await alive(w, binary);
  });

  it('missing_field: stop without sec, tick without call', async () => {
    const a = await provoke(
      w,
      () => w.send({ op: 'stop', ref: 'nosec', call: 'c-x' }, binary),
      (m) => m.ref === 'nosec',
    );
    expect(a.msg).toEqual({
      op: 'error',
      ref: 'nosec',
      call: 'c-x',
      reason: 'missing_field',
      message: expect.stringContaining('sec'),
    });
    const b = await provoke(
      w,
      () => w.send({ op: 'tick', ref: 'nocall-t', sec: 3 }, binary),
      (m) => m.ref === 'nocall-t',
    );
    expect(b.msg).toEqual({
      op: 'error',
      ref: 'nocall-t',
      reason: 'missing_field',
      message: expect.stringContaining('call'),
    });
    await alive(w, binary);
  });

  it('unknown_op, with ref and call echoed', async () => {
    const e = await provoke(
      w,
      () => w.send({ op: 'dance', ref: 'u1', call: 'c-dance' }, binary),
      (m) => m.ref === 'u1',
    );
    expect(e.binary).toBe(binary);
    expect(e.msg).toEqual({
      op: 'error',
      ref: 'u1',
      call: 'c-dance',
      reason: 'unknown_op',
      message: expect.stringContaining('dance'),
    });
    // Names that exist on every JS object are not ops either (an op that is no string is bad_type).
    for (const [i, op] of (['constructor', '__proto__', 'toString', ''] as unknown[]).entries()) {
      const x = await provoke(
        w,
        () => w.send({ op, ref: `u-${i}` }, binary),
        (m) => m.ref === `u-${i}`,
      );
      expect(x.msg).toEqual({ op: 'error', ref: `u-${i}`, reason: 'unknown_op', message: expect.any(String) });
    }
    await alive(w, binary);
  });

  it('bad_type: a listed field sent as null is not left out, and bills nothing', async () => {
    const call = `nulls-${++seq}-${binary ? 'b' : 'j'}`;
    const o = await provoke(
      w,
      () => w.send({ op: 'start', ref: 'n1', call, id: ID, dest: '4912345', origin: null }, binary),
      (m) => m.ref === 'n1',
    );
    expect(o.msg).toMatchObject({ ref: 'n1', call, reason: 'bad_type', message: expect.stringContaining('origin') });
    expect((await w.request({ op: 'start', ref: 'n2', call, id: ID, dest: '4912345' }, binary)).msg.op).toBe('started');
    // Go and Java encoders write unset fields as null unless told not to: a tick so sent is refused whole.
    const t = await provoke(
      w,
      () => w.send({ op: 'tick', call, sec: 5, ref: null }, binary),
      (m) => m.call === call,
    );
    expect(t.msg).toEqual({ op: 'error', call, reason: 'bad_type', message: expect.stringContaining('ref') });
    const now = await w.request({ op: 'tick', ref: 'n3', call, sec: 0 }, binary);
    expect(now.msg).toMatchObject({ op: 'ticked', balance: 1_000_000 });
    expect((await w.request({ op: 'stop', ref: 'n4', call, sec: 0 }, binary)).msg).toMatchObject({ cost: 0 });
    await alive(w, binary);
  });

  it('bad_type: sec as a string, id as a number, a fractional sec', async () => {
    const a = await provoke(
      w,
      () => w.send({ op: 'tick', ref: 't1', call: 'c-t', sec: '5' }, binary),
      (m) => m.ref === 't1',
    );
    expect(a.binary).toBe(binary);
    expect(a.msg).toEqual({
      op: 'error',
      ref: 't1',
      call: 'c-t',
      reason: 'bad_type',
      message: expect.stringContaining('sec'),
    });
    const b = await provoke(
      w,
      () => w.send({ op: 'stop', ref: 't2', call: 'c-t', sec: '5' }, binary),
      (m) => m.ref === 't2',
    );
    expect(b.msg).toEqual({
      op: 'error',
      ref: 't2',
      call: 'c-t',
      reason: 'bad_type',
      message: expect.stringContaining('sec'),
    });
    const c = await provoke(
      w,
      () => w.send({ op: 'start', ref: 't3', call: 'c-t', id: 4111111111111111, dest: '4912345' }, binary),
      (m) => m.ref === 't3',
    );
    expect(c.msg).toEqual({
      op: 'error',
      ref: 't3',
      call: 'c-t',
      reason: 'bad_type',
      message: expect.stringContaining('id'),
    });
    // A fractional second is not an integer: a type error too.
    const d = await provoke(
      w,
      () => w.send({ op: 'tick', ref: 't4', call: 'c-t', sec: 1.5 }, binary),
      (m) => m.ref === 't4',
    );
    expect(d.msg).toEqual({
      op: 'error',
      ref: 't4',
      call: 'c-t',
      reason: 'bad_type',
      message: expect.stringContaining('sec'),
    });
    await alive(w, binary);
  });

  it('bad_type: a number beyond ±2^53, even where the field has bounds; an op that is not a string', async () => {
    const a = await provoke(
      w,
      () => w.send({ op: 'tick', ref: 'big1', call: 'c-big', sec: 1e20 }, binary),
      (m) => m.ref === 'big1',
    );
    // The message names the rule broken, not the field's bounds.
    expect(a.msg).toMatchObject({
      op: 'error',
      ref: 'big1',
      reason: 'bad_type',
      message: 'sec must be an integer within ±2^53',
    });
    if (!binary) {
      // JSON's 1e400 is past a double's range: Infinity, no integer either.
      const inf = await provoke(
        w,
        () => w.raw('{"op":"tick","ref":"inf1","call":"c-inf","sec":1e400}', false),
        (m) => m.ref === 'inf1',
      );
      expect(inf.msg).toMatchObject({ reason: 'bad_type', message: 'sec must be an integer within ±2^53' });
    }
    // An ID sent as a number (16 digits are past 2^53) is told it must be a string.
    const num = await provoke(
      w,
      () => w.send({ op: 'start', ref: 'idnum', call: 'c-idnum', id: 6093123412341234, dest: '4912345' }, binary),
      (m) => m.ref === 'idnum',
    );
    expect(num.msg).toMatchObject({ reason: 'bad_type', message: 'id must be string' });
    // A ref is a string or an integer: a ref that is neither is told both forms, once each.
    const r = await provoke(
      w,
      () => w.send({ op: 'tick', ref: 'x'.repeat(65), call: 'c-ref', sec: 1 }, binary),
      (m) => m.call === 'c-ref',
    );
    expect(r.msg).toMatchObject({
      reason: 'bad_value',
      message: 'ref must NOT have more than 64 characters or must be integer',
    });
    const b = await provoke(
      w,
      () => w.send({ op: 'tick', ref: 2 ** 53, call: 'c-big2', sec: 1 }, binary),
      (m) => m.call === 'c-big2',
    );
    expect(b.msg).toMatchObject({ op: 'error', reason: 'bad_type' });
    const n = await provoke(
      w,
      () => w.send({ op: 5, ref: 'num-op' }, binary),
      (m) => m.ref === 'num-op',
    );
    expect(n.msg).toEqual({ op: 'error', ref: 'num-op', reason: 'bad_type', message: 'op must be string' });
    if (binary) {
      // MessagePack `bin` where a string belongs.
      const c = await provoke(
        w,
        () => w.raw(Buffer.from(pack({ op: Buffer.from('tick'), ref: 'bin1', call: 'c-bin', sec: 1 })), true),
        (m) => m.ref === 'bin1',
      );
      expect(c.msg).toMatchObject({ op: 'error', ref: 'bin1', reason: 'bad_type', message: 'op must be string' });
    }
    await alive(w, binary);
  });

  it('bad_value: negative sec, sec beyond a week, call id with spaces, dest with letters, bad cause', async () => {
    const cases: [Msg, string][] = [
      [{ op: 'stop', ref: 'v1', call: 'c-v', sec: -1 }, 'sec'],
      [{ op: 'tick', ref: 'v2', call: 'c-v', sec: 7 * 86400 + 1 }, 'sec'],
      [{ op: 'start', ref: 'v3', call: 'has space', id: ID, dest: '4912345' }, 'call'],
      [{ op: 'start', ref: 'v4', call: 'c-v', id: ID, dest: '49abc' }, 'dest'],
      [{ op: 'start', ref: 'v5', call: 'c-v', id: ID, dest: '' }, 'dest'],
      [{ op: 'stop', ref: 'v6', call: 'c-v', sec: 1, cause: 'no spaces please' }, 'cause'],
    ];
    for (const [m, field] of cases) {
      const e = await provoke(
        w,
        () => w.send(m, binary),
        (x) => x.ref === m.ref,
      );
      expect(e.binary).toBe(binary);
      expect(e.msg).toEqual({
        op: 'error',
        ref: m.ref,
        call: m.call,
        reason: 'bad_value',
        message: expect.stringContaining(field),
      });
    }
    await alive(w, binary);
  });

  it('every ref on this connection was answered exactly once', () => {
    const byRef = new Map<unknown, number>();
    for (const g of w.got) if (g.msg.ref !== undefined) byRef.set(g.msg.ref, (byRef.get(g.msg.ref) ?? 0) + 1);
    expect([...byRef.entries()].filter(([, n]) => n !== 1)).toEqual([]);
    expect(w.got.every((g) => g.binary === binary)).toBe(true);
  });
});

describe('refused by metering: ref and call echoed', () => {
  it.each(ENCODINGS)('$enc: unknown_call, bad_checksum, bad_format', async ({ binary }) => {
    const w = await Wire.connect(gw.port, tok);
    const a = await w.request({ op: 'tick', ref: 'm1', call: 'ghost', sec: 5 }, binary);
    expect(a.msg).toEqual({
      op: 'error',
      ref: 'm1',
      call: 'ghost',
      reason: 'unknown_call',
      message: expect.any(String),
    });
    const bad = ID.slice(0, -1) + String((Number(ID.slice(-1)) + 1) % 10);
    const b = await w.request({ op: 'start', ref: 'm2', call: 'ck', id: bad, dest: '4912345' }, binary);
    expect(b.msg).toEqual({ op: 'error', ref: 'm2', call: 'ck', reason: 'bad_checksum', message: expect.any(String) });
    const c = await w.request({ op: 'start', ref: 'm3', call: 'ck', id: '12345', dest: '4912345' }, binary);
    expect(c.msg).toEqual({ op: 'error', ref: 'm3', call: 'ck', reason: 'bad_format', message: expect.any(String) });
    await alive(w, binary);
    await w.close();
  });
});

describe('frame_too_large', () => {
  let small: Gateway;
  beforeAll(async () => {
    small = await gateway(h, { maxFrameBytes: 1024 });
  });
  afterAll(async () => {
    await small?.close();
  });

  /** A JSON ping of exactly n bytes (extra fields are ignored). */
  const pingOf = (n: number, ref: string): string => {
    const base = JSON.stringify({ op: 'ping', ref, pad: '' });
    const s = JSON.stringify({ op: 'ping', ref, pad: 'x'.repeat(n - base.length) });
    expect(Buffer.byteLength(s)).toBe(n);
    return s;
  };

  it('a frame of exactly maxFrameBytes is accepted; one byte more is refused and the connection stays up', async () => {
    const w = await Wire.connect(small.port, tok);
    const ok = await (async () => {
      const from = w.got.length;
      w.raw(pingOf(1024, 'fits'), false);
      return w.waitFor((m) => m.ref === 'fits', from);
    })();
    expect(ok.msg.op).toBe('pong');

    const e = await provoke(
      w,
      () => w.raw(pingOf(1025, 'over'), false),
      (m) => m.reason === 'frame_too_large',
    );
    expect(e.binary).toBe(false);
    expect(e.msg).toEqual({ op: 'error', reason: 'frame_too_large', message: 'frame of 1025 bytes exceeds 1024' });
    expect(w.withRef('over')).toHaveLength(0);
    await alive(w, false);

    const packed = pack({ op: 'ping', ref: 'bin', pad: 'y'.repeat(5000) });
    const eb = await provoke(
      w,
      () => w.raw(packed, true),
      (m) => m.reason === 'frame_too_large',
    );
    expect(eb.binary).toBe(true);
    expect(eb.msg).toEqual({
      op: 'error',
      reason: 'frame_too_large',
      message: `frame of ${packed.length} bytes exceeds 1024`,
    });
    expect(w.withRef('bin')).toHaveLength(0);
    await alive(w, true);
    await w.close();
  });

  it('a frame past the hard limit (MAX_FRAME_BYTES + 64 KiB) closes the connection', async () => {
    // Each connection may hold an unfinished frame up to the hard limit: it must stay small.
    const w = await Wire.connect(small.port, tok);
    w.raw(Buffer.alloc(1024 + 64 * 1024 + 1, 0x20), false);
    const closed = await w.closed;
    // uWS drops the socket (1006, no close frame) or says 1009 "message too big": either way it is gone.
    expect([1006, 1009]).toContain(closed.code);
    expect(w.got.filter((g) => g.msg.reason === 'frame_too_large')).toHaveLength(0);
    // Other connections are unaffected.
    const v = await Wire.connect(small.port, tok);
    await alive(v, false);
    await v.close();
  });
});

describe('batch_too_large', () => {
  let gwb: Gateway;
  beforeAll(async () => {
    gwb = await gateway(h, { maxBatch: 5 });
  });
  afterAll(async () => {
    await gwb?.close();
  });

  it.each(ENCODINGS)('$enc: 6 messages in a frame are refused as a whole, 5 are answered', async ({ binary }) => {
    const w = await Wire.connect(gwb.port, tok);
    const six = Array.from({ length: 6 }, (_, i) => ({ op: 'ping', ref: `six-${i}` }));
    const e = await provoke(
      w,
      () => w.send(six, binary),
      (m) => m.reason === 'batch_too_large',
    );
    expect(e.binary).toBe(binary);
    expect(e.msg).toEqual({ op: 'error', reason: 'batch_too_large', message: '6 messages in one frame, at most 5' });

    const five = Array.from({ length: 5 }, (_, i) => ({ op: 'ping', ref: `five-${i}` }));
    w.send(five, binary);
    for (let i = 0; i < 5; i++) expect((await w.waitFor((m) => m.ref === `five-${i}`)).msg.op).toBe('pong');
    // None of the refused batch ran.
    for (let i = 0; i < 6; i++) expect(w.withRef(`six-${i}`)).toHaveLength(0);
    await alive(w, binary);
    await w.close();
  });
});

describe('overloaded', () => {
  let one: Gateway;
  beforeAll(async () => {
    one = await gateway(h, { maxInflight: 1 });
  });
  afterAll(async () => {
    await one?.close();
  });

  it.each(ENCODINGS)(
    '$enc: with one request in flight allowed, the rest of a burst is refused with ref and call',
    async ({ binary }) => {
      const ids = await soldIds(h, talkProduct(), 3);
      const w = await Wire.connect(one.port, tok);
      const tag = binary ? 'b' : 'j';
      w.send(
        ids.map((id, i) => ({ op: 'start', ref: `${tag}${i}`, call: `ov-${tag}-${i}`, id, dest: '4912345' })),
        binary,
      );
      const first = await w.waitFor((m) => m.ref === `${tag}0`);
      expect(first.msg).toMatchObject({
        op: 'started',
        ref: `${tag}0`,
        call: `ov-${tag}-0`,
        maxSec: 10_000,
        balance: 1_000_000,
        rate: 100,
        fee: 0,
      });
      for (const i of [1, 2]) {
        const e = await w.waitFor((m) => m.ref === `${tag}${i}`);
        expect(e.binary).toBe(binary);
        expect(e.msg).toEqual({
          op: 'error',
          ref: `${tag}${i}`,
          call: `ov-${tag}-${i}`,
          reason: 'overloaded',
          message: expect.any(String),
        });
      }
      // The refused starts changed nothing: their IDs have no live call.
      for (const id of ids.slice(1)) {
        const { hash, bucket } = h.ctx.ids.hash(id);
        expect(await h.r.hget(`ts:{b${bucket}}:id:${hash}`, 'act')).toBe('0');
      }
      // Once the burst is over, requests go through again.
      const stop = await w.request({ op: 'stop', ref: `${tag}-stop`, call: `ov-${tag}-0`, sec: 2 }, binary);
      expect(stop.msg).toEqual({
        op: 'stopped',
        ref: `${tag}-stop`,
        call: `ov-${tag}-0`,
        billedSec: 2,
        cost: 200,
        balance: 999_800,
      });
      await alive(w, binary);
      await w.close();
    },
  );

  it('a burst of separate frames: every request answered once, each either served or overloaded', async () => {
    const w = await Wire.connect(one.port, tok);
    const n = 30;
    for (let i = 0; i < n; i++)
      w.json({ op: 'start', ref: `burst-${i}`, call: `burst-${i}`, id: '4111111111111111', dest: '4912345' });
    const answers = await Promise.all(Array.from({ length: n }, (_, i) => w.waitFor((m) => m.ref === `burst-${i}`)));
    const reasons = answers.map((a) => a.msg.reason as string);
    // The ID is not minted: a served start says unknown_id; the others were turned away.
    expect(reasons.every((r) => r === 'unknown_id' || r === 'overloaded')).toBe(true);
    expect(reasons.filter((r) => r === 'overloaded').length).toBeGreaterThan(0);
    for (let i = 0; i < n; i++) expect(w.withRef(`burst-${i}`)).toHaveLength(1);
    await alive(w, false);
    await w.close();
  });
});

describe('a ref used again', () => {
  // Refs are the switch's to choose: nothing deduplicates by them. The test client's request()
  // takes the answer that comes after its request, never an earlier one to the same ref.
  it('is answered again, by what the new request asks', async () => {
    const c = await Client.connect(gw.port, tok);
    try {
      expect(await c.request({ op: 'ping', ref: 'again' })).toMatchObject({ op: 'pong', ref: 'again' });
      expect(await c.request({ op: 'tick', ref: 'again', call: 'never-started', sec: 1 })).toMatchObject({
        op: 'error',
        ref: 'again',
        reason: 'unknown_call',
      });
    } finally {
      await c.close();
    }
  });
});

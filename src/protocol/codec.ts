/**
 * Frames are MessagePack (binary) or JSON (text) with one schema. Plain maps,
 * no msgpackr records: any MessagePack library on a switch must read our frames.
 */
import { C1, Packr } from 'msgpackr';

const packr = new Packr({
  useRecords: false,
  mapsAsObjects: true,
  moreTypes: false,
  // Switches that send every integer as int64 (Go, Java) must decode to plain numbers:
  // 'auto' gives a number when safe, else a BigInt, which the schemas refuse.
  // (msgpackr's types lack 'auto'.)
  int64AsType: 'auto' as 'number',
});
/**
 * uWS fails a connection whose text frame is not UTF-8 before a handler sees it
 * (RFC 6455 §8.1, docs/protocol.md); fatal keeps this decoder strict all the same.
 */
const utf8 = new TextDecoder('utf-8', { fatal: true });

export type Encoding = 'msgpack' | 'json';

export function decodeFrame(data: ArrayBuffer, isBinary: boolean): unknown {
  // uWS reuses the frame's memory after the handler returns: decode now, keep nothing.
  const bytes = new Uint8Array(data);
  if (!isBinary) return JSON.parse(utf8.decode(bytes));
  const body: unknown = packr.unpack(bytes);
  if (holdsNeverUsed(body)) throw new Error('MessagePack 0xC1 (never used)');
  return body;
}

/**
 * msgpackr decodes the reserved byte 0xC1 to a marker instead of failing. Frames
 * are an array of flat maps, so looking two levels down finds every marker a
 * valid message could hold; anything deeper fails its schema anyway.
 */
function holdsNeverUsed(v: unknown, depth = 0): boolean {
  if (v === C1) return true;
  if (depth > 2 || typeof v !== 'object' || v === null) return false;
  for (const x of Array.isArray(v) ? v : Object.values(v)) if (holdsNeverUsed(x, depth + 1)) return true;
  return false;
}

export function encodeFrame(msgs: readonly object[], enc: Encoding): Uint8Array | string {
  if (enc === 'json') return JSON.stringify(msgs.length === 1 ? msgs[0] : msgs);
  const wide = msgs.map(int64Fields);
  return packr.pack(wide.length === 1 ? wide[0] : wide);
}

/**
 * msgpackr writes integers beyond 32 bits as float64; exact up to 2^53, but a
 * client's decoder may insist on an integer type for money and times. Such
 * fields go out as int64 instead (our messages are flat maps, with at most one
 * nested map, e.g. firstUsed).
 */
function int64Fields(msg: object, depth = 0): object {
  let out: Record<string, unknown> | undefined;
  const m = msg as Record<string, unknown>;
  // for...in, not Object.entries: this runs for every message sent and must not allocate.
  for (const k in m) {
    const v = m[k];
    if (typeof v === 'number' && Number.isSafeInteger(v) && (v > 0xffffffff || v < -0x80000000))
      (out ??= { ...msg })[k] = BigInt(v);
    else if (depth === 0 && typeof v === 'object' && v !== null && !Array.isArray(v)) {
      const inner = int64Fields(v, 1);
      if (inner !== v) (out ??= { ...msg })[k] = inner;
    }
  }
  return out ?? msg;
}

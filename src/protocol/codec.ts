import { Packr } from 'msgpackr';

/**
 * Frames are MessagePack (binary) or JSON (text) with one schema. Plain maps,
 * no msgpackr records: any MessagePack library on a switch must read our frames.
 */
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });
const utf8 = new TextDecoder('utf-8', { fatal: true });

export type Encoding = 'msgpack' | 'json';

export function decodeFrame(data: ArrayBuffer, isBinary: boolean): unknown {
  // uWS reuses the frame's memory after the handler returns: decode now, keep nothing.
  const bytes = new Uint8Array(data);
  return isBinary ? packr.unpack(bytes) : JSON.parse(utf8.decode(bytes));
}

export function encodeFrame(msgs: readonly object[], enc: Encoding): Uint8Array | string {
  const body = msgs.length === 1 ? msgs[0] : msgs;
  return enc === 'msgpack' ? packr.pack(body) : JSON.stringify(body);
}

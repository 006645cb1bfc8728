/**
 * Netstrings (`<length>:<bytes>,`), the framing evapi puts around every
 * message in both directions when its netstring_format is on (the default).
 */

export function encodeNetstring(payload: string): Buffer {
  const body = Buffer.from(payload, 'utf8');
  return Buffer.concat([Buffer.from(`${body.length}:`), body, Buffer.from(',')]);
}

/**
 * The longest payload read: an evapi event of kamailio.cfg is a few hundred
 * bytes, and a length prefix is only a promise, so a peer that is not evapi
 * (or is broken) must not make the connector buffer gigabytes waiting for it.
 */
export const MAX_NETSTRING_BYTES = 1 << 20;

/** Splits a byte stream into netstring payloads; keeps a partial one until the rest arrives. */
export class NetstringReader {
  private buf: Buffer = Buffer.alloc(0);

  /** The payloads completed by `chunk`. Throws on a stream that is not netstrings. */
  push(chunk: Buffer): string[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: string[] = [];
    let pos = 0;
    for (;;) {
      const colon = this.buf.indexOf(0x3a, pos);
      if (colon < 0) {
        if (this.buf.length - pos > 10) throw new Error('netstring: length prefix too long');
        break;
      }
      const len = Number(this.buf.toString('latin1', pos, colon));
      if (!Number.isSafeInteger(len) || len < 0 || colon === pos) throw new Error('netstring: bad length prefix');
      if (len > MAX_NETSTRING_BYTES)
        throw new Error(`netstring: ${len} bytes announced, more than ${MAX_NETSTRING_BYTES}`);
      const end = colon + 1 + len;
      if (this.buf.length < end + 1) break;
      if (this.buf[end] !== 0x2c) throw new Error('netstring: missing trailing comma');
      out.push(this.buf.toString('utf8', colon + 1, end));
      pos = end + 1;
    }
    this.buf = pos === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(pos);
    return out;
  }

  reset(): void {
    this.buf = Buffer.alloc(0);
  }
}

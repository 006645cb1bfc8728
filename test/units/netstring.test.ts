/**
 * Netstrings as evapi frames them: payloads split across reads or several in
 * one, byte lengths, and streams that are not netstrings refused (the
 * connector then reconnects) rather than buffered without end.
 */
import { describe, expect, it } from 'vitest';
import { encodeNetstring, MAX_NETSTRING_BYTES, NetstringReader } from '../../src/kamailio/netstring';

describe('netstrings', () => {
  it('reads payloads split across chunks and several in one chunk', () => {
    const r = new NetstringReader();
    const bytes = Buffer.concat([encodeNetstring('{"ev":"invite"}'), encodeNetstring('é€'), encodeNetstring('')]);
    const got: string[] = [];
    for (let i = 0; i < bytes.length; i += 3) got.push(...r.push(bytes.subarray(i, i + 3)));
    expect(got).toEqual(['{"ev":"invite"}', 'é€', '']);
    expect(r.push(bytes)).toEqual(['{"ev":"invite"}', 'é€', '']);
  });

  it('refuses a stream that is not netstrings', () => {
    expect(() => new NetstringReader().push(Buffer.from('3:abc;'))).toThrow(/trailing comma/);
    expect(() => new NetstringReader().push(Buffer.from('x:abc,'))).toThrow(/length prefix/);
    expect(() => new NetstringReader().push(Buffer.from('12345678901'))).toThrow(/length prefix too long/);
  });

  it('refuses a length past the bound before waiting for its bytes', () => {
    const r = new NetstringReader();
    expect(r.push(Buffer.from(`${MAX_NETSTRING_BYTES}:`))).toEqual([]);
    expect(() => new NetstringReader().push(Buffer.from(`${MAX_NETSTRING_BYTES + 1}:`))).toThrow(/more than/);
    expect(() => new NetstringReader().push(Buffer.from('999999999:'))).toThrow(/more than/);
  });
});

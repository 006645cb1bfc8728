import { createHmac, hkdfSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { luhnDigit, luhnValid } from '../../src/ids/luhn';
import { checkId, generateId } from '../../src/ids/idnum';
import { IdKeys } from '../../src/ids/secrets';

describe('Luhn', () => {
  it.each([
    '79927398713',
    '4111111111111111',
    '4012888888881881',
    '378282246310005',
    '5555555555554444',
    '6011111111111117',
    '0',
    '18',
  ])('%s is valid', (n) => {
    expect(luhnValid(n)).toBe(true);
    expect(luhnDigit(n.slice(0, -1))).toBe(Number(n.slice(-1)));
  });

  it('computes the known check digits', () => {
    expect(luhnDigit('7992739871')).toBe(3);
    expect(luhnDigit('411111111111111')).toBe(1);
    expect(luhnDigit('37828224631000')).toBe(5);
    expect(luhnDigit('1')).toBe(8);
    expect(luhnDigit('')).toBe(0);
  });

  it.each(['79927398710', '79927398711', '79927398714', '4111111111111112', '378282246310006', '19'])(
    '%s is invalid',
    (n) => {
      expect(luhnValid(n)).toBe(false);
    },
  );

  it('catches every single-digit error', () => {
    const good = '4012888888881881';
    for (let i = 0; i < good.length; i++) {
      for (let d = 0; d <= 9; d++) {
        if (String(d) === good[i]) continue;
        expect(luhnValid(good.slice(0, i) + d + good.slice(i + 1)), `position ${i} → ${d}`).toBe(false);
      }
    }
  });

  it('catches adjacent transpositions except 09/90', () => {
    const good = '79927398713';
    for (let i = 0; i + 1 < good.length; i++) {
      const a = good[i]!;
      const b = good[i + 1]!;
      if (a === b || a + b === '09' || a + b === '90') continue;
      expect(luhnValid(good.slice(0, i) + b + a + good.slice(i + 2)), `swap at ${i}`).toBe(false);
    }
  });
});

describe('generateId', () => {
  it('2000 IDs of 16 digits: right length, first digit not 0, Luhn-valid, all distinct', () => {
    const seen = new Set<string>();
    const firsts = new Set<string>();
    const body = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const id = generateId(16);
      expect(id).toMatch(/^[1-9][0-9]{15}$/);
      expect(luhnValid(id)).toBe(true);
      expect(checkId(id, 16)).toEqual({ ok: true, id });
      seen.add(id);
      firsts.add(id[0]!);
      for (const ch of id.slice(1, -1)) body.add(ch);
    }
    expect(seen.size).toBe(2000);
    // Every non-zero digit shows up first, every digit in the body (chance of a miss: ~1e-100).
    expect([...firsts].sort().join('')).toBe('123456789');
    expect([...body].sort().join('')).toBe('0123456789');
  });

  it.each([12, 13, 20, 24])('length %i', (n) => {
    for (let i = 0; i < 200; i++) {
      const id = generateId(n);
      expect(id).toHaveLength(n);
      expect(id[0]).not.toBe('0');
      expect(luhnValid(id)).toBe(true);
    }
  });
});

describe('checkId', () => {
  it('accepts what a person types: spaces, dashes, tabs', () => {
    expect(checkId('7992 7398 713', 11)).toEqual({ ok: true, id: '79927398713' });
    expect(checkId('4111-1111-1111-1111', 16)).toEqual({ ok: true, id: '4111111111111111' });
    expect(checkId(' 4111 1111\t1111-1111 ', 16)).toEqual({ ok: true, id: '4111111111111111' });
  });

  it('refuses numbers: 16 digits do not survive a float', () => {
    expect(checkId(4111111111111111, 16)).toEqual({ ok: false, reason: 'bad_format' });
    expect(checkId(79927398713, 11)).toEqual({ ok: false, reason: 'bad_format' });
  });

  it.each([
    ['letters', '4111111111111a11'],
    ['a plus sign', '+411111111111111'],
    ['a dot', '4111.111111111111'],
    ['too short', '411111111111111'],
    ['too long', '41111111111111110'],
    ['empty', ''],
    ['only separators', '---- ----'],
    ['non-ASCII digits', '٤١١١١١١١١١١١١١١١'],
  ])('refuses %s as bad_format', (_what, input) => {
    expect(checkId(input, 16)).toEqual({ ok: false, reason: 'bad_format' });
  });

  it.each([null, undefined, {}, ['4111111111111111'], true])('refuses %j as bad_format', (input) => {
    expect(checkId(input, 16)).toEqual({ ok: false, reason: 'bad_format' });
  });

  it('a wrong check digit is bad_checksum', () => {
    expect(checkId('4111111111111112', 16)).toEqual({ ok: false, reason: 'bad_checksum' });
    expect(checkId('7992-7398-710', 11)).toEqual({ ok: false, reason: 'bad_checksum' });
  });
});

describe('IdKeys', () => {
  const A = Buffer.alloc(32, 0xa1);
  const B = Buffer.alloc(32, 0xb2);
  const id = '4111111111111111';

  it('hash is deterministic per secret, 32 hex chars, never the ID', () => {
    const k1 = new IdKeys(A, 64);
    const k2 = new IdKeys(Buffer.from(A), 64);
    const h1 = k1.hash(id);
    expect(h1).toEqual(k1.hash(id));
    expect(h1).toEqual(k2.hash(id));
    expect(h1.hash).toMatch(/^[0-9a-f]{32}$/);
    expect(h1.hash).not.toContain(id);
    expect(k1.hash('4012888888881881').hash).not.toBe(h1.hash);
  });

  it('is HMAC-SHA-256 under an HKDF-derived key: pinned so IDs in Redis stay findable', () => {
    const key = Buffer.from(hkdfSync('sha256', A, 'tessera', 'id-hmac', 32));
    const mac = createHmac('sha256', key).update(id).digest();
    expect(new IdKeys(A, 1024).hash(id)).toEqual({
      hash: mac.toString('hex', 0, 16),
      bucket: mac.readUInt32BE(16) % 1024,
    });
    expect(new IdKeys(A, 1024).bucketOf('sw:call-1')).toBe(
      createHmac('sha256', key).update('sw:call-1').digest().readUInt32BE(0) % 1024,
    );
  });

  it('spreadOf: keyed by the secret, in range, every place used', () => {
    const a = new IdKeys(A, 64);
    const b = new IdKeys(B, 64);
    const used = new Set<number>();
    let same = 0;
    for (let i = 0; i < 800; i++) {
      const p = a.spreadOf(`scanner:s${i}`, 8);
      expect(p).toBeGreaterThanOrEqual(0);
      expect(p).toBeLessThan(8);
      expect(a.spreadOf(`scanner:s${i}`, 8)).toBe(p);
      used.add(p);
      if (b.spreadOf(`scanner:s${i}`, 8) === p) same++;
    }
    expect(used.size).toBe(8);
    // Another secret spreads otherwise: about one in eight agree by chance.
    expect(same).toBeLessThan(200);
  });

  it('another secret gives another hash', () => {
    expect(new IdKeys(B, 64).hash(id).hash).not.toBe(new IdKeys(A, 64).hash(id).hash);
  });

  it('buckets stay in range and all get used', () => {
    const k = new IdKeys(A, 64);
    const used = new Set<number>();
    for (let i = 0; i < 3000; i++) {
      const { bucket } = k.hash(generateId(16));
      expect(Number.isInteger(bucket)).toBe(true);
      expect(bucket).toBeGreaterThanOrEqual(0);
      expect(bucket).toBeLessThan(64);
      used.add(bucket);
      const b2 = k.bucketOf(`sw:${i}`);
      expect(b2).toBeGreaterThanOrEqual(0);
      expect(b2).toBeLessThan(64);
    }
    expect(used.size).toBe(64);
    const one = new IdKeys(A, 1);
    for (let i = 0; i < 50; i++) expect(one.hash(generateId(16)).bucket).toBe(0);
  });

  it('refuses a secret under 32 bytes', () => {
    expect(() => new IdKeys(Buffer.alloc(31, 1), 64)).toThrow(/32 bytes/);
  });

  it('seal/unseal round-trips; each seal is different; the sealed text hides the ID', () => {
    const k = new IdKeys(A, 64);
    const s1 = k.seal(id);
    const s2 = k.seal(id);
    expect(s1).not.toBe(s2);
    expect(s1).not.toContain(id);
    expect(Buffer.from(s1, 'base64').toString('latin1')).not.toContain(id);
    expect(k.unseal(s1)).toBe(id);
    expect(k.unseal(s2)).toBe(id);
    expect(new IdKeys(Buffer.from(A), 8).unseal(s1)).toBe(id);
  });

  it('unseal detects tampering and the wrong key', () => {
    const k = new IdKeys(A, 64);
    const sealed = Buffer.from(k.seal(id), 'base64');
    // iv (12) | tag (16) | ciphertext: flip one bit in each part.
    for (const at of [0, 11, 12, 27, 28, sealed.length - 1]) {
      const bad = Buffer.from(sealed);
      bad[at]! ^= 0x01;
      expect(() => k.unseal(bad.toString('base64')), `byte ${at}`).toThrow();
    }
    expect(() => k.unseal(sealed.subarray(0, sealed.length - 1).toString('base64'))).toThrow();
    expect(() => new IdKeys(B, 64).unseal(sealed.toString('base64'))).toThrow();
  });
});

/**
 * Key material derived from the one server secret. Redis sees only keyed hashes
 * of ID numbers; the clear number is kept sealed (AES-256-GCM) for the
 * PIN-protected check page, so a Redis dump gives away no usable ID.
 */
import { createCipheriv, createDecipheriv, createHmac, hash as digest, hkdfSync } from 'node:crypto';
import { randomCopy } from './random';

export interface IdHash {
  /** 32 hex chars of HMAC-SHA-256(id): the ID's name inside Redis. */
  hash: string;
  /** Hash-tag bucket, 0..buckets-1. */
  bucket: number;
}

export class IdKeys {
  private readonly hmacKey: Buffer;
  private readonly sealKey: Buffer;
  /** Prefix of spreadOf's hashes. */
  private readonly spreadSalt: string;

  constructor(
    secret: Buffer,
    readonly buckets: number,
  ) {
    if (secret.length < 32) throw new Error('TESSERA_SECRET must hold at least 32 bytes');
    this.hmacKey = Buffer.from(hkdfSync('sha256', secret, 'tessera', 'id-hmac', 32));
    this.sealKey = Buffer.from(hkdfSync('sha256', secret, 'tessera', 'id-seal', 32));
    this.spreadSalt = Buffer.from(hkdfSync('sha256', secret, 'tessera', 'spread', 32)).toString('hex');
  }

  hash(id: string): IdHash {
    const mac = createHmac('sha256', this.hmacKey).update(id).digest();
    return { hash: mac.toString('hex', 0, 16), bucket: mac.readUInt32BE(16) % this.buckets };
  }

  /** Keyed hash of any other secret-ish string (call ids, tokens) with its bucket. */
  bucketOf(text: string): number {
    return createHmac('sha256', this.hmacKey).update(text).digest().readUInt32BE(0) % this.buckets;
  }

  /**
   * Which of n places a string goes to, for spreading work (a scan id's claim):
   * keyed, so a client cannot aim its strings at one place, but one SHA-256 of
   * salt and text rather than an HMAC (a third of the CPU; a spread is no MAC).
   */
  spreadOf(text: string, n: number): number {
    return digest('sha256', this.spreadSalt + text, 'buffer').readUInt32BE(0) % n;
  }

  /** Keyed hash (hex) of any text: request fingerprints, reproducible link tokens. */
  mac(text: string): string {
    return createHmac('sha256', this.hmacKey).update(text).digest('hex');
  }

  seal(id: string): string {
    const iv = randomCopy(12);
    const c = createCipheriv('aes-256-gcm', this.sealKey, iv);
    const ct = Buffer.concat([c.update(id, 'utf8'), c.final()]);
    return Buffer.concat([iv, c.getAuthTag(), ct]).toString('base64');
  }

  unseal(sealed: string): string {
    const buf = Buffer.from(sealed, 'base64');
    const d = createDecipheriv('aes-256-gcm', this.sealKey, buf.subarray(0, 12));
    d.setAuthTag(buf.subarray(12, 28));
    return Buffer.concat([d.update(buf.subarray(28)), d.final()]).toString('utf8');
  }
}

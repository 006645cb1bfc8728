import { createCipheriv, createDecipheriv, createHmac, hkdfSync } from 'node:crypto';
import { randomCopy } from './random';

/**
 * Key material derived from the one server secret. Redis sees only keyed hashes
 * of ID numbers; the clear number is kept sealed (AES-256-GCM) for the
 * PIN-protected check page, so a Redis dump gives away no usable ID.
 */
export interface IdHash {
  /** 32 hex chars of HMAC-SHA-256(id): the ID's name inside Redis. */
  hash: string;
  /** Hash-tag bucket, 0..buckets-1. */
  bucket: number;
}

export class IdKeys {
  private readonly hmacKey: Buffer;
  private readonly sealKey: Buffer;

  constructor(
    secret: Buffer,
    readonly buckets: number,
  ) {
    if (secret.length < 32) throw new Error('TESSERA_SECRET must hold at least 32 bytes');
    this.hmacKey = Buffer.from(hkdfSync('sha256', secret, 'tessera', 'id-hmac', 32));
    this.sealKey = Buffer.from(hkdfSync('sha256', secret, 'tessera', 'id-seal', 32));
  }

  hash(id: string): IdHash {
    const mac = createHmac('sha256', this.hmacKey).update(id).digest();
    return { hash: mac.toString('hex', 0, 16), bucket: mac.readUInt32BE(16) % this.buckets };
  }

  /** Keyed hash of any other secret-ish string (call ids, tokens) with its bucket. */
  bucketOf(text: string): number {
    return createHmac('sha256', this.hmacKey).update(text).digest().readUInt32BE(0) % this.buckets;
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

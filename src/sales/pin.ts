/**
 * Buyer PINs are stored as scrypt hashes (memory-hard, salted), never in clear:
 * a Redis dump does not give away the PINs that unlock check pages. The cost
 * parameters travel with the hash so they can be raised later.
 *
 * The encoding is compact, `s$<log2 N>$<r>$<p>$<salt>$<key>` in unpadded
 * base64url (58 bytes): it lives in the ID's hash, and a value over Redis'
 * `hash-max-listpack-value` (64 bytes) turns the whole hash from a listpack
 * into a hashtable, about four times the memory per sold ID. Hashes written in
 * the first, longer form (`scrypt$<N>$…`, 86 bytes) are still verified.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const LOG_N = 14;
const COST: ScryptOptions = { N: 1 << LOG_N, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
/** 96 bits of salt and a 192-bit key: far more than a PIN's own entropy needs. */
const SALT_BYTES = 12;
const KEYLEN = 24;

function derive(pin: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(pin, salt, keylen, opts, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

export async function hashPin(pin: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(pin, salt, KEYLEN, COST);
  return `s$${LOG_N}$${COST.r}$${COST.p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

export async function verifyPin(pin: string, encoded: string): Promise<boolean> {
  const [scheme, n, r, p, salt, key] = encoded.split('$');
  if (!salt || !key) return false;
  let N: number;
  let encoding: BufferEncoding;
  if (scheme === 's') [N, encoding] = [2 ** Number(n), 'base64url'];
  else if (scheme === 'scrypt') [N, encoding] = [Number(n), 'base64'];
  else return false;
  const want = Buffer.from(key, encoding);
  if (want.length === 0) return false;
  const got = await derive(pin, Buffer.from(salt, encoding), want.length, {
    N,
    r: Number(r),
    p: Number(p),
    maxmem: COST.maxmem,
  });
  return got.length === want.length && timingSafeEqual(got, want);
}

/**
 * PIN hashes: the compact form verifies the right PIN only, and hashes in the
 * first, longer form (already in Redis for IDs sold before) still verify.
 */
import { randomBytes, scryptSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { hashPin, verifyPin } from '../../src/sales/pin';

describe('PIN hashes', () => {
  it('are at most 64 bytes and verify the right PIN only', async () => {
    const encoded = await hashPin('4821');
    expect(encoded.length).toBeLessThanOrEqual(64);
    expect(encoded).toMatch(/^s\$14\$8\$1\$[\w-]+\$[\w-]+$/);
    expect(await verifyPin('4821', encoded)).toBe(true);
    expect(await verifyPin('4822', encoded)).toBe(false);
    // A fresh salt each time: the same PIN never hashes alike.
    expect(await hashPin('4821')).not.toBe(encoded);
  });

  it('still verify in the first form, scrypt$N$r$p$salt$key in padded base64', async () => {
    const salt = randomBytes(16);
    const key = scryptSync('0507', salt, 32, { N: 16384, r: 8, p: 1 });
    const old = `scrypt$16384$8$1$${salt.toString('base64')}$${key.toString('base64')}`;
    expect(old.length).toBe(86);
    expect(await verifyPin('0507', old)).toBe(true);
    expect(await verifyPin('0508', old)).toBe(false);
  });

  it('reject what is not a hash', async () => {
    for (const bad of ['', 'x', 'bcrypt$1$2$3$abc$def', 's$14$8$1$$', 's$14$8$1$c2FsdA$']) {
      expect(await verifyPin('1234', bad), bad).toBe(false);
    }
  });
});

/**
 * CSPRNG bytes served from a refilled pool: one getrandom syscall per 64 KiB
 * instead of one per ID, which is what makes minting a million IDs fast.
 */
import { randomFillSync } from 'node:crypto';

const pool = Buffer.alloc(64 * 1024);
let pos = pool.length;

export function randomByte(): number {
  if (pos >= pool.length) {
    randomFillSync(pool);
    pos = 0;
  }
  return pool[pos++]!;
}

/** A fresh copy of n random bytes (n far below the pool size). */
export function randomCopy(n: number): Buffer {
  if (pos + n > pool.length) {
    randomFillSync(pool);
    pos = 0;
  }
  const out = Buffer.from(pool.subarray(pos, pos + n));
  pos += n;
  return out;
}

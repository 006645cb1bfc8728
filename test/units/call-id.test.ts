/**
 * Tessera call ids from Kamailio dialogs: one per dialog, so two dialogs of
 * one Call-ID are two calls; readable when they fit, and the SIP Call-ID
 * read back from them.
 */
import { describe, expect, it } from 'vitest';
import { callIdOf, sipCallIdOf } from '../../src/kamailio/call-id';

describe('kamailio call ids', () => {
  it('names a dialog by its Call-ID and its hash entry and id, and reads the Call-ID back', () => {
    expect(callIdOf('1-42@127.0.0.1', 3120, 7)).toBe('1-42@127.0.0.1:3120.7');
    expect(sipCallIdOf('1-42@127.0.0.1:3120.7')).toBe('1-42@127.0.0.1');
    // A Call-ID with colons of its own: the suffix is read from the right.
    expect(sipCallIdOf(callIdOf('a:1.2', 5, 6))).toBe('a:1.2');
  });

  it('gives two dialogs of one Call-ID two call ids, and one dialog the same one every time', () => {
    expect(callIdOf('x@h', 10, 1)).not.toBe(callIdOf('x@h', 10, 2));
    expect(callIdOf("o'brien@probe", 10, 1)).toBe(callIdOf("o'brien@probe", 10, 1));
    expect(callIdOf("o'brien@probe", 10, 1)).not.toBe(callIdOf("o'brien@probe", 10, 2));
  });

  it('hashes what does not fit the protocol: never a name another dialog could have', () => {
    const hashed = callIdOf("o'brien@probe", 10, 1);
    expect(hashed).toMatch(/^h-[A-Za-z0-9_-]{43}$/);
    expect(sipCallIdOf(hashed)).toBeUndefined();
    expect(callIdOf('c'.repeat(62), 1, 1)).toMatch(/^h-/);
  });
});

/**
 * The buyer pages' digit fields: digits of any script read as ASCII, at a cost
 * that does not depend on where a digit sits in its script's run. Anyone may
 * send a 16 KB form, and it is read before any limit counts the client: a digit
 * found by walking back to its run's start cost up to 50 lookups, and a form
 * of such digits held the event loop for milliseconds.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { digitsField } from '../../src/gateway/routes/pages/kit';

afterEach(() => {
  vi.restoreAllMocks();
});

describe('digitsField', () => {
  it('reads the digits of other scripts as ASCII, the mathematical runs by their own place, without white space', () => {
    const f = new URLSearchParams({ a: '٢٤٦٨', b: '２４６８', c: '\u{1D7CE}\u{1D7D7}\u{1D7FF}', d: '4 0-x' });
    expect(['a', 'b', 'c', 'd'].map((k) => digitsField(f, k))).toEqual(['2468', '2468', '099', '40-x']);
  });

  it('looks each character up about once, wherever its digit sits in its run', () => {
    // 𝟿 (U+1D7FF) ends the 50 mathematical digits: walking back to their start is 50 lookups.
    const form = new URLSearchParams({ pin: '\u{1D7FF}'.repeat(4000) });
    // Work counted, not timed: regular expression tests, before the fix about 51 a character.
    const tests = vi.spyOn(RegExp.prototype, 'test');
    expect(digitsField(form, 'pin')).toBe('9'.repeat(4000));
    expect(tests.mock.calls.length).toBeLessThan(2 * 4000);
  });
});

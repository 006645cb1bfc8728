/**
 * Kamailio's fail-safe by the failure policy, and which ticks ask for the
 * grant: every tick that may re-grant, and none in the first half of a slice.
 */
import { describe, expect, it } from 'vitest';
import { asksForGrant, failSafeSec, paidEnd } from '../../src/kamailio/fail-safe';

describe('kamailio fail-safe', () => {
  it('is the grant under terminate, and under continue the grant plus failureSec within what the balance pays', () => {
    expect(failSafeSec(60, 500, { onFailure: 'terminate', failureSec: 120 })).toBe(60);
    expect(failSafeSec(60, 500, { onFailure: 'continue', failureSec: 120 })).toBe(180);
    expect(failSafeSec(60, 100, { onFailure: 'continue', failureSec: 120 })).toBe(100);
    // A final grant: nothing free past it, so nothing past it either.
    expect(failSafeSec(60, 60, { onFailure: 'continue', failureSec: 120 })).toBe(60);
  });

  it('asks on the ticks where Tessera re-grants (less than half a slice left), and not before', () => {
    // A 60 s slice: Tessera re-grants at the tick that finds fewer than 30 s left.
    const g = { grant: 60, final: false };
    expect(asksForGrant(g, 60, 30, 500)).toBe(false);
    expect(asksForGrant(g, 60, 31, 500)).toBe(true);
    expect(asksForGrant(g, 60, 61, 500)).toBe(true);
    // A 3 s slice re-grants at second 2 (1 s left < 2).
    expect(asksForGrant({ grant: 3, final: false }, 3, 1, 100)).toBe(false);
    expect(asksForGrant({ grant: 3, final: false }, 3, 2, 100)).toBe(true);
    expect(asksForGrant({ grant: 60, final: true }, 60, 59, 60)).toBe(false);
  });

  it('asks on the last paid second, final grant or not: a top-up during the call is re-granted there', () => {
    expect(asksForGrant({ grant: 60, final: true }, 60, 60, 60)).toBe(true);
    expect(asksForGrant({ grant: 60, final: true }, 60, 61, 60)).toBe(true);
  });

  it("aims the last paid second at the latest answer's sec + secLeft, below maxSec or past it", () => {
    expect(paidEnd(10, undefined)).toBe(10);
    // Another call of the ID reserved the rest: this one's money ends at 6 s.
    expect(paidEnd(10, 6)).toBe(6);
    // The ID was topped up during the call: it talks on past the maxSec of its start.
    expect(paidEnd(10, 14)).toBe(14);
  });
});

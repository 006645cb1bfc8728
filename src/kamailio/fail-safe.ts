/**
 * Kamailio's own fail-safe for a metered call: the dialog timeout that cuts
 * the call when its metering is lost (the connector gone, every gateway
 * down). It follows the call's grant, not its maxSec: a product that grants
 * in slices (maxCalls above 1) reserves one slice at a time, and a call let
 * run to maxSec would talk on the shared balance, past what it holds.
 *
 * The connector learns each re-grant from the `ticked` answers of the ticks
 * that may bring one, and moves the timeout on (docs/switches.md#fail-safe).
 */

/** A call's grant as Tessera last told it (`started`, `ticked`). */
export interface Grant {
  /** Seconds since answer the call's reservation carries it to. */
  grant: number;
  /** No re-grant will follow. */
  final: boolean;
}

/** The product's failure policy, from `started` (docs/protocol.md#credit-control). */
export interface FailurePolicy {
  onFailure: 'terminate' | 'continue';
  failureSec: number;
}

/**
 * Seconds since answer the call may reach while its metering is lost:
 * `terminate`, its grant; `continue`, up to `failureSec` past it, but never
 * past `horizon`, the seconds what was free could pay when Tessera last
 * answered (maxSec at start; sec + secLeft of a `ticked`): seconds beyond
 * it would be recorded short, that is given away.
 */
export function failSafeSec(grant: number, horizon: number, p: FailurePolicy): number {
  if (p.onFailure !== 'continue') return grant;
  return Math.max(grant, Math.min(grant + p.failureSec, horizon));
}

/**
 * Whether a tick of `sec` asks for its `ticked` answer, to learn a re-grant.
 * Tessera re-grants on a tick that finds less than half a slice left of the
 * grant, and a first grant that is not final is at least one slice: asking
 * while less than half the first grant is left hears every re-grant, and
 * most ticks go without a ref (the tick path stays one-way). The tick of the
 * last paid second (`end`, paidEnd) always asks: money topped up during the
 * call is re-granted there, final grant or not, and only the answer tells.
 */
export function asksForGrant(g: Grant, firstGrant: number, sec: number, end: number): boolean {
  // The last paid second's tick asks too, final grant or not: a top-up re-grants there.
  return sec >= end || (!g.final && g.grant - sec < Math.ceil(firstGrant / 2));
}

/**
 * The seconds since answer the call's money pays for, as Tessera last told:
 * `horizon` is sec + secLeft of the latest `ticked` (undefined before one),
 * else the start's maxSec. Either way the newest word wins: it falls short of
 * maxSec when other calls of the ID took what was free, and goes past it when
 * the ID was topped up during the call. The connector sends the tick of that
 * second early, asking for its answer (`asksForGrant`).
 */
export function paidEnd(maxSec: number, horizon: number | undefined): number {
  return horizon ?? maxSec;
}

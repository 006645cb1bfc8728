/**
 * The billing rule: a started second is a billed second. A call answered at
 * `answerUs` and ended at `endUs` (microseconds, both Kamailio's clock) is
 * billed ceil(duration) seconds, at least one once answered. Ticks claim
 * completed seconds (connector.ts), so a hang-up racing the next tick never
 * adds one.
 */
export function billedSeconds(answerUs: number, endUs: number): number {
  return Math.max(1, Math.ceil(Math.max(0, endUs - answerUs) / 1e6));
}

/** Kamailio's $TV(Sn) ("seconds.microseconds", read as a JSON number) in whole microseconds. */
export const kamailioUs = (ts: number): number => Math.round(ts * 1e6);

/**
 * What kamailio.cfg (deploy/kamailio/) sends the connector over evapi, and
 * what the connector answers. One JSON object per netstring. Timestamps are
 * Kamailio's clock, seconds with microseconds ($TV(Sn)).
 */

/** An INVITE suspended until the connector admits or refuses it. */
export interface InviteEvent {
  ev: 'invite';
  /** SIP Call-ID. */
  ci: string;
  /** The suspended transaction (t_continue's index and label). */
  ti: number;
  tl: number;
  /** The dialog's hash entry and id: the continuation has no dialog context, so they travel with the event. */
  he: number;
  hi: number;
  id: string;
  dest: string;
  /** The INVITE's source address ($si): the call's origin, so that unknown IDs count per caller. */
  si?: string;
  ts: number;
}

/** A dialog's 200 OK (answer), its end (BYE or Kamailio's timeout) or its failure (negative reply, CANCEL). */
export interface DialogEvent {
  ev: 'answer' | 'end' | 'failed';
  ci: string;
  he: number;
  hi: number;
  id: string;
  dest: string;
  ts: number;
  /** When the dialog was answered, on `end` events (so any connector can bill a call it did not see start). */
  ats?: number;
  /** The final reply code of a failed dialog, when Kamailio knows it. */
  code?: string;
}

export type KamailioEvent = InviteEvent | DialogEvent;

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isStr = (v: unknown): v is string => typeof v === 'string';

/** Parses one evapi payload; undefined for anything that is not a well-formed event. */
export function parseEvent(payload: string): KamailioEvent | undefined {
  let e: Record<string, unknown>;
  try {
    e = JSON.parse(payload) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof e !== 'object' || e === null || !isStr(e.ci) || !isNum(e.ts)) return undefined;
  if (!isNum(e.he) || !isNum(e.hi) || !isStr(e.id) || !isStr(e.dest)) return undefined;
  if (e.ev === 'invite') return isNum(e.ti) && isNum(e.tl) ? (e as unknown as InviteEvent) : undefined;
  if (e.ev === 'answer' || e.ev === 'end' || e.ev === 'failed') return e as unknown as DialogEvent;
  return undefined;
}

/**
 * The admission: Kamailio relays the INVITE with a dialog timeout of `sec`
 * (the fail-safe, fail-safe.ts) plus its grace, counted from the answer.
 */
export const admitReply = (e: InviteEvent, sec: number): string =>
  JSON.stringify({ ti: e.ti, tl: e.tl, he: e.he, hi: e.hi, sec });

/**
 * A later fail-safe, after a re-grant: Kamailio moves the dialog's timeout to
 * `until` (its own clock, whole seconds) plus its grace. An absolute time, so
 * that the answer time and the time of setting it are read on one clock, and
 * a repeat from a second connector sets the same.
 */
export const failSafeReply = (he: number, hi: number, until: number): string => JSON.stringify({ he, hi, until });

/** The refusal: Kamailio maps Tessera's reason to a SIP answer (docs/switches.md). */
export const refuseReply = (e: InviteEvent, reason: string): string => JSON.stringify({ ti: e.ti, tl: e.tl, reason });

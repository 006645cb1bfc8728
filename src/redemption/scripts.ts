/**
 * The redemption domain's Lua scripts (lua/scan_claim, redeem, validate and
 * reverse), one function each: it lays out KEYS and ARGV as the script's header
 * says and decodes the reply into a named type, so no other file reads a raw
 * reply. Every call goes through Scripts, which times it (Scripts.timer).
 */
import { bucketOfKey, keys } from '../redis/keys';
import type { Scripts } from '../redis/scripts';
import { num, replyError, str, tagged } from '../redis/reply';

export interface Granted {
  kind: string;
  action: string;
  /** What was taken: entries or uses (1, or 0 for an exit or re-entry), or micro-units for goods. */
  amount: number;
  /** What is left: entries, uses or micro-units. */
  left: number;
  record?: string;
  duplicate?: boolean;
  /** On a retry: the redemption has been reversed since. */
  reversed?: boolean;
}

export interface Refusal {
  reason: string;
  firstUsed?: { time: number; venue: string; gate: string };
  valueLeft?: number;
  validFrom?: number;
  retryAfter?: number;
}

/** A scan's answer: from a script, or a refusal the gateway makes without one (throttled, bad_format...). */
export type Answer = ({ ok: true } & Granted) | ({ ok: false } & Refusal);

/** What a scan asks of an ID, resolved without Redis: the arguments of redeem and validate. */
export interface ScanTerms {
  readonly idKey: string;
  readonly idHash: string;
  readonly venue: string;
  readonly gate: string;
  readonly item: string;
  readonly qty: number;
  readonly dir: string;
  /** Micro-units for goods; -1 when the venue does not sell the item. */
  readonly amount: number;
}

/** A scan waiting for its scan key's bucket's next scan_claim. */
export interface ClaimItem {
  /** '<scanner>:<scan id>' */
  readonly scanKey: string;
  /** What the claim holds for this scan: the ID key, item, quantity and direction. */
  readonly claimTerms: string;
}

/** A claimed scan waiting for its ID's bucket's next redeem. */
export interface RedeemItem {
  readonly t: ScanTerms;
  /** The scanner's token name. */
  readonly scanner: string;
  readonly scan: string;
  /** '<scanner>:<scan id>' */
  readonly scanKey: string;
  /** When the scan was made, by the scanner's clock (ms): an offline scan; undefined for now. */
  readonly at: number | undefined;
  /** When an offline scan reached the gateway (ms): its time is bounded from then, not from its turn. */
  readonly arrived: number;
}

/** How far from its arrival the time an offline scan says it was made may be (ms). */
export interface ScanTimeBounds {
  /** How long ago, at most. */
  readonly maxAgeMs: number;
  /** How far ahead (the scanner's clock running fast), at most. */
  readonly skewMs: number;
}

/** scan_claim's answer for one scan: claimed by this scan now... */
export const CLAIMED = 0;
/** ...already claimed with the same terms (a retry)... */
export const CLAIM_RETRY = 1;
/** ...or claimed with other terms (scan_conflict). */
export const CLAIM_TAKEN = 2;
export type ClaimCode = typeof CLAIMED | typeof CLAIM_RETRY | typeof CLAIM_TAKEN;

/** Called once per scan of a batch, in order: with its answer, or with the error that kept it from one. */
export type EachScan<T, R> = (item: T, err: unknown, r?: R) => void;

/**
 * Where a batch's scans are looked up: the window hashes (the first is written)
 * and, while scans of the per-scan key layout can be left, those keys too.
 */
export interface ScanPlaces {
  readonly windows: readonly string[];
  /** When windows[0] expires (ms since the epoch). */
  readonly expiresAt: number;
  readonly legacy: boolean;
}

/**
 * Claims one claim bucket's scan ids in one scan_claim and hands each scan its
 * claim, in order, after `settled`. New claims go into `at.windows[0]`.
 */
export function scanClaim<T extends ClaimItem>(
  scripts: Scripts,
  bucket: number,
  batch: readonly T[],
  at: ScanPlaces,
  settled: () => void,
  each: EachScan<T, ClaimCode>,
): void {
  const n = batch.length;
  const m = at.windows.length;
  const nKeys = m + (at.legacy ? n : 0);
  const call = new Array<string | number>(1 + nKeys + 3 + 2 * n);
  call[0] = nKeys;
  for (let k = 0; k < m; k++) call[1 + k] = at.windows[k]!;
  let a = 1 + nKeys;
  call[a++] = m;
  call[a++] = at.expiresAt;
  call[a++] = at.legacy ? 1 : 0;
  for (let i = 0; i < n; i++) {
    const p = batch[i]!;
    if (at.legacy) call[1 + m + i] = keys.scanIndex(bucket, p.scanKey);
    call[a++] = p.scanKey;
    call[a++] = p.claimTerms;
  }
  scripts.runFlat('scan_claim', call).then(
    (reply) => {
      settled();
      if (!Array.isArray(reply) || reply.length < n) {
        const err = replyError('scan_claim', reply);
        for (const p of batch) each(p, err);
        return;
      }
      const codes: readonly unknown[] = reply;
      for (let i = 0; i < n; i++) {
        const p = batch[i]!;
        const code = codes[i];
        if (code === CLAIMED || code === CLAIM_RETRY || code === CLAIM_TAKEN) each(p, undefined, code);
        // The error reply's text keeps its code: NOREPLICAS is `unavailable`, WRONGTYPE `internal` (failureReason).
        else if (typeof code === 'string') each(p, new Error(`scan_claim failed on ${p.scanKey}: ${code}`));
        else each(p, replyError('scan_claim', codes));
      }
    },
    (err: unknown) => {
      settled();
      for (const p of batch) each(p, err);
    },
  );
}

/**
 * Applies one bucket's claimed scans in one redeem and hands each scan its
 * answer, in order, after `settled`. The call is one array (key count, keys,
 * arguments) and the reply, eight entries per scan, is read in place. Only a
 * batch holding an offline scan says so (keys per scan + 10) and carries how
 * far from its arrival a scan time may be, and per scan its time and when it
 * arrived: any other call is the same as before offline scans.
 */
export function redeem<T extends RedeemItem>(
  scripts: Scripts,
  bucket: number,
  batch: readonly T[],
  now: number,
  at: ScanPlaces,
  bounds: ScanTimeBounds,
  settled: () => void,
  each: EachScan<T, Answer>,
): void {
  const n = batch.length;
  const m = at.windows.length;
  const stride = at.legacy ? 2 : 1;
  let timed = false;
  for (let i = 0; i < n; i++) if (batch[i]!.at !== undefined) timed = true;
  const nKeys = 1 + m + stride * n;
  const call = new Array<string | number>(1 + nKeys + (timed ? 6 + 11 * n : 4 + 9 * n));
  call[0] = nKeys;
  call[1] = keys.redemptions(bucket);
  for (let k = 0; k < m; k++) call[2 + k] = at.windows[k]!;
  let a = 1 + nKeys;
  call[a++] = now;
  call[a++] = m;
  call[a++] = at.expiresAt;
  call[a++] = timed ? stride + 10 : stride;
  if (timed) {
    call[a++] = bounds.maxAgeMs;
    call[a++] = bounds.skewMs;
  }
  for (let i = 0; i < n; i++) {
    const p = batch[i]!;
    const t = p.t;
    const k = 2 + m + stride * i;
    call[k] = t.idKey;
    if (at.legacy) call[k + 1] = keys.scan(bucket, p.scanKey);
    call[a++] = t.venue;
    call[a++] = t.gate;
    call[a++] = t.item;
    call[a++] = t.amount;
    call[a++] = t.qty;
    call[a++] = t.dir;
    call[a++] = p.scanner;
    call[a++] = p.scan;
    call[a++] = t.idHash;
    if (timed) {
      call[a++] = p.at ?? '';
      call[a++] = p.arrived;
    }
  }
  scripts.runFlat('redeem', call).then(
    (reply) => {
      settled();
      if (!Array.isArray(reply) || reply.length < 8 * n) {
        const err = replyError('redeem', reply);
        for (const p of batch) each(p, err);
        return;
      }
      const rows: readonly unknown[] = reply;
      for (let i = 0; i < n; i++) {
        const p = batch[i]!;
        if (rows[8 * i] === 'err') {
          each(p, new Error(`redeem failed: ${String(rows[8 * i + 1])}`));
          continue;
        }
        let answer: Answer;
        try {
          answer = answerAt('redeem', rows, 8 * i);
        } catch (err) {
          each(p, err);
          continue;
        }
        each(p, undefined, answer);
      }
    },
    (err: unknown) => {
      settled();
      for (const p of batch) each(p, err);
    },
  );
}

/** What a redeem of these terms would answer now, changing nothing. */
export async function validate(scripts: Scripts, t: ScanTerms, now: number): Promise<Answer> {
  const r = tagged(
    'validate',
    await scripts.run('validate', [t.idKey], [now, t.venue, t.gate, t.item, t.amount, t.dir, t.qty]),
  );
  return answerAt('validate', r, 0);
}

/**
 * Undoes the redemption recorded under scanKey ('<scanner>:<scan id>') on the
 * ID at idKey, looked up in the windows of its bucket's scan records (and in
 * the scan's own key, as earlier versions kept it). `made`: when the void was
 * made (an offline one), by the scanner's clock, when it reached the gateway, and how far from
 * that it may be.
 */
export async function reverse(
  scripts: Scripts,
  scanKey: string,
  idKey: string,
  windows: readonly number[],
  now: number,
  scanner: string,
  reason: string,
  made?: { at: number; arrived: number; bounds: ScanTimeBounds },
): Promise<Answer> {
  const bucket = bucketOfKey(idKey);
  const places = windows.map((w) => keys.scans(bucket, w));
  const r = tagged(
    'reverse',
    await scripts.run(
      'reverse',
      [idKey, keys.redemptions(bucket), ...places, keys.scan(bucket, scanKey)],
      made
        ? [
            now,
            scanner,
            reason,
            scanKey,
            places.length,
            made.at,
            made.arrived - made.bounds.maxAgeMs,
            made.arrived + made.bounds.skewMs,
          ]
        : [now, scanner, reason, scanKey, places.length],
    ),
  );
  if (r[0] === 'no') return { ok: false, reason: str('reverse', r, 1) };
  if (r[0] !== 'ok') throw replyError('reverse', r);
  return {
    ok: true,
    kind: str('reverse', r, 1),
    action: 'reverse',
    amount: num('reverse', r, 2),
    left: num('reverse', r, 3),
    record: str('reverse', r, 4),
    duplicate: r[5] === 1,
  };
}

/**
 * The answer at `at` in a redeem or validate reply: 'ok', kind, action, amount,
 * left[, recordId, duplicate, reversed] or 'no', reason, details... (validate
 * answers the first five of a grant only).
 */
function answerAt(script: string, r: readonly unknown[], at: number): Answer {
  const tag = r[at];
  if (tag === 'ok') {
    const record = r[at + 5];
    if (record !== undefined && typeof record !== 'string') throw replyError(script, r);
    return {
      ok: true,
      kind: str(script, r, at + 1),
      action: str(script, r, at + 2),
      amount: num(script, r, at + 3),
      left: num(script, r, at + 4),
      record,
      duplicate: r[at + 6] === 1,
      reversed: r[at + 7] === 1,
    };
  }
  if (tag !== 'no') throw replyError(script, r);
  const reason = str(script, r, at + 1);
  switch (reason) {
    case 'already_redeemed':
      return {
        ok: false,
        reason,
        firstUsed: { time: Number(r[at + 2]), venue: String(r[at + 3]), gate: String(r[at + 4]) },
      };
    case 'insufficient_value':
      return { ok: false, reason, valueLeft: Number(r[at + 2]) };
    case 'not_yet_valid':
      return { ok: false, reason, validFrom: Number(r[at + 2]) };
    default:
      return { ok: false, reason };
  }
}

/**
 * The sales domain's Lua scripts (lua/reserve, release, sell, purchase_claim,
 * purchase_lease, purchase_bind, purchase_admit, pin_attempt, refund, topup, voucher_take, voucher_settle,
 * late_claim): one function each, building KEYS/ARGV from named
 * arguments and decoding the reply into a named type. Nothing else in sales/
 * calls a script or reads a raw reply.
 */
import { idHashOfKey, keys } from '../redis/keys';
import type { Scripts } from '../redis/scripts';
import { num, replyError, str, tagged } from '../redis/reply';

/**
 * Takes one unsold ID of a product from a bucket's inventory until `until` (ms), held for the purchase
 * `owner` (its reference); null when the bucket has none.
 */
export async function reserveId(
  scripts: Scripts,
  bucket: number,
  product: string,
  until: number,
  owner: string,
): Promise<string | null> {
  const r = await scripts.run(
    'reserve',
    [keys.inventory(bucket, product), keys.reservations(bucket), keys.holdOwners(bucket)],
    [until, owner],
  );
  if (r === null || typeof r === 'string') return r;
  throw replyError('reserve', r);
}

/**
 * Puts a reserved ID back; `heldBefore` 0 releases whatever its hold, else only a hold that ran out
 * before it. `owner`: the purchase releasing its own hold (another purchase's is left alone), or ''
 * for the expiry sweep, which releases by time whoever's it is.
 */
export async function releaseId(
  scripts: Scripts,
  bucket: number,
  product: string,
  idHash: string,
  heldBefore: number,
  owner: string,
): Promise<boolean> {
  const r = await scripts.run(
    'release',
    [keys.inventory(bucket, product), keys.reservations(bucket), keys.holdOwners(bucket)],
    [idHash, heldBefore, owner],
  );
  if (r !== 0 && r !== 1) throw replyError('release', r);
  return r === 1;
}

export interface SaleTerms {
  idKey: string;
  bucket: number;
  /** Keyed hash of the check link's secret part (checkLink). */
  checkHash: string;
  product: string;
  price: number;
  /** The price's currency. */
  currency: string;
  channel: string;
  purchaseRef: string;
  providerRef: string;
  commission: number;
  pinHash: string;
}

export type SellReply =
  | { ok: true; face: number; record: string; duplicate: boolean }
  | { ok: false; reason: 'not_reserved' | 'wrong_product' | 'already_active' };

/** Sells a reserved ID with its PIN and check link and records the sale; a retry for the same purchase answers the first sale. */
export async function sellId(scripts: Scripts, t: SaleTerms, now = Date.now()): Promise<SellReply> {
  const r = await scripts.run(
    'sell',
    [t.idKey, keys.reservations(t.bucket), keys.sales(t.bucket), keys.holdOwners(t.bucket)],
    [
      now,
      t.product,
      t.price,
      t.channel,
      t.purchaseRef,
      t.providerRef,
      t.commission,
      t.pinHash,
      t.currency,
      t.checkHash,
    ],
  );
  if (Array.isArray(r) && r[0] === 'ok')
    return { ok: true, face: Number(r[1]), record: String(r[2] ?? ''), duplicate: r[3] === 1 };
  if (
    Array.isArray(r) &&
    r[0] === 'err' &&
    (r[1] === 'not_reserved' || r[1] === 'wrong_product' || r[1] === 'already_active')
  )
    return { ok: false, reason: r[1] as 'not_reserved' | 'wrong_product' | 'already_active' };
  throw replyError('sell', r);
}

/** Where a purchase stands once claimed by its Idempotency-Key. */
export type PurchaseClaim = 'new' | 'resume' | 'done' | 'busy' | 'conflict' | 'gone';
const CLAIMS: readonly string[] = ['new', 'resume', 'done', 'busy', 'conflict', 'gone'] satisfies PurchaseClaim[];

export interface ClaimTerms {
  /** The purchase record and the open-purchases set of its bucket. */
  key: string;
  open: string;
  /** Keyed fingerprint of the request: the same key with other details is a conflict. */
  fingerprint: string;
  leaseMs: number;
  /** TTL of a new record. */
  ttlSec: number;
  /** A new purchase's terms, fixed in its record; without them an absent record is 'gone' (not created). */
  terms?: { product: string; price: number; currency: string };
}

/** Claims a purchase for this attempt, or tells who has it and how far it got. */
export async function claimPurchase(
  scripts: Scripts,
  c: ClaimTerms,
  owner: string,
  now = Date.now(),
): Promise<PurchaseClaim> {
  const t = c.terms;
  const r = await scripts.run(
    'purchase_claim',
    [c.key, c.open],
    [now, c.fingerprint, c.leaseMs, c.ttlSec, t?.product ?? '', t?.price ?? 0, t?.currency ?? '', owner],
  );
  if (Array.isArray(r) && typeof r[0] === 'string' && CLAIMS.includes(r[0])) return r[0] as PurchaseClaim;
  throw replyError('purchase_claim', r);
}

/** Sets the end of `owner`'s lease on the record under `key` (0 hands it back); false if another owns it now. */
export async function setLease(scripts: Scripts, key: string, owner: string, until: number): Promise<boolean> {
  const r = await scripts.run('purchase_lease', [key], [owner, until]);
  if (r === 0 || r === 1) return r === 1;
  throw replyError('purchase_lease', r);
}

/** The ID bound to a purchase: this attempt's, or the one another attempt bound first. */
export type Binding = { ok: true } | { ok: false; idHash: string; bucket: number };

/**
 * Binds `held` to the purchase under `key` if the ID bound there is still
 * `seen` ('' for none); else answers the ID another attempt bound meanwhile.
 */
export async function bindPurchase(
  scripts: Scripts,
  key: string,
  seen: string,
  held: { idHash: string; bucket: number },
): Promise<Binding> {
  const r = await scripts.run('purchase_bind', [key], [seen, held.idHash, held.bucket]);
  if (Array.isArray(r) && r[0] === 'ok') return { ok: true };
  if (Array.isArray(r) && r[0] === 'taken' && typeof r[1] === 'string' && r[1] !== '')
    return { ok: false, idHash: r[1], bucket: Number(r[2]) };
  throw replyError('purchase_bind', r);
}

/** Which count refused an anonymous payment. */
export type AdmissionBy = 'client' | 'network' | 'total';
const BY: readonly string[] = ['client', 'network', 'total'] satisfies AdmissionBy[];

/** An anonymous payment admitted, or refused by its client's, its network's or the total count, for `waitMs`. */
export type Admission = { ok: true } | { ok: false; by: AdmissionBy; waitMs: number };

/**
 * Counts a new anonymous card payment against the per-client, per-network and total limits of the window,
 * once: a payment already counted (its marker is set) is admitted as it is.
 */
export async function admitPurchase(
  scripts: Scripts,
  hashes: { client: string; network: string; payment: string },
  limits: { perClient: number; perNetwork: number; total: number; windowMs: number },
): Promise<Admission> {
  const r = await scripts.run(
    'purchase_admit',
    [
      keys.buysOfClient(hashes.client),
      keys.buysOfNetwork(hashes.network),
      keys.buysTotal,
      keys.buyCounted(hashes.payment),
    ],
    [limits.perClient, limits.perNetwork, limits.total, limits.windowMs],
  );
  if (Array.isArray(r) && r[0] === 'ok') return { ok: true };
  if (Array.isArray(r) && BY.includes(r[0] as string) && typeof r[1] === 'number')
    return { ok: false, by: r[0] as AdmissionBy, waitMs: r[1] };
  throw replyError('purchase_admit', r);
}

/**
 * A check link's PIN gate: open (with the attempt's number), a wrong PIN (with tries left), or locked until a
 * time (ms); `started`: this step started the lock, the link's `started`th in a row.
 */
export type PinGate =
  | { state: 'open'; attempt: number }
  | { state: 'wrong'; triesLeft: number }
  | { state: 'locked'; until: number; started?: number };

export interface PinLimits {
  maxTries: number;
  /** The first lock; each further one doubles, up to maxLockMs. */
  lockMs: number;
  maxLockMs: number;
}

/**
 * One step of a PIN check: 'try' before the PIN is compared (counted first, so
 * parallel guesses get no more comparisons), then 'ok' or 'wrong' with the
 * attempt's number as 'try' answered it.
 */
export async function pinAttempt(
  scripts: Scripts,
  idKey: string,
  step: 'try' | 'ok' | 'wrong',
  limits: PinLimits,
  attempt?: number,
): Promise<PinGate> {
  const args: (string | number)[] = [Date.now(), step, limits.maxTries, limits.lockMs, attempt ?? 0, limits.maxLockMs];
  const r = await scripts.run('pin_attempt', [idKey], args);
  if (Array.isArray(r)) {
    if (r[0] === 'open') return { state: 'open', attempt: Number(r[1] ?? 0) };
    if (r[0] === 'wrong' && typeof r[1] === 'number') return { state: 'wrong', triesLeft: r[1] };
    if (r[0] === 'locked' && typeof r[1] === 'number')
      return { state: 'locked', until: r[1], ...(typeof r[2] === 'number' ? { started: r[2] } : {}) };
  }
  throw replyError('pin_attempt', r);
}

export type RefundReply =
  | { ok: true; refunded: number; record: string; payment: string; duplicate: boolean }
  | { ok: false; reason: RefundRefusal };

const REFUND_REFUSALS = ['unknown_id', 'not_sold', 'already_used', 'recharged'] as const;
type RefundRefusal = (typeof REFUND_REFUSALS)[number];

/** Takes back an unused sold ID: blocked, value to zero, a refund record. */
export async function refundId(
  scripts: Scripts,
  loc: { key: string; bucket: number },
  reason: string,
  operator: string,
  now = Date.now(),
): Promise<RefundReply> {
  const r = await scripts.run(
    'refund',
    [loc.key, keys.sales(loc.bucket), keys.refundVoids(loc.bucket)],
    [now, reason, operator],
  );
  if (Array.isArray(r) && r[0] === 'ok')
    return {
      ok: true,
      refunded: Number(r[1]),
      record: String(r[2] ?? ''),
      payment: String(r[3] ?? ''),
      duplicate: r[4] === 1,
    };
  const refusal = Array.isArray(r) && r[0] === 'err' ? REFUND_REFUSALS.find((x) => x === r[1]) : undefined;
  if (refusal) return { ok: false, reason: refusal };
  throw replyError('refund', r);
}

/** Where a top-up comes from: a recharge voucher, the operator, the owner paying online. */
export type TopupSource = 'voucher' | 'operator' | 'online';

export interface TopupCall {
  /** The ID: its key and bucket. */
  loc: { key: string; bucket: number };
  source: TopupSource;
  /** What the top-up is applied once by. */
  ref: string;
  amount: number;
  currency: string;
  /** The ID's product, whose rules follow (catalog/schema.ts topupTerms). */
  product: string;
  allowed: boolean;
  extendsDays: number;
  maxBalance: number;
  /** Products the source may recharge ('' any): a voucher's `into`. */
  into: string;
  /** The voucher's ID hash, the operator's note, the recharge's key hash. */
  note: string;
  price?: number;
  commission?: number;
}

export type TopupReply =
  | { ok: true; amount: number; balance: number; expires: number; record: string; duplicate: boolean }
  | { ok: false; reason: string };

/** Credits an ID once per reference ('apply'), or says whether it would ('check', nothing written). */
export async function topupId(
  scripts: Scripts,
  t: TopupCall,
  mode: 'apply' | 'check',
  now = Date.now(),
): Promise<TopupReply> {
  const idHash = idHashOfKey(t.loc.key);
  const r = tagged(
    'topup',
    await scripts.run(
      'topup',
      [t.loc.key, keys.sales(t.loc.bucket), keys.topups(t.loc.bucket, idHash), keys.events(t.loc.bucket)],
      [
        now,
        mode,
        t.source,
        t.ref,
        t.amount,
        t.currency,
        t.product,
        t.allowed ? 1 : 0,
        t.extendsDays,
        t.maxBalance,
        t.into,
        t.note,
        t.price ?? 0,
        t.commission ?? 0,
      ],
    ),
  );
  if (r[0] === 'err') return { ok: false, reason: str('topup', r, 1) };
  if (r[0] !== 'ok') throw replyError('topup', r);
  return {
    ok: true,
    amount: num('topup', r, 1),
    balance: num('topup', r, 2),
    expires: num('topup', r, 3),
    record: str('topup', r, 4),
    duplicate: r[5] === 1,
  };
}

export type VoucherTake =
  | {
      ok: true;
      /** `<voucher hash>:<n>`: the reference the target is credited once by. */
      ref: string;
      amount: number;
      currency: string;
      into: string;
      state: 'sent' | 'done';
      duplicate: boolean;
    }
  | { ok: false; reason: string };

/** Step 1 of a voucher's redemption, in the voucher's slot: its value taken out towards `targetKey`. */
export async function takeVoucher(
  scripts: Scripts,
  voucher: { key: string; bucket: number },
  targetKey: string,
  channel: string,
  now = Date.now(),
): Promise<VoucherTake> {
  const r = tagged(
    'voucher_take',
    await scripts.run(
      'voucher_take',
      [voucher.key, keys.sales(voucher.bucket), keys.openTransfers(voucher.bucket)],
      [now, targetKey, channel],
    ),
  );
  if (r[0] === 'err') return { ok: false, reason: str('voucher_take', r, 1) };
  const state = r[5];
  if (r[0] !== 'ok' || (state !== 'sent' && state !== 'done')) throw replyError('voucher_take', r);
  return {
    ok: true,
    ref: str('voucher_take', r, 1),
    amount: num('voucher_take', r, 2),
    currency: str('voucher_take', r, 3),
    into: str('voucher_take', r, 4),
    state,
    duplicate: r[6] === 1,
  };
}

/** The last step: the voucher's transfer done, or its value returned; answers the transfer's state after. */
export async function settleVoucher(
  scripts: Scripts,
  voucher: { key: string; bucket: number },
  ref: string,
  outcome: { done: true } | { done: false; reason: string },
  now = Date.now(),
): Promise<'done' | 'returned' | 'stale'> {
  const r = tagged(
    'voucher_settle',
    await scripts.run(
      'voucher_settle',
      [voucher.key, keys.sales(voucher.bucket), keys.openTransfers(voucher.bucket)],
      [now, outcome.done ? 'done' : 'return', ref, outcome.done ? '' : outcome.reason],
    ),
  );
  const state = r[1];
  if (r[0] !== 'ok' || (state !== 'done' && state !== 'returned' && state !== 'stale'))
    throw replyError('voucher_settle', r);
  return state;
}

/** How often, and for how long, a late-authorization reference is asked after (ms). */
export interface LateWatch {
  /** The first check this long after the reference is listed, and never two closer together. */
  shortestWaitMs: number;
  longestWaitMs: number;
  /** From when it was listed. */
  watchMs: number;
}

/**
 * Claims the late-authorization reference of `bucket` due longest (lua/late_claim.lua): it is moved
 * to its next check, so no other sweep asks it meanwhile; a last check (its day over) stays listed
 * until the sweep drops it on an answer. Null when none is due.
 */
export async function claimLate(
  scripts: Scripts,
  bucket: number,
  w: LateWatch,
  now = Date.now(),
): Promise<{ member: string; ref: string } | null> {
  const r = await scripts.run(
    'late_claim',
    [keys.lateAuthorizations(bucket)],
    [now, w.shortestWaitMs, w.longestWaitMs, w.watchMs],
  );
  if (r === null) return null;
  if (typeof r !== 'string' || !/^\d+:./.test(r)) throw replyError('late_claim', r);
  return { member: r, ref: r.slice(r.indexOf(':') + 1) };
}

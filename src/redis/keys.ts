/**
 * Every key one script call touches shares a hash tag, `{b<N>}`, the bucket of
 * the ID hash, so each call lands on one Redis Cluster slot. Catalog keys are
 * global but are read only by the gateway and the CLI, never inside a script.
 */
export const PREFIX = 'ts:';

export const tag = (bucket: number): string => `${PREFIX}{b${bucket}}:`;

export const keys = {
  id: (bucket: number, hash: string) => `${tag(bucket)}id:${hash}`,
  call: (bucket: number, callKey: string) => `${tag(bucket)}call:${callKey}`,
  /** Sorted set of live call sessions in a bucket, scored by last activity (ms). */
  live: (bucket: number) => `${tag(bucket)}live`,
  /** Call detail records of a bucket (stream). */
  cdr: (bucket: number) => `${tag(bucket)}cdr`,
  /** Sale and activation records of a bucket (stream), with its refunds, top-ups, voucher transfers and expiries. */
  sales: (bucket: number) => `${tag(bucket)}sales`,
  /**
   * A product's terms, one version of them (hash), the same in every bucket it has IDs in:
   * its IDs name the version (`pt`) instead of each keeping a copy (src/catalog/terms.ts).
   */
  productTerms: (bucket: number, version: string) => `${tag(bucket)}pt:${version}`,
  /** Unsold IDs of a product in a bucket (set of ID hashes). */
  inventory: (bucket: number, product: string) => `${tag(bucket)}inv:${product}`,
  /**
   * What archived and trimmed records held, per ID of a bucket (hash): ID hash ->
   * "sold sales calls redeemed refunded topups vouchers expired", the audit's sums over its trimmed records.
   */
  checkpoint: (bucket: number) => `${tag(bucket)}ckpt`,
  /** Redemption and reversal records of a bucket (stream). */
  redemptions: (bucket: number) => `${tag(bucket)}red`,
  /**
   * The records of the granted scans a bucket's IDs got in one window of time (hash: scan key ->
   * first answer, for retries and reversal; src/redemption/scan-windows.ts).
   */
  scans: (bucket: number, window: number) => `${tag(bucket)}scans:${window}`,
  /** Where scanners' scans went, claimed in one window (hash: scan key -> ID key and terms), in a claim bucket. */
  scanClaims: (bucket: number, window: number) => `${tag(bucket)}claims:${window}`,
  /**
   * How this Redis keeps scans, decided by the first gateway to start on it (hash): `windowMs`
   * (the windows' length) and `legacyUntil` (ms: until when scans of the per-scan key layout
   * below may be left to read). Global: read at start only.
   */
  scanWindows: `${PREFIX}scan-windows`,
  /** A scan's record as versions before the windows kept it: a key per scan, in the ID's bucket. */
  scan: (bucket: number, scanKey: string) => `${tag(bucket)}scan:${scanKey}`,
  /** A scan's claim as versions before the windows kept it: a key per scan, in the scan key's claim bucket. */
  scanIndex: (bucket: number, scanKey: string) => `${tag(bucket)}sx:${scanKey}`,
  /** unknown_id answers to one client in the current window: a scanner's token name, or `sw:<name>` for a switch. */
  guesses: (bucket: number, client: string) => `${tag(bucket)}guess:${client}`,
  /** A switch's call whose unknown ID (`named`: its MAC) was counted in the current window (SwitchGuesses.missOnce). */
  guessedCall: (bucket: number, sw: string, call: string, named: string) =>
    `${tag(bucket)}guess:call:${sw}:${named}:${call}`,
  /** IDs held for purchases in progress: ID hash -> held until (ms). */
  reservations: (bucket: number) => `${tag(bucket)}resv`,
  /**
   * Whose each hold is: ID hash -> `<held until, ms>:<purchase reference>`, written with the hold and
   * gone with it, so only that purchase sells or releases the ID (lua/includes/hold_owner.lua).
   */
  holdOwners: (bucket: number) => `${tag(bucket)}resvby`,
  /**
   * Payments whose authorize got no answer and which the card company did not know when the
   * abandoned-attempt sweep ended them: `<first seen, ms>:<reference>` -> next check (ms). Asked
   * after, less often as they age, for a day, in case the card company makes the authorization late.
   */
  lateAuthorizations: (bucket: number) => `${tag(bucket)}late`,
  /** Refunds whose void the card company has not answered yet: ID hash -> when last asked (ms). */
  refundVoids: (bucket: number) => `${tag(bucket)}refv`,
  /** A check link: keyed hash of its token -> ID hash. In the ID's bucket. */
  check: (bucket: number, tokenHash: string) => `${tag(bucket)}chk:${tokenHash}`,
  /** A purchase by its Idempotency-Key (keyed hash), tagged by that hash's own bucket. */
  purchase: (bucket: number, keyHash: string) => `${tag(bucket)}pur:${keyHash}`,
  /** Purchases not finished yet: record key -> created (ms), swept when abandoned. */
  openPurchases: (bucket: number) => `${tag(bucket)}purs`,
  /**
   * Purchases started by anonymous buyers in the current window, from one client
   * address (keyed hash) and in total. Both in bucket 0's slot, so one script
   * call counts against both.
   */
  buysOfClient: (clientHash: string) => `${tag(0)}buyc:${clientHash}`,
  buysOfNetwork: (networkHash: string) => `${tag(0)}buyn:${networkHash}`,
  buysTotal: `${tag(0)}buyall`,
  /** Marks an anonymous payment (keyed hash of its record's key) counted this window: its copies count nothing. */
  buyCounted: (paymentHash: string) => `${tag(0)}buyk:${paymentHash}`,
  /** Wrong PINs from one client address in the current window. */
  pinMisses: (bucket: number, client: string) => `${tag(bucket)}pinip:${client}`,
  /** PIN tries from one network (an IPv4 /24, an IPv6 /48), TTL PIN_LOCK_SEC. */
  pinNetworkMisses: (bucket: number, network: string) => `${tag(bucket)}pinnet:${network}`,
  /**
   * Balance events of a bucket (stream: low_balance, exhausted, expiring, topup, expired), written by the
   * script that causes the event; the webhook delivery reads it through consumer group `hooks`.
   */
  events: (bucket: number) => `${tag(bucket)}ev`,
  /** The top-ups applied to an ID (hash): `<source>:<reference>` -> the first answer. In the ID's bucket. */
  topups: (bucket: number, idHash: string) => `${tag(bucket)}tup:${idHash}`,
  /** Recharge vouchers taken but not yet settled: voucher ID key -> taken (ms), for the transfer sweep. */
  openTransfers: (bucket: number) => `${tag(bucket)}vout`,
  /** An online recharge by its Idempotency-Key (keyed hash), tagged by that hash's own bucket. */
  recharge: (bucket: number, keyHash: string) => `${tag(bucket)}rch:${keyHash}`,
  /** Online recharges not finished yet: record key -> created (ms), swept when abandoned. */
  openRecharges: (bucket: number) => `${tag(bucket)}rchs`,
  /** Webhook deliveries of a bucket that failed for good (stream): the event, the webhook and why. */
  eventsFailed: (bucket: number) => `${tag(bucket)}evfail`,
  /** Delivery state of a bucket's events that failed at least once (hash): stream entry id -> JSON. */
  eventsRetry: (bucket: number) => `${tag(bucket)}evtry`,
  /**
   * Written (the time, ms) before a WAIT that must cover writes of other
   * connections, such as the first try of a retry answered as a duplicate
   * (src/redis/replication.ts). One per bucket; nothing reads it.
   */
  fence: (bucket: number) => `${tag(bucket)}fence`,
  /**
   * The session of an ID's call by the switch's call id alone (string, with a TTL), in the ID's
   * bucket: what finds the call when its stop comes under another token name (call_recover).
   */
  idCall: (bucket: number, idHash: string, call: string) => `${tag(bucket)}ic:${idHash}:${call}`,
  /** Where a switch's call lives: call key -> ID key. Tagged by the call key's own bucket. */
  callIndex: (bucket: number, callKey: string) => `${tag(bucket)}cx:${callKey}`,
  /**
   * Which ID a caller number (ANI) logs in to: keyed hash of the number -> ID key.
   * Tagged by the number's own bucket; the source of truth at use (src/ledger/anis.ts).
   */
  aniIndex: (bucket: number, aniHash: string) => `${tag(bucket)}ani:${aniHash}`,

  products: `${PREFIX}cat:products`,
  plans: `${PREFIX}cat:plans`,
  tokens: `${PREFIX}cat:tokens`,
  items: `${PREFIX}cat:items`,
  access: `${PREFIX}cat:access`,
  catalogVersion: `${PREFIX}cat:ver`,
  /** BUCKETS, ID_LENGTH and a fingerprint of the secret, as the first process found them (src/app/layout.ts). */
  layout: `${PREFIX}layout`,
  /** The token of the `tessera archive` run at work, with a TTL it renews (src/ledger/retention.ts). */
  archiveLock: `${PREFIX}archive:lock`,
  catalogChannel: `${PREFIX}cat:changed`,
} as const;

const BUCKET_RE = /\{b(\d+)\}/;

/** The ID hash an ID key (keys.id) names: its last part. */
export const idHashOfKey = (idKey: string): string => idKey.slice(idKey.lastIndexOf(':') + 1);

export function bucketOfKey(key: string): number {
  const m = BUCKET_RE.exec(key);
  if (!m) throw new Error(`key without bucket tag: ${key}`);
  return Number(m[1]);
}

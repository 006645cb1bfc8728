/**
 * The check link: its token and the buyer's PIN together show the ID again.
 * A wrong PIN shows nothing about the ID, and an unknown link answers like a
 * real one with a wrong PIN, after a PIN verification just as slow (against a
 * dummy hash). Five wrong PINs lock the link; each lock lasts twice as long as
 * the one before, up to PIN_LOCK_MAX_SEC, until a right PIN. A client address
 * spraying many links is locked out too.
 *
 * A link's token names its ID (the ID hash, which gives away no usable ID)
 * and carries a secret tag; the ID's hash keeps a keyed hash of the tag. So
 * the link needs no index of its own in Redis: one key per sold ID fewer.
 * Links sold before they named their ID are a bare tag, found through the
 * index (`keys.check`) those sales wrote.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Context } from '../app/context';
import type { IdKeys } from '../ids/secrets';
import { idHash } from '../ledger/id-fields';
import { idHashOfKey, keys } from '../redis/keys';
import { clientGroup, clientNetwork } from '../protocol/client-address';
import { hashPin, verifyPin } from './pin';
import { pinAttempt, type PinGate } from './scripts';

/** A link's token: the ID hash, then its secret tag (32 hex digits each). */
const LINK = /^([0-9a-f]{32})([0-9a-f]{32})$/;
/** A link sold before links named their ID: the tag alone. */
const OLD_LINK = /^[0-9a-f]{32}$/;

/** What the ID's hash (`chk`) keeps of a link's tag. */
const linkHash = (ids: IdKeys, tag: string): string => ids.mac(`chk:${tag}`).slice(0, 32);

/** A link's bucket as the link writes it: decimal digits, no sign, point or leading zero. */
const BUCKET = /^(?:0|[1-9][0-9]*)$/;

/** The bucket of a link, or undefined for any other spelling of it (which no link has). */
function bucketOf(text: string, buckets: number): number | undefined {
  const bucket = BUCKET.test(text) ? Number(text) : -1;
  return bucket >= 0 && bucket < buckets ? bucket : undefined;
}

/**
 * How a lock is logged: a link's first lock in a row, a further (longer) one, a client address locked
 * out, or every address of its network.
 */
type LockKind = 'link' | 'escalated' | 'address' | 'network';

const sameHex = (a: string, b: string): boolean =>
  a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

/**
 * The check link of an ID sold by a purchase: its token (for the URL) and
 * what the ID's hash keeps of it. Reproducible from the purchase, so a retry
 * after a crash gives the buyer the same link.
 */
export function checkLink(ids: IdKeys, purchaseRef: string, hash: string): { token: string; checkHash: string } {
  const tag = ids.mac(`check:${purchaseRef}:${hash}`).slice(0, 32);
  return { token: `${hash}${tag}`, checkHash: linkHash(ids, tag) };
}

export type CheckResult =
  | {
      ok: true;
      id: string;
      product: string;
      kind: string;
      balance: number;
      currency: string;
      state: string;
      /** Blocked by its refund: the price went back to the card. */
      refunded?: true;
      expires?: number;
      validDays: number;
    }
  /**
   * `client`: the client address is locked out (wrong PINs over many links), not the link; with
   * `triesLeft`, it is the address that many more wrong PINs lock out first. `triesLeft`, for a wrong
   * PIN: how many more wrong ones the link (or the address) takes before it locks; the one that locks
   * it is among them. An unknown link has only its address's count.
   */
  | { ok: false; reason: 'wrong_pin' | 'locked'; triesLeft?: number; until?: number; client?: true }
  /** No link is written so (cut short, mistyped): nothing counted, no PIN compared. */
  | { ok: false; reason: 'bad_link' }
  /** PIN_MAX_CHECKS tries are being worked on in this gateway: nothing counted, no PIN compared. */
  | { ok: false; reason: 'overloaded' };

export class CheckLinks {
  /** A hash no PIN is checked against for real: unknown links pay for a verification too. */
  private dummy?: Promise<string>;
  /** Tries being worked on (PIN_MAX_CHECKS). */
  private checking = 0;

  constructor(
    private readonly ctx: Context,
    private readonly verify: (pin: string, encoded: string) => Promise<boolean> = verifyPin,
  ) {}

  /**
   * The ID a check link leads to, without its PIN: for a page that holds a
   * grant the PIN earned (the check page's recharge forms); undefined when
   * there is no such link.
   */
  async linked(bucketText: string, token: string): Promise<{ key: string; bucket: number } | undefined> {
    const { cfg, ids, redis } = this.ctx;
    const bucket = bucketOf(bucketText, cfg.buckets);
    if (bucket === undefined) return undefined;
    const named = LINK.exec(token);
    if (named) {
      const key = keys.id(bucket, named[1]!);
      const chk = await redis.hget(key, 'chk');
      return chk !== null && sameHex(chk, linkHash(ids, named[2]!)) ? { key, bucket } : undefined;
    }
    // A link sold before links named their ID: its index leads to the ID.
    if (!OLD_LINK.test(token)) return undefined;
    const idHash = await redis.get(keys.check(bucket, linkHash(ids, token)));
    return idHash ? { key: keys.id(bucket, idHash), bucket } : undefined;
  }

  /**
   * Whether a link is written as links are: a bucket as links write it and a token of a link's
   * shape. One that is not was cut short or mistyped (a mail program breaking it, say), never sold:
   * its owner is told so, and it costs them no try. Its shape is public, so telling says nothing.
   */
  wellFormed(bucketText: string, token: string): boolean {
    return bucketOf(bucketText, this.ctx.cfg.buckets) !== undefined && (LINK.test(token) || OLD_LINK.test(token));
  }

  async check(bucketText: string, token: string, pin: string, client: string): Promise<CheckResult> {
    if (!this.wellFormed(bucketText, token)) return { ok: false, reason: 'bad_link' };
    // Each try costs a scrypt on the thread pool every check and sale shares. Tries spread over more
    // networks than their limits see would queue there without end, each holding a place of
    // MAX_INFLIGHT_TOTAL that switches need: past the bound they are refused before anything is counted.
    if (this.checking >= this.ctx.cfg.pinMaxChecks) return { ok: false, reason: 'overloaded' };
    this.checking++;
    try {
      return await this.checkNow(bucketText, token, pin, client);
    } finally {
      this.checking--;
    }
  }

  private async checkNow(bucketText: string, token: string, pin: string, client: string): Promise<CheckResult> {
    const { cfg, ids, redis, scripts } = this.ctx;
    const now = Date.now();
    // Counted before the (slow) PIN check, so a burst of parallel guesses cannot slip past the limit;
    // a right PIN gives its address's count back. The network first: its many addresses are cheap to an attacker
    // (an IPv6 /48 holds 65,536 /64s), and each try costs a scrypt on a thread pool every buyer shares.
    const count = async (key: string): Promise<{ n: number; ttl: number }> => {
      const c = await redis.multi().incr(key).expire(key, cfg.pin.lockSec, 'NX').pttl(key).exec();
      return { n: Number(c?.[0]?.[1]), ttl: Number(c?.[2]?.[1]) };
    };
    const net = ids.mac(`pinnet:${clientNetwork(client)}`).slice(0, 32);
    const netKey = keys.pinNetworkMisses(ids.bucketOf(net), net);
    const inNet = await count(netKey);
    // Counted per client group (an IPv6 subscriber by its /64), under a keyed hash of it.
    const group = ids.mac(`pin:${clientGroup(client)}`).slice(0, 32);
    const clientKey = keys.pinMisses(ids.bucketOf(group), group);
    // Gives a count back: DECR then EXPIRE NX, since a key that expired meanwhile comes back at -1 without a TTL.
    const giveBack = (key: string): Promise<unknown> =>
      redis.multi().decr(key).expire(key, cfg.pin.lockSec, 'NX').exec();
    // The address's wrong PINs so far, this one included (counted below unless its network is over).
    let byClient = 0;
    const over = async (): Promise<{ n: number; ttl: number; max: number; kind: LockKind } | undefined> => {
      if (inNet.n > cfg.pin.maxTriesPerNetwork) return { ...inNet, max: cfg.pin.maxTriesPerNetwork, kind: 'network' };
      const c = await count(clientKey);
      byClient = c.n;
      if (c.n <= cfg.pin.maxTriesPerClient) return undefined;
      // Refused for its address, the try is not its network's: one address must not lock out its neighbours.
      await giveBack(netKey);
      return { ...c, max: cfg.pin.maxTriesPerClient, kind: 'address' };
    };
    const locked = await over();
    if (locked) {
      // The first try over a limit starts the lockout; the link it tried may not exist.
      if (locked.n === locked.max + 1)
        this.logLock(locked.kind, locked.ttl, client, bucketOf(bucketText, cfg.buckets), LINK.exec(token)?.[1]);
      return { ok: false, reason: 'locked', until: now + locked.ttl, client: true };
    }

    // Wrong PINs the address may still send before it is locked out (the next one past them is refused).
    const clientLeft = Math.max(0, cfg.pin.maxTriesPerClient - byClient);
    const linked = await this.linked(bucketText, token);
    // An unknown link answers like a wrong PIN, and as slowly: it has no count of its own, only its address's.
    if (!linked) {
      await this.verify(pin, await (this.dummy ??= hashPin('0000')));
      return { ok: false, reason: 'wrong_pin', triesLeft: clientLeft, client: true };
    }
    const idKey = linked.key;
    const logged = (gate: PinGate): PinGate => {
      if (gate.state === 'locked' && gate.started !== undefined) {
        const kind = gate.started > 1 ? 'escalated' : 'link';
        this.logLock(kind, gate.until - Date.now(), client, linked.bucket, idHashOfKey(idKey));
      }
      return gate;
    };
    // Counted before the PIN is compared, like the per-client count above.
    const limits = { maxTries: cfg.pin.maxTries, lockMs: cfg.pin.lockSec * 1000, maxLockMs: cfg.pin.lockMaxSec * 1000 };
    const gate = logged(await pinAttempt(scripts, idKey, 'try', limits));
    if (gate.state === 'locked') return { ok: false, reason: 'locked', until: gate.until };
    const attempt = gate.state === 'open' ? gate.attempt : 0;

    const h = await idHash(redis, idKey);
    if (!h.pin || !(await this.verify(pin, h.pin))) {
      const r = logged(await pinAttempt(scripts, idKey, 'wrong', limits, attempt));
      if (r.state === 'locked') return { ok: false, reason: 'locked', until: r.until };
      // Whichever locks first: the link, or the address (wrong PINs on other links too).
      const linkLeft = r.state === 'wrong' ? r.triesLeft : 0;
      return linkLeft <= clientLeft
        ? { ok: false, reason: 'wrong_pin', triesLeft: linkLeft }
        : { ok: false, reason: 'wrong_pin', triesLeft: clientLeft, client: true };
    }
    // A right PIN gives back its address's count, which counts wrong PINs, but not its network's: that
    // one bounds the scrypts a network costs, and a known link and PIN sent again and again would
    // otherwise keep the thread pool busy for every buyer, unbounded.
    await giveBack(clientKey);
    // The link may have locked while this PIN was being verified (wrong PINs sent at the same time).
    const done = logged(await pinAttempt(scripts, idKey, 'ok', limits));
    if (done.state === 'locked') return { ok: false, reason: 'locked', until: done.until };
    const exp = Number(h.exp ?? 0);
    return {
      ok: true,
      id: ids.unseal(h.seal!),
      product: h.prod ?? '',
      kind: h.kind ?? '',
      balance: Number(h.bal),
      currency: h.cur ?? '',
      state: h.st ?? '',
      ...(h.refrec ? { refunded: true as const } : {}),
      validDays: Number(h.expd ?? 0),
      ...(exp > 0 ? { expires: exp } : {}),
    };
  }

  /** How long a first lock lasts (a further one lasts longer), in seconds. */
  get firstLockSec(): number {
    return this.ctx.cfg.pin.lockSec;
  }

  /**
   * One line as a lock starts (lockouts are not in /metrics): the link's bucket and, for reference, the
   * start of its ID hash (which gives away no usable ID), the client and how long; never the PIN, the
   * link's secret tag or the ID.
   */
  private logLock(kind: LockKind, lockMs: number, client: string, bucket?: number, hash?: string): void {
    const lockSec = Math.max(1, Math.ceil(lockMs / 1000));
    const link = hash === undefined ? {} : { link: hash.slice(0, 8) };
    this.ctx.log.warn({ lock: kind, bucket, ...link, client, lockSec }, 'check link locked: too many wrong PINs');
  }
}

import { idStatus, type IdStatus, type Outcome } from '../admin/ids';
import type { Context } from '../app/context';
import type { CatalogCache } from '../catalog/cache';
import type { TokenInfo } from '../catalog/schema';
import type { Config } from '../config/config';
import { checkId } from '../ids/idnum';
import type { IdKeys } from '../ids/secrets';
import type { Metrics } from '../observability/metrics';
import type { RedisClient } from '../redis/connect';
import { bucketOfKey, keys } from '../redis/keys';
import type { Scripts } from '../redis/scripts';
import { GuessThrottle } from './throttle';

/**
 * Redemption at venue gates and tills: one atomic script call per scan, the
 * record written with the change. A scan id names one redemption of one
 * scanner: retries return the first answer, and an index (in the scan id's own
 * bucket, claimed before the script runs) refuses the same scan id for another
 * ID or item, wherever that ID's bucket is.
 */
export interface ScanRequest {
  scan: string;
  id: unknown;
  item?: string;
  qty?: number;
  gate?: string;
  dir?: 'in' | 'out';
}

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

export type Answer = ({ ok: true } & Granted) | ({ ok: false } & Refusal);

type Raw = ['ok', string, string, number, number, string?, number?, number?] | ['no', string, ...(string | number)[]];
type RawReverse = ['ok', string, number, number, string, number] | ['no', string];

export class Redemption {
  readonly throttle: GuessThrottle;

  private readonly cfg: Config;
  private readonly redis: RedisClient;
  private readonly scripts: Scripts;
  private readonly ids: IdKeys;

  constructor(
    private readonly ctx: Context,
    private readonly catalog: CatalogCache,
    private readonly metrics: Metrics,
  ) {
    ({ cfg: this.cfg, redis: this.redis, scripts: this.scripts, ids: this.ids } = ctx);
    this.throttle = new GuessThrottle(ctx.redis, ctx.ids, ctx.cfg.guessLimit, ctx.cfg.guessWindowSec);
  }

  redeem(token: TokenInfo, req: ScanRequest): Promise<Answer> {
    return this.scanOp('redeem', token, req);
  }

  validate(token: TokenInfo, req: Omit<ScanRequest, 'scan'>): Promise<Answer> {
    return this.scanOp('validate', token, { ...req, scan: '' });
  }

  private async scanOp(op: 'redeem' | 'validate', token: TokenInfo, req: ScanRequest): Promise<Answer> {
    const wait = this.throttle.retryAfter(token.name);
    if (wait > 0) return { ok: false, reason: 'throttled', retryAfter: wait };
    const venue = token.venue;
    if (!venue) return { ok: false, reason: 'no_venue' };
    // A scanner bound to a gate redeems there, whatever it sends.
    const gate = token.gate ?? req.gate ?? '';
    const checked = checkId(req.id, this.cfg.idLength);
    if (!checked.ok) return checked;
    const { hash, bucket } = this.ids.hash(checked.id);
    const idKey = keys.id(bucket, hash);
    const item = req.item ?? '';
    const qty = req.qty ?? 1;
    const dir = req.dir ?? 'in';
    // Goods are priced from the venue's item list; -1 tells the script the venue does not sell it.
    const price = item ? this.catalog.item(venue, item)?.price : undefined;
    const amount = price === undefined ? -1 : price * qty;
    if (!Number.isSafeInteger(amount)) return { ok: false, reason: 'bad_value' };
    const now = Date.now();

    let raw: Raw;
    const t0 = performance.now();
    if (op === 'validate') {
      raw = await this.scripts.run<Raw>('validate', [idKey], [now, venue, gate, item, amount, dir, qty]);
    } else {
      const scanKey = `${token.name}:${req.scan}`;
      const terms = `${idKey}|${item}|${qty}|${dir}`;
      const indexKey = keys.scanIndex(this.ids.bucketOf(scanKey), scanKey);
      const claimed = await this.redis.set(indexKey, terms, 'EX', this.cfg.scanTtlSec, 'NX', 'GET');
      if (claimed !== null && claimed !== terms) return { ok: false, reason: 'scan_conflict' };
      raw = await this.scripts.run<Raw>(
        'redeem',
        [idKey, keys.scan(bucket, scanKey), keys.redemptions(bucket)],
        [now, venue, gate, item, amount, qty, dir, token.name, req.scan, hash, this.cfg.scanTtlSec],
      );
      // A refusal changed nothing and is not kept: neither is its claim (guesses must not fill Redis).
      if (raw[0] === 'no' && claimed === null) await this.redis.del(indexKey);
    }
    this.metrics.scriptTime(op, performance.now() - t0);
    const answer = toAnswer(raw);
    if (!answer.ok && answer.reason === 'unknown_id') await this.missed(token.name);
    return answer;
  }

  /** A scanner's look at an ID: throttled and counted like a scan, so it is no way around the guess limit. */
  async status(token: TokenInfo, id: unknown): Promise<Outcome<IdStatus> | ({ ok: false } & Refusal)> {
    const wait = this.throttle.retryAfter(token.name);
    if (wait > 0) return { ok: false, reason: 'throttled', retryAfter: wait };
    const s = await idStatus(this.ctx, id);
    if (!s.ok && s.reason === 'unknown_id') await this.missed(token.name);
    return s;
  }

  private async missed(scanner: string): Promise<void> {
    this.metrics.unknownIds.inc();
    if (await this.throttle.miss(scanner)) this.metrics.throttled.inc();
  }

  /** Undoes one earlier redemption of this scanner, by its scan id, once. */
  async reverse(token: TokenInfo, scan: string, reason: string): Promise<Answer> {
    const scanKey = `${token.name}:${scan}`;
    const terms = await this.redis.get(keys.scanIndex(this.ids.bucketOf(scanKey), scanKey));
    if (!terms) return { ok: false, reason: 'unknown_scan' };
    const idKey = terms.slice(0, terms.indexOf('|'));
    const bucket = bucketOfKey(idKey);
    const t0 = performance.now();
    const r = await this.scripts.run<RawReverse>('reverse', [keys.scan(bucket, scanKey), idKey, keys.redemptions(bucket)], [Date.now(), token.name, reason]);
    this.metrics.scriptTime('reverse', performance.now() - t0);
    if (r[0] === 'no') return { ok: false, reason: r[1] };
    return { ok: true, kind: r[1], action: 'reverse', amount: r[2], left: r[3], record: r[4], duplicate: r[5] === 1 };
  }
}

function toAnswer(r: Raw): Answer {
  if (r[0] === 'ok') return { ok: true, kind: r[1], action: r[2], amount: r[3], left: r[4], record: r[5], duplicate: r[6] === 1, reversed: r[7] === 1 };
  const reason = r[1];
  switch (reason) {
    case 'already_redeemed':
      return { ok: false, reason, firstUsed: { time: Number(r[2]), venue: String(r[3]), gate: String(r[4]) } };
    case 'insufficient_value':
      return { ok: false, reason, valueLeft: Number(r[2]) };
    case 'not_yet_valid':
      return { ok: false, reason, validFrom: Number(r[2]) };
    default:
      return { ok: false, reason };
  }
}

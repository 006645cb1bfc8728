import type { Context } from '../app/context';
import { keys } from '../redis/keys';
import { verifyPin } from './pin';
import { pinAttempt } from './scripts';

/**
 * The check link: its token and the buyer's PIN together show the ID again.
 * A wrong PIN shows nothing about the ID (nor whether the link exists); five
 * wrong PINs lock the link for a while, and a client address spraying many
 * links is locked out too.
 */
export type CheckResult =
  | {
      ok: true;
      id: string;
      product: string;
      kind: string;
      balance: number;
      currency: string;
      state: string;
      expires?: number;
      validDays: number;
    }
  | { ok: false; reason: 'wrong_pin' | 'locked'; triesLeft?: number; until?: number };

export class CheckLinks {
  constructor(private readonly ctx: Context) {}

  async check(bucketText: string, token: string, pin: string, client: string): Promise<CheckResult> {
    const { cfg, ids, redis, scripts } = this.ctx;
    const lockMs = cfg.pin.lockSec * 1000;
    const now = Date.now();
    // Counted before the (slow) PIN check, so a burst of parallel guesses cannot slip past the limit;
    // a right PIN gives its count back.
    const clientKey = keys.pinMisses(ids.bucketOf(client), client);
    const counted = await redis.multi().incr(clientKey).expire(clientKey, cfg.pin.lockSec, 'NX').pttl(clientKey).exec();
    const attempts = Number(counted?.[0]?.[1]);
    if (attempts > cfg.pin.maxTriesPerClient)
      return { ok: false, reason: 'locked', until: now + Number(counted?.[2]?.[1]) };

    const bucket = Number(bucketText);
    const idHash =
      Number.isInteger(bucket) && bucket >= 0 && bucket < cfg.buckets && /^[0-9a-f]{32}$/.test(token)
        ? await redis.get(keys.check(bucket, ids.mac(`chk:${token}`).slice(0, 32)))
        : null;
    // An unknown link answers like a wrong PIN: no telling which links exist.
    if (!idHash) return { ok: false, reason: 'wrong_pin' };
    const idKey = keys.id(bucket, idHash);
    // Counted before the PIN is compared, like the per-client count above.
    const limits = { maxTries: cfg.pin.maxTries, lockMs };
    const gate = await pinAttempt(scripts, idKey, 'try', limits);
    if (gate.state === 'locked') return { ok: false, reason: 'locked', until: gate.until };
    const attempt = gate.state === 'open' ? gate.attempt : 0;

    const h = await redis.hgetall(idKey);
    if (!h.pin || !(await verifyPin(pin, h.pin))) {
      const r = await pinAttempt(scripts, idKey, 'wrong', limits, attempt);
      return r.state === 'locked'
        ? { ok: false, reason: 'locked', until: r.until }
        : { ok: false, reason: 'wrong_pin', triesLeft: r.state === 'wrong' ? r.triesLeft : 0 };
    }
    await redis.decr(clientKey);
    // The link may have locked while this PIN was being verified (wrong PINs sent at the same time).
    const done = await pinAttempt(scripts, idKey, 'ok', limits);
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
      validDays: Number(h.expd ?? 0),
      ...(exp > 0 ? { expires: exp } : {}),
    };
  }
}

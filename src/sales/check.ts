import type { Context } from '../app/context';
import { keys } from '../redis/keys';
import { verifyPin } from './pin';

/**
 * The check link: its token and the buyer's PIN together show the ID again.
 * A wrong PIN shows nothing about the ID (nor whether the link exists); five
 * wrong PINs lock the link for a while, and a client address spraying many
 * links is locked out too.
 */
export type CheckResult =
  | { ok: true; id: string; product: string; kind: string; balance: number; currency: string; state: string; expires?: number }
  | { ok: false; reason: 'wrong_pin' | 'locked'; triesLeft?: number; until?: number };

type Attempt = ['open'] | ['locked', number] | ['wrong', number];

export class CheckLinks {
  constructor(private readonly ctx: Context) {}

  async check(bucketText: string, token: string, pin: string, client: string): Promise<CheckResult> {
    const { cfg, ids, redis, scripts } = this.ctx;
    const lockMs = cfg.pin.lockSec * 1000;
    const now = Date.now();
    const clientKey = keys.pinMisses(ids.bucketOf(client), client);
    const clientMisses = Number((await redis.get(clientKey)) ?? 0);
    if (clientMisses >= cfg.pin.maxTriesPerClient) return { ok: false, reason: 'locked', until: now + Number(await redis.pttl(clientKey)) };

    const bucket = Number(bucketText);
    const idHash = Number.isInteger(bucket) && bucket >= 0 && bucket < cfg.buckets && /^[0-9a-f]{32}$/.test(token) ? await redis.get(keys.check(bucket, ids.mac(`chk:${token}`).slice(0, 32))) : null;
    const miss = async (): Promise<CheckResult> => {
      await redis.multi().incr(clientKey).expire(clientKey, cfg.pin.lockSec, 'NX').exec();
      return { ok: false, reason: 'wrong_pin' };
    };
    // An unknown link answers like a wrong PIN: no telling which links exist.
    if (!idHash) return miss();
    const idKey = keys.id(bucket, idHash);
    const gate = await scripts.run<Attempt>('pin_attempt', [idKey], [now, 'check', cfg.pin.maxTries, lockMs]);
    if (gate[0] === 'locked') return { ok: false, reason: 'locked', until: gate[1] };

    const h = await redis.hgetall(idKey);
    if (!h.pin || !(await verifyPin(pin, h.pin))) {
      await redis.multi().incr(clientKey).expire(clientKey, cfg.pin.lockSec, 'NX').exec();
      const r = await scripts.run<Attempt>('pin_attempt', [idKey], [Date.now(), 'wrong', cfg.pin.maxTries, lockMs]);
      return r[0] === 'locked' ? { ok: false, reason: 'locked', until: r[1] } : { ok: false, reason: 'wrong_pin', triesLeft: r[1] as number };
    }
    await scripts.run<Attempt>('pin_attempt', [idKey], [Date.now(), 'ok', cfg.pin.maxTries, lockMs]);
    const exp = Number(h.exp ?? 0);
    return {
      ok: true,
      id: ids.unseal(h.seal!),
      product: h.prod ?? '',
      kind: h.kind ?? '',
      balance: Number(h.bal),
      currency: h.cur ?? '',
      state: h.st ?? '',
      ...(exp > 0 ? { expires: exp } : {}),
    };
  }
}

/**
 * Caller-number (ANI) login: an owner registers a few caller numbers to a talk
 * ID, and a switch may then start a call with the caller's number instead of
 * the ID. Shared by the metering domain (resolving), the check page (owners)
 * and the CLI (operators).
 *
 * Two places hold a registration, in two slots: the index (keyed hash of the
 * number -> ID key, tagged by the number's own bucket) and the ID's list (its
 * hash: `anis` and the sealed number under `ani:<hash>`). The index is the
 * source of truth at use; call_start then checks, in the ID's slot, that the
 * ID still lists the number, so a number moved between the two reads bills
 * nobody. Writes keep this order, so a crash between two steps never leaves a
 * number listed on an ID that the index does not name:
 * - add: index first (claimed for the ID), then the list; a refused list add
 *   releases the index again;
 * - remove: the list first, then the index (released only if it names the ID);
 * - move (operator): off the old ID's list, then the index, then the new list.
 * What a crash leaves behind is an index naming an ID that does not list the
 * number: it logs in to nothing, and the next add of that number takes it over.
 * A listing repairs the other way round: a number the index does not name for
 * this ID is taken off its list.
 */
import type { Context } from '../app/context';
import type { Product } from '../catalog/schema';
import type { IdKeys } from '../ids/secrets';
import type { RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';
import { replicated } from '../redis/replication';
import type { Refusable } from './ids';
import { aniBind, aniIndex, aniSpend, type AniBindReply } from './scripts';
import { idFields } from './id-fields';

/** E.164: a country code (1-9 first) and the subscriber number, at most 15 digits in all. */
export const ANI_MIN_DIGITS = 7;
export const ANI_MAX_DIGITS = 15;
const ANI_DIGITS = new RegExp(`^[1-9][0-9]{${ANI_MIN_DIGITS - 1},${ANI_MAX_DIGITS - 1}}$`);

/** The window the change rate is counted in. */
export const ANI_WINDOW_MS = 86_400_000;

/**
 * A caller number as Tessera keeps it: E.164 digits, country code first. Spaces
 * are dropped and a leading `+` or `00` (the international prefix) taken off;
 * what is left must be 7 to 15 digits starting with 1-9 (and, for +1, an area
 * code starting with 2-9). A national number (trunk prefix 0) is undefined:
 * refused, never guessed at.
 */
export function aniDigits(raw: unknown): string | undefined {
  if (typeof raw !== 'string' || raw.length > 40) return undefined;
  const s = raw.replace(/\s+/g, '');
  const digits = s.startsWith('+') ? s.slice(1) : s.startsWith('00') ? s.slice(2) : s;
  // North American area codes start with 2-9: +10… and +11… are no numbers. Australia's
  // international prefix 0011 read as 00 and 11… would otherwise be kept as one.
  return ANI_DIGITS.test(digits) && !/^1[01]/.test(digits) ? digits : undefined;
}

/** A caller number, normalised, and where its index lives. */
export interface AniPlace {
  digits: string;
  hash: string;
  bucket: number;
  /** The index key. */
  key: string;
}

export function aniPlace(ids: IdKeys, raw: unknown): AniPlace | undefined {
  const digits = aniDigits(raw);
  if (digits === undefined) return undefined;
  // Its own namespace of the keyed hash: no number hashes like an ID.
  const { hash, bucket } = ids.hash(`ani:${digits}`);
  return { digits, hash, bucket, key: keys.aniIndex(bucket, hash) };
}

/** What a switch's `ani` logs in to: the ID's key and hash, and the number's hash for call_start's check. */
export interface AniLogin {
  idKey: string;
  idHash: string;
  bucket: number;
  aniHash: string;
}

/** One read, in the number's slot: bad_ani for a number not in E.164 form, unknown_ani for one nobody registered. */
export async function resolveAni(redis: RedisClient, ids: IdKeys, raw: unknown): Promise<Refusable<AniLogin>> {
  const p = aniPlace(ids, raw);
  if (!p) return { ok: false, reason: 'bad_ani' };
  const idKey = await redis.get(p.key);
  const m = idKey ? /^ts:\{b(\d+)\}:id:([0-9a-f]{32})$/.exec(idKey) : null;
  if (!idKey || !m) return { ok: false, reason: 'unknown_ani' };
  return { ok: true, idKey, idHash: m[2]!, bucket: Number(m[1]), aniHash: p.hash };
}

/** A product's rules for caller numbers. */
export interface AniTerms {
  maxAnis: number;
  aniChangesPerDay: number;
}

/** A product's caller-number rules, its defaults filled in; undefined for products that make no calls. */
export function aniTermsOf(p: Product | undefined): AniTerms | undefined {
  if (p?.kind !== 'talk') return undefined;
  return { maxAnis: p.maxAnis ?? 2, aniChangesPerDay: p.aniChangesPerDay ?? 4 };
}

/** Who changes the numbers: an owner is held to the change rate and never takes a number from another ID. */
export type AniActor = { role: 'owner' } | { role: 'operator'; move?: boolean };

export type AniChange = Refusable<{ change: 'new' | 'same' | 'gone'; count: number }>;

export class AniRegistry {
  constructor(
    private readonly ctx: Pick<Context, 'redis' | 'scripts' | 'ids'>,
    /** A talk product's caller-number rules by product name. */
    private readonly termsOf: (product: string) => AniTerms | undefined | Promise<AniTerms | undefined>,
  ) {}

  /** The key of an ID given in clear (the check page has it after the PIN). */
  idKeyOf(id: string): string {
    const { hash, bucket } = this.ctx.ids.hash(id);
    return keys.id(bucket, hash);
  }

  private async terms(idKey: string): Promise<Refusable<AniTerms>> {
    const [prod, kind] = await idFields(this.ctx.redis, idKey, ['prod', 'kind']);
    if (!prod) return { ok: false, reason: 'unknown_id' };
    const t = kind === 'talk' ? await this.termsOf(prod) : undefined;
    if (!t) return { ok: false, reason: 'wrong_kind' };
    return { ok: true, ...t };
  }

  /** Registers a number to the ID (see the file's header for the order of writes). */
  async add(idKey: string, raw: unknown, actor: AniActor): Promise<AniChange> {
    const { redis, scripts, ids } = this.ctx;
    const p = aniPlace(ids, raw);
    if (!p) return { ok: false, reason: 'bad_ani' };
    const t = await this.terms(idKey);
    if (!t.ok) return t;
    // A full list is refused before the number is looked up, whatever it is: else the answer would tell
    // anyone with an ID and its PIN whether another ID has the number (whose caller ID a forger would send).
    const listed = ((await redis.hget(idKey, 'anis')) ?? '').split(',').filter(Boolean);
    if (listed.length >= t.maxAnis && !listed.includes(p.hash)) return { ok: false, reason: 'too_many_anis' };
    // Another ID's number costs an owner a change of the day, as an add would: a bounded number of tests.
    const taken = async (): Promise<AniChange> => {
      if (actor.role !== 'owner') return { ok: false, reason: 'ani_taken' };
      const spent = await aniSpend(scripts, idKey, t.aniChangesPerDay, ANI_WINDOW_MS);
      return spent.ok ? { ok: false, reason: 'ani_taken' } : spent;
    };

    let claim = await aniIndex(scripts, p.key, 'claim', idKey);
    if (claim.state === 'taken') {
      const other = claim.idKey;
      // The index may be stale (a crash, a number removed there): only a number the other ID lists is taken.
      if (await redis.hexists(other, `ani:${p.hash}`)) {
        if (actor.role !== 'operator' || !actor.move) return taken();
        // Off the old list first: a call that found the old ID by the index is refused from here on.
        await aniBind(scripts, other, { op: 'remove', aniHash: p.hash, changes: 0, windowMs: ANI_WINDOW_MS });
      }
      claim = await aniIndex(scripts, p.key, 'claim', idKey, other);
      if (claim.state === 'taken') return taken();
    }
    const r = await aniBind(scripts, idKey, {
      op: 'add',
      aniHash: p.hash,
      sealed: ids.seal(p.digits),
      max: t.maxAnis,
      changes: actor.role === 'owner' ? t.aniChangesPerDay : 0,
      windowMs: ANI_WINDOW_MS,
    });
    if (!r.ok) {
      // The list refused the number: the index claimed for it goes again.
      if (claim.state === 'new') await aniIndex(scripts, p.key, 'release', idKey);
      return r;
    }
    // Another ID took the number over while it was being listed here (it found this ID not listing it yet).
    if ((await redis.get(p.key)) !== idKey) {
      await aniBind(scripts, idKey, { op: 'remove', aniHash: p.hash, changes: 0, windowMs: ANI_WINDOW_MS });
      return { ok: false, reason: 'ani_taken' };
    }
    await replicated(redis, p.key, idKey);
    return r;
  }

  /** Takes a number off the ID: its list first, then the index if it names this ID. */
  async remove(idKey: string, raw: unknown, actor: AniActor): Promise<AniChange> {
    const { redis, scripts, ids } = this.ctx;
    const p = aniPlace(ids, raw);
    if (!p) return { ok: false, reason: 'bad_ani' };
    let changes = 0;
    if (actor.role === 'owner') {
      const t = await this.terms(idKey);
      if (!t.ok) return t;
      changes = t.aniChangesPerDay;
    }
    const r: AniBindReply = await aniBind(scripts, idKey, {
      op: 'remove',
      aniHash: p.hash,
      changes,
      windowMs: ANI_WINDOW_MS,
    });
    // Not listed: an index left naming this ID by a crash goes all the same.
    if (r.ok || r.reason === 'unknown_ani') await aniIndex(scripts, p.key, 'release', idKey);
    if (r.ok) await replicated(redis, p.key, idKey);
    return r;
  }

  /**
   * The numbers registered to the ID (E.164 digits, in the order they were
   * added). A listed number whose index does not name this ID is taken off
   * the list on the way (a repair; not counted as a change).
   */
  async list(idKey: string): Promise<string[]> {
    const { redis, scripts, ids } = this.ctx;
    const h = await redis.hgetall(idKey);
    const out: string[] = [];
    for (const hash of (h.anis ?? '').split(',').filter(Boolean)) {
      const sealed = h[`ani:${hash}`];
      const p = sealed ? aniPlace(ids, ids.unseal(sealed)) : undefined;
      if (p && (await redis.get(p.key)) === idKey) out.push(p.digits);
      else await aniBind(scripts, idKey, { op: 'remove', aniHash: hash, changes: 0, windowMs: ANI_WINDOW_MS });
    }
    return out;
  }
}

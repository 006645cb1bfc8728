/**
 * Card payments anyone can start (the buy page's purchases, the check page's
 * recharges): what an anonymous client may do before the card company is
 * asked. Each one is a card company call and a record in Redis, and a way to
 * test stolen card numbers and PINs, so new ones count against one budget per
 * client and one for all such clients together (BUY_LIMIT_*), and a card number
 * that cannot exist is refused before it is counted or sent anywhere.
 */
import type { Context } from '../app/context';
import { luhnValid } from '../ids/luhn';
import { CARD_DIGITS } from '../protocol/sales';
import { admitPurchase } from './scripts';

/** A card number once its spaces are gone: 12 to 19 digits, its last the Luhn check digit. */
export function cardNumberValid(card: string): boolean {
  return CARD_DIGITS.test(card) && luhnValid(card);
}

/**
 * An anonymous buyer as the limits count it: an IPv4 address as it is, an IPv6
 * address by its /64 (what one subscriber is usually given), an IPv4-mapped
 * IPv6 address as its IPv4 address.
 */
export function clientGroup(address: string): string {
  const a = address.trim().toLowerCase();
  if (!a.includes(':')) return a;
  const dotted = /(?:^|:)(\d{1,3}(?:\.\d{1,3}){3})$/.exec(a);
  if (dotted) return dotted[1]!;
  const [head = '', tail] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups =
    tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  const n = groups.map((g) => parseInt(g || '0', 16));
  if (n.length !== 8 || n.some((x) => !(x >= 0 && x <= 0xffff))) return a;
  // ::ffff:a.b.c.d written in hex (as some servers report IPv4 clients of a dual-stack socket).
  if (n.slice(0, 5).every((x) => x === 0) && n[5] === 0xffff)
    return [n[6]! >> 8, n[6]! & 255, n[7]! >> 8, n[7]! & 255].join('.');
  return `${n
    .slice(0, 4)
    .map((x) => x.toString(16))
    .join(':')}::/64`;
}

/** A new payment refused by the limits, with the seconds until its count's window ends. */
export interface TooMany {
  ok: false;
  reason: 'too_many_purchases';
  message: string;
  retryAfter: number;
}

/**
 * Counts a new anonymous payment from `client` (its address) against its
 * group's limit and the total; the refusal when either is reached.
 */
export async function admitAnonymous(ctx: Context, client: string): Promise<TooMany | undefined> {
  const { perClient, total, windowSec } = ctx.cfg.buyLimit;
  const admitted = await admitPurchase(ctx.scripts, ctx.ids.mac(`buyer:${clientGroup(client)}`).slice(0, 32), {
    perClient,
    total,
    windowMs: windowSec * 1000,
  });
  if (admitted.ok) return undefined;
  return {
    ok: false,
    reason: 'too_many_purchases',
    message:
      admitted.by === 'client'
        ? 'too many payments from this address; retry after the time in Retry-After'
        : 'too many payments right now; retry after the time in Retry-After',
    retryAfter: Math.max(1, Math.ceil(admitted.waitMs / 1000)),
  };
}

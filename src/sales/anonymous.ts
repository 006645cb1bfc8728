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
import { clientGroup, clientNetwork } from '../protocol/client-address';
import { CARD_DIGITS } from '../protocol/sales';
import { admitPurchase } from './scripts';

/** A card number once its spaces are gone: 12 to 19 digits, its last the Luhn check digit. */
export function cardNumberValid(card: string): boolean {
  return CARD_DIGITS.test(card) && luhnValid(card);
}

/** A new payment refused by the limits, with the seconds until its count's window ends. */
export interface TooMany {
  ok: false;
  reason: 'too_many_purchases';
  message: string;
  retryAfter: number;
}

/**
 * Counts the new anonymous payment whose record will be `recordKey`, from
 * `client` (its address), against its group's limit, its network's and the
 * total; the refusal when one is reached. Each payment counts once, in Redis:
 * copies of one form sent at once (a double tap), on one gateway or on
 * several behind a load balancer, share the first copy's count. A refusal or
 * a failure counts nothing, so a copy sent after it is counted afresh.
 */
export async function admitAnonymous(ctx: Context, client: string, recordKey: string): Promise<TooMany | undefined> {
  const { perClient, perNetwork, total, windowSec } = ctx.cfg.buyLimit;
  const hash = (what: string): string => ctx.ids.mac(what).slice(0, 32);
  const admitted = await admitPurchase(
    ctx.scripts,
    {
      client: hash(`buyer:${clientGroup(client)}`),
      network: hash(`network:${clientNetwork(client)}`),
      payment: hash(`payment:${recordKey}`),
    },
    { perClient, perNetwork, total, windowMs: windowSec * 1000 },
  );
  if (admitted.ok) return undefined;
  const from = { client: 'from this address', network: 'from this network', total: 'right now' }[admitted.by];
  return {
    ok: false,
    reason: 'too_many_purchases',
    message: `too many payments ${from}; retry after the time in Retry-After`,
    retryAfter: Math.max(1, Math.ceil(admitted.waitMs / 1000)),
  };
}

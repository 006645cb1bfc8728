/** Requests of the sales API (docs/sales.md) and the buy page's form. */
import { Type, type Static } from '@sinclair/typebox';

/** Buyers choose 4 to 12 digits. Unanchored, as an HTML form's `pattern` wants it. */
export const PIN_DIGITS = '[0-9]{4,12}';
export const PIN_PATTERN = `^${PIN_DIGITS}$`;
/** The same check as a RegExp, for code that tests a PIN outside a schema. */
export const PIN_RE = new RegExp(PIN_PATTERN);

export const PurchaseBody = Type.Object({
  product: Type.String({ maxLength: 64 }),
  pin: Type.String({ pattern: PIN_PATTERN }),
  payment: Type.Object({
    card: Type.String({ pattern: '^[0-9 ]{8,23}$' }),
    cardPin: Type.String({ maxLength: 12 }),
  }),
});
export const RefundBody = Type.Object({ reason: Type.Optional(Type.String({ maxLength: 200 })) });

/** The Idempotency-Key header a purchase must carry. */
export const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{8,128}$/;

/**
 * The buy page's own name: its purchases are keyed `web/<nonce>`, a sales
 * token's `<name>/<Idempotency-Key>`, so a sales token of this name would
 * share the buy page's purchases. No sales token may have it.
 */
export const BUY_PAGE_NAME = 'web';

/** A card number once its spaces (and on the pages dashes) are gone: 12 to 19 digits. */
export const CARD_DIGITS = /^[0-9]{12,19}$/;

/**
 * The buy page's form (POST /buy), checked field by field so the page can say
 * which one is wrong: the card number once its spaces and dashes are gone (a
 * number of the wrong length is malformed, 400, not a decline), and the form's
 * nonce (one purchase per form).
 */
export const BuyForm = {
  pin: PIN_RE,
  card: CARD_DIGITS,
  nonce: /^[0-9a-f]{32}$/,
} as const;

export type PurchaseBody = Static<typeof PurchaseBody>;
export type RefundBody = Static<typeof RefundBody>;

/** A recharge voucher redeemed into an ID (POST /v1/topups): both ID numbers as typed. */
export const VoucherTopupBody = Type.Object({
  id: Type.String({ maxLength: 64 }),
  voucher: Type.String({ maxLength: 64 }),
});
export type VoucherTopupBody = Static<typeof VoucherTopupBody>;

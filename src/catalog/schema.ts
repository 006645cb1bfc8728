import { Type, type Static } from '@sinclair/typebox';

/**
 * Catalog records as the CLI loads them and Redis stores them (JSON values).
 * Amounts are integer micro-units of the product's currency; rates are
 * micro-units per second; durations are whole seconds or days.
 */
const Name = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' });
const Micro = Type.Integer({ minimum: 0, maximum: 1e15 });

export const TalkProduct = Type.Object(
  {
    name: Name,
    kind: Type.Literal('talk'),
    title: Type.Optional(Type.String({ maxLength: 200 })),
    currency: Type.String({ pattern: '^[A-Z]{3}$' }),
    face: Type.Integer({ minimum: 1, maximum: 1e15 }),
    price: Micro,
    plan: Name,
    /** Seconds left at which the switch is warned, each once per call. */
    thresholds: Type.Array(Type.Integer({ minimum: 1, maximum: 86400 }), { default: [300, 60, 10], maxItems: 16 }),
    /** Validity after first use; 0 means no expiry. */
    expiryDays: Type.Integer({ minimum: 0, maximum: 3650, default: 180 }),
    maxCalls: Type.Integer({ minimum: 1, maximum: 100, default: 1 }),
  },
  { additionalProperties: false },
);
export type TalkProduct = Static<typeof TalkProduct>;

export const Product = TalkProduct;
export type Product = TalkProduct;

export const Rate = Type.Object(
  {
    /** Destination prefix in international format, digits only ('' matches everything). */
    prefix: Type.String({ pattern: '^[0-9]{0,20}$' }),
    rate: Type.Integer({ minimum: 1, maximum: 1e12 }),
    fee: Type.Integer({ minimum: 0, maximum: 1e12, default: 0 }),
  },
  { additionalProperties: false },
);
export type Rate = Static<typeof Rate>;

export const RatePlan = Type.Object(
  {
    name: Name,
    rates: Type.Array(Rate, { minItems: 1, maxItems: 100_000 }),
  },
  { additionalProperties: false },
);
export type RatePlan = Static<typeof RatePlan>;

export const Role = Type.Union([Type.Literal('switch'), Type.Literal('scanner'), Type.Literal('sales'), Type.Literal('admin')]);
export type Role = Static<typeof Role>;

export const TokenInfo = Type.Object(
  {
    name: Name,
    role: Role,
    venue: Type.Optional(Name),
    gate: Type.Optional(Name),
    created: Type.Integer(),
  },
  { additionalProperties: false },
);
export type TokenInfo = Static<typeof TokenInfo>;

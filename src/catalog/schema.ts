/**
 * Catalog records as the CLI loads them and Redis stores them (JSON values).
 * Amounts are integer micro-units of the product's currency; rates are
 * micro-units per second; durations are whole seconds or days.
 */
import { Type, type Static } from '@sinclair/typebox';

const Name = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' });
const Micro = Type.Integer({ minimum: 0, maximum: 1e15 });

/** The balance events a webhook can ask for (docs/operations.md, Webhooks). */
export const HOOK_EVENTS = ['low_balance', 'exhausted', 'expiring', 'topup'] as const;
export type HookEvent = (typeof HOOK_EVENTS)[number];

/** Where a product's balance events are POSTed, which of them, and the key their signature is made with. */
export const Webhook = Type.Object(
  {
    /** http or https only (checked again as a URL when the catalog is loaded). */
    url: Type.String({ pattern: '^[Hh][Tt][Tt][Pp][Ss]?://[^\\s]+$', maxLength: 2000 }),
    events: Type.Array(Type.Union(HOOK_EVENTS.map((e) => Type.Literal(e))), {
      minItems: 1,
      maxItems: HOOK_EVENTS.length,
      uniqueItems: true,
    }),
    /** HMAC-SHA256 key of the `Tessera-Signature` header; shared with the receiver only. */
    secret: Type.String({ minLength: 16, maxLength: 200 }),
  },
  { additionalProperties: false },
);
export type Webhook = Static<typeof Webhook>;
/** Webhooks one product may have. */
export const MAX_WEBHOOKS = 5;

/** Fields every product has. */
const common = {
  name: Name,
  title: Type.Optional(Type.String({ maxLength: 200 })),
  currency: Type.String({ pattern: '^[A-Z]{3}$' }),
  price: Micro,
  /**
   * On public sale: the buy page and anonymous buyers see and buy it. Absent or
   * false: only a sales token (POST /v1/purchases) or the operator sells it.
   */
  webShop: Type.Optional(Type.Boolean()),
  /** Balance events of this product's IDs are delivered to these. */
  webhooks: Type.Optional(Type.Array(Webhook, { maxItems: MAX_WEBHOOKS })),
  /** An `expiring` event is emitted this many days before an ID expires (none when absent). */
  expiringDays: Type.Optional(Type.Integer({ minimum: 1, maximum: 365 })),
};
/** Validity after first use; 0 means no expiry. */
const ExpiryDays = (def: number) => Type.Integer({ minimum: 0, maximum: 3650, default: def });
/** Where an ID may be redeemed; empty means at every venue. */
const Venues = Type.Array(Name, { maxItems: 10_000, default: [] });
/** A point in time: milliseconds since the epoch, or an ISO 8601 string. */
const Instant = Type.Union([Type.Integer({ minimum: 0 }), Type.String({ minLength: 4, maxLength: 40 })]);

export const TalkProduct = Type.Object(
  {
    ...common,
    kind: Type.Literal('talk'),
    face: Type.Integer({ minimum: 1, maximum: 1e15 }),
    plan: Name,
    /** Seconds left at which the switch is warned, each once per call. */
    thresholds: Type.Array(Type.Integer({ minimum: 1, maximum: 86400 }), { default: [300, 60, 10], maxItems: 16 }),
    expiryDays: ExpiryDays(180),
    maxCalls: Type.Integer({ minimum: 1, maximum: 100, default: 1 }),
  },
  { additionalProperties: false },
);
export type TalkProduct = Static<typeof TalkProduct>;

/** A ticket: N entries at the listed venues (and gates), inside a validity window. */
export const EntryProduct = Type.Object(
  {
    ...common,
    kind: Type.Literal('entry'),
    entries: Type.Integer({ minimum: 1, maximum: 10_000, default: 1 }),
    venues: Type.Array(Name, { minItems: 1, maxItems: 10_000 }),
    gates: Type.Array(Name, { maxItems: 10_000, default: [] }),
    validFrom: Type.Optional(Instant),
    validUntil: Type.Optional(Instant),
    /** After an exit scan the holder may come back in without using another entry. */
    reentry: Type.Boolean({ default: false }),
    expiryDays: ExpiryDays(0),
  },
  { additionalProperties: false },
);
export type EntryProduct = Static<typeof EntryProduct>;

/** Stored value spent on items from a venue's item catalog. */
export const GoodsProduct = Type.Object(
  {
    ...common,
    kind: Type.Literal('goods'),
    face: Type.Integer({ minimum: 1, maximum: 1e15 }),
    venues: Venues,
    expiryDays: ExpiryDays(365),
  },
  { additionalProperties: false },
);
export type GoodsProduct = Static<typeof GoodsProduct>;

/** A fixed number of uses of one named service. */
export const ServiceProduct = Type.Object(
  {
    ...common,
    kind: Type.Literal('service'),
    service: Name,
    uses: Type.Integer({ minimum: 1, maximum: 10_000 }),
    venues: Venues,
    expiryDays: ExpiryDays(365),
  },
  { additionalProperties: false },
);
export type ServiceProduct = Static<typeof ServiceProduct>;

export const PRODUCT_SCHEMAS = {
  talk: TalkProduct,
  entry: EntryProduct,
  goods: GoodsProduct,
  service: ServiceProduct,
} as const;
export type Kind = keyof typeof PRODUCT_SCHEMAS;
export type Product = TalkProduct | EntryProduct | GoodsProduct | ServiceProduct;

/** Whether anonymous buyers (the buy page, the public product list) may buy a product: only when flagged `webShop`. */
export const isOnPublicSale = (p: Product): boolean => p.webShop === true;

/** An item a venue sells against goods IDs. */
export const Item = Type.Object(
  {
    venue: Name,
    item: Name,
    price: Type.Integer({ minimum: 1, maximum: 1e15 }),
    title: Type.Optional(Type.String({ maxLength: 200 })),
  },
  { additionalProperties: false },
);
export type Item = Static<typeof Item>;

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

export const Role = Type.Union([
  Type.Literal('switch'),
  Type.Literal('scanner'),
  Type.Literal('sales'),
  Type.Literal('admin'),
]);
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

/** Where a traveller is: the local numbers to dial into the service. */
export const AccessArea = Type.Object(
  {
    area: Name,
    name: Type.String({ minLength: 1, maxLength: 100 }),
    /** International dialling code of the country the area is in, e.g. "81". */
    countryCode: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$' })),
    numbers: Type.Array(
      Type.Object(
        {
          number: Type.String({ pattern: '^\\+?[0-9 ()-]{3,30}$' }),
          label: Type.Optional(Type.String({ maxLength: 100 })),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 50 },
    ),
    notes: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  { additionalProperties: false },
);
export type AccessArea = Static<typeof AccessArea>;

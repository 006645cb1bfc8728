/**
 * Catalog records as the CLI loads them and Redis stores them (JSON values).
 * Amounts are integer micro-units of the product's currency; rates are
 * micro-units per second, or per a plan row's `per` seconds; durations are
 * whole seconds or days.
 */
import { Type, type Static } from '@sinclair/typebox';

/**
 * The most money an amount, a price or a balance may be: 10^9 units of a
 * currency, far inside the integers below 2^53 that Lua's and JSON's numbers
 * carry exactly, with room for the sums the scripts make of them.
 */
export const MAX_MICRO = 1e15;

const Name = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' });
const Micro = Type.Integer({ minimum: 0, maximum: MAX_MICRO });
/** A number a switch can send a call to: international digits with an optional leading +. */
const Dialable = Type.String({ pattern: '^\\+?[0-9]{3,20}$' });

/** The balance events a webhook can ask for (docs/operations.md, Webhooks). */
export const HOOK_EVENTS = ['low_balance', 'exhausted', 'expiring', 'topup', 'expired'] as const;
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
    face: Type.Integer({ minimum: 1, maximum: MAX_MICRO }),
    plan: Name,
    /** Seconds left at which the switch is warned, each once per call. */
    thresholds: Type.Array(Type.Integer({ minimum: 1, maximum: 86400 }), { default: [300, 60, 10], maxItems: 16 }),
    expiryDays: ExpiryDays(180),
    maxCalls: Type.Integer({ minimum: 1, maximum: 100, default: 1 }),
    /**
     * Credit control (docs/protocol.md#credit-control). The seconds a call's
     * reservation covers at a time; 0 reserves all that is free of the balance.
     * Absent: 0 when maxCalls is 1, else 60.
     */
    grantSec: Type.Optional(Type.Integer({ minimum: 0, maximum: 86400 })),
    /**
     * What the switch does when the final grant runs out: `terminate` (cut the call)
     * or `redirect` it to `redirectTo` (a top-up line).
     */
    finalAction: Type.Optional(Type.Union([Type.Literal('terminate'), Type.Literal('redirect')])),
    redirectTo: Type.Optional(Dialable),
    /**
     * What the switch does when it cannot reach Tessera (RFC 4006 CCFH): `terminate`
     * at the end of the current grant, or `continue` for up to `failureSec` seconds
     * more, billed when Tessera is back.
     */
    onFailure: Type.Optional(Type.Union([Type.Literal('terminate'), Type.Literal('continue')])),
    failureSec: Type.Optional(Type.Integer({ minimum: 0, maximum: 86400 })),
    /** In quota mode, how long a grant is valid: the switch asks again by then even if it is not used up. */
    quotaValiditySec: Type.Optional(Type.Integer({ minimum: 10, maximum: 86400 })),
    /**
     * Caller numbers that may be registered to an ID for PIN-less login (0 forbids
     * it; absent: 2), and an owner's changes to them per day (absent: 4).
     */
    maxAnis: Type.Optional(Type.Integer({ minimum: 0, maximum: 10 })),
    aniChangesPerDay: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    /** Whether its IDs may be recharged (vouchers, the operator, the owner online); absent: true. */
    topup: Type.Optional(Type.Boolean()),
    /**
     * A recharge moves the expiry to at least this many days after it (an ID not
     * used yet keeps counting from first use); absent: `expiryDays`; 0: unchanged.
     */
    topupExtendsDays: Type.Optional(Type.Integer({ minimum: 0, maximum: 3650 })),
    /** Amounts the owner may recharge online on the check page (none: not offered). */
    topupAmounts: Type.Optional(Type.Array(Type.Integer({ minimum: 1, maximum: 1e12 }), { maxItems: 10 })),
    /** The highest balance a recharge may leave; absent: ten times `face`. */
    topupMaxBalance: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_MICRO })),
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
    face: Type.Integer({ minimum: 1, maximum: MAX_MICRO }),
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

/**
 * A recharge voucher: sold like any ID, never used by itself; its whole value is
 * redeemed into a talk ID of the same currency (docs/sales.md, "Top-up").
 */
export const RechargeProduct = Type.Object(
  {
    ...common,
    kind: Type.Literal('recharge'),
    face: Type.Integer({ minimum: 1, maximum: 1e12 }),
    /** Products its value may go into; empty: any talk product that takes top-ups. */
    into: Type.Array(Name, { maxItems: 100, default: [] }),
  },
  { additionalProperties: false },
);
export type RechargeProduct = Static<typeof RechargeProduct>;

export const PRODUCT_SCHEMAS = {
  talk: TalkProduct,
  entry: EntryProduct,
  goods: GoodsProduct,
  service: ServiceProduct,
  recharge: RechargeProduct,
} as const;
export type Kind = keyof typeof PRODUCT_SCHEMAS;
export type Product = TalkProduct | EntryProduct | GoodsProduct | ServiceProduct | RechargeProduct;

/** What a recharge of an ID of this product may do, as the top-up script takes it (lua/topup.lua). */
export interface TopupTerms {
  allowed: boolean;
  /** The expiry moves to at least this many days after the recharge; 0: unchanged. */
  extendsDays: number;
  maxBalance: number;
}

/** A product's top-up rules; only talk products take top-ups. */
export function topupTerms(p: Product | undefined): TopupTerms {
  if (p?.kind !== 'talk') return { allowed: false, extendsDays: 0, maxBalance: 0 };
  return {
    allowed: p.topup !== false,
    extendsDays: p.topupExtendsDays ?? p.expiryDays,
    // Ten times the face unless the product says; never past what a balance may hold.
    maxBalance: Math.min(p.topupMaxBalance ?? p.face * 10, MAX_MICRO),
  };
}

/** Whether anonymous buyers (the buy page, the public product list) may buy a product: only when flagged `webShop`. */
export const isOnPublicSale = (p: Product): boolean => p.webShop === true;

/** An item a venue sells against goods IDs. */
export const Item = Type.Object(
  {
    venue: Name,
    item: Name,
    price: Type.Integer({ minimum: 1, maximum: MAX_MICRO }),
    title: Type.Optional(Type.String({ maxLength: 200 })),
  },
  { additionalProperties: false },
);
export type Item = Static<typeof Item>;

/** A charge of a rate plan, micro-units. */
const PlanMicro = (minimum: number) => Type.Integer({ minimum, maximum: 1e12 });
/**
 * A rate, micro-units per second (or per the row's `per` seconds): up to 10^10,
 * so that the longest call a tick can report (604,800 s) costs less than 2^53,
 * the integers Lua's numbers carry exactly, with room for its fee and for what
 * it ran short added to its cost.
 */
export const MAX_RATE = 1e10;
const PlanRate = Type.Integer({ minimum: 1, maximum: MAX_RATE });
/** The most seconds a rate may be the price of: an hour (a price per hour). */
export const MAX_RATE_PER = 3600;
/** A billing block, seconds: up to an hour. */
const BlockSec = Type.Integer({ minimum: 1, maximum: 3600 });
/** A time-of-day period's name, as rate columns name it (`rate.peak` in CSV). */
const PeriodName = Type.String({ pattern: '^[A-Za-z][A-Za-z0-9_-]{0,31}$' });
/** A wall-clock time in the plan's zone, HH:MM, 00:00 to 24:00. */
const Clock = Type.String({ pattern: '^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$' });
export const WEEKDAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
export type Weekday = (typeof WEEKDAYS)[number];

/**
 * A time-of-day window of a plan (peak, weekend, ...): on the listed weekdays,
 * from `from` (included) to `to` (excluded), local time in the plan's zone. One
 * name may be listed several times (two windows, one rate).
 */
export const Period = Type.Object(
  {
    name: PeriodName,
    days: Type.Array(Type.Union(WEEKDAYS.map((d) => Type.Literal(d))), { minItems: 1, maxItems: 7, uniqueItems: true }),
    from: Type.Optional(Clock),
    to: Type.Optional(Clock),
  },
  { additionalProperties: false },
);
export type Period = Static<typeof Period>;

/**
 * One destination prefix of a plan. Only prefix and rate are required; the
 * billing terms default to today's per-second billing (blocks 1/1, no
 * minimums, no disconnect charge). Defaults are applied when rating, not
 * stored, so a plan reads back as it was written.
 */
export const Rate = Type.Object(
  {
    /** Destination prefix in international format, digits only ('' matches everything). */
    prefix: Type.String({ pattern: '^[0-9]{0,20}$' }),
    /** Micro-units per second (per `per` seconds) outside every period (or always, in a plan without periods). */
    rate: PlanRate,
    /**
     * The seconds `rate` and every `periodRates` are the price of (default 1): 60 for a
     * price per minute, which no whole per-second rate can say (0.10 EUR/min is 100000
     * per 60). S seconds at a rate then cost floor(S × rate / per) (lua/includes/tariff.lua).
     */
    per: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_RATE_PER })),
    /** Connection fee, charged with the first charged second. */
    fee: Type.Integer({ minimum: 0, maximum: 1e12, default: 0 }),
    /** The first billing block, seconds (default 1). */
    initial: Type.Optional(BlockSec),
    /** Every later billing block, seconds (default 1). */
    next: Type.Optional(BlockSec),
    /** Minimum charged duration of an answered call, seconds (default 0). */
    minSec: Type.Optional(Type.Integer({ minimum: 0, maximum: 86400 })),
    /** Minimum cost of an answered call, connection fee included, micro-units (default 0). */
    minCost: Type.Optional(PlanMicro(0)),
    /** Charged once when an answered call ends, micro-units (default 0). */
    disconnect: Type.Optional(PlanMicro(0)),
    /** Rate per second (per `per` seconds) during a named period of the plan; a period not listed charges `rate`. */
    periodRates: Type.Optional(Type.Record(PeriodName, PlanRate, { maxProperties: 32 })),
  },
  { additionalProperties: false },
);
export type Rate = Static<typeof Rate>;

export const RatePlan = Type.Object(
  {
    name: Name,
    /** IANA time zone the periods are read in (default UTC). */
    tz: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    /**
     * When this version of the plan comes into force (ms, or ISO 8601; stored
     * as ms). Absent: the plan as a whole, in force at once.
     */
    activeFrom: Type.Optional(Instant),
    /** Time-of-day windows, first match wins. */
    periods: Type.Optional(Type.Array(Period, { maxItems: 32 })),
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

/** An access number as a phone dials it (a tel: link): its digits, and a leading + (RFC 3966 drops separators). */
export const dialString = (number: string): string => number.replace(/[^\d+]/g, '').replace(/(?!^)\+/g, '');

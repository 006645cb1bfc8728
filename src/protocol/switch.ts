import { Type, type Static } from '@sinclair/typebox';

/** The switch protocol's requests (docs/protocol.md). Extra fields are ignored for forward compatibility. */
export const Ref = Type.Union([
  Type.String({ maxLength: 64 }),
  Type.Integer({ minimum: -Number.MAX_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER }),
]);
export const CallId = Type.String({ pattern: '^[A-Za-z0-9._:@-]{1,64}$' });
/** The most seconds since answer a call may report: a week is far beyond any real call. */
export const MAX_CALL_SEC = 7 * 86400;
const Seconds = Type.Integer({ minimum: 0, maximum: MAX_CALL_SEC });
/**
 * The caller's number, for caller-number (PIN-less) login: sent instead of `id`,
 * never with it. E.164 as docs/protocol.md says; checked by the gateway (bad_ani).
 */
const Ani = Type.String({ maxLength: 40 });

/**
 * Where a call comes from, as the switch knows it (the caller's address,
 * trunk or number): unknown IDs then count per origin (docs/protocol.md, Guessed IDs).
 */
export const ORIGIN = /^[\x21-\x7e]{1,64}$/;
const Origin = Type.String({ pattern: ORIGIN.source });

export const StartMsg = Type.Object({
  op: Type.Literal('start'),
  ref: Ref,
  call: CallId,
  /** Exactly one of `id` and `ani`. */
  id: Type.Optional(Type.String({ maxLength: 40 })),
  ani: Type.Optional(Ani),
  dest: Type.String({ pattern: '^\\+?[0-9]{1,20}$' }),
  /** `tick` (default): the switch reports every second; `quota`: it reports with `update` when it asks again. */
  mode: Type.Optional(Type.Union([Type.Literal('tick'), Type.Literal('quota')])),
  origin: Type.Optional(Origin),
});
export const TickMsg = Type.Object({ op: Type.Literal('tick'), call: CallId, sec: Seconds, ref: Type.Optional(Ref) });
/** Quota mode: the seconds used so far (cumulative, like a tick's) and a request for the next grant. */
export const UpdateMsg = Type.Object({ op: Type.Literal('update'), ref: Ref, call: CallId, sec: Seconds });
export const StopMsg = Type.Object({
  op: Type.Literal('stop'),
  ref: Ref,
  call: CallId,
  sec: Seconds,
  /**
   * Not one of the causes Tessera writes itself: a session kept as `stale` reads as a reaped
   * call's (its next stop bills or gives back seconds, lua/includes/late.lua), `recovered` as a
   * lost call's (call_start refuses its held-back start).
   */
  cause: Type.Optional(Type.String({ pattern: '^(?!(?:stale|recovered|late)$)[A-Za-z0-9_.-]{1,32}$' })),
  /**
   * The call's ID (or, for a call started by caller number, its `ani`) and
   * destination, as in its start: with them a call Tessera lost is still billed.
   */
  id: Type.Optional(Type.String({ maxLength: 40 })),
  ani: Type.Optional(Ani),
  dest: Type.Optional(Type.String({ pattern: '^\\+?[0-9]{1,20}$' })),
});
/** A price enquiry: what a call on `id` (or the ID `ani` is registered to) to `dest` would cost and how long it could last; starts nothing. */
export const QuoteMsg = Type.Object({
  op: Type.Literal('quote'),
  ref: Ref,
  /** Exactly one of `id` and `ani`. */
  id: Type.Optional(Type.String({ maxLength: 40 })),
  ani: Type.Optional(Ani),
  dest: Type.String({ pattern: '^\\+?[0-9]{1,20}$' }),
  origin: Type.Optional(Origin),
});
export const PingMsg = Type.Object({ op: Type.Literal('ping'), ref: Type.Optional(Ref) });

export type StartMsg = Static<typeof StartMsg>;
export type TickMsg = Static<typeof TickMsg>;
export type UpdateMsg = Static<typeof UpdateMsg>;
export type StopMsg = Static<typeof StopMsg>;
export type QuoteMsg = Static<typeof QuoteMsg>;
export type PingMsg = Static<typeof PingMsg>;

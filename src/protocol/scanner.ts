import { Type, type Static } from '@sinclair/typebox';
import { Ref } from './switch';

/** The scanner protocol's requests (docs/scanners.md); the same bodies serve the HTTP API. */
export const ScanId = Type.String({ pattern: '^[A-Za-z0-9._:@-]{1,64}$' });
const Name = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' });

const scanFields = {
  id: Type.String({ maxLength: 40 }),
  /** Goods: an item of the venue's list; service: the service's name (optional). */
  item: Type.Optional(Name),
  qty: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
  /** Ignored when the scanner's token is bound to a gate. */
  gate: Type.Optional(Name),
  /** Entry tickets: 'out' is an exit scan (re-entry products let the holder back in). */
  dir: Type.Optional(Type.Union([Type.Literal('in'), Type.Literal('out')])),
};

/**
 * When an offline scan was made, by the scanner's clock (ms since the epoch):
 * judged at that time, applied in arrival order (docs/scanners.md).
 */
const At = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

export const RedeemBody = Type.Object({ scan: ScanId, ...scanFields, at: Type.Optional(At) });
export const ValidateBody = Type.Object(scanFields);
const reverseFields = {
  scan: ScanId,
  reason: Type.Optional(Type.String({ maxLength: 200 })),
  /** The ID the scan redeemed (optional): the reverse then keeps its place among that ID's scans. */
  id: Type.Optional(Type.String({ maxLength: 40 })),
  /** When the void was made (a till's offline journal): kept in the reversal's record. */
  at: Type.Optional(At),
};
export const ReverseBody = Type.Object(reverseFields);

export const RedeemMsg = Type.Object({
  op: Type.Literal('redeem'),
  ref: Ref,
  scan: ScanId,
  ...scanFields,
  at: Type.Optional(At),
});
export const ValidateMsg = Type.Object({ op: Type.Literal('validate'), ref: Ref, ...scanFields });
export const ReverseMsg = Type.Object({ op: Type.Literal('reverse'), ref: Ref, ...reverseFields });
export const StatusMsg = Type.Object({ op: Type.Literal('status'), ref: Ref, id: Type.String({ maxLength: 40 }) });

export type RedeemBody = Static<typeof RedeemBody>;
export type ValidateBody = Static<typeof ValidateBody>;
export type ReverseBody = Static<typeof ReverseBody>;
export type RedeemMsg = Static<typeof RedeemMsg>;
export type ValidateMsg = Static<typeof ValidateMsg>;
export type ReverseMsg = Static<typeof ReverseMsg>;
export type StatusMsg = Static<typeof StatusMsg>;

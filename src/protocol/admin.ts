/** Request bodies of the operator's endpoints on single IDs (docs/operations.md, HTTP API). */
import { Type, type Static } from '@sinclair/typebox';

/** `tessera topup --key K` keys its top-up `cli/K`, as the admin API keys a token's `<name>/K`. */
export const CLI_NAME = 'cli';

export const ActivateBody = Type.Object({
  price: Type.Optional(Type.Integer({ minimum: 0, maximum: 1e15 })),
  ref: Type.Optional(Type.String({ maxLength: 200 })),
});
export const BlockBody = Type.Object({ reason: Type.Optional(Type.String({ maxLength: 200 })) });

export type ActivateBody = Static<typeof ActivateBody>;
export type BlockBody = Static<typeof BlockBody>;

/** The most an operator's top-up may add at once (micro-units), over HTTP and `tessera topup` alike. */
export const MAX_OPERATOR_TOPUP = 1e12;

/** The operator's top-up (POST /v1/admin/ids/:id/topup): micro-units, and a note for the record. */
export const TopupBody = Type.Object({
  amount: Type.Integer({ minimum: 1, maximum: MAX_OPERATOR_TOPUP }),
  note: Type.Optional(Type.String({ maxLength: 200 })),
});
export type TopupBody = Static<typeof TopupBody>;

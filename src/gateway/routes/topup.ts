import { CLI_NAME, TopupBody } from '../../protocol/admin';
import { IDEMPOTENCY_KEY, VoucherTopupBody } from '../../protocol/sales';
import { compile } from '../../protocol/validator';
import type { Topups } from '../../sales/topup';
import type { HttpApi } from '../http-api';

/**
 * Top-ups over HTTP: a recharge voucher redeemed into an ID (tills, IVRs: a
 * sales or switch token), and the operator's top-up (an admin token; an
 * Idempotency-Key makes a retry answer the first top-up).
 */
export function topupRoutes(api: HttpApi, topups: Topups): void {
  api.post('/v1/topups', ['sales', 'switch'], compile(VoucherTopupBody), ({ body, token }) =>
    topups.voucher(body.id, body.voucher, `api:${token.name}`, token.name),
  );
  api.post(
    '/v1/admin/ids/:id/topup',
    ['admin'],
    compile(TopupBody),
    async ({ params, body, token, idempotencyKey }) => {
      // A token created before the name was refused: its keys would be the command line's.
      if (token.name === CLI_NAME) return { ok: false, reason: 'reserved_name' };
      if (idempotencyKey && !IDEMPOTENCY_KEY.test(idempotencyKey))
        return {
          ok: false,
          reason: 'bad_value',
          message: 'an Idempotency-Key is 8 to 128 of A-Z a-z 0-9 . _ : -',
        };
      return topups.operator(
        params[0],
        body.amount,
        body.note ?? token.name,
        idempotencyKey ? `${token.name}/${idempotencyKey}` : undefined,
      );
    },
  );
}

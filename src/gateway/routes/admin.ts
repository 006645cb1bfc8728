import { activateId, idStatus, setIdState } from '../../ledger/ids';
import type { Context } from '../../app/context';
import { ActivateBody, BlockBody } from '../../protocol/admin';
import { compile } from '../../protocol/validator';
import type { Redemption } from '../../redemption/service';
import type { HttpApi } from '../http-api';

/** Operator endpoints on single IDs (the CLI does the same through src/ledger). */
export function adminRoutes(api: HttpApi, ctx: Context, redemption: Redemption): void {
  api.post('/v1/admin/ids/:id/activate', ['admin'], compile(ActivateBody), ({ params, body }) =>
    activateId(ctx, params[0], { channel: 'admin', price: body.price, ref: body.ref }),
  );
  api.post('/v1/admin/ids/:id/block', ['admin'], compile(BlockBody), ({ params, body }) =>
    setIdState(ctx, params[0], 'block', body.reason ?? ''),
  );
  api.post('/v1/admin/ids/:id/unblock', ['admin'], undefined, ({ params }) => setIdState(ctx, params[0], 'unblock'));
  // Scanners may look an ID up too, throttled like their scans.
  api.get('/v1/ids/:id/status', ['admin', 'scanner'], ({ params, token }) =>
    token.role === 'scanner' ? redemption.status(token, params[0]) : idStatus(ctx, params[0]),
  );
}

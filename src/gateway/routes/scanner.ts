import type { Metrics } from '../../observability/metrics';
import {
  RedeemBody,
  RedeemMsg,
  ReverseBody,
  ReverseMsg,
  StatusMsg,
  ValidateBody,
  ValidateMsg,
} from '../../protocol/scanner';
import { PingMsg } from '../../protocol/switch';
import { compile } from '../../protocol/validator';
import { granted, grantedInto, refusal } from '../../redemption/answers';
import type { Answer, Redemption } from '../../redemption/service';
import type { Route, Routes } from '../dispatch';
import type { ApiResult, HttpApi } from '../http-api';

/** What both transports answer: granted fields, or the refusal with its details. */
function result(a: Answer, item?: string): ApiResult {
  return a.ok ? (grantedInto({ ok: true }, a, item) as ApiResult) : ({ ok: false, ...refusal(a) } as ApiResult);
}

/** The scanner protocol's ops over WebSocket (docs/scanners.md). */
export function scannerRoutes(redemption: Redemption, metrics: Metrics): Routes {
  const answer = (op: string, ok: string, a: Answer, echo: object, item?: string): object => {
    metrics.event(op, a.ok ? 'ok' : a.reason);
    return a.ok ? { op: ok, ...echo, ...granted(a, item) } : { op: 'refused', ...echo, ...refusal(a) };
  };
  // The hot op: callback style and the reply built in one object, no promise or spread per scan.
  const redeem: Route<RedeemMsg> = {
    check: compile(RedeemMsg),
    handleCb(m, conn, reply, done) {
      redemption.redeemCb(conn.token, m, (err, a) => {
        if (!a) return done(err ?? new Error('no answer'));
        metrics.event('redeem', a.ok ? 'ok' : a.reason);
        reply(
          a.ok
            ? grantedInto({ op: 'redeemed', ref: m.ref, scan: m.scan }, a, m.item)
            : { op: 'refused', ref: m.ref, scan: m.scan, ...refusal(a) },
        );
        done();
      });
    },
  };
  const validate: Route<ValidateMsg> = {
    check: compile(ValidateMsg),
    async handle(m, conn, reply) {
      reply(answer('validate', 'valid', await redemption.validate(conn.token, m), { ref: m.ref }, m.item));
    },
  };
  const reverse: Route<ReverseMsg> = {
    check: compile(ReverseMsg),
    async handle(m, conn, reply) {
      reply(
        answer('reverse', 'reversed', await redemption.reverse(conn.token, m.scan, m.reason ?? '', m.id, m.at), {
          ref: m.ref,
          scan: m.scan,
        }),
      );
    },
  };
  const status: Route<StatusMsg> = {
    check: compile(StatusMsg),
    async handle(m, conn, reply) {
      const s = await redemption.status(conn.token, m.id);
      metrics.event('status', s.ok ? 'ok' : s.reason);
      const { ok: _ok, ...rest } = s;
      reply(s.ok ? { op: 'status', ref: m.ref, ...rest } : { op: 'refused', ref: m.ref, ...refusal(s) });
    },
  };
  const ping: Route<PingMsg> = {
    check: compile(PingMsg),
    async handle(m, _conn, reply) {
      reply({ op: 'pong', ref: m.ref, time: Date.now() });
    },
  };
  return { redeem, validate, reverse, status, ping };
}

/** The same operations over HTTP for tills and scanners that do not keep a socket. */
export function scannerHttp(api: HttpApi, redemption: Redemption, metrics: Metrics): void {
  const count = (op: string, a: Answer): Answer => (metrics.event(op, a.ok ? 'ok' : a.reason), a);
  api.post('/v1/redeem', ['scanner'], compile(RedeemBody), async ({ body, token }) =>
    result(count('redeem', await redemption.redeem(token, body)), body.item),
  );
  api.post('/v1/validate', ['scanner'], compile(ValidateBody), async ({ body, token }) =>
    result(count('validate', await redemption.validate(token, body)), body.item),
  );
  api.post('/v1/reverse', ['scanner'], compile(ReverseBody), async ({ body, token }) =>
    result(count('reverse', await redemption.reverse(token, body.scan, body.reason ?? '', body.id, body.at))),
  );
}

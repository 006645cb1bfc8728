import type { Metering, TickResult } from '../../metering/service';
import type { Metrics } from '../../observability/metrics';
import { PingMsg, QuoteMsg, StartMsg, StopMsg, TickMsg } from '../../protocol/switch';
import { compile } from '../../protocol/validator';
import type { Route, Routes } from '../dispatch';

const DEST_FORMAT =
  'dest must be in international format: the country code first, after an optional + or 00; no national trunk prefix 0';

/** A start or quote names its caller by exactly one of `id` and `ani` (caller-number login). */
function callerError(m: StartMsg | QuoteMsg): object | undefined {
  if (m.id === undefined && m.ani === undefined)
    return { op: 'error', ref: m.ref, reason: 'missing_field', message: 'send id, or ani (the caller number)' };
  if (m.id !== undefined && m.ani !== undefined)
    return { op: 'error', ref: m.ref, reason: 'bad_value', message: 'send id or ani, not both' };
  return undefined;
}

/** The switch protocol's ops (docs/protocol.md) on top of the metering service. */
export function switchRoutes(metering: Metering, metrics: Metrics): Routes {
  const answerTick = (m: TickMsg, r: TickResult, reply: (msg: object) => void): void => {
    metrics.event('tick', r.code);
    if (r.code === 'unknown_call' || r.code === 'call_conflict' || (r.code === 'call_ended' && m.ref !== undefined)) {
      return reply({ op: 'error', ref: m.ref, call: m.call, reason: r.code, message: `tick refused: ${r.code}` });
    }
    if (r.code === 'call_ended') {
      // Closed by the reaper while the switch still talks: tell it to hang up, or the call runs unmetered.
      if (r.cut === 'stale') {
        metrics.cutoffs.inc({ reason: 'stale' });
        reply({ op: 'cutoff', call: m.call, reason: 'stale' });
      }
      return;
    }
    for (const level of r.alerts) {
      metrics.alerts.inc({ level });
      reply({ op: 'alert', call: m.call, secLeft: r.secLeft, balance: r.balance, level });
    }
    if (r.cut) {
      if (r.freshCut) metrics.cutoffs.inc({ reason: r.cut });
      reply({ op: 'cutoff', call: m.call, reason: r.cut });
    }
    if (m.ref !== undefined) reply({ op: 'ticked', ref: m.ref, call: m.call, balance: r.balance, secLeft: r.secLeft });
  };

  const start: Route<StartMsg> = {
    check: compile(StartMsg),
    async handle(m, conn, reply) {
      const bad = callerError(m);
      if (bad) return reply({ ...bad, call: m.call });
      const r = await metering.start(conn.token.name, m.call, m.id, m.dest, m.ani);
      metrics.event('start', r.ok ? 'ok' : r.reason);
      if (!r.ok)
        return reply({
          op: 'error',
          ref: m.ref,
          call: m.call,
          reason: r.reason,
          // The one value start checks beyond the schema: the destination's international format.
          message: r.reason === 'bad_value' ? DEST_FORMAT : `call refused: ${r.reason}`,
          ...(r.retryAfter ? { retryAfter: r.retryAfter } : {}),
        });
      reply({
        op: 'started',
        ref: m.ref,
        call: m.call,
        maxSec: r.maxSec,
        balance: r.balance,
        rate: r.rate,
        fee: r.fee,
      });
    },
  };

  const tick: Route<TickMsg> = {
    check: compile(TickMsg),
    handleCb(m, conn, reply, done) {
      metering.tick(conn.token.name, m.call, m.sec, (err, r) => {
        if (err || !r) return done(err ?? new Error('no tick result'));
        answerTick(m, r, reply);
        done();
      });
    },
  };

  const stop: Route<StopMsg> = {
    check: compile(StopMsg),
    async handle(m, conn, reply) {
      const lost = m.id !== undefined && m.dest !== undefined ? { id: m.id, dest: m.dest } : undefined;
      const r = await metering.stop(conn.token.name, m.call, m.sec, m.cause ?? 'normal', lost);
      metrics.event('stop', r.ok ? 'ok' : r.reason);
      if (!r.ok)
        return reply({ op: 'error', ref: m.ref, call: m.call, reason: r.reason, message: `stop refused: ${r.reason}` });
      reply({ op: 'stopped', ref: m.ref, call: m.call, billedSec: r.billedSec, cost: r.cost, balance: r.balance });
    },
  };

  const quote: Route<QuoteMsg> = {
    check: compile(QuoteMsg),
    async handle(m, conn, reply) {
      const bad = callerError(m);
      if (bad) return reply(bad);
      const r = await metering.quote(conn.token.name, m.id, m.dest, m.ani);
      metrics.event('quote', r.ok ? 'ok' : r.reason);
      if (!r.ok)
        return reply({
          op: 'error',
          ref: m.ref,
          reason: r.reason,
          message: r.reason === 'bad_value' ? DEST_FORMAT : `quote refused: ${r.reason}`,
          ...(r.retryAfter ? { retryAfter: r.retryAfter } : {}),
        });
      reply({
        op: 'quoted',
        ref: m.ref,
        rate: r.rate,
        fee: r.fee,
        maxSec: r.maxSec,
        balance: r.balance,
        currency: r.currency,
      });
    },
  };

  const ping: Route<PingMsg> = {
    check: compile(PingMsg),
    async handle(m, _conn, reply) {
      reply({ op: 'pong', ref: m.ref, time: Date.now() });
    },
  };

  return { start, tick, stop, quote, ping };
}

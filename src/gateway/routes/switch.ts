import type { FinalAction, Metering, TickResult } from '../../metering/service';
import type { Metrics } from '../../observability/metrics';
import { PingMsg, QuoteMsg, StartMsg, StopMsg, TickMsg, UpdateMsg } from '../../protocol/switch';
import { compile } from '../../protocol/validator';
import type { Route, Routes } from '../dispatch';

const DEST_FORMAT =
  'dest must be in international format: the country code first, after an optional + or 00; no national trunk prefix 0';

/** call_tick's cause of a call a stop under another token name closed live (lua/call_tick.lua). */
const STOPPED_ELSEWHERE = '!stopped';

/** A final grant's fields in started, ticked, granted and cutoff: what to do when it runs out. */
const finalFields = (f: FinalAction | undefined): object =>
  f === undefined ? {} : f.redirect === undefined ? { action: f.action } : { action: f.action, redirect: f.redirect };

/**
 * A tick's answer. The hot path's one allocation: a literal of one shape, no
 * spread (an object spread is a runtime copy and a fresh {} per tick); only the
 * rare answer whose grant became final spreads its action in.
 */
function ticked(ref: number | string, call: string, r: TickResult): object {
  const { balance, secLeft, grant } = r;
  if (r.final) return { op: 'ticked', ref, call, balance, secLeft, grant, final: true, ...finalFields(r.final) };
  if (r.isFinal) return { op: 'ticked', ref, call, balance, secLeft, grant, final: true };
  return { op: 'ticked', ref, call, balance, secLeft, grant };
}

/** A start, quote or stop names its caller by at most one of `id` and `ani` (caller-number login). */
function bothCallersError(m: StartMsg | QuoteMsg | StopMsg): object | undefined {
  if (m.id !== undefined && m.ani !== undefined)
    return { op: 'error', ref: m.ref, reason: 'bad_value', message: 'send id or ani, not both' };
  return undefined;
}

/** A start or quote names its caller by exactly one of `id` and `ani`. */
function callerError(m: StartMsg | QuoteMsg): object | undefined {
  if (m.id === undefined && m.ani === undefined)
    return { op: 'error', ref: m.ref, reason: 'missing_field', message: 'send id, or ani (the caller number)' };
  return bothCallersError(m);
}

/** The switch protocol's ops (docs/protocol.md) on top of the metering service. */
export function switchRoutes(metering: Metering, metrics: Metrics): Routes {
  /** Alerts and cut-off orders a tick or update brought; false when the answer was an error or nothing. */
  const answerTick = (m: TickMsg | UpdateMsg, r: TickResult, reply: (msg: object) => void): boolean => {
    // Counted under its own op: an update is one event, not a tick as well.
    metrics.event(m.op, r.code);
    if (r.code === 'call_ended') {
      // Closed by the reaper, or by a stop under another token name, while the switch still talks:
      // tell it to hang up, or the call runs unmetered. Counted once per call, at the first tick or
      // update that finds it closed, told so either way (this cutoff, or call_ended for a ref).
      const reason = r.cut === 'stale' ? 'stale' : r.cut === STOPPED_ELSEWHERE ? 'stopped' : undefined;
      if (reason && r.freshCut) metrics.cutoffs.inc({ reason });
      if (reason && m.ref === undefined) reply({ op: 'cutoff', call: m.call, reason, action: 'terminate' });
      if (m.ref === undefined) return false;
    }
    if (r.code === 'unknown_call' || r.code === 'call_conflict' || r.code === 'call_ended') {
      reply({ op: 'error', ref: m.ref, call: m.call, reason: r.code, message: `${m.op} refused: ${r.code}` });
      return false;
    }
    for (const level of r.alerts) {
      metrics.alerts.inc({ level });
      reply({ op: 'alert', call: m.call, secLeft: r.secLeft, balance: r.balance, level });
    }
    if (r.cut) {
      if (r.freshCut) metrics.cutoffs.inc({ reason: r.cut });
      // A blocked ID is cut, never redirected to buy more.
      const action = r.cut === 'exhausted' ? (r.final ?? { action: 'terminate' }) : { action: 'terminate' as const };
      reply({ op: 'cutoff', call: m.call, reason: r.cut, ...finalFields(action) });
    }
    return true;
  };

  const start: Route<StartMsg> = {
    check: compile(StartMsg),
    async handle(m, conn, reply) {
      const bad = callerError(m);
      if (bad) return reply({ ...bad, call: m.call });
      const r = await metering.start(conn.token.name, m.call, m.id, m.dest, m.ani, m.mode, m.origin);
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
        grant: r.grant,
        balance: r.balance,
        rate: r.rate,
        // Per-second rates, most of them, keep the answer as it always was.
        ...(r.per !== 1 ? { per: r.per } : {}),
        fee: r.fee,
        final: r.final,
        ...(r.final ? finalFields(r.finalAction) : {}),
        onFailure: r.onFailure.action,
        failureSec: r.onFailure.sec,
        ...(m.mode === 'quota' ? { validity: r.validitySec } : {}),
      });
    },
  };

  const tick: Route<TickMsg> = {
    check: compile(TickMsg),
    handleCb(m, conn, reply, done) {
      metering.tick(conn.token.name, m.call, m.sec, m.ref !== undefined, (err, r) => {
        if (err || !r) return done(err ?? new Error('no tick result'));
        if (answerTick(m, r, reply) && m.ref !== undefined) reply(ticked(m.ref, m.call, r));
        done();
      });
    },
  };

  // Quota mode: billed exactly as a tick of the same seconds, answered with the next grant.
  const update: Route<UpdateMsg> = {
    check: compile(UpdateMsg),
    handleCb(m, conn, reply, done) {
      metering.tick(conn.token.name, m.call, m.sec, true, (err, r) => {
        if (err || !r) return done(err ?? new Error('no update result'));
        if (answerTick(m, r, reply))
          reply({
            op: 'granted',
            ref: m.ref,
            call: m.call,
            grant: r.grant,
            balance: r.balance,
            secLeft: r.secLeft,
            validity: r.validitySec,
            final: r.isFinal,
            ...finalFields(r.final),
          });
        done();
      });
    },
  };

  const stop: Route<StopMsg> = {
    check: compile(StopMsg),
    async handle(m, conn, reply) {
      const both = bothCallersError(m);
      if (both) return reply({ ...both, call: m.call });
      const named = m.id !== undefined || m.ani !== undefined;
      const lost = named && m.dest !== undefined ? { id: m.id, ani: m.ani, dest: m.dest } : undefined;
      const r = await metering.stop(conn.token.name, m.call, m.sec, m.cause ?? 'normal', lost);
      metrics.event('stop', r.ok ? 'ok' : r.reason);
      if (!r.ok)
        return reply({
          op: 'error',
          ref: m.ref,
          call: m.call,
          reason: r.reason,
          message: `stop refused: ${r.reason}`,
          ...(r.retryAfter ? { retryAfter: r.retryAfter } : {}),
        });
      reply({ op: 'stopped', ref: m.ref, call: m.call, billedSec: r.billedSec, cost: r.cost, balance: r.balance });
    },
  };

  const quote: Route<QuoteMsg> = {
    check: compile(QuoteMsg),
    async handle(m, conn, reply) {
      const bad = callerError(m);
      if (bad) return reply(bad);
      const r = await metering.quote(conn.token.name, m.id, m.dest, m.ani, m.origin);
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
        ...(r.per !== 1 ? { per: r.per } : {}),
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

  return { start, tick, update, stop, quote, ping };
}

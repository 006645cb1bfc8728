/**
 * The Kamailio connector: Kamailio's dialog events (over evapi) turned into
 * the switch protocol (docs/protocol.md) and Tessera's answers turned back
 * into SIP (admit or refuse a suspended INVITE, end a dialog through RPC).
 *
 * A call is started at INVITE, ticked from the 200 OK with its completed
 * seconds, and stopped at its end with its started seconds (billing.ts).
 * Kamailio's own fail-safe, a dialog timeout, follows the call's grant: set
 * at admission, moved on at each re-grant (fail-safe.ts).
 * A call is a Kamailio dialog, not a Call-ID (call-id.ts): two dialogs that
 * share a Call-ID are two calls, and the events of one never touch the other.
 * The connector keeps no state that another copy could not rebuild: every
 * event carries the call's ID, destination and dialog handle, and every
 * request is idempotent, so two connectors can serve one Kamailio at once.
 */
import type { Logger } from 'pino';
import { ORIGIN } from '../protocol/switch';
import { billedSeconds, kamailioUs } from './billing';
import { callIdOf } from './call-id';
import { admitReply, failSafeReply, parseEvent, refuseReply, type DialogEvent, type InviteEvent } from './events';
import { EvapiLink } from './evapi';
import { asksForGrant, failSafeSec, paidEnd, type FailurePolicy } from './fail-safe';
import { KamailioRpc } from './rpc';
import { SwitchLink, type Msg } from './switch-link';

export interface ConnectorOptions {
  evapiHost: string;
  evapiPort: number;
  rpcUrl: string;
  gateways: string[];
  token: string;
  log: Logger;
  /**
   * How long before the end of its last paid second a call's final tick goes (TICK_LEAD_MS by
   * default, under a second): the time Tessera has to answer it, with a cut-off or more paid,
   * before the money ends. A gateway farther than a few ms away needs more.
   */
  tickLeadMs?: number;
}

interface Call {
  /** The Tessera call id (call-id.ts): the key of `calls` and `done`. */
  call: string;
  id: string;
  dest: string;
  he: number;
  hi: number;
  /** Seconds the call could talk in all (`started`); 0 until then. */
  maxSec: number;
  /** The grant as Tessera last told it (seconds since answer), and whether it is final. */
  grant: number;
  final: boolean;
  /** The grant of `started`: at least one slice unless final (fail-safe.ts). */
  firstGrant: number;
  /** sec + secLeft of the latest `ticked` (by its sec, kept in `heard`): where the money ends. */
  horizon?: number;
  heard: number;
  policy: FailurePolicy;
  /** Where Kamailio's fail-safe was last set (seconds since answer, without its grace). */
  failSafe: number;
  started: boolean;
  /** The answer on this process's steady clock (ms, schedules the ticks) and on Kamailio's (µs, bills the stop). */
  answerAt: number;
  answerUs: number;
  /** The last tick's sec: completed seconds claimed so far. */
  ticked: number;
  timer: NodeJS.Timeout | undefined;
  /** A stop is in flight or done: later events about the call change nothing. */
  ending: boolean;
  /** When the connector will cut the call (its paid seconds end then); 0 if not ordered. */
  cutAt: number;
  /** The paid seconds it is cut at, once `cutAt` is set. */
  cutSec: number;
  /** The cut's cause (`cutoff`, `max_sec`), once `cutAt` is set. */
  cutCause: string;
  /** The cut's stop, while it waits for dlg.end_dlg's answer or an end event (cut()). */
  cutting?: () => void;
  /** An end event that came meanwhile: the seconds Kamailio timed (its BYE may have beaten the cut). */
  endedSec?: number;
  /** When this connector began to track it, in order (`tracked`): a listing asked for before knows nothing of it. */
  seq: number;
  /** The call ended before its `started` arrived: stop it then. */
  endAfterStart?: { sec: number; cause: string };
  /** A re-grant tick refused `overloaded` (or failed): its resend, and how many went for its sec (askAgain()). */
  askAgain?: NodeJS.Timeout;
  askedAgain?: { sec: number; times: number };
  /** The stop sent and not yet answered (retried while Tessera is unavailable): what close() waits for. */
  stopping?: { sec: number; cause: string };
  /** A stop a connector gone handed on (htable `owed`): its entry goes once the stop is answered. */
  handedOn?: boolean;
  /** The key of the event no connector heard that stopped it (htable `ends`): it goes once the stop is answered. */
  unheard?: string;
  /**
   * A call that failed before this connector saw it start or answer: its stop
   * carries no ID or destination, so that one Tessera never started answers
   * `unknown_call` rather than being billed as a recovered stop (docs/protocol.md).
   */
  unseen?: boolean;
}

/** Stop retries while Tessera answers `unavailable`: a stop is never given up. */
const STOP_RETRY_MS = 500;
/**
 * How long close() waits for the stops it owes (no gateway up, or one that
 * answers `unavailable`). Its calls still talking are not ticked meanwhile: a
 * lone connector restarted after the whole wait must take them up well before
 * the reaper finds them silent (STALE_AFTER_MS, 10 s at least by default, from
 * a last tick up to a second before the close), or the reaper closes them and
 * the next connector cuts them. A stop delivered at any time bills its call (a
 * `late` record after a reap), so a longer wait buys no more than a shorter
 * one loses. Under the systemd unit's TimeoutStopSec too.
 */
export const CLOSE_WAIT_MS = 5_000;
/**
 * How often close(), while it waits, lists Kamailio's dialogs for the calls that ended meanwhile:
 * an ended dialog stays listed a few seconds.
 */
const ENDED_POLL_MS = 250;
/**
 * How soon a read at attach that got no answer (the stops handed on, the events no connector heard,
 * the listing of dialogs to take up) goes again: a taken-up call Tessera still meters must be ticked
 * before the reaper's STALE_AFTER_MS.
 */
const TAKE_UP_RETRY_MS = 500;
/**
 * A read Kamailio answered with an error (a kamailio.cfg without the htable it reads: one from
 * before `ends` existed answers "No such htable") goes again after these, doubling: asked again
 * every 500 ms, it failed the same way for as long as evapi stayed up, and logged every time.
 */
const READ_REFUSED_FIRST_MS = 500;
const READ_REFUSED_MAX_MS = 30_000;
/** How long an ended call's dialog is remembered, so its late events are ignored. */
const DONE_TTL_MS = 120_000;
/**
 * The BYE leaves this long after the paid seconds end (counted from Kamailio's
 * answer): the caller got its 200 OK a little after Kamailio saw it, and the
 * cut-off must not look early from its side.
 */
const CUT_MARGIN_MS = 5;
/**
 * The longest a cut's stop waits for dlg.end_dlg's answer (an end event on its
 * way meanwhile bills the call, see cut()). An answer comes in a few ms; a
 * stalled Kamailio answers none, and the RPC's 2 s timeout, for each 16 cuts
 * at once (its sockets), would keep each call's ID busy and its record open.
 */
const CUT_STOP_WAIT_MS = 500;
/**
 * How long after dlg.end_dlg's answer a cut's stop still waits for an end event:
 * a caller's BYE handled before the RPC may have its event relayed after the
 * answer (evapi's own process sends it), 0.5-4 ms after when probed.
 */
const END_EVENT_LAG_MS = 100;
/**
 * A cut's dlg.end_dlg that failed for want of an answer (timed out, refused, reset) goes again
 * after each of these delays: Kamailio's own answer, an error too, is final.
 */
const END_DIALOG_RETRY_MS = [500, 1000, 2000, 4000, 8000];
/** How long before the end of its last paid second a call's final tick is sent, by default. */
export const TICK_LEAD_MS = 200;
/**
 * Why Tessera refused a start, as the SIP refusal table reads it. The protocol
 * refuses an ID too long for its schema as `bad_value`, the reason of a bad
 * destination (484): the caller must hear that the ID is wrong (404).
 */
function refusalOf(r: Msg): string {
  const reason = typeof r.reason === 'string' ? r.reason : 'internal';
  return reason === 'bad_value' && /^id\b/.test(String(r.message)) ? 'bad_format' : reason;
}

/** The INVITE's source address as the start's `origin`, when the protocol takes it as one. */
function originOf(e: InviteEvent): string | undefined {
  return e.si !== undefined && ORIGIN.test(e.si) ? e.si : undefined;
}

/**
 * The ref of a tick that asks for its `ticked` (to learn a re-grant), followed
 * by its sec. A string: SwitchLink's requests use numbers, and the answer
 * comes back to onTessera as any message without a pending request does.
 */
const GRANT_REF = 'g';
const isGrantRef = (ref: unknown): ref is string => typeof ref === 'string' && ref.startsWith(GRANT_REF);
/** A tick of `sec` that asks for its answer, with any re-grant: its ref names its sec (grantSecOf). */
const grantTick = (call: string, sec: number): Msg => ({ op: 'tick', call, sec, ref: GRANT_REF + String(sec) });
const grantSecOf = (ref: unknown): number => Number(String(ref).slice(GRANT_REF.length));
/**
 * This process's clock for ticks and cuts: wall time at start carried on by the
 * monotonic clock. An NTP step of the wall clock mid-call would otherwise stop
 * the ticks for as long as it went back (the gateway then reaps the call and it
 * is cut `stale`), or bill at once the seconds it jumped forward.
 */
const steadyNow = (): number => performance.timeOrigin + performance.now();
/** A dialog's state in dlg.list once it has ended (Kamailio's DLG_STATE_DELETED). */
const DELETED = 5;
const RETRYABLE = new Set(['unavailable', 'overloaded', 'internal']);
/** A cut ordered at the call's paid end (cutWhenPaidUp) and not made yet. */
const cutPending = (c: Call): boolean => c.cutAt > 0 && !c.ending;
/**
 * The tick of the call's last paid second went, and no word has come of what follows: Tessera's
 * cut-off (a cut at that end) or more paid (a re-grant moves the end on), or the connector's own
 * cut there, at the next tick, for want of either.
 */
const atPaidEnd = (c: Call): boolean => {
  const end = paidEnd(c.maxSec, c.horizon);
  return c.started && !c.ending && !c.cutAt && c.answerAt > 0 && end > 0 && c.ticked >= end;
};

/**
 * When a refused stop is sent again, or undefined when its refusal is final. A lost call's stop
 * (billed as a recovered stop) is refused `throttled` while the token name is past its guess
 * limit: billed when sent again after `retryAfter`, dropped it would be billed nothing.
 */
function stopRetryMs(r: Msg): number | undefined {
  if (r.op !== 'error') return undefined;
  if (RETRYABLE.has(String(r.reason))) return STOP_RETRY_MS;
  if (r.reason !== 'throttled') return undefined;
  const after = Number(r.retryAfter);
  // At most a minute: a window far longer must not overflow setTimeout (a resend every ms).
  return Number.isFinite(after) && after > 0 ? Math.min(after, 60) * 1000 : STOP_RETRY_MS;
}
/**
 * When a tick asking for its re-grant is refused `overloaded` (or `unavailable`, `internal`) it is
 * sent again after each of these delays while it is the call's latest: at the paid end the next
 * tick, a second on, cuts the call with no word of more, so the resends fit in well before it
 * (their sum under a second less the default TICK_LEAD_MS). Few and spaced: `overloaded` asks to slow down.
 */
const ASK_AGAIN_MS = [100, 200, 400];
/** A start refused for these may have been applied all the same (`overloaded` was not handled at all). */
const IN_DOUBT = new Set(['unavailable', 'internal']);

export class KamailioConnector {
  /** Live calls and ended ones (until when they are remembered), by Tessera call id. */
  private readonly calls = new Map<string, Call>();
  private readonly done = new Map<string, number>();
  private readonly evapi: EvapiLink;
  private readonly rpc: KamailioRpc;
  private readonly link: SwitchLink;
  private sweep: NodeJS.Timeout | undefined;
  /** How many calls this connector has tracked: the latest one's `seq`. */
  private tracked = 0;
  /** When evapi was last lost, on the steady clock (as `answerAt`). */
  private lostAt = 0;
  /** close() under way: resolved once every stop owed is answered, or its time is up. */
  private closing: Promise<void> | undefined;
  private settled: (() => void) | undefined;
  /** The cuts' dlg.end_dlg requests under way: close() lets them finish before it closes the RPC. */
  private readonly endingDialogs = new Set<Promise<unknown>>();
  /** stopEnded() listing dialogs, while it does: close() awaits it before it hands stops on. */
  private polling: Promise<void> | undefined;
  /** The reads of what Kamailio kept (readKept) going again after a failure. */
  private readonly readsAgain = new Set<NodeJS.Timeout>();
  /** The cuts' dlg.end_dlg waiting to go again (endDialog): a closed connector sends none. */
  private readonly endsAgain = new Set<NodeJS.Timeout>();
  private readonly log: Logger;
  /** ConnectorOptions.tickLeadMs. */
  private readonly tickLeadMs: number;

  constructor(o: ConnectorOptions) {
    this.log = o.log;
    this.tickLeadMs = o.tickLeadMs ?? TICK_LEAD_MS;
    // Not a second or more: the tick would claim the last paid second before it has begun.
    if (!(this.tickLeadMs >= 0 && this.tickLeadMs < 1000))
      throw new RangeError(`tickLeadMs must be 0 to 999 ms, not ${this.tickLeadMs}`);
    this.rpc = new KamailioRpc(new URL(o.rpcUrl));
    this.link = new SwitchLink({
      urls: o.gateways,
      token: o.token,
      log: o.log,
      onMessage: (m) => this.onTessera(m),
      onConnect: () => this.retick(),
    });
    this.evapi = new EvapiLink({
      host: o.evapiHost,
      port: o.evapiPort,
      log: o.log,
      onMessage: (p) => this.onEvent(p),
      onConnect: (again) => void this.attached(again),
      onDisconnect: () => (this.lostAt = steadyNow()),
    });
  }

  /**
   * On evapi: the stops handed on first (the closing connector's word on its calls: a cut's cause
   * and seconds), then the events no connector heard, then the dialogs still up.
   */
  private async attached(again: boolean): Promise<void> {
    this.stopReadsAgain();
    // The events no connector heard only once the stops handed on are read, also after a failed read:
    // handled first, a cut call's end event billed it to Kamailio's end, past the seconds it paid.
    await this.readKept('read the stops handed on', () => this.sendHandedOn(), {
      next: () => this.readKept('read the dialog events no connector heard', () => this.stopUnheard()),
    });
    // After a loss, the calls whose dialogs are gone are stopped before those still up are taken up.
    let rechecked = !again;
    // Every kamailio.cfg lists dialogs: an error is passing (short of memory for a long list), and the
    // calls to take up must be ticked within STALE_AFTER_MS, so it goes again as soon as no answer does.
    await this.readKept(
      'list dialogs to take up calls already up',
      async () => {
        if (!rechecked) await this.recheckDialogs();
        rechecked = true;
        await this.takeUpDialogs();
      },
      { errorsPass: true },
    );
  }

  /**
   * A read at attach of what Kamailio holds (the stops handed on, the events no connector heard, the
   * dialogs up); one that failed goes again while evapi is up, the steps after it going on meanwhile.
   * Given up, the stops and events waited for the next connector to attach, their calls reaped and
   * billed to their last tick, and the calls up talked on unmetered to their fail-safe. Unanswered (a
   * Kamailio too busy to answer within the RPC's timeout) it goes again soon; answered with an error
   * (a kamailio.cfg that lacks what it reads) it backs off, said once at `error` with what to do,
   * unless `errorsPass` (a read every cfg has: its errors are answered as no answer is). `next` runs
   * once the read succeeded.
   */
  private async readKept(
    what: string,
    read: () => Promise<void>,
    { next, errorsPass = false }: { next?: () => Promise<void>; errorsPass?: boolean } = {},
  ): Promise<void> {
    let tries = 0;
    let refusedMs = 0;
    const attempt = async (): Promise<number | undefined> => {
      try {
        await read();
        return undefined;
      } catch (err) {
        const { message, rpcCode } = err as Error & { rpcCode?: number };
        const first = tries++ === 0;
        if (rpcCode === undefined || errorsPass) {
          this.log[first ? 'warn' : 'debug']({ err: message }, `rpc: cannot ${what}; trying again`);
          return TAKE_UP_RETRY_MS;
        }
        refusedMs = Math.min(refusedMs ? refusedMs * 2 : READ_REFUSED_FIRST_MS, READ_REFUSED_MAX_MS);
        if (refusedMs === READ_REFUSED_FIRST_MS)
          this.log.error(
            { err: message, retryMaxMs: READ_REFUSED_MAX_MS },
            `rpc: Kamailio refuses to ${what}; run deploy/kamailio/kamailio.cfg of this release (its htables owed and ends) and restart Kamailio; asked again less and less often`,
          );
        else this.log.debug({ err: message, retryMs: refusedMs }, `rpc: Kamailio refuses to ${what}; trying again`);
        return refusedMs;
      }
    };
    const later = (wait: number | undefined): void => {
      if (wait === undefined) return void next?.();
      if (this.closing || !this.evapi.connected) return;
      const timer = setTimeout(() => {
        this.readsAgain.delete(timer);
        void attempt().then(later);
      }, wait);
      this.readsAgain.add(timer);
    };
    const wait = await attempt();
    if (wait === undefined) return next?.();
    later(wait);
  }

  private stopReadsAgain(): void {
    for (const t of this.readsAgain) clearTimeout(t);
    this.readsAgain.clear();
  }

  start(): void {
    this.link.start();
    this.evapi.start();
    this.sweep = setInterval(() => {
      const now = Date.now();
      for (const [call, until] of this.done) if (until < now) this.done.delete(call);
    }, 10_000);
    this.sweep.unref();
  }

  /** Live calls (for logs and tests). */
  get liveCalls(): number {
    return this.calls.size;
  }

  /**
   * Closes gracefully: what the connector owes Tessera, the stops of calls
   * that ended (a stop retried while Tessera is unavailable or no gateway is
   * up, or refused `throttled` until a retryAfter, a cut under way, a call
   * that ended before its start was answered), is delivered first, for up to
   * `waitMs`; what is left then is handed on to the next connector through
   * Kamailio (htable `owed`: any connector may send a stop, and a repeated one
   * bills nothing twice). evapi goes first: Kamailio
   * stops sending this connector calls (another one, or 503, takes them).
   * Calls still talking are left to the next connector (it takes them up)
   * and to Kamailio's fail-safe.
   */
  close(waitMs = CLOSE_WAIT_MS): Promise<void> {
    this.closing ??= this.drain(waitMs);
    return this.closing;
  }

  private async drain(waitMs: number): Promise<void> {
    clearInterval(this.sweep);
    this.stopReadsAgain();
    // The events Kamailio sent until it saw this connector go are handled (onEvent: no new calls).
    await this.evapi.close();
    // A cut waiting for dlg.end_dlg is stopped now, with what it has: its Kamailio is ending the
    // dialog, and no connector would stop it after (a connector started again does not take up
    // an ended dialog). Dropped, the call was reaped `stale`, billed to its last tick.
    for (const c of [...this.calls.values()]) c.cutting?.();
    // A cut ordered at the paid end keeps its timer (it is owed, as a stop is): cleared, the call
    // was cut by no connector and talked on to Kamailio's fail-safe, past what it paid. So does a
    // call whose last paid second's tick waits for its word (awaitWord).
    for (const c of this.calls.values()) {
      clearTimeout(c.askAgain);
      if (atPaidEnd(c)) this.awaitWord(c);
      else if (!c.stopping && !cutPending(c)) clearTimeout(c.timer);
    }
    if (this.owed().length > 0) {
      let timer: NodeJS.Timeout | undefined;
      // Off evapi, the calls that end meanwhile are told by dlg.list alone.
      const poll = setInterval(() => void this.stopEnded(), ENDED_POLL_MS);
      await new Promise<void>((resolve) => {
        this.settled = resolve;
        timer = setTimeout(resolve, waitMs);
      });
      clearInterval(poll);
      clearTimeout(timer);
      // A listing still under way may find a call that ended: its stop, made after the hand-on,
      // went out on a closed link and no connector had it. It is owed, and handed on, with the rest.
      await this.polling;
      // A call still waiting for word at its paid end is cut there, as its next tick would.
      for (const c of this.calls.values()) if (atPaidEnd(c)) this.cutForWantOfWord(c);
      // A cut still to come (a wait shorter than its margin) is made at its time, never early: it
      // is due within tickLeadMs + CUT_MARGIN_MS of its order. Its stop is then handed on.
      await Promise.all([...this.calls.values()].filter(cutPending).map((c) => this.cutAtItsTime(c)));
      await Promise.all(this.owed().map((c) => this.handOn(c)));
    }
    for (const c of this.calls.values()) clearTimeout(c.timer);
    this.link.close();
    // A cut's dlg.end_dlg to go again is left to the next connector (it takes the dialog up); one
    // still under way is let finish: closed now, its BYE might not leave.
    for (const t of this.endsAgain) clearTimeout(t);
    await Promise.allSettled(this.endingDialogs);
    this.rpc.close();
  }

  /**
   * While close() waits: a call whose last paid second's tick went and has had no word yet. Left
   * (the connector off evapi ticks no call), the cut-off on its way found the link closed, no
   * connector cut the call, and it talked on past what it paid to Kamailio's fail-safe, its grant
   * plus grace, unbilled. Its cut-off orders the cut (onTessera), a re-grant lets it go to the next
   * connector (onTicked), and with no word by its next tick it is cut at its paid end, as tick()
   * would.
   */
  private awaitWord(c: Call): void {
    clearTimeout(c.timer);
    const nextTick = c.answerAt + (paidEnd(c.maxSec, c.horizon) + 1) * 1000;
    c.timer = setTimeout(() => this.cutForWantOfWord(c), Math.max(0, nextTick - steadyNow()));
  }

  private cutForWantOfWord(c: Call): void {
    if (!atPaidEnd(c)) return;
    const sec = paidEnd(c.maxSec, c.horizon);
    this.log.warn({ call: c.call, sec, closing: true }, 'no word of more at the paid end: cut ordered');
    this.cutWhenPaidUp(c, sec, 'max_sec');
  }

  private async cutAtItsTime(c: Call): Promise<void> {
    clearTimeout(c.timer);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, c.cutAt - steadyNow())));
    if (cutPending(c)) this.cut(c, c.cutSec, c.cutCause, true);
  }

  /**
   * A stop still owed at the end of the close's wait, kept in Kamailio for the next connector to
   * attach (sendHandedOn). Dropped, a lost call's stop waiting out a `throttled` (up to a minute)
   * billed nothing, and any other was billed by the reaper to the call's last tick.
   */
  private async handOn(c: Call): Promise<void> {
    const { sec, cause } = c.stopping ?? c.endAfterStart!;
    // A call whose start was never answered: its stop as onInvite would send it, in doubt.
    const stop = this.stopOf(c.stopping || c.started || sec > 0 ? c : { ...c, unseen: true }, sec, cause);
    try {
      await this.rpc.handOn(c.call, JSON.stringify(stop));
      this.log.warn({ call: c.call, sec, cause }, 'stop not delivered before closing; handed on to the next connector');
    } catch (err) {
      this.log.error(
        { call: c.call, sec, cause, err: (err as Error).message },
        'stop not delivered before closing; the reaper bills the call',
      );
    }
  }

  /**
   * On evapi: the stops connectors that closed handed on (handOn), sent as
   * this connector's own, each dropped from Kamailio once answered.
   */
  private async sendHandedOn(): Promise<void> {
    const owed = await this.rpc.handedOn();
    for (const { call, stop } of owed) {
      if (this.closing) break;
      // A call of its own (evapi tells every connector its end): the entry goes with its stop's
      // answer. One it stopped already gets this stop too (a repeat gets the first answer), so
      // the entry goes once answered. Skipped, either one stayed a day, sent again by every
      // connector that attached.
      const own = this.calls.get(call);
      if (own) {
        own.handedOn = true;
        continue;
      }
      let m: Msg;
      try {
        m = JSON.parse(stop) as Msg;
      } catch {
        m = {};
      }
      const { sec, cause, id, dest } = m;
      if (m.call !== call || !Number.isSafeInteger(sec) || typeof cause !== 'string') {
        this.log.warn({ call }, 'not a stop handed on; dropped');
        void this.rpc.dropHandedOn(call).catch(() => undefined);
        continue;
      }
      // No dialog: its stop is all that is left of the call.
      const seen = typeof id === 'string' && typeof dest === 'string';
      const c = this.track({ ci: '', he: 0, hi: 0, id: seen ? id : '', dest: seen ? dest : '' }, call);
      Object.assign(c, { started: true, handedOn: true, unseen: !seen });
      this.log.info({ call, sec, cause }, 'sending a stop handed on');
      this.stop(c, sec as number, cause);
    }
  }

  /**
   * On evapi: the calls whose dialog ended or failed while no connector was attached (their events
   * went to no one; kamailio.cfg keeps them in htable `ends`) are stopped as those events would
   * have stopped them. Unstopped, one that ended was reaped `stale`, billed to its last tick, and
   * one that failed while it rang held its ID's call slot until Tessera's RING_TIMEOUT_MS.
   */
  private async stopUnheard(): Promise<void> {
    const kept = await this.rpc.unheard();
    if (kept.length > 0)
      this.log.info({ events: kept.length }, 'stopping the calls of dialog events no connector heard');
    for (const { key, event } of kept) {
      if (this.closing) break;
      this.onUnheard(key, event);
    }
  }

  /** One event htable `ends` kept, under `key`: handled as heard, its entry dropped once its stop is answered. */
  private onUnheard(key: string, payload: string): void {
    const e = parseEvent(payload);
    if (e?.ev === 'end') this.onEnd(e);
    else if (e?.ev === 'failed') this.onFailed(e);
    const c = e && this.calls.get(callIdOf(e.ci, e.he, e.hi));
    // Stopped already (or nothing to stop): nothing is left to answer.
    if (c?.ending) c.unheard = key;
    else void this.rpc.dropUnheard(key).catch(() => undefined);
  }

  /**
   * While close() waits: the calls whose dialog ended or failed since evapi was left (their events
   * went to no connector, or to none at all with a lone one) are stopped as those events would have
   * stopped them, from what kamailio.cfg keeps of them (htable `ends`). Unstopped, a call that
   * ended was reaped `stale`, billed to its last tick, and one that failed while it rang held its
   * ID's call slot until Tessera's RING_TIMEOUT_MS.
   */
  private stopEnded(): Promise<void> {
    if (this.polling || ![...this.calls.values()].some((c) => c.started && !c.ending)) return Promise.resolve();
    this.polling = this.listEnded().finally(() => (this.polling = undefined));
    return this.polling;
  }

  private async listEnded(): Promise<void> {
    try {
      const up = new Set<string>();
      for (const d of await this.rpc.listDialogs()) if (d.state !== DELETED) up.add(callIdOf(d.ci, d.he, d.hi));
      for (const c of [...this.calls.values()]) {
        // A dialog listed deleted, or not at all (a failed one goes at once): over, if kept as unheard.
        if (!c.started || c.ending || up.has(c.call)) continue;
        const key = `${c.he}:${c.hi}`;
        const event = await this.rpc.unheardOf(c.he, c.hi);
        if (event === undefined || c.ending) continue;
        this.log.info({ call: c.call }, 'call ended while closing');
        this.onUnheard(key, event);
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'rpc: cannot list dialogs while closing');
    }
  }

  /**
   * The calls whose stop Tessera has not answered yet, sent or waiting for their start's answer,
   * those with a cut ordered at their paid end, not made yet, and those waiting for word there.
   */
  private owed(): Call[] {
    return [...this.calls.values()].filter(
      (c) => c.stopping !== undefined || (c.endAfterStart !== undefined && !c.ending) || cutPending(c) || atPaidEnd(c),
    );
  }

  /** While close() waits: once nothing is owed, it waits no more. */
  private settleIfPaid(): void {
    if (this.settled && this.owed().length === 0) this.settled();
  }

  private onEvent(payload: string): void {
    const e = parseEvent(payload);
    if (!e) {
      this.log.warn({ payload: payload.slice(0, 200) }, 'evapi: not an event of deploy/kamailio/kamailio.cfg');
      return;
    }
    // Leaving (close()), it can admit no call: Kamailio answers the INVITE (or another connector does).
    if (e.ev === 'invite') {
      if (!this.closing) this.onInvite(e);
    } else if (e.ev === 'answer') this.onAnswer(e);
    else if (e.ev === 'end') this.onEnd(e);
    else this.onFailed(e);
  }

  private track(e: Pick<DialogEvent, 'ci' | 'he' | 'hi' | 'id' | 'dest'>, call = callIdOf(e.ci, e.he, e.hi)): Call {
    const c: Call = {
      call,
      id: e.id,
      dest: e.dest,
      he: e.he,
      hi: e.hi,
      maxSec: 0,
      grant: 0,
      final: true,
      firstGrant: 0,
      heard: -1,
      policy: { onFailure: 'terminate', failureSec: 0 },
      failSafe: 0,
      started: false,
      answerAt: 0,
      answerUs: 0,
      ticked: 0,
      timer: undefined,
      ending: false,
      cutAt: 0,
      cutSec: 0,
      cutCause: '',
      seq: ++this.tracked,
    };
    this.calls.set(c.call, c);
    return c;
  }

  private forget(c: Call): void {
    clearTimeout(c.timer);
    clearTimeout(c.askAgain);
    if (c.handedOn)
      this.rpc.dropHandedOn(c.call).catch((err: Error) => {
        this.log.warn(
          { call: c.call, err: err.message },
          'rpc: cannot drop a stop handed on (sent again, billed once)',
        );
      });
    if (c.unheard !== undefined)
      this.rpc.dropUnheard(c.unheard).catch((err: Error) => {
        this.log.warn(
          { call: c.call, err: err.message },
          'rpc: cannot drop an unheard event (sent again, billed once)',
        );
      });
    this.calls.delete(c.call);
    this.done.set(c.call, Date.now() + DONE_TTL_MS);
    this.settleIfPaid();
  }

  private onInvite(e: InviteEvent): void {
    const call = callIdOf(e.ci, e.he, e.hi);
    if (this.calls.has(call) || this.done.has(call)) return;
    const c = this.track(e);
    const origin = originOf(e);
    void this.link
      .request({ op: 'start', call: c.call, id: c.id, dest: c.dest, ...(origin && { origin }) })
      .then((r) => {
        if (r.op === 'started') {
          this.admit(c, r);
          this.evapi.send(admitReply(e, c.failSafe));
          if (c.endAfterStart) this.stop(c, c.endAfterStart.sec, c.endAfterStart.cause);
        } else {
          const reason = refusalOf(r);
          this.evapi.send(refuseReply(e, reason));
          this.log.info({ call: c.call, reason }, 'call refused');
          // Unavailable (or failed) is no refusal of Tessera's: the start may have been applied,
          // its reply lost. Stopped (0 s, nothing billed), it no longer holds the ID's balance and a
          // call of its limit until the reaper's RING_TIMEOUT_MS; never started, it is unknown_call.
          // Stopped once Kamailio says the dialog failed, not now: another connector's `started`
          // may have reached Kamailio first, and the call rings on, admitted. Forgotten without
          // being remembered as done, its failed event stops it (onFailed, a call not seen) and
          // its answer adopts it.
          if (!IN_DOUBT.has(reason)) this.forget(c);
          else if (c.endAfterStart) {
            const { sec, cause } = c.endAfterStart;
            this.stop(sec > 0 ? c : Object.assign(c, { unseen: true }), sec, cause);
          } else this.calls.delete(c.call);
        }
      });
  }

  /** What `started` says of the call's time: its maxSec, its grant and its failure policy. */
  private admit(c: Call, r: Msg): void {
    c.maxSec = Number(r.maxSec);
    c.grant = c.firstGrant = Number(r.grant);
    c.final = r.final === true;
    c.policy = {
      onFailure: r.onFailure === 'continue' ? 'continue' : 'terminate',
      failureSec: Number(r.failureSec) || 0,
    };
    c.failSafe = failSafeSec(c.grant, c.maxSec, c.policy);
    c.started = true;
  }

  /** A call this connector did not see start (it restarted, or the INVITE event went to a lost connection). */
  private adopt(e: DialogEvent): Call {
    const c = this.track(e);
    void this.link.request({ op: 'start', call: c.call, id: c.id, dest: c.dest }).then((r) => {
      if (r.op === 'started') {
        // A repeated start answers the first `started`: a later grant is heard at the next ticks.
        this.admit(c, r);
        if (c.endAfterStart) this.stop(c, c.endAfterStart.sec, c.endAfterStart.cause);
      } else if (c.endAfterStart) {
        this.stop(c, c.endAfterStart.sec, c.endAfterStart.cause);
      } else if (!c.ending) {
        // Tessera does not meter this call (call_ended: it was reaped): it must not go on.
        this.log.warn({ call: c.call, reason: r.reason }, 'adopted call is not metered; ending it');
        this.cut(c, this.elapsedSeconds(c), 'unmetered');
      }
    });
    return c;
  }

  private onAnswer(e: DialogEvent): void {
    const call = callIdOf(e.ci, e.he, e.hi);
    if (this.done.has(call)) return;
    const c = this.calls.get(call) ?? this.adopt(e);
    if (c.ending || c.answerAt) return;
    c.answerUs = kamailioUs(e.ts);
    // The event took a few ms to get here: on one host (clocks agree) the ticks and the
    // cut-off count from Kamailio's own answer time, that long before now.
    const sinceAnswer = Date.now() - c.answerUs / 1000;
    const now = steadyNow();
    c.answerAt = sinceAnswer >= 0 && sinceAnswer < 1000 ? now - sinceAnswer : now;
    // A tick of 0 at once: Tessera counts the call answered from now (not ringing) and
    // a call reaped while it rang is cut now, not a second later.
    if (c.started) this.link.send({ op: 'tick', call: c.call, sec: 0 });
    this.scheduleTick(c);
  }

  /** The next tick: at the end of each second, the last paid one tickLeadMs before its end. */
  /** When the tick of second `sec` is due: at its end, from the last paid second on tickLeadMs before. */
  private tickDue(c: Call, sec: number): number {
    const end = paidEnd(c.maxSec, c.horizon);
    return c.answerAt + sec * 1000 - (end > 0 && sec >= end ? this.tickLeadMs : 0);
  }

  private scheduleTick(c: Call): void {
    const due = this.tickDue(c, c.ticked + 1);
    // Timers run before I/O in an event-loop turn: the tick waits for the I/O of this turn
    // (setImmediate), so an end event that arrived during a stall is seen before it. A
    // timer replaced meanwhile (a final grant moved the tick earlier) ticks nothing.
    const timer = setTimeout(
      () =>
        setImmediate(() => {
          if (c.timer === timer) this.tick(c);
        }),
      Math.max(0, due - steadyNow()),
    );
    c.timer = timer;
  }

  /**
   * Ticks the completed seconds, so a hang-up racing a tick never adds a
   * second unless its event comes more than a second late. The last paid
   * second is ticked tickLeadMs before it ends (it has started, so the
   * started-second rule bills it anyway): its cutoff is then known before
   * the balance runs out, and the BYE leaves on the dot.
   */
  private tick(c: Call): void {
    if (c.ending || c.cutAt) return;
    const now = steadyNow();
    const end = paidEnd(c.maxSec, c.horizon);
    let sec = Math.floor((now - c.answerAt) / 1000);
    // The second under way counts once its tick is due (from the last paid second on, tickLeadMs
    // before its end), as scheduleTick made it due: counting whole seconds only, the tick after the
    // paid end's would find nothing new and be due again at once until its second ended.
    if (now >= this.tickDue(c, sec + 1)) sec += 1;
    if (c.started && this.evapi.connected && sec > c.ticked) {
      c.ticked = sec;
      this.link.send(this.tickOf(c, sec));
      // A call reaching its paid time is cut by the cutoff this tick brings; past it with no
      // word of more (a top-up), or with no gateway to answer, the connector cuts it itself
      // (the protocol's "never past maxSec").
      if (sec > end || (sec >= end && !this.link.connected)) {
        const gatewayUp = this.link.connected;
        this.log.warn(
          { call: c.call, sec: Math.min(end, sec), gatewayUp },
          'no word of more at the paid end: cut ordered',
        );
        this.cutWhenPaidUp(c, Math.min(end, sec), 'max_sec');
        return;
      }
    }
    this.scheduleTick(c);
  }

  /** A tick, with a ref when its answer may carry a re-grant (fail-safe.ts). */
  private tickOf(c: Call, sec: number): Msg {
    if (!asksForGrant(c, c.firstGrant, sec, paidEnd(c.maxSec, c.horizon))) return { op: 'tick', call: c.call, sec };
    return grantTick(c.call, sec);
  }

  /**
   * A `ticked`: a grant that went up moves Kamailio's fail-safe on. Never
   * back: answers may arrive out of order (two connectors, a reconnection),
   * and grants only grow.
   */
  private onTicked(c: Call, m: Msg): void {
    const grant = m.grant;
    const sec = grantSecOf(m.ref);
    // Where the money ends, as this answer tells it (its sec and the seconds left then).
    const horizon = Number.isSafeInteger(sec) && typeof m.secLeft === 'number' ? sec + m.secLeft : undefined;
    if (horizon !== undefined && sec >= c.heard) {
      // Other calls of the ID may have taken what maxSec counted, or a top-up added to it: the
      // last paid second's tick goes early there, as at maxSec, so the cut-off is known before
      // the money ends.
      const end = paidEnd(c.maxSec, c.horizon);
      c.heard = sec;
      c.horizon = horizon;
      // A cut the connector ordered for want of word at the paid end (no gateway up at its tick)
      // yields to word of more, come before it: the link came back, a top-up re-granted the call.
      // A cut-off Tessera sent never does, and with no more paid the cut stays where it is.
      if (c.cutAt && c.cutCause === 'max_sec' && !c.ending && horizon > c.cutSec) {
        this.log.info({ call: c.call, sec: c.cutSec, horizon }, 'the paid end moved on: cut called off');
        c.cutAt = 0;
      }
      if (paidEnd(c.maxSec, horizon) !== end && c.timer && !c.ending && !c.cutAt) {
        clearTimeout(c.timer);
        // Closing, a call paid on is the next connector's to tick (it takes it up).
        if (this.closing) this.settleIfPaid();
        else this.scheduleTick(c);
      }
    }
    if (typeof grant !== 'number' || grant < c.grant) return;
    c.grant = grant;
    c.final = m.final === true;
    const failSafe = failSafeSec(grant, horizon ?? grant, c.policy);
    if (failSafe <= c.failSafe || !c.answerUs) return;
    c.failSafe = failSafe;
    // Kamailio's clock: its answer time plus the seconds, rounded up so the cut is never early.
    this.evapi.send(failSafeReply(c.he, c.hi, Math.ceil(c.answerUs / 1e6 + failSafe)));
  }

  /** Cuts the call once its `sec` paid seconds are over (at once if they are). */
  private cutWhenPaidUp(c: Call, sec: number, cause: string): void {
    clearTimeout(c.timer);
    c.cutSec = sec;
    c.cutCause = cause;
    c.cutAt = c.answerAt + sec * 1000 + CUT_MARGIN_MS;
    const wait = c.cutAt - steadyNow();
    if (wait <= 0) this.cut(c, sec, cause, true);
    else c.timer = setTimeout(() => this.cut(c, sec, cause, true), wait);
  }

  private onEnd(e: DialogEvent): void {
    const call = callIdOf(e.ci, e.he, e.hi);
    if (this.done.has(call)) return;
    // A call this connector never saw: whoever started it, the stop closes it (or answers unknown_call).
    const c = this.calls.get(call) ?? Object.assign(this.track(e), { started: true });
    if (c.ending && !c.cutting) return;
    const answerUs = e.ats ? kamailioUs(e.ats) : c.answerUs;
    let sec = answerUs ? billedSeconds(answerUs, kamailioUs(e.ts)) : 0;
    if (c.ending) {
      // (Only a duration Kamailio timed: an end without the answer's time says nothing of it.)
      if (answerUs) c.endedSec = sec;
      // The dialog is over: the cut's stop waits no longer.
      c.cutting?.();
      return;
    }
    let cause = 'hangup';
    if (c.cutAt) {
      // Ended at or past its paid seconds, before the cut ordered at their end went out: cut by
      // another connector on this Kamailio (evapi tells both; each times its own cut), or the
      // caller's BYE a few ms ahead of this one's. Either way the money ran out: the cut's cause,
      // whichever connector's stop lands first. Those milliseconds are not billed, as for a call
      // the cut reaches: billed as a started second, the second was unpaid, what was left on the
      // ID taken and the rest recorded short.
      if (answerUs && kamailioUs(e.ts) >= answerUs + c.cutSec * 1_000_000) cause = c.cutCause;
      sec = Math.min(sec, c.cutSec);
    }
    if (!c.started) {
      clearTimeout(c.timer);
      c.endAfterStart = { sec, cause };
      return;
    }
    this.stop(c, sec, cause);
  }

  private onFailed(e: DialogEvent): void {
    const call = callIdOf(e.ci, e.he, e.hi);
    if (this.done.has(call)) return;
    const cause = /^[1-6][0-9][0-9]$/.test(e.code ?? '') ? `failed-${e.code}` : 'failed';
    const c = this.calls.get(call);
    if (!c) {
      // Admitted by another connector process (this one restarted since) and failed while
      // it rang: stopped now, or its ID stays busy until the reaper's RING_TIMEOUT_MS. One
      // that was refused or never started answers unknown_call, and nothing changes.
      this.stop(Object.assign(this.track(e), { started: true, unseen: true }), 0, cause);
      return;
    }
    if (c.ending) return;
    if (!c.started) {
      c.endAfterStart = { sec: 0, cause };
      return;
    }
    this.stop(c, 0, cause);
  }

  private onTessera(m: Msg): void {
    const c = typeof m.call === 'string' ? this.calls.get(m.call) : undefined;
    if (m.op === 'ticked' && c && !c.ending) {
      this.onTicked(c, m);
    } else if (m.op === 'cutoff' && c && !c.ending) {
      this.log.info({ call: c.call, reason: m.reason, sec: c.ticked }, 'cut-off');
      // `exhausted`: the ticks paid up to the second that brought this, which may still be running.
      if (m.reason === 'exhausted' && c.answerAt) this.cutWhenPaidUp(c, c.ticked, 'cutoff');
      else this.cut(c, this.elapsedSeconds(c), 'cutoff');
    } else if (m.op === 'error' && c && !c.ending && RETRYABLE.has(String(m.reason)) && isGrantRef(m.ref)) {
      this.askAgain(c, grantSecOf(m.ref));
    } else if (m.op === 'error' && c && !c.ending && (m.reason === 'unknown_call' || m.reason === 'call_ended')) {
      this.log.warn({ call: c.call, reason: m.reason }, 'call not metered; ending it');
      this.cut(c, this.elapsedSeconds(c), 'unmetered');
    } else if (m.op === 'alert' && c) {
      this.log.info({ call: c.call, secLeft: m.secLeft, level: m.level }, 'low balance');
    }
  }

  /**
   * Sends again a tick of `sec` that asked for its re-grant and was refused for now. Dropped, the
   * re-grant (a top-up's, at the paid end) went unheard: the next tick found no word of more and
   * the call was cut `max_sec` though the balance would pay. Only while it is the call's latest
   * tick (a later one asks for itself) and at most ASK_AGAIN_MS.length times for its sec: with no
   * answer of more by the next tick, metering is taken as lost and the call cut as before.
   */
  private askAgain(c: Call, sec: number): void {
    if (sec !== c.ticked || c.cutAt || c.askAgain) return;
    const asked = c.askedAgain?.sec === sec ? c.askedAgain : (c.askedAgain = { sec, times: 0 });
    const wait = ASK_AGAIN_MS[asked.times];
    if (wait === undefined) return;
    asked.times++;
    c.askAgain = setTimeout(() => {
      c.askAgain = undefined;
      if (c.ending || c.cutAt || sec !== c.ticked || !this.link.connected) return;
      this.log.debug({ call: c.call, sec }, 're-grant tick sent again');
      this.link.send(grantTick(c.call, sec));
    }, wait);
  }

  private elapsedSeconds(c: Call): number {
    return c.answerAt ? Math.max(c.ticked, billedSeconds(c.answerAt * 1000, steadyNow() * 1000)) : 0;
  }

  /**
   * Ends the dialog through Kamailio's RPC (BYE to both sides) and stops the
   * call once Kamailio answered: its end event is not reliably sent for a
   * dialog ended by dlg.end_dlg, and billing must not wait for it. `paidUp`:
   * cut at the end of its `sec` paid seconds, stopped at once.
   */
  private cut(c: Call, sec: number, cause: string, paidUp = false): void {
    if (paidUp) {
      // At the end of its paid seconds the call's end is known: it is stopped with them at once,
      // its ID free by the time the caller has the BYE (an immediate redial on a maxCalls-1 ID is
      // no concurrent_limit). An end event on its way changes nothing: a BYE the cut overtook
      // came in its last paid second, billed the same, and the event is ignored (27d99ec's cause).
      this.stop(c, sec, cause);
      this.endDialog(c).catch(() => undefined);
      return;
    }
    c.ending = true;
    clearTimeout(c.timer);
    // The stop waits for the dialog's end event, or for dlg.end_dlg's answer and END_EVENT_LAG_MS
    // more: a BYE that beat the cut (the caller hung up as a blocked ID's tick brought its
    // cut-off) ended the dialog first, and its end event, on its way meanwhile, bills the seconds
    // Kamailio timed, not the ones the cut would have added. Not longer than CUT_STOP_WAIT_MS: a
    // Kamailio that does not answer has sent no such event. (stop() clears c.timer.)
    const stop = (): void => {
      if (c.cutting !== stop) return;
      c.cutting = undefined;
      this.stop(c, Math.min(sec, c.endedSec ?? sec), cause);
    };
    c.cutting = stop;
    c.timer = setTimeout(stop, CUT_STOP_WAIT_MS);
    this.endDialog(c).then(
      () => {
        if (c.cutting !== stop) return;
        clearTimeout(c.timer);
        c.timer = setTimeout(stop, END_EVENT_LAG_MS);
      },
      () => stop(),
    );
  }

  /**
   * dlg.end_dlg; one that failed for want of an answer (a Kamailio too busy to answer within the
   * RPC's timeout, or restarting) goes again in the background (END_DIALOG_RETRY_MS), the promise
   * settled by the first. Given up at the first failure, the call talked on unmetered to its
   * fail-safe: for a taken-up call the reaper had closed (any call cut `unmetered`), on most IDs
   * the whole balance. A repeated dlg.end_dlg sends no BYE twice (kamailio.cfg); a closing
   * connector leaves the dialog to the next one, which takes it up. Each request is kept while
   * under way: close() lets it finish before it closes the RPC agent.
   */
  private endDialog(c: Call, tries = 0): Promise<unknown> {
    const sent = this.rpc.endDialog(c.he, c.hi);
    this.endingDialogs.add(sent);
    const done = (): boolean => this.endingDialogs.delete(sent);
    sent.then(done, (err: Error & { rpcCode?: number }) => {
      done();
      const wait = END_DIALOG_RETRY_MS[tries];
      const again = err.rpcCode === undefined && wait !== undefined && !this.closing;
      this.log.warn({ call: c.call, err: err.message, again }, 'dlg.end_dlg failed');
      if (!again) return;
      const timer = setTimeout(() => {
        this.endsAgain.delete(timer);
        this.endDialog(c, tries + 1).catch(() => undefined);
      }, wait).unref();
      this.endsAgain.add(timer);
    });
    return sent;
  }

  /**
   * A call's stop. id and dest travel with it: a gateway that lost the session bills the call
   * from them (a recovered stop), so not for a call that may never have started.
   */
  private stopOf(c: Pick<Call, 'call' | 'id' | 'dest' | 'unseen'>, sec: number, cause: string): Msg {
    return { op: 'stop', call: c.call, sec, cause, ...(!c.unseen && { id: c.id, dest: c.dest }) };
  }

  private stop(c: Call, sec: number, cause: string): void {
    c.ending = true;
    clearTimeout(c.timer);
    c.stopping = { sec, cause };
    void this.link.request(this.stopOf(c, sec, cause)).then((r) => {
      const again = stopRetryMs(r);
      if (again !== undefined) {
        // In c.timer: close() keeps it while it waits for what it owes, and clears it after.
        c.timer = setTimeout(() => this.stop(c, sec, cause), again);
        return;
      }
      if (r.op === 'error' && c.unseen && r.reason === 'unknown_call')
        this.log.debug({ call: c.call }, 'failed call was never started');
      else if (r.op === 'error') this.log.warn({ call: c.call, reason: r.reason }, 'stop refused');
      else this.log.debug({ call: c.call, billedSec: r.billedSec, cost: r.cost }, 'stopped');
      this.forget(c);
    });
  }

  /** After a reconnection, the latest tick of every answered call (the protocol's resend rule). */
  private retick(): void {
    for (const c of this.calls.values()) {
      if (c.started && !c.ending && c.ticked > 0) this.link.send(this.tickOf(c, c.ticked));
    }
  }

  /**
   * On evapi, at start and after a loss: the calls this connector does not
   * know but Kamailio holds, answered and prepaid, are taken up. A connector
   * started again (or beside one that died) would otherwise hear of them only
   * at their end, while they talk on to Kamailio's fail-safe: unbilled past
   * their last tick, and, once the reaper closed them, beside the calls their
   * freed slot lets in. A call Tessera still meters is ticked on from its
   * answer; one the reaper closed is cut now and stopped with its seconds
   * (billed as `late`). Throws when Kamailio could not list them (readKept).
   */
  private async takeUpDialogs(): Promise<void> {
    const dialogs = await this.rpc.listDialogs();
    // Closed meanwhile (a slow listing): a call taken up now had its start on a link closed, never
    // answered, and its tick timer running on. The next connector takes it up.
    if (this.closing) return;
    for (const d of dialogs) {
      const ats = Number(d.vars.ats);
      if (d.vars.tessera !== '1' || d.state !== 4 || !(ats > 0) || !d.vars.pid) continue;
      const call = callIdOf(d.ci, d.he, d.hi);
      if (this.calls.has(call) || this.done.has(call)) continue;
      const e: DialogEvent = {
        ev: 'answer',
        ci: d.ci,
        he: d.he,
        hi: d.hi,
        id: d.vars.pid,
        dest: d.vars.dest ?? '',
        ts: ats,
      };
      const c = this.adopt(e);
      // Answered long ago: its seconds count from Kamailio's answer, not from now (onAnswer's rule for fresh events).
      c.answerUs = kamailioUs(ats);
      c.answerAt = steadyNow() - (Date.now() - c.answerUs / 1000);
      this.log.info({ call: c.call }, 'took up a call already answered');
      this.scheduleTick(c);
    }
  }

  /**
   * Back on evapi after a loss: Kamailio may have restarted, and its dialogs
   * with it. A call whose dialog is gone is stopped at the moment evapi was
   * lost (it ended no later than that). Throws when Kamailio could not be asked (readKept).
   */
  private async recheckDialogs(): Promise<void> {
    const lostAt = this.lostAt;
    // A call tracked from now on (admitted, adopted) may have no dialog in the listing yet: taken
    // for gone, it was stopped `lost` (0 s) while it talked, and its next tick had it cut.
    const known = this.tracked;
    const alive = new Set<string>();
    /** Deleted dialogs' ends (ms): a call may have talked on past lostAt to them. */
    const endedAt = new Map<string, number>();
    // A deleted dialog (state 5) stays listed a few seconds: one that ended while no connector
    // was attached (a BYE during Kamailio's restart) sent its end event to no one, and taken
    // for alive its call was ticked on, its ID busy, until its paid end.
    for (const d of await this.rpc.listDialogs()) {
      const call = callIdOf(d.ci, d.he, d.hi);
      if (d.state !== DELETED) alive.add(call);
      else if (d.endTs > 0) endedAt.set(call, d.endTs * 1000);
    }
    // Closing meanwhile: its calls are the next connector's (it takes them up), and one whose
    // dialog ended while it closes is stopped by the close's poll (stopEnded). A `lost` stop now
    // was sent during its wait on a listing already old, or after it on a link closed.
    if (this.closing) return;
    for (const c of [...this.calls.values()]) {
      if (alive.has(c.call) || c.ending || c.seq > known) continue;
      // Billed to its dialog's end when Kamailio knows it (whole seconds: never past the real end),
      // else to the moment evapi was lost, when it had ended at the latest. Each span on one
      // clock: the dialog's end from the answer by Kamailio's, the loss from it by this
      // process's steady one (a Kamailio on a host whose clock is behind would bill the skew).
      const ended = endedAt.get(c.call);
      const sec = c.answerAt
        ? Math.max(
            c.ticked,
            billedSeconds(c.answerAt * 1000, Math.max(lostAt, c.answerAt) * 1000),
            ended ? billedSeconds(c.answerUs, ended * 1000) : 0,
          )
        : 0;
      this.log.warn({ call: c.call, sec }, 'dialog gone after Kamailio reconnected; stopping the call');
      if (c.started) this.stop(c, sec, 'lost');
      else c.endAfterStart = { sec, cause: 'lost' };
    }
  }
}

/**
 * The load generator of bench/switch.ts: simulated switches on real WebSocket
 * connections, MessagePack binary frames. Runs in the bench's main thread or,
 * with --workers K > 1, once per worker thread (this file is also the worker
 * entry point), each engine owning its share of connections and calls.
 *
 * Two modes:
 *  - calls: every call is visited once every tickEvery seconds on a timer
 *    wheel (slotMs granularity, phases spread over --ramp seconds): start, then
 *    tick sec=T, 2T, ..D (cumulative seconds since answer, so billing stays per
 *    second whatever the interval), then stop with sec=D. One wheel and one
 *    timer per engine, not per call, so one thread holds 100,000 calls. All
 *    messages one connection has in one timer turn go out as one array frame.
 *    Ticks with a ref measure tick→ticked.
 *  - max: start every call, then each connection keeps `window` frames of
 *    `frame` ticks in flight, round-robin over its calls with sec+1 each time
 *    (real debits, never repeats); a frame is done when all its refs are
 *    answered and the next one goes out. Then every call is stopped.
 * In both modes the stop answer's billedSec is checked against the last sec sent
 * and, per second billing, its cost against the fee and rate its start was answered with.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Packr, Unpackr } from 'msgpackr';
import WebSocket from 'ws';
import { encodeHist, newHist, recordMs, type Hist } from '../lib/hist';

export interface CallSpec {
  id: string;
  dest: string;
  /** On the alert product: crosses thresholds during the run. */
  alert: boolean;
}

export interface EngineConfig {
  mode: 'calls' | 'max';
  url: string;
  token: string;
  conns: number;
  /** Call i of this engine runs on connection i % conns. */
  calls: CallSpec[];
  /** Call ids are `${callPrefix}${i}`: unique across engines. */
  callPrefix: string;
  duration: number;
  /** calls mode: seconds between a call's ticks, each carrying the seconds since answer. */
  tickEvery: number;
  refEvery: number;
  /** Quota mode: calls start with mode 'quota' and report with `update` (always answered `granted`). */
  quota: boolean;
  /** The plan's initial and next block (s), when it is not per second. */
  blocks?: readonly [number, number];
  ramp: number;
  slotMs: number;
  frame: number;
  window: number;
  /** Starts/stops per frame in max mode's start and stop phases. */
  setupFrame: number;
  /** maxSec of an alert ID at start (its balance / rate). */
  alertMaxSec: number;
  /** Seconds after answer at which an alert call crosses a threshold (threshold = alertMaxSec - sec). */
  crossings: number[];
  seed: number;
}

export interface Counters {
  startsSent: number;
  started: number;
  ticksSent: number;
  tickRefsSent: number;
  ticked: number;
  /** max mode: ticks whose frame has been fully answered; calls mode: ticks sent. */
  ticksDone: number;
  stopsSent: number;
  stopped: number;
  alerts: number;
  alertsUnmatched: number;
  cutoffs: number;
  billingMismatch: number;
  /** Stops whose cost is not the started fee + billedSec × rate (per-second tariff only). */
  costMismatch: number;
  /** calls mode: visits where a call's start had not been answered yet (its tick postponed one interval). */
  startPending: number;
  framesSent: number;
  framesReceived: number;
  unfinished: number;
}

export interface EngineResult {
  counters: Counters;
  errors: Record<string, number>;
  hist: Record<HistName, string>;
  /** Date.now() of the first tick sent and of the last tick done. */
  tickStart: number;
  tickEnd: number;
  /** Date.now() of the first start sent and the last start answered, likewise for stops (0: none). */
  starts: Span;
  stops: Span;
}

export interface Span {
  first: number;
  last: number;
}

/** tickSteady: ticks sent after every start of the engine was answered (no start burst in the way). */
export type HistName = 'start' | 'tick' | 'tickSteady' | 'alert' | 'stop' | 'lag';

const IDLE = 0;
const STARTING = 1;
const LIVE = 2;
const STOPPING = 3;
const DONE = 4;
const FAILED = 5;

const K_START = 1;
const K_TICK = 2;
const K_STOP = 3;

const RING = 1 << 20;
const RMASK = RING - 1;
const FRING = 1 << 16;
const FMASK = FRING - 1;

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const zeroCounters = (): Counters => ({
  startsSent: 0,
  started: 0,
  ticksSent: 0,
  tickRefsSent: 0,
  ticked: 0,
  ticksDone: 0,
  stopsSent: 0,
  stopped: 0,
  alerts: 0,
  alertsUnmatched: 0,
  cutoffs: 0,
  billingMismatch: 0,
  costMismatch: 0,
  startPending: 0,
  framesSent: 0,
  framesReceived: 0,
  unfinished: 0,
});

type Msg = Record<string, unknown>;

export class Engine {
  readonly c = zeroCounters();
  private readonly errors = new Map<string, number>();
  private readonly h: Record<HistName, Hist> = {
    start: newHist(),
    tick: newHist(),
    tickSteady: newHist(),
    alert: newHist(),
    stop: newHist(),
    lag: newHist(),
  };
  private startsAnswered = 0;
  private steadyFrom = Infinity;
  private readonly packr = new Packr({ useRecords: false });
  private readonly unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });
  private ws: WebSocket[] = [];
  private readonly n: number;
  private readonly names: string[];
  private readonly st: Uint8Array;
  private readonly sec: Int32Array;
  /** Rate and fee each call's `started` gave: what its `stopped` cost must add up to. */
  private readonly rate: Float64Array;
  private readonly fee: Float64Array;
  private readonly byConn: number[][];
  private done = 0;
  private onAllDone: (() => void) | undefined;

  private readonly refT = new Float64Array(RING);
  private readonly refSeq = new Float64Array(RING);
  private readonly refKind = new Uint8Array(RING);
  private readonly refFrame = new Int32Array(RING);
  private nextRef = 1;

  private readonly alertSlot: Int32Array;
  private readonly alertT: Float64Array;
  private readonly crossingIdx = new Map<number, number>();
  private readonly levelIdx = new Map<number, number>();

  // max mode
  private running = false;
  private closing = false;
  private readonly outstanding: Int32Array;
  private readonly cursor: Float64Array;
  private readonly frameRemaining = new Int32Array(FRING);
  private readonly frameSize = new Int32Array(FRING);
  private readonly frameConn = new Int32Array(FRING);
  private nextFrame = 1;
  private drained: (() => void) | undefined;
  private phaseDone: ((c: number) => void) | undefined;
  private tickStart = 0;
  private tickEnd = 0;
  private readonly starts: Span = { first: 0, last: 0 };
  private readonly stops: Span = { first: 0, last: 0 };

  constructor(private readonly cfg: EngineConfig) {
    this.n = cfg.calls.length;
    this.names = cfg.calls.map((_, i) => `${cfg.callPrefix}${i}`);
    this.st = new Uint8Array(this.n);
    this.sec = new Int32Array(this.n);
    this.rate = new Float64Array(this.n).fill(-1);
    this.fee = new Float64Array(this.n);
    this.byConn = Array.from({ length: cfg.conns }, () => []);
    for (let i = 0; i < this.n; i++) this.byConn[i % cfg.conns]!.push(i);
    this.outstanding = new Int32Array(cfg.conns);
    this.cursor = new Float64Array(cfg.conns);
    this.alertSlot = new Int32Array(this.n).fill(-1);
    let slots = 0;
    cfg.calls.forEach((call, i) => {
      if (call.alert) this.alertSlot[i] = slots++;
    });
    this.alertT = new Float64Array(Math.max(1, slots * cfg.crossings.length));
    cfg.crossings.forEach((s, k) => {
      this.crossingIdx.set(s, k);
      this.levelIdx.set(cfg.alertMaxSec - s, k);
    });
  }

  /** Opens every connection; rejects on a refused upgrade. */
  async connect(): Promise<void> {
    this.ws = await Promise.all(
      Array.from(
        { length: this.cfg.conns },
        (_, c) =>
          new Promise<WebSocket>((resolve, reject) => {
            const ws = new WebSocket(this.cfg.url, {
              headers: { Authorization: `Bearer ${this.cfg.token}` },
              perMessageDeflate: false,
            });
            ws.binaryType = 'nodebuffer';
            let open = false;
            ws.once('open', () => {
              open = true;
              resolve(ws);
            });
            ws.on('error', (e) => (open ? this.err(`ws_error:${e.message}`) : reject(e)));
            ws.once('unexpected-response', (_req, res) =>
              reject(new Error(`WebSocket upgrade refused: HTTP ${res.statusCode}`)),
            );
            ws.on('message', (data: Buffer, isBinary: boolean) => this.onFrame(c, data, isBinary));
            ws.on('close', () => {
              if (!this.closing) this.err('disconnected');
            });
          }),
      ),
    );
  }

  async run(): Promise<EngineResult> {
    if (this.cfg.mode === 'calls') await this.runCalls();
    else await this.runMax();
    this.running = false;
    await this.close();
    return {
      counters: { ...this.c, unfinished: this.n - this.done },
      errors: Object.fromEntries(this.errors),
      hist: Object.fromEntries(Object.entries(this.h).map(([k, h]) => [k, encodeHist(h)])) as Record<HistName, string>,
      tickStart: this.tickStart,
      tickEnd: this.tickEnd,
      starts: this.starts,
      stops: this.stops,
    };
  }

  private async close(): Promise<void> {
    this.closing = true;
    await Promise.all(
      this.ws.map(
        (ws) =>
          new Promise<void>((resolve) => {
            if (ws.readyState === WebSocket.CLOSED) return resolve();
            const t = setTimeout(() => (ws.terminate(), resolve()), 2000);
            ws.once('close', () => (clearTimeout(t), resolve()));
            ws.close(1000);
          }),
      ),
    );
  }

  private err(reason: string): void {
    this.errors.set(reason, (this.errors.get(reason) ?? 0) + 1);
  }

  private newRef(now: number, kind: number, frame = 0): number {
    const ref = this.nextRef++;
    const s = ref & RMASK;
    this.refT[s] = now;
    this.refSeq[s] = ref;
    this.refKind[s] = kind;
    this.refFrame[s] = frame;
    return ref;
  }

  /** Ring slot of an outstanding ref, or -1 (unknown, answered already, or overwritten). */
  private slotOf(ref: unknown): number {
    if (typeof ref !== 'number') return -1;
    const s = ref & RMASK;
    if (this.refSeq[s] !== ref) return -1;
    this.refSeq[s] = 0;
    return s;
  }

  private idxOf(call: unknown): number {
    if (typeof call !== 'string' || !call.startsWith(this.cfg.callPrefix)) return -1;
    const i = Number(call.slice(this.cfg.callPrefix.length));
    return Number.isInteger(i) && i >= 0 && i < this.n ? i : -1;
  }

  private startAnswered(now: number): void {
    if (++this.startsAnswered === this.n) this.steadyFrom = now;
  }

  private finish(i: number, state: number): void {
    const was = this.st[i]!;
    this.st[i] = state;
    if (was !== DONE && was !== FAILED) {
      this.done++;
      if (this.done === this.n) this.onAllDone?.();
    }
  }

  private send(c: number, msgs: Msg[]): void {
    if (msgs.length === 0) return;
    const ws = this.ws[c]!;
    if (ws.readyState !== WebSocket.OPEN) return;
    this.c.framesSent++;
    ws.send(this.packr.pack(msgs.length === 1 ? msgs[0] : msgs), { binary: true });
  }

  /** The seconds a call of `sec` is charged: per second, or 60 s then 6 s blocks (--tariff 60/6-peak). */
  private charged(sec: number): number {
    if (this.cfg.blocks === undefined || sec === 0) return sec;
    const [initial, next] = this.cfg.blocks;
    return sec <= initial ? initial : initial + Math.ceil((sec - initial) / next) * next;
  }

  /** A per-second call's cost: nothing unanswered, else the fee and every second at the rate its start gave. */
  private expectedCost(i: number, billedSec: unknown): number {
    if (typeof billedSec !== 'number' || this.rate[i]! < 0) return NaN;
    return billedSec === 0 ? 0 : this.fee[i]! + billedSec * this.rate[i]!;
  }

  private startMsg(i: number, now: number): Msg {
    this.c.startsSent++;
    if (this.starts.first === 0) this.starts.first = Date.now();
    const call = this.cfg.calls[i]!;
    const start: Msg = {
      op: 'start',
      ref: this.newRef(now, K_START),
      call: this.names[i],
      id: call.id,
      dest: call.dest,
    };
    if (this.cfg.quota) start.mode = 'quota';
    return start;
  }

  private stopMsg(i: number, now: number): Msg {
    this.c.stopsSent++;
    if (this.stops.first === 0) this.stops.first = Date.now();
    this.st[i] = STOPPING;
    return { op: 'stop', ref: this.newRef(now, K_STOP), call: this.names[i], sec: this.sec[i], cause: 'normal' };
  }

  /** The next tick of call i (sec + step), stamped for the alert it may cross. */
  private tickMsg(i: number, now: number, withRef: boolean, frame = 0, step = 1): Msg {
    const s = (this.sec[i]! += step);
    this.c.ticksSent++;
    const slot = this.alertSlot[i]!;
    if (slot >= 0) {
      const k = this.crossingIdx.get(s);
      if (k !== undefined) this.alertT[slot * this.cfg.crossings.length + k] = now;
    }
    const op = this.cfg.quota ? 'update' : 'tick';
    if (!withRef && !this.cfg.quota) return { op, call: this.names[i], sec: s };
    this.c.tickRefsSent++;
    return { op, call: this.names[i], sec: s, ref: this.newRef(now, K_TICK, frame) };
  }

  // ---------------------------------------------------------------- replies

  private onFrame(c: number, data: Buffer, isBinary: boolean): void {
    const now = performance.now();
    this.c.framesReceived++;
    let body: unknown;
    try {
      body = isBinary ? this.unpackr.unpack(data) : JSON.parse(data.toString('utf8'));
    } catch {
      return this.err('bad_reply_frame');
    }
    if (Array.isArray(body)) for (const m of body) this.onMessage(c, m as Msg, now);
    else this.onMessage(c, body as Msg, now);
  }

  private onMessage(c: number, m: Msg, now: number): void {
    switch (m.op) {
      case 'granted':
      case 'ticked': {
        this.c.ticked++;
        const s = this.slotOf(m.ref);
        if (s < 0) return this.err('unmatched_ticked');
        const sent = this.refT[s]!;
        recordMs(this.h.tick, now - sent);
        if (sent >= this.steadyFrom) recordMs(this.h.tickSteady, now - sent);
        if (this.cfg.mode === 'max') this.frameAnswered(this.refFrame[s]!, now);
        return;
      }
      case 'alert': {
        this.c.alerts++;
        const i = this.idxOf(m.call);
        const k = this.levelIdx.get(m.level as number);
        const slot = i >= 0 ? this.alertSlot[i]! : -1;
        if (slot < 0 || k === undefined) return void this.c.alertsUnmatched++;
        const at = slot * this.cfg.crossings.length + k;
        const t = this.alertT[at]!;
        if (t <= 0) return void this.c.alertsUnmatched++;
        this.alertT[at] = 0;
        recordMs(this.h.alert, now - t);
        return;
      }
      case 'started': {
        this.c.started++;
        this.starts.last = Date.now();
        const s = this.slotOf(m.ref);
        if (s >= 0) recordMs(this.h.start, now - this.refT[s]!);
        const i = this.idxOf(m.call);
        if (i >= 0 && this.st[i] === STARTING) this.st[i] = LIVE;
        if (i >= 0 && typeof m.rate === 'number') {
          this.rate[i] = m.rate;
          this.fee[i] = typeof m.fee === 'number' ? m.fee : 0;
        }
        this.startAnswered(now);
        this.phaseDone?.(c);
        return;
      }
      case 'stopped': {
        this.c.stopped++;
        this.stops.last = Date.now();
        const s = this.slotOf(m.ref);
        if (s >= 0) recordMs(this.h.stop, now - this.refT[s]!);
        const i = this.idxOf(m.call);
        if (i >= 0) {
          if (m.billedSec !== this.charged(this.sec[i]!)) this.c.billingMismatch++;
          if (this.cfg.blocks === undefined && m.cost !== this.expectedCost(i, m.billedSec)) this.c.costMismatch++;
          this.finish(i, DONE);
        }
        this.phaseDone?.(c);
        return;
      }
      case 'cutoff':
        this.c.cutoffs++;
        return this.err(`cutoff:${String(m.reason)}`);
      case 'error': {
        const s = this.slotOf(m.ref);
        const kind = s >= 0 ? this.refKind[s] : 0;
        // Only ticks go without a ref: an error without one answers such a tick.
        this.err(
          `${kind === K_START ? 'start' : kind === K_TICK ? 'tick' : kind === K_STOP ? 'stop' : m.ref === undefined ? 'tick(no ref)' : 'unmatched'}:${String(m.reason)}`,
        );
        const i = this.idxOf(m.call);
        if (kind === K_TICK && this.cfg.mode === 'max') this.frameAnswered(this.refFrame[s]!, now);
        if (kind === K_START) this.startAnswered(now);
        if ((kind === K_START || kind === K_STOP) && i >= 0) {
          this.finish(i, FAILED);
          this.phaseDone?.(c);
        }
        return;
      }
      default:
        return this.err(`unexpected_op:${String(m.op)}`);
    }
  }

  // ------------------------------------------------------------ calls mode

  private runCalls(): Promise<void> {
    const { slotMs, duration, refEvery, tickEvery } = this.cfg;
    // The wheel turns once per tick interval: each call sits in one slot of it.
    const periodMs = tickEvery * 1000;
    const slotsPerPeriod = Math.max(1, Math.round(periodMs / slotMs));
    const wheel: number[][] = Array.from({ length: slotsPerPeriod }, () => []);
    const firstRound = new Int32Array(this.n);
    const rnd = mulberry32(this.cfg.seed);
    const rampMs = Math.max(1, this.cfg.ramp * 1000);
    for (let i = 0; i < this.n; i++) {
      const offset = Math.floor(rnd() * rampMs);
      wheel[Math.floor((offset % periodMs) / (periodMs / slotsPerPeriod))]!.push(i);
      firstRound[i] = Math.floor(offset / periodMs);
    }
    const out: Msg[][] = Array.from({ length: this.cfg.conns }, () => []);
    const conns = this.cfg.conns;
    const slotDur = periodMs / slotsPerPeriod;
    const t0 = performance.now();
    let nextAbs = 0;
    let timer: NodeJS.Timeout | undefined;
    const deadline = (this.cfg.ramp + duration + tickEvery + 30) * 1000;

    return new Promise<void>((resolve) => {
      const end = (): void => {
        if (timer) clearTimeout(timer);
        this.tickEnd = Date.now();
        resolve();
      };
      this.onAllDone = end;
      const turn = (): void => {
        const now = performance.now();
        const due = Math.floor((now - t0) / slotDur);
        for (; nextAbs <= due; nextAbs++) {
          const round = Math.floor(nextAbs / slotsPerPeriod);
          recordMs(this.h.lag, now - (t0 + nextAbs * slotDur));
          for (const i of wheel[nextAbs % slotsPerPeriod]!) {
            switch (this.st[i]) {
              case IDLE:
                if (round >= firstRound[i]!) {
                  this.st[i] = STARTING;
                  out[i % conns]!.push(this.startMsg(i, now));
                }
                break;
              case STARTING:
                this.c.startPending++;
                break;
              case LIVE:
                if (this.sec[i]! < duration) {
                  if (this.tickStart === 0) this.tickStart = Date.now();
                  const withRef = (i + this.sec[i]! / tickEvery + 1) % refEvery === 0;
                  out[i % conns]!.push(this.tickMsg(i, now, withRef, 0, tickEvery));
                  this.c.ticksDone++;
                } else {
                  out[i % conns]!.push(this.stopMsg(i, now));
                }
                break;
            }
          }
        }
        for (let c = 0; c < conns; c++) {
          if (out[c]!.length) {
            this.send(c, out[c]!);
            out[c] = [];
          }
        }
        if (now - t0 > deadline) return end();
        timer = setTimeout(turn, Math.max(0, t0 + nextAbs * slotDur - performance.now()));
      };
      if (this.n === 0) return end();
      turn();
    });
  }

  // -------------------------------------------------------------- max mode

  private async runMax(): Promise<void> {
    await this.phase('start');
    const { duration } = this.cfg;
    this.running = true;
    this.tickStart = Date.now();
    const stopAt = setTimeout(() => {
      this.running = false;
      this.checkDrained();
    }, duration * 1000);
    let giveUp: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.drained = resolve;
      // Frames a dead connection or a lost reply never complete: stop waiting 30 s after the end.
      giveUp = setTimeout(
        () => {
          this.err('drain_timeout');
          this.drained = undefined;
          resolve();
        },
        duration * 1000 + 30_000,
      );
      for (let c = 0; c < this.cfg.conns; c++) this.pumpTicks(c);
    });
    clearTimeout(stopAt);
    clearTimeout(giveUp);
    await this.phase('stop');
  }

  /** Sends frames of ticks on connection c until `window` frames are in flight. */
  private pumpTicks(c: number): void {
    const { frame, window, refEvery } = this.cfg;
    const list = this.byConn[c]!;
    while (this.running && this.outstanding[c]! < window) {
      const pick: number[] = [];
      for (let j = 0; j < frame; j++) {
        let idx = -1;
        for (let tries = 0; tries < list.length; tries++) {
          const cand = list[this.cursor[c]!++ % list.length]!;
          if (this.st[cand] === LIVE) {
            idx = cand;
            break;
          }
        }
        if (idx < 0) break;
        pick.push(idx);
      }
      if (pick.length === 0) break;
      const fid = this.nextFrame++;
      const fs = fid & FMASK;
      const now = performance.now();
      const msgs = new Array<Msg>(pick.length);
      let refs = 0;
      for (let j = 0; j < pick.length; j++) {
        const i = pick[j]!;
        // The last tick of a frame always carries a ref: its answer closes the frame.
        const withRef = refEvery <= 1 || j === pick.length - 1 || (i + this.sec[i]! + 1) % refEvery === 0;
        if (withRef) refs++;
        msgs[j] = this.tickMsg(i, now, withRef, fid);
      }
      this.frameRemaining[fs] = refs;
      this.frameSize[fs] = pick.length;
      this.frameConn[fs] = c;
      this.outstanding[c]!++;
      this.send(c, msgs);
    }
    this.checkDrained();
  }

  private frameAnswered(fid: number, now: number): void {
    const fs = fid & FMASK;
    if (--this.frameRemaining[fs]! !== 0) return;
    const c = this.frameConn[fs]!;
    this.outstanding[c]!--;
    this.c.ticksDone += this.frameSize[fs]!;
    this.tickEnd = Date.now();
    void now;
    if (this.running) this.pumpTicks(c);
    else this.checkDrained();
  }

  private checkDrained(): void {
    if (this.running || !this.drained) return;
    for (let c = 0; c < this.cfg.conns; c++)
      if (this.outstanding[c]! > 0 && this.ws[c]!.readyState === WebSocket.OPEN) return;
    const d = this.drained;
    this.drained = undefined;
    d();
  }

  /** Max mode's setup and teardown: starts (or stops) every call, setupFrame per frame, two frames in flight per connection. */
  private async phase(kind: 'start' | 'stop'): Promise<void> {
    const per = this.cfg.setupFrame;
    const lists = this.byConn.map((l) =>
      l.filter((i) => (kind === 'start' ? this.st[i] === IDLE : this.st[i] === LIVE)),
    );
    const pos = new Int32Array(this.cfg.conns);
    const left = new Int32Array(this.cfg.conns);
    const timeout = 30_000 + (this.n / 1000) * 1000;
    await new Promise<void>((resolve) => {
      let open = this.cfg.conns;
      const t = setTimeout(() => {
        this.err(`${kind}_phase_timeout`);
        resolve();
      }, timeout);
      const pump = (c: number): void => {
        const list = lists[c]!;
        while (left[c]! < 2 * per && pos[c]! < list.length) {
          const now = performance.now();
          const msgs: Msg[] = [];
          for (let j = 0; j < per && pos[c]! < list.length; j++) {
            const i = list[pos[c]!++]!;
            if (kind === 'start') {
              this.st[i] = STARTING;
              msgs.push(this.startMsg(i, now));
            } else {
              msgs.push(this.stopMsg(i, now));
            }
          }
          left[c]! += msgs.length;
          this.send(c, msgs);
        }
        if (pos[c]! >= list.length && left[c]! <= 0 && --open === 0) {
          clearTimeout(t);
          resolve();
        }
      };
      this.phaseDone = (c: number) => {
        left[c]!--;
        pump(c);
      };
      for (let c = 0; c < this.cfg.conns; c++) {
        if (lists[c]!.length === 0) {
          if (--open === 0) {
            clearTimeout(t);
            resolve();
          }
        } else pump(c);
      }
    });
    this.phaseDone = undefined;
  }
}

// ------------------------------------------------------------- worker entry

/** This module's file, for bench/switch/load.ts to start it in worker threads. */
export const LOADGEN_FILE = __filename;

export type ToWorker = { type: 'go' };
export type FromWorker =
  | { type: 'ready' }
  | { type: 'progress'; counters: Counters }
  | { type: 'result'; result: EngineResult }
  | { type: 'error'; message: string };

if (!isMainThread && parentPort && (workerData as { role?: string } | undefined)?.role === 'loadgen') {
  const port = parentPort;
  const engine = new Engine((workerData as { cfg: EngineConfig }).cfg);
  engine.connect().then(
    () => {
      port.postMessage({ type: 'ready' } satisfies FromWorker);
      port.once('message', (msg: ToWorker) => {
        if (msg.type !== 'go') return;
        const progress = setInterval(
          () => port.postMessage({ type: 'progress', counters: { ...engine.c } } satisfies FromWorker),
          250,
        );
        engine.run().then(
          (result) => {
            clearInterval(progress);
            port.postMessage({ type: 'result', result } satisfies FromWorker);
          },
          (err: unknown) => port.postMessage({ type: 'error', message: String(err) } satisfies FromWorker),
        );
      });
    },
    (err: unknown) =>
      port.postMessage({
        type: 'error',
        message: err instanceof Error ? err.message : String(err),
      } satisfies FromWorker),
  );
}

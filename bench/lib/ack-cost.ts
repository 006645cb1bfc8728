/**
 * The cost of replicated acknowledgements, measured in one run: two gateways on
 * the same cluster, one with REDIS_REPLICATED_ACKS=on and one with it off,
 * driven in turns (on, off, on, off, ...) so that whatever else the machine
 * does weighs on both alike. Each turn runs calls (start, then stop with 1 s,
 * on IDs of their own) and then redemptions (each a new scan), as fast as
 * `concurrency` requests in flight allow, and counts what was answered ok.
 */
import WebSocket from 'ws';

export interface AckCostTarget {
  /** 'on' or 'off'. */
  acks: string;
  port: number;
}

export interface AckCostOptions {
  targets: AckCostTarget[];
  swTok: string;
  scanTok: string;
  /** Sold talk IDs, one per call loop (maxCalls 1): at least concurrency * targets. */
  talkIds: string[];
  wallets: string[];
  item: string;
  dest: string;
  rounds: number;
  secondsPerPhase: number;
  concurrency: number;
}

export interface AckCostFigures {
  acks: string;
  startsPerSec: number;
  stopsPerSec: number;
  redemptionsPerSec: number;
  errors: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A JSON switch connection answering requests by ref. */
type Msg = Record<string, unknown>;
interface SwitchConn {
  request(m: Msg): Promise<Msg>;
  close(): void;
}

async function switchConn(port: number, token: string): Promise<SwitchConn> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/switch`, { headers: { Authorization: `Bearer ${token}` } });
  await new Promise((ok, no) => (ws.once('open', ok), ws.once('error', no)));
  const waiting = new Map<string, (m: Msg) => void>();
  let refs = 0;
  ws.on('message', (data: Buffer) => {
    const body = JSON.parse(data.toString()) as unknown;
    for (const m of (Array.isArray(body) ? body : [body]) as Msg[]) {
      const ref = typeof m.ref === 'string' ? m.ref : undefined;
      const w = ref !== undefined ? waiting.get(ref) : undefined;
      if (w) {
        waiting.delete(ref!);
        w(m);
      }
    }
  });
  const request = (m: Msg): Promise<Msg> =>
    new Promise((resolve) => {
      const ref = `r${++refs}`;
      waiting.set(ref, resolve);
      ws.send(JSON.stringify({ ...m, ref }));
    });
  return { request, close: () => ws.close() };
}

export async function measureAckCost(o: AckCostOptions): Promise<AckCostFigures[]> {
  const totals = new Map(
    o.targets.map((t) => [t.acks, { starts: 0, stops: 0, redemptions: 0, errors: 0, callSec: 0, redeemSec: 0 }]),
  );
  let callSeq = 0;
  let scanSeq = 0;
  for (let round = 0; round < o.rounds; round++) {
    for (const [ti, t] of o.targets.entries()) {
      const tot = totals.get(t.acks)!;
      const ids = o.talkIds.slice(ti * o.concurrency, (ti + 1) * o.concurrency);
      const conns = await Promise.all([0, 1, 2, 3].map(() => switchConn(t.port, o.swTok)));
      // Calls: start, stop after 1 s of talk, next call on the same ID.
      let end = Date.now() + o.secondsPerPhase * 1000;
      let t0 = performance.now();
      await Promise.all(
        ids.map(async (id, i) => {
          const conn = conns[i % conns.length]!;
          while (Date.now() < end) {
            const call = `ack-${t.acks}-${++callSeq}`;
            const s = await conn.request({ op: 'start', call, id, dest: o.dest });
            if (s.op !== 'started') {
              tot.errors++;
              await sleep(50);
              continue;
            }
            tot.starts++;
            for (;;) {
              const e = await conn.request({ op: 'stop', call, sec: 1, id, dest: o.dest });
              if (e.op === 'stopped') break;
              tot.errors++;
              await sleep(50);
            }
            tot.stops++;
          }
        }),
      );
      tot.callSec += (performance.now() - t0) / 1000;
      for (const c of conns) c.close();
      // Redemptions: each a new scan.
      end = Date.now() + o.secondsPerPhase * 1000;
      t0 = performance.now();
      await Promise.all(
        Array.from({ length: o.concurrency }, async () => {
          while (Date.now() < end) {
            const n = ++scanSeq;
            const res = await fetch(`http://127.0.0.1:${t.port}/v1/redeem`, {
              method: 'POST',
              headers: { Authorization: `Bearer ${o.scanTok}`, 'Content-Type': 'application/json' },
              body: JSON.stringify({ scan: `ack-${n}`, id: o.wallets[n % o.wallets.length], item: o.item }),
            }).catch(() => undefined);
            if (res?.status === 200) tot.redemptions++;
            else tot.errors++;
            await res?.arrayBuffer();
          }
        }),
      );
      tot.redeemSec += (performance.now() - t0) / 1000;
    }
  }
  const rate = (n: number, sec: number): number => Math.round((n / sec) * 10) / 10;
  return [...totals].map(([acks, t]) => ({
    acks,
    startsPerSec: rate(t.starts, t.callSec),
    stopsPerSec: rate(t.stops, t.callSec),
    redemptionsPerSec: rate(t.redemptions, t.redeemSec),
    errors: t.errors,
  }));
}

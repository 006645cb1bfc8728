/**
 * /metrics under `--workers`: the workers share one port and the kernel hands
 * each scrape to any one of them, so a worker answering with its own registry
 * showed Prometheus each worker's counters in turns: counts that fell back at
 * every other scrape (read as counter resets) and events a scrape never saw.
 * So a worker asks the process that started it, which gathers every worker's
 * metrics over the fork's IPC channel and adds them up with prom-client's
 * aggregators: counters and histograms summed, a gauge of what Redis holds
 * (`aggregator: 'max'` where it is defined) taken once, not once per worker.
 * A worker that misses the gathering (busy, stalled) is summed as it last
 * answered: left out, it would make every counter fall for that scrape, which
 * Prometheus reads as a reset (and a wrong rate). One that has exited keeps
 * its counts in the sum, for the same reason (WorkerMetrics).
 */
import type { ChildProcess } from 'node:child_process';
import { AggregatorRegistry, type Registry } from 'prom-client';

/** How long the gathering waits for a worker before it takes the worker's last answer. */
const GATHER_MS = 2000;

type Msg =
  | { t: 'tessera:metrics?'; n: number } // worker -> primary: a scrape came in
  | { t: 'tessera:metrics'; n: number; text?: string; error?: string } // primary -> worker: the sum
  | { t: 'tessera:metrics-json?'; n: number } // primary -> each worker: your metrics
  | { t: 'tessera:metrics-json'; n: number; json: unknown[] }; // each worker -> primary

const isMsg = (m: unknown): m is Msg =>
  typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string';

/**
 * In a worker: answers the primary's requests for this registry's metrics, and
 * returns the scrape a /metrics request makes, the sum over every worker.
 */
export function workerScrape(registry: Registry, proc: NodeJS.Process = process): () => Promise<string> {
  let seq = 0;
  const waiting = new Map<number, { ok: (text: string) => void; fail: (err: Error) => void }>();
  proc.on('message', (m: unknown) => {
    if (!isMsg(m)) return;
    if (m.t === 'tessera:metrics-json?') {
      void registry.getMetricsAsJSON().then((json) => proc.send?.({ t: 'tessera:metrics-json', n: m.n, json }));
    } else if (m.t === 'tessera:metrics') {
      const w = waiting.get(m.n);
      waiting.delete(m.n);
      if (m.text !== undefined) w?.ok(m.text);
      else w?.fail(new Error(m.error ?? 'no metrics'));
    }
  });
  return () =>
    new Promise<string>((ok, fail) => {
      const n = ++seq;
      const timer = setTimeout(() => {
        waiting.delete(n);
        fail(new Error('the primary process did not gather the workers’ metrics in time'));
      }, 2 * GATHER_MS);
      waiting.set(n, {
        ok: (t) => (clearTimeout(timer), ok(t)),
        fail: (e) => (clearTimeout(timer), fail(e)),
      });
      proc.send?.({ t: 'tessera:metrics?', n });
    });
}

/** What of a worker's metrics outlives it: its counts (counters, histograms), not its gauges. */
const counts = (json: unknown[]): unknown[] =>
  json.filter((m) => ['counter', 'histogram'].includes(String((m as { type?: unknown }).type)));

/** Numbers the primary's requests to the workers, whichever worker's scrape they serve. */
let gathers = 0;

/** Each worker's latest answer (of the latest request: a late answer counts too). */
const lastOf = new WeakMap<ChildProcess, { n: number; json: unknown[] }>();

/**
 * One worker's metrics as JSON: its answer, its last answer when it does not answer in time, the
 * counts of its last answer when it exits meanwhile (as WorkerMetrics keeps them), or undefined
 * when it has exited (or never answered).
 */
function metricsOf(child: ChildProcess, n: number): Promise<unknown[] | undefined> {
  return new Promise((resolve) => {
    const last = (): unknown[] | undefined => lastOf.get(child)?.json;
    const done = (json: unknown[] | undefined): void => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve(json);
    };
    const onMessage = (m: unknown): void => {
      if (isMsg(m) && m.t === 'tessera:metrics-json' && m.n === n) done(m.json);
    };
    const onExit = (): void => {
      const json = last();
      done(json && counts(json));
    };
    const timer = setTimeout(() => done(last()), GATHER_MS);
    child.on('message', onMessage);
    child.once('exit', onExit);
    if (child.exitCode !== null || child.signalCode !== null) return done(undefined);
    if (!child.connected) return done(last());
    child.send({ t: 'tessera:metrics-json?', n }, (err) => err && done(last()));
  });
}

/**
 * In the primary: the workers' metrics, summed for whichever worker a scrape reaches. A worker
 * that exits (and the one started in its place, from zero) would make every counter fall by its
 * counts: its last answer's counters and histograms stay in the sum, folded into one set however
 * many workers have come and gone; its gauges go with it.
 */
export class WorkerMetrics {
  private readonly live = new Set<ChildProcess>();
  /** The counts of the workers that have exited, summed. */
  private retired: Promise<unknown[] | undefined> = Promise.resolve(undefined);

  /** Serves the scrapes `child` asks for; counts it in every sum until it exits. */
  add(child: ChildProcess): void {
    this.live.add(child);
    child.once('exit', () => {
      this.live.delete(child);
      const last = lastOf.get(child)?.json;
      if (!last) return;
      this.retired = this.retired.then((before) =>
        AggregatorRegistry.aggregate([...(before ? [before] : []), counts(last)]).getMetricsAsJSON(),
      );
    });
    child.on('message', (m: unknown) => {
      if (isMsg(m) && m.t === 'tessera:metrics-json' && m.n > (lastOf.get(child)?.n ?? 0))
        lastOf.set(child, { n: m.n, json: m.json });
      if (isMsg(m) && m.t === 'tessera:metrics?') this.serve(child, m.n);
    });
  }

  private serve(child: ChildProcess, n: number): void {
    // The workers that exit from here on are summed by what metricsOf gives for them, not as retired.
    const retiring = this.retired;
    void Promise.all([...this.live].map((w) => metricsOf(w, ++gathers)))
      .then(async (all) => {
        const got = all.filter((j): j is unknown[] => j !== undefined);
        if (got.length === 0) throw new Error('no worker answered');
        const retired = await retiring;
        return AggregatorRegistry.aggregate(retired ? [...got, retired] : got).metrics();
      })
      .then(
        (text) => child.connected && child.send({ t: 'tessera:metrics', n, text }),
        (err: unknown) => child.connected && child.send({ t: 'tessera:metrics', n, error: String(err) }),
      );
  }
}

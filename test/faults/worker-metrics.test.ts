/**
 * /metrics under `--workers`: the primary sums every worker's metrics, waiting 2 s for each. A
 * worker that misses that wait (stalled: here stopped with SIGSTOP, as a busy or swapping process
 * is) is counted as it last answered, so no summed counter ever goes down while every worker
 * lives: Prometheus reads a counter that falls as a reset and computes a wrong rate. A worker
 * that has exited keeps its counts in the sum for the same reason. Real worker processes, forked,
 * talking over their IPC channel.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WorkerMetrics } from '../../src/observability/worker-metrics';

const WORKER = resolve(__dirname, '../support/metrics-worker.ts');
const started: ChildProcess[] = [];

/** The next message of type `t` from `child`. */
function next(child: ChildProcess, t: string): Promise<Record<string, unknown>> {
  return new Promise((ok) => {
    const on = (m: Record<string, unknown>): void => {
      if (m.t !== t) return;
      child.off('message', on);
      ok(m);
    };
    child.on('message', on);
  });
}

/** A worker, served by this process as the primary of --workers serves its workers. */
async function worker(primary: WorkerMetrics): Promise<ChildProcess> {
  const child = fork(WORKER, [], { execArgv: ['--import', 'tsx'], stdio: 'ignore' });
  started.push(child);
  const ready = next(child, 'test:ready');
  primary.add(child);
  await ready;
  return child;
}

async function count(child: ChildProcess, by: number): Promise<void> {
  const counted = next(child, 'test:counted');
  child.send({ t: 'test:count', by });
  await counted;
}

/** The summed counter, as a scrape that reaches `child` answers it. */
async function scrape(child: ChildProcess): Promise<number> {
  const scraped = next(child, 'test:scraped');
  child.send({ t: 'test:scrape' });
  const m = await scraped;
  if (typeof m.text !== 'string') throw new Error(`scrape failed: ${String(m.error)}`);
  const v = /^tessera_test_events_total (\d+)$/m.exec(m.text)?.[1];
  if (v === undefined) throw new Error(`no counter in ${m.text}`);
  return Number(v);
}

afterEach(async () => {
  for (const c of started.splice(0)) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await exited;
  }
});

describe('summed worker metrics', () => {
  it('a worker that misses the gathering counts as it last answered: the sum never goes down', async () => {
    const primary = new WorkerMetrics();
    const [a, b] = [await worker(primary), await worker(primary)];
    await count(a, 5);
    await count(b, 7);
    expect(await scrape(a)).toBe(12);
    // b stalls: it cannot answer the next gathering in time.
    b.kill('SIGSTOP');
    try {
      await count(a, 1);
      expect(await scrape(a)).toBe(13);
      expect(await scrape(a)).toBe(13);
    } finally {
      b.kill('SIGCONT');
    }
    // Back: counted as it answers again.
    await count(b, 2);
    expect(await scrape(a)).toBe(15);
  }, 30_000);

  it('a worker that has exited keeps its counts in the sum, and so does each worker in its place', async () => {
    const primary = new WorkerMetrics();
    const [a, b] = [await worker(primary), await worker(primary)];
    await count(a, 5);
    await count(b, 7);
    expect(await scrape(a)).toBe(12);
    const exited = new Promise((r) => b.once('exit', r));
    b.kill('SIGKILL');
    await exited;
    // Left out, the sum would fall to 5: Prometheus would read a reset and count 5 as new events.
    expect(await scrape(a)).toBe(12);
    // Its replacement counts from zero, on top.
    const c = await worker(primary);
    await count(c, 3);
    expect(await scrape(c)).toBe(15);
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await gone;
    expect(await scrape(a)).toBe(15);
  }, 30_000);
});

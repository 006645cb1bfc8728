/**
 * The benchmarks' local cluster (bench/lib/cluster.ts): a node that a fault
 * froze (bench:soak's SIGSTOP of a primary) is still shut down when the bench
 * stops it inside the freeze, as it does on Ctrl-C, instead of being left
 * stopped with its ports held.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startLocalCluster, type LocalCluster } from '../../bench/lib/cluster';

/** Running or stopped, not exited (a zombie no one reaps counts as gone). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

const nodePid = (port: number): number =>
  Number(
    /process_id:(\d+)/.exec(spawnSync('redis-cli', ['-p', String(port), 'info', 'server']).stdout.toString())?.[1],
  );

describe('bench local cluster', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'tessera-bench-cluster-'));
  let cluster: LocalCluster | undefined;
  afterAll(() => {
    cluster?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('stop() shuts down a node frozen by a fault', async () => {
    cluster = await startLocalCluster(tmp);
    const pid = nodePid(cluster.base);
    expect(pid).toBeGreaterThan(0);
    cluster.freeze(pid, 60_000);
    cluster.stop();
    const deadline = Date.now() + 10_000;
    while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(alive(pid)).toBe(false);
  }, 60_000);
});
